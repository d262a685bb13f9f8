"""Uploads between walks: images added now, some listable only later, and the record of them.

`Uploads.add(count, late=, ties=, lateness_s=)` models a burst of uploads since the last walk:
- `count` ordinary uploads, each newer than everything listed (1 ms to 2 s apart);
- `ties` uploads on exactly the newest instant listed before the call (a bulk import sharing
  the instant an export's watermark may sit on);
- `late` uploads whose `uploaded` lies up to `lateness_s` before the newest image of this call
  (a direct upload finishing after images uploaded later than it). They are *pending*: not
  listable until the next `add` (or `release`), so a walk in between misses them, as a real
  account's listing can.
Instants come from `random.Random(f"uploads:{seed}")`, so a test gets the same burst each run.

`UploadRecord` is the truth for tests: every image added, as uploaded, and whether it is
listable yet. The HTTP aid `POST /_emulator/accounts/{id}/uploads?count=&late=&ties=&lateness_s=`
calls `add` and returns the burst; `GET` on the same path returns the whole record.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import orjson

from exporter.emulator.catalog import Catalog, Entry

MAX_BURST = 100_000  # images per call: a test aid, not a load generator


@dataclass
class UploadRecord:
    """Every image `Uploads` added: its JSON as uploaded, and which are listable."""

    images: dict[str, bytes] = field(default_factory=dict)  # id -> bytes, in order of adding
    late: set[str] = field(default_factory=set)  # ids added as late uploads
    pending: set[str] = field(default_factory=set)  # late ids not listable yet

    def visible(self) -> dict[str, dict[str, Any]]:
        """Return the listable uploads: id -> image as the API serves it."""
        return {i: orjson.loads(b) for i, b in self.images.items() if i not in self.pending}

    def to_json(self) -> dict[str, Any]:
        return {
            "images": [orjson.loads(b) for b in self.images.values()],
            "late": sorted(self.late),
            "pending": sorted(self.pending),
        }


class Uploads:
    """Add uploads to one account's catalog while it is served; record them."""

    def __init__(self, catalog: Catalog, seed: int) -> None:
        self.catalog = catalog
        self.record = UploadRecord()
        self._rng = random.Random(f"uploads:{seed}")
        self._pending: list[Entry] = []

    def release(self) -> list[str]:
        """Make every pending late upload listable; return their ids."""
        released = []
        for entry in self._pending:
            self.catalog.insert(entry)
            released.append(self._id(entry))
        self._pending.clear()
        self.record.pending.difference_update(released)
        return released

    def add(
        self, count: int, *, late: int = 0, ties: int = 0, lateness_s: float = 180.0
    ) -> dict[str, Any]:
        """Release the pending uploads, then add a burst; return what was added (JSON-ready)."""
        if not 0 <= count + late + ties <= MAX_BURST or min(count, late, ties) < 0:
            raise ValueError(f"count, late and ties must be >= 0 and sum to <= {MAX_BURST}")
        if lateness_s < 0:
            raise ValueError("lateness_s must be >= 0")
        released = self.release()
        catalog, rng = self.catalog, self._rng
        newest = catalog.uploaded[-1] if len(catalog) else 0
        added: list[Entry] = [Entry(newest, self._reserve(), 0) for _ in range(ties)]
        instant = newest
        for _ in range(count):
            instant += 1 + int(rng.random() * 2000)
            added.append(Entry(instant, self._reserve(), 0))
        for entry in added:
            catalog.insert(entry)
        late_entries = [
            Entry(instant - int(rng.random() * lateness_s * 1000), self._reserve(), 0)
            for _ in range(late)
        ]
        self._pending += late_entries
        for entry in [*added, *late_entries]:
            self.record.images[self._id(entry)] = catalog.render(entry)
        self.record.late.update(self._id(e) for e in late_entries)
        self.record.pending.update(self._id(e) for e in late_entries)
        return {
            "added": [orjson.loads(catalog.render(e)) for e in added],
            "late": [orjson.loads(catalog.render(e)) for e in late_entries],
            "released": released,
        }

    def _reserve(self) -> int:
        """Return a fresh gen (an id no image had), reserved even while its upload is pending."""
        gen = self.catalog.next_gen
        self.catalog.next_gen = gen + 1
        return gen

    def _id(self, entry: Entry) -> str:
        return self.catalog.profile.image_id(entry.gen)
