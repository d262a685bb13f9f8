"""How the images sharing one `uploaded` instant are ordered: every order the reference allows.

The reference sorts List V2 "by upload time" and says nothing of ties, so the emulator can
serve any order (`--tie-order`), per sort order:
- `id`: id ascending in asc, descending in desc (desc is the exact reverse of asc);
- `id-desc`: id descending in asc, ascending in desc;
- `same`: id ascending in both sort orders;
- `hash`: a seeded hash of the id, another one in desc (unrelated orders; a new seed, a new
  order, as a catalog may come back another night).
Whatever the order, a cursor's own order is consistent and its token resumes it: a tie is
served by ascending `rank(sort_order, id)`, a pure function of the id, so a token holding the
last id served places the next page even when that image was deleted since.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

TIE_ORDERS = ("id", "id-desc", "same", "hash")
PROFILE_TIE_ORDERS = {"classic": "id", "nasty": "hash"}  # the default of each catalog profile

Rank = Any  # str, bytes or a tuple of ints: compared only with ranks of the same order


def _descending(image_id: str) -> tuple[int, ...]:
    """Rank ids in descending order (an id after every id it is a prefix of)."""
    return (*(-ord(c) for c in image_id), 1)


class TieOrder:
    """The order of one tie in each sort order, and the sorted ties of a catalog's views."""

    def __init__(self, name: str, seed: int = 1, cache_size: int = 8) -> None:
        if name not in TIE_ORDERS:
            raise ValueError(f"unknown tie order {name!r}, expected one of {TIE_ORDERS}")
        self.name = name
        self._salts = {
            order: hashlib.sha256(f"ties:{seed}:{order}".encode()).digest()[:16]
            for order in ("asc", "desc")
        }
        self._cache: OrderedDict[tuple[Any, ...], tuple[list[int], list[Rank]]] = OrderedDict()
        self._cache_size = cache_size

    @property
    def classic(self) -> bool:
        """True for `id`: the catalog's own (uploaded, id) order, served by plain slicing."""
        return self.name == "id"

    def rank(self, sort_order: str, image_id: str) -> Rank:
        """Return the rank of an id inside a tie: a tie is served by ascending rank."""
        asc = sort_order == "asc"
        if self.name == "hash":
            digest = hashlib.blake2b(image_id.encode(), key=self._salts[sort_order], digest_size=8)
            return digest.digest() + image_id.encode()
        if self.name == "same" or (self.name == "id") == asc:
            return image_id
        return _descending(image_id)

    def group(
        self,
        tie: Sequence[int],
        sort_order: str,
        image_id: Callable[[int], str],
        revision: int,
    ) -> tuple[list[int], list[Rank]]:
        """Return the positions of one tie in served order, and their ranks (cached: a tie of
        100,000 images is sorted once per catalog revision, not once per page)."""
        key = (revision, sort_order, tuple(tie))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        ranked = sorted((self.rank(sort_order, image_id(p)), p) for p in tie)
        result = [p for _, p in ranked], [r for r, _ in ranked]
        if len(tie) > 64:
            self._cache[key] = result
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result


def select_tied_page(
    uploaded: Sequence[int],
    image_id: Callable[[int], str],
    view: Sequence[int],
    sort_order: str,
    size: int,
    after: tuple[int, str] | None,
    ties: TieOrder,
    revision: int,
) -> tuple[list[int], bool]:
    """Return the next `size` positions of `view` after `after` (instant and id of the last
    image served) in `sort_order` with ties in `ties`' order, and whether more follow.

    `view` holds ascending catalog positions, so its instants never decrease and a tie is a
    contiguous run of it, found by bisection.
    """

    def instant(position: int) -> int:
        return uploaded[position]

    def tie_at(lo: int, hi: int) -> tuple[list[int], list[Rank]]:
        return ties.group(view[lo:hi], sort_order, image_id, revision)

    n = len(view)
    out: list[int] = []
    asc = sort_order == "asc"
    remaining = n
    i = 0 if asc else n  # the next run starts at view[i] (asc) or ends before it (desc)
    if after is not None:
        lo = bisect.bisect_left(view, after[0], key=instant)
        hi = bisect.bisect_right(view, after[0], lo=lo, key=instant)
        group, ranks = tie_at(lo, hi)
        skip = bisect.bisect_right(ranks, ties.rank(sort_order, after[1]))
        out.extend(group[skip : skip + size])
        i = hi if asc else lo
        remaining = len(group) - skip + (n - hi if asc else lo)
    while len(out) < size and (i < n if asc else i > 0):
        if asc:
            moment = uploaded[view[i]]
            end = i + 1
            if end < n and uploaded[view[end]] == moment:
                end = bisect.bisect_right(view, moment, lo=i, key=instant)
                out.extend(tie_at(i, end)[0][: size - len(out)])
            else:
                out.append(view[i])
            i = end
        else:
            moment = uploaded[view[i - 1]]
            start = i - 1
            if start > 0 and uploaded[view[start - 1]] == moment:
                start = bisect.bisect_left(view, moment, hi=i, key=instant)
                out.extend(tie_at(start, i)[0][: size - len(out)])
            else:
                out.append(view[start])
            i = start
    return out, len(out) < remaining
