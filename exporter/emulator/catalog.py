"""The served catalog: images in List V2 order, mutable (live mode, nights), bytes on demand.

A catalog is three parallel arrays in ascending (uploaded, id) order, one entry per image:
`uploaded` (ms), `gen` (which generated image: its id and base content come from the profile)
and `spec` (the field edits it has had, see `edits`). Bytes are rendered when served:
`profile.render(gen, uploaded)`, then the edits of `spec` if any. The profile (`classic`, the
default, or `nasty`, the benchmark catalog) is immutable and shared; copies of a catalog share
it, so an emulator that mutates its catalog never touches another's.

With `extras` on, every rendering ends with the image's extra fields (`extras`), after the
edits of `spec`; copies keep the flag.

Invariants: keys strictly ascend (ids are unique); `revision` grows with every mutation (the
filter-view cache keys on it).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, overload

import orjson

from exporter.emulator.classic import ClassicProfile
from exporter.emulator.edits import EXTRA, FIELDS, apply_edits, field_version
from exporter.emulator.extras import extra_members, splice
from exporter.emulator.nasty import NastyProfile
from exporter.emulator.render import Image, OrderKey

PROFILES = ("classic", "nasty")
_LISTED_EDITS = (1 << (8 * len(FIELDS))) - 1  # the spec's bytes apply_edits renders


class Profile(Protocol):
    """How a catalog's images are generated: ids, base upload instants and bytes by gen."""

    name: str
    seed: int

    def __len__(self) -> int: ...
    def base_uploaded(self, gen: int) -> int: ...
    def image_id(self, gen: int) -> str: ...
    def render(self, gen: int, uploaded_ms: int) -> bytes: ...


@dataclass(frozen=True)
class Entry:
    """One image of a catalog: what `Catalog` stores per position."""

    uploaded: int
    gen: int
    spec: int


class Catalog:
    """Images in ascending (uploaded, id) order; descending order is the exact reverse."""

    def __init__(
        self,
        profile: Profile,
        uploaded: array[int],
        gens: array[int],
        specs: array[int],
        *,
        next_gen: int,
        extras: bool = False,
    ) -> None:
        self.profile = profile
        self.extras = extras  # images carry fields the reference does not list
        self.uploaded = uploaded
        self.gens = gens
        self.specs = specs
        self.next_gen = next_gen  # the gen of the next upload
        self.revision = 0
        self.keys: Sequence[OrderKey] = _Keys(self)
        self.blobs: Sequence[bytes] = _Blobs(self)

    @property
    def seed(self) -> int:
        return self.profile.seed

    def __len__(self) -> int:
        return len(self.gens)

    def copy(self) -> Catalog:
        """Return an independent catalog with the same images (the profile is shared)."""
        return Catalog(
            self.profile,
            array("q", self.uploaded),
            array("q", self.gens),
            array("Q", self.specs),
            next_gen=self.next_gen,
            extras=self.extras,
        )

    def key(self, position: int) -> OrderKey:
        """Return the order key of the image at an ascending position."""
        return self.uploaded[position], self.profile.image_id(self.gens[position])

    def entry(self, position: int) -> Entry:
        return Entry(self.uploaded[position], self.gens[position], self.specs[position])

    def render(self, entry: Entry) -> bytes:
        """Return the JSON bytes of an entry (at this or any other position or night)."""
        return self._render(entry.gen, entry.uploaded, entry.spec)

    def blob(self, position: int) -> bytes:
        """Return the JSON bytes of the image at an ascending position."""
        return self._render(self.gens[position], self.uploaded[position], self.specs[position])

    def render_positions(self, positions: Sequence[int]) -> list[bytes]:
        """Return the JSON bytes of the images at `positions` (a page), in that order."""
        uploaded, gens, specs = self.uploaded, self.gens, self.specs
        if self.extras:
            return [self._render(gens[p], uploaded[p], specs[p]) for p in positions]
        render, seed = self.profile.render, self.seed
        blobs = []
        for position in positions:
            blob = render(gens[position], uploaded[position])
            if specs[position]:
                blob = apply_edits(blob, seed, gens[position], specs[position])
            blobs.append(blob)
        return blobs

    def _render(self, gen: int, uploaded: int, spec: int) -> bytes:
        blob = self.profile.render(gen, uploaded)
        if spec & _LISTED_EDITS:
            blob = apply_edits(blob, self.seed, gen, spec)
        if self.extras:
            blob = splice(blob, extra_members(self.seed, gen, field_version(spec, EXTRA)))
        return blob

    def iter_images(self) -> Iterator[Image]:
        """Yield every image dict, ascending, exactly as the API returns it."""
        for position in range(len(self)):
            yield orjson.loads(self.blob(position))

    def image(self, index: int) -> Image:
        """Return the image at an ascending position."""
        result: Image = orjson.loads(self.blob(index))
        return result

    def position_after(self, key: OrderKey) -> int:
        """Return the ascending index of the first image whose key sorts after `key`."""
        return bisect.bisect_right(self.keys, key)

    def position_before(self, key: OrderKey) -> int:
        """Return one past the ascending index of the last image whose key sorts before `key`."""
        return bisect.bisect_left(self.keys, key)

    def position_of(self, image_id: str, uploaded: int) -> int | None:
        """Return the position of the image with this id and upload instant, if present."""
        position = bisect.bisect_left(self.keys, (uploaded, image_id))
        if position < len(self) and self.key(position) == (uploaded, image_id):
            return position
        return None

    # Mutations: each bumps `revision`.

    def insert(self, entry: Entry) -> int:
        """Add an image (an upload) where its key sorts; return its position."""
        position = bisect.bisect_left(self.keys, (entry.uploaded, self.profile.image_id(entry.gen)))
        self.uploaded.insert(position, entry.uploaded)
        self.gens.insert(position, entry.gen)
        self.specs.insert(position, entry.spec)
        self.next_gen = max(self.next_gen, entry.gen + 1)
        self.revision += 1
        return position

    def set_spec(self, position: int, spec: int) -> None:
        """Replace the edits of the image at `position` (its key does not change)."""
        self.specs[position] = spec
        self.revision += 1

    def remove(self, positions: Sequence[int]) -> list[Entry]:
        """Delete the images at `positions`; return their entries in ascending order."""
        doomed = sorted(set(positions))
        removed = [self.entry(p) for p in doomed]
        if len(doomed) <= 64:
            for position in reversed(doomed):
                del self.uploaded[position], self.gens[position], self.specs[position]
        else:
            drop = set(doomed)
            keep = [p for p in range(len(self)) if p not in drop]
            self.uploaded = array("q", [self.uploaded[p] for p in keep])
            self.gens = array("q", [self.gens[p] for p in keep])
            self.specs = array("Q", [self.specs[p] for p in keep])
        self.revision += 1
        return removed


