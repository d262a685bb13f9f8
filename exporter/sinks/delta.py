"""The `delta` sink: the snapshot becomes partition snapshot_date=D of `OUT/delta/images`.

A batch of new uploads (`export --new-uploads`) is appended to `OUT/delta/new_uploads`
instead, with its `batch` name (partition snapshot_date=D, the snapshot it follows).

Its Parquet parts are its own (staged in the run's staging, never published) and add no file
to the snapshot: `finish` conforms them; `publish`, after the snapshot's files are published,
writes them to the Delta table in one commit that replaces D's partition (`delta_tables`),
which is idempotent, so `--resume` may repeat it. The tables derived from the change log are
written by `load_changes` once the change set is published (`TableKeeper`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from pathlib import Path

import anyio.to_thread
import pyarrow as pa

from exporter.errors import SinkError
from exporter.sinks._base import (
    BATCH_TO_PUBLISH,
    Conform,
    FileFormat,
    PartFile,
    Publication,
    PublishedChanges,
)
from exporter.sinks.night import NightSource, PublishedNight, SourceKind
from exporter.sinks.parquet import ParquetSink
from exporter.store.base import Store
from exporter.store.layout import Layout


class DeltaSink(ParquetSink):
    """Writes the snapshot into the Delta table `OUT/delta/images` (local or a bucket), and
    keeps the Delta tables derived from nights (`TableKeeper`)."""

    name = "delta"
    file_formats: tuple[FileFormat, ...] = ()  # its parts never enter the snapshot
    night_kind: SourceKind = "arrow"

    async def finish(self, final_schema: pa.Schema, conform: Conform) -> list[PartFile]:
        """Conform the staged parts to `final_schema`; they are written by `publish`."""
        await super().finish(final_schema, conform)
        return []

    async def publish(self, publication: Publication) -> None:
        """Replace partition D of `images` with the staged parts, in one Delta commit."""
        from exporter.sinks import delta_tables as delta

        if publication.batch is not None:  # never taken for the snapshot's rows
            raise SinkError(self.name, BATCH_TO_PUBLISH)

        def write() -> None:
            location = delta.DeltaLocation(publication.store, publication.layout)
            date = publication.snapshot_date
            data = delta.with_date(_staged(publication), publication.schema, date)
            delta.replace_partition(location, delta.IMAGES, date, data, publication.run_id)

        await anyio.to_thread.run_sync(write)

    # -- TableKeeper and ReadableNights --------------------------------------------------------

    def load_new_uploads(self, publication: Publication) -> None:
        """Append the batch to `new_uploads`, by name (replacing that batch's rows)."""
        from exporter.sinks import delta_tables as delta

        assert publication.batch is not None
        location = delta.DeltaLocation(publication.store, publication.layout)
        date, batch = publication.snapshot_date, publication.batch
        data = delta.with_date(_staged(publication), publication.schema, date)
        delta.replace_batch(location, date, batch, delta.with_batch(data, batch))

    def drop_new_uploads(
        self, store: Store, layout: Layout, snapshot_date: str, batches: Sequence[str]
    ) -> None:
        """Delete the rows of the retired `batches` from `new_uploads` (one commit)."""
        from exporter.sinks import delta_tables as delta

        if batches:
            delta.delete_batches(delta.DeltaLocation(store, layout), snapshot_date, batches)

    def load_changes(self, changes: PublishedChanges) -> None:
        """After D's change set is published: image_changes, then current, then history."""
        from exporter.sinks import delta_tables as delta

        delta.load_changes(
            changes.store,
            changes.layout,
            changes.snapshot_date,
            changes.paths,
            changes.schema,
            changes.run_id,
        )

    def night_source(self, night: PublishedNight, scratch: Path) -> NightSource | None:
        """Return D's partition of `images` as a dataset DuckDB scans, or a batch's rows of
        `new_uploads` as a table (a lag window's few)."""
        from exporter.sinks import delta_tables as delta

        location = delta.DeltaLocation(night.store, night.layout)
        date = night.snapshot_date
        if night.batch is None:
            table = delta.read_partition(location, delta.IMAGES, date)
        else:
            table = delta.read_batch(location, date, night.batch)
        return NightSource("arrow", date, table=table)


def _staged(publication: Publication) -> Iterator[pa.RecordBatch]:
    """Yield the batches of the sink's staged parts named by `publication`."""
    from exporter.sinks import delta_tables as delta

    paths = [posixpath.join(publication.directory, p.path) for p in publication.parts]
    return delta.parquet_batches(publication.store, paths)
