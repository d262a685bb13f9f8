"""A published night as the sinks that wrote it read it back: where DuckDB finds its images.

The change diff, the batch run's de-duplication and the report read a night through one of
the sinks that wrote it (`ReadableNights.night_source`), never by testing format names: each
such sink says which kind of source it gives (`night_kind`), and the kinds are tried in
`NIGHT_KINDS` order, cheapest for DuckDB to read first (Parquet's columns and statistics, then
NDJSON's lines, then the DuckDB sink's table, then an Arrow dataset such as a Delta partition).
"""

from __future__ import annotations

import posixpath
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from exporter.store.base import Store
from exporter.store.layout import Layout

SourceKind = Literal["parquet", "ndjson", "duckdb", "arrow"]
NIGHT_KINDS: tuple[SourceKind, ...] = ("parquet", "ndjson", "duckdb", "arrow")


@dataclass(frozen=True)
class NightSource:
    """Where DuckDB reads one night's images: local part files, a DuckDB table, or Arrow.

    `paths` are local files (parts, or the one database file, whose `images` table holds the
    night's rows under its `snapshot_date`); `table` is a pyarrow dataset or table that DuckDB
    scans in place (Delta Lake reads come this way).
    """

    kind: SourceKind
    snapshot_date: str
    paths: tuple[str, ...] = ()
    table: Any = None


@dataclass(frozen=True, kw_only=True)
class PublishedNight:
    """A published snapshot (or a batch of new uploads following it), as its manifest says.

    `files` are (path in `directory`, format name) as the manifest lists them; `batch` names
    the batch of new uploads, None for the snapshot itself.
    """

    store: Store
    layout: Layout
    snapshot_date: str
    directory: str
    files: Sequence[tuple[str, str]] = ()
    batch: str | None = None


def files_source(
    night: PublishedNight, kind: SourceKind, formats: Iterable[str], scratch: Path
) -> NightSource | None:
    """Return the night's files of `formats` (format names) as a source of `kind`, or None
    when it has none; files on a bucket are copied into `scratch` for DuckDB to read."""
    wanted = set(formats)
    chosen = [path for path, fmt in night.files if fmt in wanted]
    if not chosen:
        return None
    paths = [local_copy(night.store, posixpath.join(night.directory, p), scratch) for p in chosen]
    return NightSource(kind, night.snapshot_date, tuple(paths))


def local_copy(store: Store, path: str, scratch: Path) -> str:
    """Return a local path of the stored file `path`: itself locally, else a copy in `scratch`."""
    local = store.local_path(path)
    if local is not None:
        return str(local)
    target = scratch / path.replace("/", "__")
    with store.open_read(path) as raw, open(target, "wb") as out:
        shutil.copyfileobj(raw, out, 1 << 20)
    return str(target)


__all__ = [
    "NIGHT_KINDS",
    "NightSource",
    "PublishedNight",
    "SourceKind",
    "files_source",
    "local_copy",
]
