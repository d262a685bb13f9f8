"""The change set of snapshot D against snapshot P, computed out of core by DuckDB.

A night is never loaded into Python objects: DuckDB reads both nights from whatever they
wrote (Parquet parts, NDJSON parts, the DuckDB sink's table) and streams the result as Arrow
batches. Values are compared as a warehouse sees them (DESIGN "Change data", decisions):

    filename, creator, require_signed_urls, variants   equal as values; null equals null
                                                       (creator absent is null; "" differs)
    uploaded                                           equal as instants (TIMESTAMPTZ)
    meta                                               equal as JSON values: types kept
                                                       (1, 1.0, true, "1" differ), object key
                                                       order ignored; null equals null only

Two passes keep the memory small. Pass 1 joins the nights on `id` carrying only a 64-bit hash
per compared field (about 80 bytes a row instead of the whole row), and keeps the ids that
were added, removed, or whose hashes differ. Pass 2 joins that (usually small) set back to both
nights for the columns, and decides `meta` by canonical JSON only where the texts differ
(`canonical_json`, a Python function DuckDB calls on those rows alone). A 64-bit hash collision
would hide one field's change: at 3,000,000 ids the chance is about 1 in 6 million million.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

COMPARED_FIELDS = ("filename", "creator", "require_signed_urls", "uploaded", "variants", "meta")
CHANGE_KINDS = ("added", "removed", "changed")

CHANGES_SCHEMA = pa.schema(
    [
        pa.field("change", pa.string(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("snapshot_date", pa.date32(), nullable=False),
        pa.field("previous_snapshot_date", pa.date32()),
        pa.field("changed_fields", pa.list_(pa.string()), nullable=False),
        pa.field("account_id", pa.string()),
        pa.field("filename", pa.string()),
        pa.field("creator", pa.string()),
        pa.field("require_signed_urls", pa.bool_()),
        pa.field("uploaded", pa.timestamp("us", tz="UTC")),
        pa.field("variants", pa.list_(pa.string())),
        pa.field("meta_json", pa.string()),
    ]
)

SourceKind = Literal["parquet", "ndjson", "duckdb", "arrow"]

# The core columns of a night, typed alike whatever format the night was written in.
_CORE = (
    "account_id::VARCHAR AS account_id, id::VARCHAR AS id, filename::VARCHAR AS filename, "
    "creator::VARCHAR AS creator, require_signed_urls::BOOLEAN AS require_signed_urls, "
    "uploaded::TIMESTAMPTZ AS uploaded, variants::VARCHAR[] AS variants"
)
_NDJSON_COLUMNS = (
    "{account_id: 'VARCHAR', id: 'VARCHAR', filename: 'VARCHAR', creator: 'VARCHAR', "
    "require_signed_urls: 'BOOLEAN', uploaded: 'TIMESTAMPTZ', variants: 'VARCHAR[]', "
    "meta: 'JSON'}"
)


@dataclass(frozen=True)
class NightSource:
    """Where DuckDB reads one night's images: local part files, a DuckDB table, or Arrow.

    `paths` are local files (parts, or the one database file); `table` is a pyarrow dataset
    or table that DuckDB scans in place (Delta Lake reads come this way).
    """

    kind: SourceKind
    snapshot_date: str
    paths: tuple[str, ...] = ()
    table: Any = None


def canonical_json(text: str | None) -> str | None:
    """Return one spelling per JSON value: keys sorted, no spaces, numbers' types kept.

    `1` and `1.0` stay apart (int vs float), as do `true` and `"1"`; integers of any size
    stay exact. Text that is not JSON is returned as it is (compared as text).
    """
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _file_list(paths: Sequence[str]) -> str:
    return "[" + ", ".join(_literal(p) for p in paths) + "]"


def night_relation(con: duckdb.DuckDBPyConnection, source: NightSource, name: str) -> None:
    """Create view `name` over one night: the core columns plus `meta_json` (JSON text)."""
    date = _literal(source.snapshot_date)
    if source.kind == "parquet":
        body = (
            f"SELECT {_CORE}, meta_json::VARCHAR AS meta_json "
            f"FROM read_parquet({_file_list(source.paths)}, hive_partitioning = false)"
        )
    elif source.kind == "ndjson":
        body = (
            f"SELECT {_CORE}, meta::VARCHAR AS meta_json FROM read_json("
            f"{_file_list(source.paths)}, format = 'newline_delimited', "
            f"columns = {_NDJSON_COLUMNS}, compression = 'auto', hive_partitioning = false)"
        )
    elif source.kind == "duckdb":
        alias = f"{name}_db"
        con.execute(f"ATTACH {_literal(source.paths[0])} AS {alias} (READ_ONLY)")
        body = (
            f"SELECT {_CORE}, meta_json::VARCHAR AS meta_json FROM {alias}.images "
            f"WHERE snapshot_date = {date}::DATE"
        )
    else:
        con.register(f"{name}_arrow", source.table)
        body = f"SELECT {_CORE}, meta_json::VARCHAR AS meta_json FROM {name}_arrow"
    con.execute(f"CREATE TEMP VIEW {name} AS {body}")


def _hashed(name: str) -> str:
    """Return the SELECT of a night's ids with one hash over every compared field."""
    return f"SELECT id, hash({', '.join(_columns())}) AS h FROM {name}"


