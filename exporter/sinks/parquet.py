"""Parquet parts: zstd, scan-sized row groups, statistics, dictionary where values repeat."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.parquet as pq

from exporter.errors import SinkError
from exporter.sinks._base import (
    Conform,
    FileFormat,
    FilePartSink,
    PartFile,
    SinkOptions,
    schema_fingerprint,
)
from exporter.sinks.night import NightSource, PublishedNight, SourceKind, files_source
from exporter.store.base import HashingWriter, file_digest, os_errors
from exporter.transform.schema import CORE


def count_parquet_rows(raw: IO[bytes]) -> int:
    """Return the rows a Parquet file's footer declares."""
    return int(pq.ParquetFile(raw).metadata.num_rows)


PARQUET = FileFormat(".parquet", count_parquet_rows)


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """Return the columns worth dictionary encoding: everything not unique per image.

    For a unique column a dictionary page would only grow until Parquet falls back to plain
    encoding, costing a wasted page per row group. Everything else (account, creator, flags,
    meta leaves) repeats across images and compresses well as a dictionary.
    """
    return [f.name for f in schema if f.name not in CORE or not CORE[f.name].unique]


class ParquetSink(FilePartSink):
    """Writes `part-NNNNN.parquet`; rows are buffered into row groups of `row_group_rows`
    rows or `row_group_bytes` bytes of Arrow buffers, whichever is reached first."""

    name = "parquet"
    file_format = PARQUET
    file_formats: tuple[FileFormat, ...] = (PARQUET,)
    night_kind: SourceKind = "parquet"

    def __init__(self, options: SinkOptions | None = None) -> None:
        super().__init__(options)
        self._pq: pq.ParquetWriter | None = None
        self._buffer: list[pa.RecordBatch] = []
        self._buffer_rows = 0
        self._buffer_nbytes = 0
        self._flushed_nbytes = 0  # in-memory size of what reached the file: compression ratio

    def night_source(self, night: PublishedNight, scratch: Path) -> NightSource | None:
        """Return the night's Parquet parts (DuckDB reads their columns and statistics)."""
        return files_source(night, "parquet", (f.name for f in self.file_formats), scratch)

    def _writer_for(self, sink: HashingWriter, schema: pa.Schema) -> pq.ParquetWriter:
        return pq.ParquetWriter(
            sink,
            schema,
            compression=self.options.parquet_codec,
            compression_level=self.options.compression_level,
            use_dictionary=dictionary_columns(schema),
            write_statistics=True,
        )

    def _begin(self, writer: HashingWriter, schema: pa.Schema) -> None:
        self._pq = self._writer_for(writer, schema)
        self._buffer, self._buffer_rows, self._buffer_nbytes, self._flushed_nbytes = [], 0, 0, 0

    def _append(self, batch: pa.RecordBatch) -> None:
        self._buffer.append(batch)
        self._buffer_rows += batch.num_rows
        # The buffers' total size, not `nbytes`, which walks every column's offsets to count
        # only the referenced range (~90 us for a 1,000-row batch, against ~4 us). Normalized
        # batches are never slices, so the two agree within a few bytes. (The tail kept by
        # `_flush` is a slice: it is measured with `nbytes`, once per row group.)
        self._buffer_nbytes += batch.get_total_buffer_size()
        if self._buffer_rows >= self.options.row_group_rows:
            self._flush(whole_groups_only=True)
        elif self._buffer_nbytes >= self.options.row_group_bytes:
            self._flush()  # large rows: a shorter group, so the buffer stays bounded in bytes

    def _flush(self, whole_groups_only: bool = False) -> None:
        """Write buffered rows as row groups of `row_group_rows`; keep a short tail if asked."""
        if not self._buffer or self._pq is None:
            return
        size = self.options.row_group_rows
        table = pa.Table.from_batches(self._buffer)
        cut = (table.num_rows // size) * size if whole_groups_only else table.num_rows
        self._pq.write_table(table.slice(0, cut), row_group_size=size)
        tail = table.slice(cut)
        self._flushed_nbytes += self._buffer_nbytes - tail.nbytes
        self._buffer = tail.combine_chunks().to_batches() if tail.num_rows else []
        self._buffer_rows, self._buffer_nbytes = tail.num_rows, tail.nbytes

    def _end(self) -> None:
        writer, self._pq = self._pq, None
        try:
            if writer is not None:
                self._pq = writer
                self._flush()
                self._pq = None
        finally:
            if writer is not None:
                writer.close()  # always: never leave a C++ writer to the garbage collector
            self._buffer, self._buffer_rows, self._buffer_nbytes = [], 0, 0

    def _estimate_bytes(self) -> int:
        written = super()._estimate_bytes()
        ratio = written / self._flushed_nbytes if self._flushed_nbytes else 1.0
        return written + int(self._buffer_nbytes * ratio)

    def _finish_sync(self, final_schema: pa.Schema, conform: Conform) -> list[PartFile]:
        """Rewrite every part whose schema is not the final one, one row group at a time."""
        wanted = schema_fingerprint(final_schema)
        done: list[PartFile] = []
        for part in self._parts:
            if part.schema_fingerprint == wanted:
                done.append(part)
            elif schema_fingerprint(self._file_schema_of(part.path)) == wanted:
                # rewritten by a run that died before its checkpoint: describe it afresh
                done.append(self._describe(part.path, part.rows, wanted))
            else:
                done.append(self._rewrite(part, final_schema, conform))
        return done

    def _rewritten_intact(self, part: PartFile) -> bool:
        """Accept a part whose footer holds the recorded row count (a finished rewrite)."""
        store = self._require_store()
        path = self._path(part.path)
        try:
            with store.open_read(path) as raw:
                return bool(pq.ParquetFile(raw).metadata.num_rows == part.rows)
        except (OSError, pa.ArrowException, SinkError):
            return False

    def _file_schema_of(self, name: str) -> pa.Schema:
        store = self._require_store()
        path = self._path(name)
        with os_errors(self.name, "read", path), store.open_read(path) as raw:
            return pq.read_schema(raw)

    def _describe(self, name: str, rows: int, fingerprint: str) -> PartFile:
        size, digest = file_digest(self._require_store(), self._path(name))
        return PartFile(
            path=name,
            rows=rows,
            bytes=size,
            sha256=digest,
            schema_fingerprint=fingerprint,
            format=self.file_format.name,
        )

    def _rewrite(self, part: PartFile, final_schema: pa.Schema, conform: Conform) -> PartFile:
        """Stream `part` through `conform` into a temp file, then replace it atomically."""
        store = self._require_store()
        source, tmp = self._path(part.path), self._path(part.path + ".tmp")
        try:
            rows, size, digest = self._conform_into(source, tmp, final_schema, conform)
            if rows != part.rows:
                raise SinkError(self.name, f"{source} has {rows} rows, not {part.rows}")
            store.replace(tmp, source)
        except BaseException:
            with contextlib.suppress(Exception):
                store.delete(tmp)  # the original part is untouched
            raise
        return PartFile(
            path=part.path,
            rows=rows,
            bytes=size,
            sha256=digest,
            schema_fingerprint=schema_fingerprint(final_schema),
            format=part.format,
        )

    def _conform_into(
        self, source: str, tmp: str, final_schema: pa.Schema, conform: Conform
    ) -> tuple[int, int, str]:
        """Write `source` conformed into `tmp`, one row group at a time; return rows, size, sha."""
        store = self._require_store()
        rows = 0
        with os_errors(self.name, "rewrite", source), store.open_read(source) as raw:
            reader = pq.ParquetFile(raw)
            with store.open_write(tmp) as sink:
                out = self._writer_for(sink, final_schema)
                try:
                    for index in range(reader.num_row_groups):
                        group = reader.read_row_group(index)
                        batches = [_conformed(b, final_schema, conform) for b in group.to_batches()]
                        table = pa.Table.from_batches(batches, schema=final_schema)
                        out.write_table(table, row_group_size=max(table.num_rows, 1))
                        sink.check()
                        rows += table.num_rows
                finally:
                    out.close()
        return rows, sink.bytes_written, sink.hexdigest()


def _conformed(batch: pa.RecordBatch, final_schema: pa.Schema, conform: Conform) -> pa.RecordBatch:
    result = conform(batch)
    if not result.schema.equals(final_schema):
        raise SinkError("parquet", "conform() returned a batch that does not match final_schema")
    return result
