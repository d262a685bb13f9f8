"""A sink that keeps its batches in memory, for tests and the demo."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from exporter.sinks._base import Conform, PartFile, Publication, SinkOptions
from exporter.store.base import Store


class MemorySink:
    """Keeps every batch; `finish` conforms them so `table()` has one schema. Writes no files."""

    name = "memory"
    file_formats = ()

    def __init__(self, options: SinkOptions | None = None) -> None:
        self.options = options or SinkOptions()
        self.batches: list[pa.RecordBatch] = []
        self.commits: list[int] = []  # rows in each committed part, to observe rotation
        self.finished = False
        self.aborted = False
        self.published: Publication | None = None
        self._open_rows = 0

    @property
    def parts(self) -> list[PartFile]:
        return []

    async def open(
        self, store: Store, directory: str, schema: pa.Schema, committed: Sequence[PartFile] = ()
    ) -> None:
        self.batches, self.commits, self._open_rows = [], [], 0

    async def write(self, batch: pa.RecordBatch) -> None:
        self.batches.append(batch)
        self._open_rows += batch.num_rows

    def should_rotate(self) -> bool:
        return self._open_rows >= self.options.part_rows

    async def commit_part(self) -> list[PartFile]:
        if self._open_rows:
            self.commits.append(self._open_rows)
            self._open_rows = 0
        return []

    async def finish(self, final_schema: pa.Schema, conform: Conform) -> list[PartFile]:
        await self.commit_part()
        self.batches = [b if b.schema.equals(final_schema) else conform(b) for b in self.batches]
        self.finished = True
        return []

    async def abort(self) -> None:
        self.aborted = True

    async def publish(self, publication: Publication) -> None:
        self.published = publication

    def table(self) -> pa.Table:
        """Return everything written as one table (after `finish`: one schema)."""
        return pa.Table.from_batches(self.batches) if self.batches else pa.table({})
