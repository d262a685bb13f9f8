"""Evolution between nights: the catalog of night N is a pure function of (seed, N, plan).

Night 0 is the built catalog. Night k >= 1 applies its changes to night k-1, drawn from
`random.Random(f"night:{seed}:{k}")`, so every night of every seed is reproducible and a test
can run a week of nights against emulators started one after another.

A normal night, with c = max(1, churn * images):

* uploads: c new images, newer than everything (as real uploads are);
* deletions: c / 2 images;
* edits: c / 4 images per field of `edits.FIELDS` (filename, creator, require_signed_urls,
  variants, meta), and of the extra fields when the catalog serves them (`extras`: a new
  field, `reviewed`, appears on the first night that edits them), some images edited in
  several fields, and some edits that change nothing a warehouse sees (a creator from absent
  to null, meta keys reordered): those are not changes;
* a re-upload under the same id: c / 10 images deleted and uploaded again the same night
  (a new `uploaded` and filename: `changed` with both fields), and up to c / 10 of the
  previous night's deletions uploaded again (`added` again after `removed`).

`uploaded` is never edited in place: Cloudflare has no call that changes it; it changes only
through a re-upload. A quiet night (`quiet_nights`, default night 3) changes nothing; a mass
deletion night (`mass_deletion_nights`, default night 5) deletes `mass_deletion_share` (0.3)
of the images and nothing else, beyond the exporter's default `changes.max_removed_share`.

`NightChanges` is the emulator's own record of what changed from night N-1 to N, computed by
comparing the rendered images under DESIGN's rules (`edits.changed_fields`): the truth that
change-data tests compare against.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from exporter.emulator.catalog import Catalog, Entry
from exporter.emulator.edits import EXTRA, FIELDS, bump, changed_fields


@dataclass(frozen=True, kw_only=True)
class NightPlan:
    """How much a catalog changes per night, and which nights are special."""

    churn: float = 0.02  # share uploaded per normal night (deleted: half; edited: a quarter each)
    quiet_nights: tuple[int, ...] = (3,)
    mass_deletion_nights: tuple[int, ...] = (5,)
    mass_deletion_share: float = 0.3


@dataclass(frozen=True)
class NightChanges:
    """What changed from night `night - 1` to `night`: ids added, removed, and changed fields."""

    night: int
    added: frozenset[str]
    removed: frozenset[str]
    changed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the record as JSON-ready data (the `/_emulator/.../changes` endpoint)."""
        return {
            "night": self.night,
            "added": sorted(self.added),
            "removed": sorted(self.removed),
            "changed": {key: list(fields) for key, fields in sorted(self.changed.items())},
        }


def catalog_at_night(base: Catalog, night: int, plan: NightPlan) -> tuple[Catalog, NightChanges]:
    """Return a copy of `base` evolved to `night`, and the changes of that night."""
    catalog = base.copy()
    deleted: list[Entry] = []
    changes = NightChanges(0, frozenset(), frozenset())
    for k in range(1, night + 1):
        changes, deleted = evolve(catalog, k, plan, deleted)
    return catalog, changes


def evolve(
    catalog: Catalog, night: int, plan: NightPlan, last_deleted: list[Entry]
) -> tuple[NightChanges, list[Entry]]:
    """Apply night `night`'s changes in place; return them and the entries it deleted."""
    rng = random.Random(f"night:{catalog.seed}:{night}")
    n = len(catalog)
    if night in plan.quiet_nights or n == 0:
        return NightChanges(night, frozenset(), frozenset()), []
    before: dict[int, Entry] = {}
    after: dict[int, Entry | None] = {}
    if night in plan.mass_deletion_nights:
        doomed = rng.sample(range(n), min(n, round(plan.mass_deletion_share * n)))
        removed = catalog.remove(doomed)
        for entry in removed:
            before[entry.gen], after[entry.gen] = entry, None
        return _record(catalog, night, before, after), removed
    c = max(1, round(plan.churn * n))
    deletions, replaced = max(1, c // 2), max(1, c // 10)
    picked = rng.sample(range(n), min(n, deletions + replaced))
    again_gens = {catalog.gens[p] for p in picked[deletions:]}  # deleted, uploaded again
    others = [p for p in range(n) if p not in set(picked)] if n < 10_000 else None
    for name in (*FIELDS, EXTRA) if catalog.extras else FIELDS:
        for position in _sample_others(rng, n, set(picked), others, max(1, c // 4)):
            entry = catalog.entry(position)
            before.setdefault(entry.gen, entry)
            edited = Entry(entry.uploaded, entry.gen, bump(entry.spec, name))
            catalog.set_spec(position, edited.spec)
            after[entry.gen] = edited
    removed = catalog.remove(picked)
    clock = _Clock(rng, catalog.uploaded[-1] if len(catalog) else 0)
    deleted = []
    for entry in removed:
        before[entry.gen] = entry
        after[entry.gen] = None
        if entry.gen in again_gens:
            again = Entry(clock.next(), entry.gen, bump(entry.spec, "filename"))
            catalog.insert(again)
            after[entry.gen] = again
        else:
            deleted.append(entry)
    for entry in last_deleted[:replaced]:
        again = Entry(clock.next(), entry.gen, entry.spec)
        catalog.insert(again)
        after[entry.gen] = again
    for _ in range(c):
        upload = Entry(clock.next(), catalog.next_gen, 0)
        catalog.insert(upload)
        after[upload.gen] = upload
    return _record(catalog, night, before, after), deleted


def _sample_others(
    rng: random.Random, n: int, taken: set[int], others: list[int] | None, k: int
) -> Iterable[int]:
    """Return up to k distinct positions outside `taken`."""
    if others is not None:
        return rng.sample(others, min(k, len(others)))
    chosen: set[int] = set()
    while len(chosen) < k:
        position = int(rng.random() * n)
        if position not in taken:
            chosen.add(position)
    return sorted(chosen)


class _Clock:
    """Upload instants after the newest image: seeded steps of 0..3 s (zero steps tie)."""

    def __init__(self, rng: random.Random, newest: int) -> None:
        self._rng = rng
        self._now = newest + 60_000

    def next(self) -> int:
        self._now += int(self._rng.random() * 4) * 1000 * int(self._rng.random() < 0.7)
        return self._now


def _record(
    catalog: Catalog, night: int, before: Mapping[int, Entry], after: Mapping[int, Entry | None]
) -> NightChanges:
    """Compare each touched image's versions: the night's changes, as a warehouse sees them."""
    added, removed, changed = set(), set(), {}
    image_id = catalog.profile.image_id
    for gen in before.keys() | after.keys():
        old, new = before.get(gen), after.get(gen)
        if old is None and new is not None:
            added.add(image_id(gen))
        elif old is not None and new is None:
            removed.add(image_id(gen))
        elif old is not None and new is not None:
            fields = changed_fields(
                orjson.loads(catalog.render(old)), orjson.loads(catalog.render(new))
            )
            if fields:
                changed[image_id(gen)] = fields
    return NightChanges(night, frozenset(added), frozenset(removed), changed)
