"""The change set of two small nights, compared in memory without DuckDB.

A fleet's small accounts each diff a night of a few thousand images; DuckDB's instance and
its passes cost ~40 ms an account whatever the size, more than the comparison itself. Nights
of at most `DiffSettings.small_rows` images each, read from Parquet or Arrow, are compared here
under the same rules as `exporter.changes.diff` (DESIGN "Change data", decisions): fields equal as
values, null equal to null only, `uploaded` as instants, `meta` and `extra` as JSON values
(`canonical_json`). The rows held are those of the two nights (a few MB).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from exporter.changes import diff
from exporter.changes.diff import (
    CHANGES_SCHEMA,
    COMPARED_FIELDS,
    JSON_FIELDS,
    canonical_json,
)
from exporter.sinks.night import NightSource
from exporter.transform.schema import IMAGE_COLUMNS

_COLUMNS = {name: JSON_FIELDS.get(name, name) for name in COMPARED_FIELDS}
_SCHEMA = pa.schema([CHANGES_SCHEMA.field(name) for name in IMAGE_COLUMNS])
# Two nights compared by DuckDB in this process at once: each holds DuckDB's instance and its
# memory cap, so a fleet's large accounts finishing together would stack them; one at a time.
DUCKDB_COMPARISONS = threading.BoundedSemaphore(1)


def iter_night_changes(
    current: NightSource,
    previous: NightSource | None,
    *,
    settings: diff.DiffSettings | None = None,
    temp_directory: Path,
) -> Iterator[pa.RecordBatch]:
    """Yield the change set of `current` against `previous`: compared here when both nights
    are small (`DiffSettings.small_rows`), else by `exporter.changes.diff.iter_changes`,
    one comparison of two nights at a time per process (`DUCKDB_COMPARISONS`)."""
    settings = settings or diff.DiffSettings()
    if previous is not None and is_small(current, previous, settings.small_rows):
        yield from iter_small_changes(current, previous, settings.batch_rows)
        return
    # A first night (every image added) is read as it is, without comparing (see `diff`).
    with DUCKDB_COMPARISONS if previous is not None else contextlib.nullcontext():
        yield from diff.iter_changes(
            current, previous, settings=settings, temp_directory=temp_directory
        )


def night_rows(source: NightSource) -> int | None:
    """Return how many images a Parquet or Arrow night holds (None for other sources)."""
    if source.kind == "parquet":
        counts: list[int] = [pq.ParquetFile(path).metadata.num_rows for path in source.paths]
        return sum(counts)
    if source.kind == "arrow":
        table = source.table
        rows: int = table.num_rows if isinstance(table, pa.Table) else table.count_rows()
        return rows
    return None


def is_small(current: NightSource, previous: NightSource, limit: int) -> bool:
    """Return whether both nights can be compared here: each of at most `limit` images."""
    for source in (current, previous):
        rows = night_rows(source)
        if rows is None or rows > limit:
            return False
    return True


def _read(source: NightSource) -> pa.Table:
    """Return a night's core columns; a column the night predates (`extra_json` of a night
    written before it existed) is all null, as `exporter.changes.diff` reads it."""
    if source.kind == "arrow":
        table = source.table
        names = set(table.schema.names)
        columns = [c for c in IMAGE_COLUMNS if c in names]
        table = table.select(columns) if isinstance(table, pa.Table) else table.to_table(columns)
    else:
        parts = []
        for path in source.paths:
            names = set(pq.read_schema(path).names)
            part = pq.read_table(path, columns=[c for c in IMAGE_COLUMNS if c in names])
            parts.append(_complete(part))
        table = pa.concat_tables(parts)
    return _complete(table)


def _complete(table: pa.Table) -> pa.Table:
    """Return `table` under `_SCHEMA`, a missing column as nulls."""
    arrays = [
        table.column(f.name).cast(f.type)
        if f.name in table.schema.names
        else pa.nulls(table.num_rows, f.type)
        for f in _SCHEMA
    ]
    return pa.Table.from_arrays(arrays, schema=_SCHEMA)


def _differs(name: str, before: Any, after: Any) -> bool:
    if name in JSON_FIELDS and before != after:  # equal texts are one value: no parse needed
        return canonical_json(before) != canonical_json(after)
    return bool(before != after)


def iter_small_changes(
    current: NightSource, previous: NightSource, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """Yield the change set of `current` against `previous` as CHANGES_SCHEMA batches."""
    now, then = _read(current), _read(previous)
    now_ids, then_ids = now.column("id").to_pylist(), then.column("id").to_pylist()
    where = {image: row for row, image in enumerate(then_ids)}
    now_values = {f: now.column(c).to_pylist() for f, c in _COLUMNS.items()}
    then_values = {f: then.column(c).to_pylist() for f, c in _COLUMNS.items()}
    rows: list[int] = []
    kinds: list[str] = []
    fields: list[list[str]] = []
    for row, image in enumerate(now_ids):
        old = where.pop(image, None)
        if old is None:
            rows.append(row)
            kinds.append("added")
            fields.append([])
            continue
        changed = [
            f for f in COMPARED_FIELDS if _differs(f, then_values[f][old], now_values[f][row])
        ]
        if changed:
            rows.append(row)
            kinds.append("changed")
            fields.append(changed)
    removed = sorted(where.values())
    date = dt.date.fromisoformat(current.snapshot_date)
    since = dt.date.fromisoformat(previous.snapshot_date)
    parts: list[tuple[pa.Table, list[str], list[list[str]]]] = [
        (now.take(pa.array(rows, pa.int64())), kinds, fields),
        (then.take(pa.array(removed, pa.int64())), ["removed"] * len(removed), [[]] * len(removed)),
    ]
    for table, change, listed in parts:
        for start in range(0, table.num_rows, batch_rows):
            piece = table.slice(start, batch_rows)
            count = piece.num_rows
            constant = {
                "change": pa.array(change[start : start + count], pa.string()),
                "snapshot_date": pa.repeat(pa.scalar(date, pa.date32()), count),
                "previous_snapshot_date": pa.repeat(pa.scalar(since, pa.date32()), count),
                "changed_fields": pa.array(listed[start : start + count], pa.list_(pa.string())),
            }
            arrays = [
                piece.column(f.name).combine_chunks()
                if f.name in IMAGE_COLUMNS
                else constant[f.name]
                for f in CHANGES_SCHEMA
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=CHANGES_SCHEMA)