def _columns() -> tuple[str, ...]:
    return tuple("meta_json" if f == "meta" else f for f in COMPARED_FIELDS)


@dataclass(frozen=True)
class DiffSettings:
    """DuckDB's resources for one diff: its memory cap (spills beyond it) and threads.

    Sized so the diff stays near the walk's own peak: on the nasty catalog (1 KB meta on 12%
    of images, 300,000 images) recomputing a change set peaked at 324-344 MB with 192 MB,
    2 threads and 65,536-row batches, and at 215-239 MB with these, for the same CPU; most
    of it was result batches of wide rows, not DuckDB's own buffers.

    Not lower: 64 MB ran out of memory (DuckDB's error, the export failed) on a night where
    200,000 of 303,000 nasty images changed, and on a night of 1% churn it saved ~20 MB of
    the export's peak (251 -> 228-234 MB at 300,000 images): DuckDB's instance alone holds
    ~30 MB. A first night runs no DuckDB at all (`_iter_added`).
    """

    memory_limit: str = "128MB"
    threads: int = 2
    batch_rows: int = 8_192


def connect(settings: DiffSettings, temp_directory: Path) -> duckdb.DuckDBPyConnection:
    """Return an in-memory DuckDB connection capped as `settings` says, spilling to disk."""
    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = {_literal(settings.memory_limit)}")
    con.execute(f"SET threads = {max(1, min(settings.threads, os.cpu_count() or 1))}")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = {_literal(str(temp_directory))}")
    return con


def iter_changes(
    current: NightSource,
    previous: NightSource | None,
    *,
    settings: DiffSettings | None = None,
    temp_directory: Path,
) -> Iterator[pa.RecordBatch]:
    """Yield the change set of `current` against `previous` as CHANGES_SCHEMA batches.

    With no previous night every image is `added` (the first snapshot of a request).
    """
    settings = settings or DiffSettings()
    if previous is None and current.kind in ("parquet", "arrow"):
        yield from _iter_added(current, settings.batch_rows)
        return
    con = connect(settings, temp_directory)
    try:
        night_relation(con, current, "cur")
        date = f"{_literal(current.snapshot_date)}::DATE"
        if previous is None:
            query = (
                f"SELECT 'added' AS change, id, {date} AS snapshot_date, "
                "NULL::DATE AS previous_snapshot_date, []::VARCHAR[] AS changed_fields, "
                "account_id, filename, creator, require_signed_urls, uploaded, variants, "
                "meta_json FROM cur"
            )
        else:
            night_relation(con, previous, "prev")
            _find_candidates(con)
            query = _changes_query(date, _literal(previous.snapshot_date) + "::DATE")
        reader = con.sql(query).to_arrow_reader(settings.batch_rows)
        for batch in reader:
            if previous is not None:
                batch = _settle_meta(batch)
            if batch.num_rows:
                yield _conform(batch)
    finally:
        con.close()


