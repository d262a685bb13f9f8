"""The `delta` sink: the snapshot becomes partition snapshot_date=D of `OUT/delta/images`.

A batch of new uploads (`export --new-uploads`) is appended to `OUT/delta/new_uploads`
instead, with its `batch` name (partition snapshot_date=D, the snapshot it follows).

Its Parquet parts are its own (staged in the run's staging, never published) and add no file
to the snapshot: `finish` conforms them; `publish`, after the snapshot's files are published,
writes them to the Delta table in one commit that replaces D's partition (`delta_tables`),
which is idempotent, so `--resume` may repeat it. The tables derived from the change log are
written once the change set is published (`exporter.changes`).
"""

from __future__ import annotations

import posixpath

import anyio.to_thread
import pyarrow as pa

from exporter.sinks._base import Conform, FileFormat, PartFile, Publication
from exporter.sinks.parquet import ParquetSink


class DeltaSink(ParquetSink):
    """Writes the snapshot into the Delta table `OUT/delta/images` (local or a bucket)."""

    name = "delta"
    file_formats: tuple[FileFormat, ...] = ()  # its parts never enter the snapshot

    async def finish(self, final_schema: pa.Schema, conform: Conform) -> list[PartFile]:
        """Conform the staged parts to `final_schema`; they are written by `publish`."""
        await super().finish(final_schema, conform)
        return []

    async def publish(self, publication: Publication) -> None:
        """Replace partition D of `images` with the staged parts, in one Delta commit."""
        from exporter.sinks import delta_tables as delta

        store, date = publication.store, publication.snapshot_date
        paths = [posixpath.join(publication.directory, p.path) for p in publication.parts]

        def write() -> None:
            location = delta.DeltaLocation(store, publication.layout)
            data = delta.with_date(delta.parquet_batches(store, paths), publication.schema, date)
            if publication.batch is not None:  # a batch of new uploads: appended, by name
                batch = publication.batch
                delta.replace_batch(location, date, batch, delta.with_batch(data, batch))
                return
            delta.replace_partition(location, delta.IMAGES, date, data, self.options.run_tag)

        await anyio.to_thread.run_sync(write)
