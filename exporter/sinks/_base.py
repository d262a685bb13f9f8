"""What every sink shares: part records, file formats, options, the Sink protocol, a file base.

A sink's life in one run (the pipeline drives it; `Sink` below has the exact calls):

    open -> write* / commit_part* -> finish -> [files sealed and published] -> publish

`finish` returns the files the sink adds to the snapshot directory (their `FileFormat` says
how `inspect` counts their rows); `publish` commits anything that lives outside that
directory (DuckDB's table) once the snapshot is published, and may run again after a kill.

Two optional protocols say what else a sink does with published nights: `ReadableNights`
(the diff, the batch run and the report read a night back through the sink that wrote it) and
`TableKeeper` (a sink keeping tables derived from nights is handed each published change set
and batch of new uploads). They are found by `isinstance`, never by a sink's name.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import anyio.to_thread
import orjson
import pyarrow as pa

from exporter.errors import SinkError
from exporter.options import SinkOptions as SinkOptions  # declared with the other options
from exporter.sinks.night import NightSource, PublishedNight, SourceKind
from exporter.store.base import HashingWriter, Store, os_errors
from exporter.store.layout import Layout

Conform = Callable[[pa.RecordBatch], pa.RecordBatch]


def schema_fingerprint(schema: pa.Schema) -> str:
    """Return a short digest of the column names, types, nullability and field metadata.

    Field metadata counts: the normalizer records each meta column's original path there.
    """
    shape = [
        [
            f.name,
            str(f.type),
            f.nullable,
            sorted((k.hex(), v.hex()) for k, v in (f.metadata or {}).items()),
        ]
        for f in schema
    ]
    return hashlib.sha256(orjson.dumps(shape)).hexdigest()[:16]


@dataclass(frozen=True)
class FileFormat:
    """A kind of file a sink adds to a snapshot: its name suffix, and how to count its rows.

    The manifest names each file's format (`suffix` without its dot: "parquet", "ndjson.gz"),
    and `inspect` finds the format by that name among the installed sinks to count rows.
    """

    suffix: str
    count_rows: Callable[[IO[bytes]], int]

    @property
    def name(self) -> str:
        return self.suffix.removeprefix(".")


@dataclass(frozen=True, kw_only=True)
class PartFile:
    """One committed file: its path relative to the snapshot directory, for manifest/resume."""

    path: str
    rows: int
    bytes: int
    sha256: str
    schema_fingerprint: str
    format: str  # FileFormat.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartFile:
        return cls(
            path=str(data["path"]),
            rows=int(data["rows"]),
            bytes=int(data["bytes"]),
            sha256=str(data["sha256"]),
            schema_fingerprint=str(data["schema_fingerprint"]),
            format=str(data["format"]),
        )


@dataclass(frozen=True, kw_only=True)
class Publication:
    """What a sink's `publish` step is given, after the snapshot's files are published; with
    `batch`, what `TableKeeper.load_new_uploads` is given after a batch's files are.

    `directory` and `parts` are the sink's own, as `open` and the checkpoint know them, so a
    resumed run can publish without writing anything again.
    """

    store: Store
    layout: Layout
    snapshot_date: str
    schema: pa.Schema  # the snapshot's final schema
    directory: str
    parts: Sequence[PartFile]
    batch: str | None = None  # a batch of new uploads following snapshot_date, not a snapshot
    run_id: str = ""  # the manifest's run id, whole: a table's commit records it


# What a table-keeping sink's `publish` says when handed a batch: loading it as a snapshot
# would replace D's rows with the batch's.
BATCH_TO_PUBLISH = "a batch of new uploads is loaded by load_new_uploads, not publish"


@dataclass(frozen=True, kw_only=True)
class PublishedChanges:
    """A change set once published under `directory`: what `TableKeeper.load_changes` loads.

    `parts` are its Parquet files (names in `directory`), rows of `schema`; `run_id` is the
    run of the snapshot it describes (a table's commit may record it).
    """

    store: Store
    layout: Layout
    snapshot_date: str
    run_id: str
    directory: str
    parts: Sequence[str]
    schema: pa.Schema

    @property
    def paths(self) -> list[str]:
        """Return the parts' paths on the store."""
        return [posixpath.join(self.directory, name) for name in self.parts]


@runtime_checkable
class Sink(Protocol):
    """An output of the export: Arrow batches in, durable part files out.

    Call order: `open`, then `write`* with `commit_part` whenever `should_rotate()` is true at
    a page boundary, then `finish` once (or `abort` on failure), then, once the snapshot is
    published, `publish`. `parts` is what a checkpoint stores; passing it back to
    `open(..., committed=...)` resumes the sink.

    `file_formats` lists every format whose files `finish` may return (empty for a sink that
    adds no file to the snapshot); a class attribute, so `inspect` reads it without options.
    """

    name: str
    file_formats: tuple[FileFormat, ...]

    @property
    def parts(self) -> list[PartFile]:
        """Return the parts committed so far (durable, safe to name in a checkpoint)."""
        ...

    async def open(
        self, store: Store, directory: str, schema: pa.Schema, committed: Sequence[PartFile] = ()
    ) -> None: ...

    async def write(self, batch: pa.RecordBatch) -> None: ...

    def should_rotate(self) -> bool:
        """Return True once the open part is full by rows or bytes."""
        ...

    async def commit_part(self) -> list[PartFile]:
        """Close the open part durably; return the files it produced (usually one, or none)."""
        ...

    async def finish(self, final_schema: pa.Schema, conform: Conform) -> list[PartFile]:
        """Commit the last part, rewrite parts to `final_schema`; return the snapshot's files."""
        ...

    async def abort(self) -> None:
        """Drop uncommitted output; committed parts stay for --resume."""
        ...

    async def publish(self, publication: Publication) -> None:
        """Commit what lives outside the snapshot directory, after the snapshot is published.

        Called once per run after the files are published, and again by `--resume` when a
        run was killed before it returned: it must be idempotent. Sinks whose output is the
        snapshot's files have nothing to do. A batch of new uploads is not a snapshot: it
        reaches only a `TableKeeper`, through `load_new_uploads`.
        """
        ...


@runtime_checkable
class ReadableNights(Protocol):
    """A sink whose published nights DuckDB can read back (the diff, new uploads, the report).

    `night_kind` is the kind of source `night_source` gives; a night written by several such
    sinks is read through the one whose kind comes first in `night.NIGHT_KINDS`.
    """

    night_kind: SourceKind

    def night_source(self, night: PublishedNight, scratch: Path) -> NightSource | None:
        """Return where DuckDB reads `night` as this sink wrote it (None: it holds nothing of
        it); a file on a bucket is copied into `scratch` first."""
        ...


@runtime_checkable
class TableKeeper(Protocol):
    """A sink keeping tables derived from nights (DuckDB's and Delta's change log, history,
    current images, new uploads), outside the snapshot directories.

    Each method is called once what it loads is published, may be called again for the same
    night after a kill (so it must be idempotent), and blocks: callers run it in a thread.
    The sink is re-opened from the night's request (`exporter.sinks.night_sinks`), so an
    option saying where its tables live is declared with `fingerprint=`, as `duckdb.path` is.
    """

    def load_changes(self, changes: PublishedChanges) -> None:
        """Load a published change set (replacing that date's rows) and what derives from it."""
        ...

    def load_new_uploads(self, publication: Publication) -> None:
        """Load a published batch of new uploads (`publication.batch`), replacing its rows."""
        ...

    def drop_new_uploads(
        self, store: Store, layout: Layout, snapshot_date: str, batches: Sequence[str]
    ) -> None:
        """Remove the rows of `batches` of `snapshot_date`, retired from the output."""
        ...


_PART_RE = re.compile(r"^part-(\d{5,})")


class FilePartSink:
    """Base of sinks writing numbered part files `part-NNNNN<suffix>` into one directory.

    A batch whose schema differs from the open file's (the column plan grew) closes that file
    and opens the next number; all files closed since the last `commit_part` become committed
    together. Subclasses implement `_begin`, `_append`, `_end` and `_estimate_bytes`; every
    call runs in a worker thread so disk work overlaps with the network.
    """

    name = "files"
    file_format: FileFormat  # what this instance writes (one of `file_formats`)
    file_formats: tuple[FileFormat, ...] = ()
    split_on_schema_change = True

    def __init__(self, options: SinkOptions | None = None) -> None:
        self.options = options or SinkOptions()
        self._store: Store | None = None
        self._directory = ""
        self._schema: pa.Schema | None = None
        self._parts: list[PartFile] = []
        self._pending: list[PartFile] = []
        self._next_index = 0
        self._file: contextlib.ExitStack | None = None
        self._writer: HashingWriter | None = None
        self._file_path = ""
        self._file_schema: pa.Schema | None = None
        self._file_rows = 0

    # -- protocol ---------------------------------------------------------------------------

    @property
    def parts(self) -> list[PartFile]:
        return list(self._parts)

    @property
    def directory(self) -> str:
        return self._directory

    async def open(
        self, store: Store, directory: str, schema: pa.Schema, committed: Sequence[PartFile] = ()
    ) -> None:
        self._store, self._directory, self._schema = store, directory, schema
        self._parts = list(committed)
        self._next_index = len(self._parts)
        await anyio.to_thread.run_sync(self._prepare_directory)

    async def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            await anyio.to_thread.run_sync(self._write_sync, batch)

    def should_rotate(self) -> bool:
        rows = self._file_rows + sum(p.rows for p in self._pending)
        size = self._estimate_bytes() + sum(p.bytes for p in self._pending)
        return rows >= self.options.part_rows or size >= self.options.part_bytes

    async def commit_part(self) -> list[PartFile]:
        return await anyio.to_thread.run_sync(self._commit_sync)

    async def finish(self, final_schema: pa.Schema, conform: Conform) -> list[PartFile]:
        await self.commit_part()
        self._parts = await anyio.to_thread.run_sync(self._finish_sync, final_schema, conform)
        return self.parts

    async def abort(self) -> None:
        await anyio.to_thread.run_sync(self._abort_sync)

    async def publish(self, publication: Publication) -> None:
        """Do nothing: the parts are the snapshot's files, published by the store."""

    @property
    def suffix(self) -> str:
        return self.file_format.suffix

    # -- work done in a thread --------------------------------------------------------------

    def _prepare_directory(self) -> None:
        """Check committed parts are intact; delete files written after the last commit."""
        store = self._require_store()
        store.make_dirs(self._directory)
        known = {p.path for p in self._parts}
        for part in self._parts:
            path = self._path(part.path)
            if not store.exists(path):
                raise SinkError(self.name, f"committed part {path} is missing")
            if store.size(path) != part.bytes and not self._rewritten_intact(part):
                raise SinkError(self.name, f"committed part {path} was changed")
        for entry in store.list_dir(self._directory):
            if _PART_RE.match(entry) and entry not in known and self._owns(entry):
                store.delete(self._path(entry))

    def _owns(self, entry: str) -> bool:
        return entry.endswith((self.suffix, self.suffix + ".tmp"))

    def _write_sync(self, batch: pa.RecordBatch) -> None:
        if self._writer is not None and self.split_on_schema_change:
            assert self._file_schema is not None
            if not batch.schema.equals(self._file_schema, check_metadata=True):
                self._close_file()
        if self._writer is None:
            self._open_file(batch.schema)
        assert self._writer is not None
        with os_errors(self.name, "write", self._file_path):
            self._append(batch)
            self._writer.check()
        self._file_rows += batch.num_rows

    def _open_file(self, schema: pa.Schema) -> None:
        store = self._require_store()
        tag = f"-{self.options.run_tag}" if self.options.run_tag else ""
        name = f"part-{self._next_index:05d}{tag}{self.suffix}"
        self._next_index += 1
        self._file_path = self._path(name)
        stack = contextlib.ExitStack()
        self._writer = stack.enter_context(store.open_write(self._file_path))
        self._file, self._file_schema, self._file_rows = stack, schema, 0
        with os_errors(self.name, "write", self._file_path):
            self._begin(self._writer, schema)
            self._writer.check()

    def _close_file(self) -> None:
        """Finish the format, fsync and close the open file; remember it as pending."""
        if self._writer is None or self._file is None:
            return
        writer, stack, schema = self._writer, self._file, self._file_schema
        self._writer, self._file = None, None
        try:
            with stack, os_errors(self.name, "write", self._file_path):  # exit: flush + fsync
                self._end()
        except BaseException:
            with contextlib.suppress(Exception):
                self._require_store().delete(self._file_path)  # incomplete: never committed
            raise
        assert schema is not None
        self._pending.append(
            PartFile(
                path=posixpath.basename(self._file_path),
                rows=self._file_rows,
                bytes=writer.bytes_written,
                sha256=writer.hexdigest(),
                schema_fingerprint=self._fingerprint(schema),
                format=self.file_format.name,
            )
        )
        self._file_rows = 0

    def _commit_sync(self) -> list[PartFile]:
        self._close_file()
        done, self._pending = self._pending, []
        self._parts.extend(done)
        return done

    def _finish_sync(self, final_schema: pa.Schema, conform: Conform) -> list[PartFile]:
        return self._parts

    def _abort_sync(self) -> None:
        if self._store is None:
            return  # never opened: nothing written
        store = self._store
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._end()
            aborted = RuntimeError("sink aborted")
            with contextlib.suppress(Exception):  # close without fsync: the file is dropped
                self._file.__exit__(RuntimeError, aborted, None)
            self._writer, self._file = None, None
            with contextlib.suppress(Exception):
                store.delete(self._file_path)
        for part in self._pending:
            with contextlib.suppress(Exception):
                store.delete(self._path(part.path))
        self._pending = []

    # -- helpers and hooks ------------------------------------------------------------------

    def _rewritten_intact(self, part: PartFile) -> bool:
        """Return True if a part whose size changed is a complete rewrite by `finish`.

        A run killed while `finish` rewrote its parts leaves some of them replaced (the
        replace is atomic) but the checkpoint still names the old sizes; `finish` describes
        them afresh. Formats that never rewrite have nothing to accept.
        """
        return False

    def _fingerprint(self, schema: pa.Schema) -> str:
        return schema_fingerprint(schema)

    def _path(self, name: str) -> str:
        return posixpath.join(self._directory, name) if self._directory else name

    def _require_store(self) -> Store:
        if self._store is None:
            raise RuntimeError(f"{self.name} sink used before open()")
        return self._store

    def _begin(self, writer: HashingWriter, schema: pa.Schema) -> None:
        raise NotImplementedError

    def _append(self, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        raise NotImplementedError

    def _estimate_bytes(self) -> int:
        """Return the size the open file will have if closed now (written + buffered)."""
        return self._writer.bytes_written if self._writer is not None else 0
