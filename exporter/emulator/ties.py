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
import operator
import zlib
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
            order: int.from_bytes(hashlib.sha256(f"ties:{seed}:{order}".encode()).digest()[:4])
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
        if self.name == "hash":  # CRC-32 seeded by the salt: cheap, and unrelated to the id
            return (zlib.crc32(image_id.encode(), self._salts[sort_order]), image_id)
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
        key = (revision, sort_order, tie if isinstance(tie, range) else tuple(tie))
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
    contiguous run of it, found by bisection. The page is the window of `size` positions
    after the cursor, each tie in it replaced by the tie in its order (the last one cut to
    the window): the runs are found by C loops over the window's instants, not image by
    image.
    """

    def instant(position: int) -> int:
        return uploaded[position]

    def tie_at(lo: int, hi: int) -> list[int]:
        return ties.group(view[lo:hi], sort_order, image_id, revision)[0]

    n = len(view)
    out: list[int] = []
    asc = sort_order == "asc"
    remaining = n
    i = 0 if asc else n  # the window starts at view[i] (asc) or ends before it (desc)
    if after is not None:
        lo = bisect.bisect_left(view, after[0], key=instant)
        hi = bisect.bisect_right(view, after[0], lo=lo, key=instant)
        group, ranks = ties.group(view[lo:hi], sort_order, image_id, revision)
        skip = bisect.bisect_right(ranks, ties.rank(sort_order, after[1]))
        out.extend(group[skip : skip + size])
        i = hi if asc else lo
        remaining = len(group) - skip + (n - hi if asc else lo)
    need = size - len(out)
    if need <= 0 or not (i < n if asc else i > 0):
        return out, len(out) < remaining
    lo, hi = (i, min(n, i + need)) if asc else (max(0, i - need), i)
    if isinstance(view, range) and view.step == 1:
        instants = list(uploaded[view.start + lo : view.start + hi])  # a C slice of the array
    else:
        instants = [uploaded[p] for p in view[lo:hi]]
    window = view[lo:hi]
    if not asc:
        instants.reverse()
        window = window[::-1]
    m = len(instants)
    equal = list(map(operator.eq, instants, instants[1:]))  # equal[j]: j and j + 1 tie
    beyond = hi if asc else lo - 1  # the first position past the window
    edge = 0 <= beyond < n and uploaded[view[beyond]] == instants[-1]  # a tie cut by the end
    j = 0
    while j < m:
        try:
            t = equal.index(True, j)
        except ValueError:
            t = m - 1 if edge else m
        out.extend(window[j:t])
        if t >= m:
            break
        if asc:
            start = lo + t
            group = tie_at(start, bisect.bisect_right(view, instants[t], lo=start, key=instant))
        else:
            stop = hi - t
            group = tie_at(bisect.bisect_left(view, instants[t], hi=stop, key=instant), stop)
        out.extend(group[: m - t])
        j = t + len(group)
    return out, len(out) < remaining