# The columns a change row carries of its image (an `added` row copies them from its
# night), in CHANGES_SCHEMA's order; also the columns of Delta's `images_current`.
IMAGE_COLUMNS = (
    "id",
    "account_id",
    "filename",
    "creator",
    "require_signed_urls",
    "uploaded",
    "variants",
    "meta_json",
)


# A row group whose core columns hold up to this many bytes is read whole, then sliced:
# on the nasty catalog (10,000-row groups, ~5 MB of core columns each) that peaked 80 MB
# lower than `iter_batches`, whose reads left the heap fragmented (~+145 MB at 300,000
# images). Larger groups are streamed by `iter_batches`, a batch at a time.
ROW_GROUP_READ_BYTES = 32 << 20


def _iter_added(current: NightSource, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Yield every image of `current` as an `added` row, streamed by Arrow without DuckDB.

    A first night compares nothing, so it needs no join: its core columns are read a row
    group at a time (parts one after another) and completed with constant columns, in
    batches of `batch_rows` rows whatever the night's row groups. DuckDB's scan of the same
    night peaked ~90 MB higher on the nasty catalog (300,000 images), on top of what the
    walk left.
    """
    date = pa.scalar(dt.date.fromisoformat(current.snapshot_date), pa.date32())
    for batch in _rebatch(_night_batches(current, batch_rows), batch_rows):
        rows = batch.num_rows
        constant = {
            "change": pa.repeat(pa.scalar("added", pa.string()), rows),
            "snapshot_date": pa.repeat(date, rows),
            "previous_snapshot_date": pa.nulls(rows, pa.date32()),
            "changed_fields": pa.repeat(pa.scalar([], pa.list_(pa.string())), rows),
        }
        arrays = [
            batch.column(f.name) if f.name in IMAGE_COLUMNS else constant[f.name]
            for f in CHANGES_SCHEMA
        ]
        yield pa.RecordBatch.from_arrays(arrays, schema=CHANGES_SCHEMA)


def _rebatch(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Yield the rows of `batches` typed as CHANGES_SCHEMA, `size` rows a batch (the last
    one fewer), so a change part's row groups do not follow the night's."""
    schema = pa.schema([CHANGES_SCHEMA.field(name) for name in IMAGE_COLUMNS])
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        batch = pa.RecordBatch.from_arrays(
            [batch.column(f.name).cast(f.type) for f in schema], schema=schema
        )
        while batch.num_rows:
            take = min(size - count, batch.num_rows)
            held.append(batch.slice(0, take))
            batch = batch.slice(take)
            count += take
            if count == size:
                yield held[0] if len(held) == 1 else pa.concat_batches(held)
                held, count = [], 0
    if count:
        yield held[0] if len(held) == 1 else pa.concat_batches(held)


def _night_batches(source: NightSource, batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Yield the core columns of a Parquet or Arrow night, `batch_rows` rows at a time."""
    columns = list(IMAGE_COLUMNS)
    if source.kind == "arrow":
        table = source.table
        if isinstance(table, pa.Table):
            yield from table.select(columns).to_batches(max_chunksize=batch_rows)
        else:
            yield from table.to_batches(columns=columns, batch_size=batch_rows)
        return
    for path in source.paths:
        with pq.ParquetFile(path) as part:
            metadata = part.metadata
            for index in range(metadata.num_row_groups):
                group = metadata.row_group(index)
                size = sum(
                    group.column(c).total_uncompressed_size
                    for c in range(group.num_columns)
                    if group.column(c).path_in_schema.split(".")[0] in IMAGE_COLUMNS
                )
                if size > ROW_GROUP_READ_BYTES:
                    yield from part.iter_batches(
                        batch_size=batch_rows, row_groups=[index], columns=columns
                    )
                    continue
                table = part.read_row_group(index, columns=columns, use_threads=False)
                yield from table.to_batches(max_chunksize=batch_rows)
                del table


def _find_candidates(con: duckdb.DuckDBPyConnection) -> None:
    """Pass 1: table `candidates` of ids added, removed, or whose row hashes differ."""
    con.execute(
        "CREATE TEMP TABLE candidates AS "
        "SELECT coalesce(d.id, p.id) AS id, "
        "CASE WHEN p.id IS NULL THEN 'added' WHEN d.id IS NULL THEN 'removed' "
        "ELSE 'changed' END AS change "
        f"FROM ({_hashed('cur')}) d FULL OUTER JOIN ({_hashed('prev')}) p ON d.id = p.id "
        "WHERE d.id IS NULL OR p.id IS NULL OR d.h <> p.h"
    )


def _changes_query(date: str, previous_date: str) -> str:
    """Pass 2: the candidates with their columns, and P's `meta_json` where texts differ.

    A field is listed when its values differ; `meta` whenever the texts differ, and
    `_settle_meta` then drops it where both are the same JSON value (only those rows reach
    Python). A row hash that differed by collision alone yields no field and is dropped.
    """
    names = [
        f"CASE WHEN d.{c} IS DISTINCT FROM p.{c} THEN '{f}' END"
        for f, c in zip(COMPARED_FIELDS, _columns(), strict=True)
    ]
    changed = f"list_filter([{', '.join(names)}], lambda f: f IS NOT NULL)"
    columns = ", ".join(
        f"CASE WHEN x.change = 'removed' THEN p.{c} ELSE d.{c} END AS {c}"
        for c in ("account_id", "filename", "creator", "require_signed_urls", "uploaded")
    )
    return (
        f"SELECT change, id, {date} AS snapshot_date, {previous_date} AS previous_snapshot_date,"
        " changed_fields, account_id, filename, creator, require_signed_urls, uploaded, variants,"
        " meta_json, previous_meta_json FROM ("
        "SELECT x.change, x.id, CASE WHEN x.change = 'changed' THEN "
        f"{changed} ELSE []::VARCHAR[] END AS changed_fields, {columns}, "
        "CASE WHEN x.change = 'removed' THEN p.variants ELSE d.variants END AS variants, "
        "CASE WHEN x.change = 'removed' THEN p.meta_json ELSE d.meta_json END AS meta_json, "
        "CASE WHEN x.change = 'changed' AND d.meta_json <> p.meta_json "
        "THEN p.meta_json END AS previous_meta_json "
        "FROM candidates x LEFT JOIN cur d ON x.id = d.id LEFT JOIN prev p ON x.id = p.id"
        ") WHERE change <> 'changed' OR len(changed_fields) > 0"
    )


def _settle_meta(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Drop `meta` from `changed_fields` where both texts are the same JSON value.

    Rows left with no changed field (only the key order or spelling moved) are dropped.
    """
    previous = batch.column("previous_meta_json")
    rows = pc.indices_nonzero(pc.is_valid(previous)).to_pylist()
    if not rows:
        return batch
    fields = batch.column("changed_fields").to_pylist()
    current = batch.column("meta_json")
    keep = [True] * batch.num_rows
    for row in rows:
        if canonical_json(current[row].as_py()) == canonical_json(previous[row].as_py()):
            fields[row] = [f for f in fields[row] if f != "meta"]
            keep[row] = bool(fields[row])
    index = batch.schema.get_field_index("changed_fields")
    batch = batch.set_column(index, "changed_fields", pa.array(fields, pa.list_(pa.string())))
    return batch.filter(pa.array(keep))


def _conform(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Return the batch under CHANGES_SCHEMA (DuckDB's Arrow types differ in details)."""
    arrays = [batch.column(f.name).cast(f.type) for f in CHANGES_SCHEMA]
    return pa.RecordBatch.from_arrays(arrays, schema=CHANGES_SCHEMA)


__all__ = [
    "CHANGES_SCHEMA",
    "CHANGE_KINDS",
    "COMPARED_FIELDS",
    "DiffSettings",
    "NightSource",
    "canonical_json",
    "iter_changes",
    "night_relation",
]
