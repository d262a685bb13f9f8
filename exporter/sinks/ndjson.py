"""NDJSON parts, plain or gzip: one image per line, `meta` spliced from the raw `meta_json`,
the fields the reference does not list spliced from `extra_json` as the API sent them."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO, Any, cast

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from exporter.sinks._base import FileFormat, FilePartSink, SinkOptions
from exporter.sinks.night import NightSource, PublishedNight, SourceKind, files_source
from exporter.store.base import HashingWriter
from exporter.transform.schema import CORE

# A line is the core columns in order: values encoded by orjson, then the one raw JSON column
# (`meta_json`, as `meta`) spliced in as its exact bytes, then the members of the spread
# column's object (`extra_json`: the image's other top-level fields) as the line's own keys.
VALUE_FIELDS = [name for name, field in CORE.items() if field.ndjson == "value"]
VALUE_KEYS = [CORE[name].ndjson_key or name for name in VALUE_FIELDS]
[RAW_FIELD] = [name for name, field in CORE.items() if field.ndjson == "raw"]
_RAW_HEAD = b',"' + (CORE[RAW_FIELD].ndjson_key or RAW_FIELD).encode() + b'":'
[SPREAD_FIELD] = [name for name, field in CORE.items() if field.ndjson == "spread"]
NDJSON_SHAPE = "ndjson-v1"  # the line shape does not follow the meta__ column plan


def count_lines(raw: IO[bytes]) -> int:
    """Return the lines of an NDJSON file (every line ends with a newline)."""
    lines = 0
    while block := raw.read(1 << 20):
        lines += block.count(b"\n")
    return lines


def count_gzip_lines(raw: IO[bytes]) -> int:
    """Return the lines of a gzipped NDJSON file, decompressed as a stream."""
    with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
        return count_lines(cast(IO[bytes], stream))


NDJSON = FileFormat(".ndjson", count_lines)
NDJSON_GZ = FileFormat(".ndjson.gz", count_gzip_lines)


def _column(batch: pa.RecordBatch, name: str) -> list[Any]:
    index = batch.schema.get_field_index(name)
    return batch.column(index).to_pylist() if index >= 0 else [None] * batch.num_rows


def _raw(batch: pa.RecordBatch, name: str) -> list[bytes | None]:
    """Return each row's JSON text of a column as UTF-8 bytes, straight from Arrow's buffers."""
    index = batch.schema.get_field_index(name)
    if index < 0 or batch.column(index).null_count == batch.num_rows:
        return [None] * batch.num_rows
    raw: list[bytes | None] = pc.cast(batch.column(index), pa.binary()).to_pylist()
    return raw


def _one_line(text: bytes) -> bytes:
    """Return JSON text without line breaks (a pretty-printed value would break lines)."""
    if b"\n" in text or b"\r" in text:
        return orjson.dumps(orjson.loads(text))
    return text


def encode_lines(batch: pa.RecordBatch) -> bytes:
    """Return the NDJSON lines of a batch: core fields, `uploaded` RFC 3339 UTC, raw `meta`,
    then the image's extra fields.

    The core fields are encoded by orjson; the meta object is appended as the exact bytes of
    `meta_json`, so keys keep their order, numbers their spelling, and nothing is re-encoded.
    The members of `extra_json` follow the same way, as top-level keys of the line.
    """
    columns = [_column(batch, name) for name in VALUE_FIELDS]
    metas = _raw(batch, RAW_FIELD)
    extras = _raw(batch, SPREAD_FIELD)
    out = bytearray()
    for row, meta, extra in zip(zip(*columns, strict=True), metas, extras, strict=True):
        head = orjson.dumps(dict(zip(VALUE_KEYS, row, strict=True)), option=orjson.OPT_UTC_Z)
        out += head[:-1]
        out += _RAW_HEAD
        out += _one_line(meta) if meta is not None else b"null"
        if extra is not None and len(extra) > 2:  # not null, not {}
            out += b","
            out += _one_line(extra)[1:-1]
        out += b"}\n"
    return bytes(out)


class NdjsonSink(FilePartSink):
    """Writes `part-NNNNN.ndjson` (or `.ndjson.gz` with `ndjson_gzip`)."""

    name = "ndjson"
    file_formats = (NDJSON, NDJSON_GZ)
    split_on_schema_change = False  # lines do not depend on the meta__ columns
    night_kind: SourceKind = "ndjson"

    def __init__(self, options: SinkOptions | None = None) -> None:
        super().__init__(options)
        self.file_format = NDJSON_GZ if self.options.ndjson_gzip else NDJSON
        self._out: gzip.GzipFile | HashingWriter | None = None
        self._gzip: gzip.GzipFile | None = None

    def night_source(self, night: PublishedNight, scratch: Path) -> NightSource | None:
        """Return the night's NDJSON parts, plain or gzipped, whichever the night wrote."""
        return files_source(night, "ndjson", (f.name for f in self.file_formats), scratch)

    def _begin(self, writer: HashingWriter, schema: pa.Schema) -> None:
        if self.options.ndjson_gzip:
            level = self.options.compression_level or 6
            # mtime=0: identical input gives identical bytes (stable sha256 across re-runs)
            self._gzip = gzip.GzipFile(fileobj=writer, mode="wb", compresslevel=level, mtime=0)
            self._out = self._gzip
        else:
            self._out = writer

    def _append(self, batch: pa.RecordBatch) -> None:
        assert self._out is not None
        self._out.write(encode_lines(batch))

    def _end(self) -> None:
        if self._gzip is not None:
            self._gzip.close()  # writes the trailer; the underlying file stays open
        self._gzip, self._out = None, None

    def _fingerprint(self, schema: pa.Schema) -> str:
        return NDJSON_SHAPE