class _Keys(Sequence[OrderKey]):
    """The order keys, computed on access (ids are not stored)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def __len__(self) -> int:
        return len(self._catalog)

    @overload
    def __getitem__(self, index: int) -> OrderKey: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[OrderKey]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._catalog.key(i) for i in range(len(self))[index]]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._catalog.key(index)


class _Blobs(Sequence[bytes]):
    """The images' JSON bytes, rendered on access."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def __len__(self) -> int:
        return len(self._catalog)

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._catalog.blob(i) for i in range(len(self))[index]]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._catalog.blob(index)


def make_profile(name: str, n: int, seed: int, tie_group: int = 0) -> Profile:
    """Return the generator of a profile (`classic` or `nasty`) of `n` images."""
    if name == "classic":
        return ClassicProfile(n, seed, tie_group)
    if name == "nasty":
        return NastyProfile(n, seed, tie_group)
    raise ValueError(f"unknown catalog profile {name!r}, expected one of {', '.join(PROFILES)}")


def build_catalog(
    n: int,
    seed: int = 1,
    *,
    profile: str = "classic",
    tie_group: int = 0,
    extras: bool | None = None,
) -> Catalog:
    """Return a catalog of `n` images generated deterministically from `seed`.

    `tie_group` puts a bulk import of that many images on one `uploaded` instant; `extras`
    adds fields the reference does not list (None: on for the nasty profile).
    """
    if extras is None:
        extras = profile == "nasty"
    generator = make_profile(profile, n, seed, tie_group)
    uploaded, gens = array("q"), array("q")
    start = 0
    # Instants never decrease with gen: only runs of equal instants need sorting, by id.
    while start < n:
        instant = generator.base_uploaded(start)
        end = start + 1
        while end < n and generator.base_uploaded(end) == instant:
            end += 1
        if end - start > 1:
            gens.extend(sorted(range(start, end), key=generator.image_id))
        else:
            gens.append(start)
        uploaded.extend([instant] * (end - start))
        start = end
    return Catalog(generator, uploaded, gens, array("Q", bytes(8 * n)), next_gen=n, extras=extras)
