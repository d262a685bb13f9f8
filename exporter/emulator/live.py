"""Live mode: uploads, deletions and edits while a walk runs, and the truth of what happened.

Every `every` list requests (counted per account, before the request's page is chosen), the
catalog takes `mutations` changes drawn from `random.Random(f"live:{seed}")`: an upload (a
new image, newest: it sorts after everything, as a real upload does), a deletion of a random
image, or an edit of a random image (its meta, or one time in four its filename). A walk from
one client in sequence therefore meets the same changes at the same requests on every run.
Tokens are cursors (the next page starts after the last key served), so no change shifts a
page: DESIGN "Live catalogs" holds when the exporter keeps its side of the promise.

`LiveRecord` is the emulator's truth for tests: the images present when live mode started,
what was uploaded and deleted since, and every version of each edited image. An image present
for the whole walk is `stable_ids()`; the exporter must export each of those exactly once, in
one of `versions(id)`.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from exporter.emulator.catalog import Catalog, Entry
from exporter.emulator.edits import bump
from exporter.emulator.render import Image

KINDS = ("upload", "delete", "edit")


class LiveRecord:
    """What the catalog held when live mode started, and each change since."""

    def __init__(self, catalog: Catalog) -> None:
        self._start = catalog.copy()
        self._start_ids: set[str] | None = None
        self._start_index: dict[str, int] | None = None
        self.uploaded: dict[str, bytes] = {}  # id -> bytes as uploaded
        self.deleted: dict[str, bytes] = {}  # id -> bytes when deleted
        self.edited: dict[str, list[bytes]] = {}  # id -> every version, oldest first
        self.mutations = 0

    def start_ids(self) -> set[str]:
        """Return the ids present when live mode started."""
        if self._start_ids is None:
            image_id = self._start.profile.image_id
            self._start_ids = {image_id(gen) for gen in self._start.gens}
        return set(self._start_ids)

    def stable_ids(self) -> set[str]:
        """Return the ids present for the whole walk: there at the start and never deleted."""
        return self.start_ids() - self.deleted.keys()

    def versions(self, image_id: str) -> list[Image]:
        """Return every version an image had during the walk, oldest first."""
        if image_id in self.edited:
            return [orjson.loads(blob) for blob in self.edited[image_id]]
        if image_id in self.uploaded:
            return [orjson.loads(self.uploaded[image_id])]
        if self._start_index is None:
            image_id_of = self._start.profile.image_id
            self._start_index = {image_id_of(g): p for p, g in enumerate(self._start.gens)}
        return [self._start.image(self._start_index[image_id])]

    def to_json(self) -> dict[str, Any]:
        """Return the record as JSON-ready data (the `/_emulator/live` debug endpoint)."""
        return {
            "mutations": self.mutations,
            "stable_ids": sorted(self.stable_ids()),
            "uploaded": sorted(self.uploaded),
            "deleted": sorted(self.deleted),
            "edited": {
                image_id: [orjson.loads(blob) for blob in blobs]
                for image_id, blobs in sorted(self.edited.items())
            },
        }


class LiveCatalog:
    """Drive a catalog's changes from the requests it serves, and record them."""

    def __init__(self, catalog: Catalog, seed: int, every: int, mutations: int) -> None:
        self.catalog = catalog
        self.every = every
        self.mutations = mutations
        self.record = LiveRecord(catalog)
        self._rng = random.Random(f"live:{seed}")
        self._requests = 0

    def on_request(self) -> None:
        """Count one list request; every `every`-th applies `mutations` changes first."""
        self._requests += 1
        if self.every and self._requests % self.every == 0:
            for _ in range(self.mutations):
                self.mutate(self._rng.choice(KINDS))

    def mutate(self, kind: str) -> None:
        """Apply one change of `kind` (upload, delete or edit) and record it."""
        catalog, rng = self.catalog, self._rng
        if kind == "upload" or len(catalog) == 0:
            newest = catalog.uploaded[-1] if len(catalog) else 0
            entry = Entry(newest + int(rng.random() * 2000), catalog.next_gen, 0)
            catalog.insert(entry)
            self.record.uploaded[self._id(entry)] = catalog.render(entry)
        elif kind == "delete":
            (entry,) = catalog.remove([int(rng.random() * len(catalog))])
            self.record.deleted[self._id(entry)] = catalog.render(entry)
        else:
            position = int(rng.random() * len(catalog))
            before = catalog.entry(position)
            field = "filename" if rng.random() < 0.25 else "meta"
            after = Entry(before.uploaded, before.gen, bump(before.spec, field))
            catalog.set_spec(position, after.spec)
            versions = self.record.edited.setdefault(self._id(before), [catalog.render(before)])
            versions.append(catalog.render(after))
        self.record.mutations += 1

    def _id(self, entry: Entry) -> str:
        return self.catalog.profile.image_id(entry.gen)
