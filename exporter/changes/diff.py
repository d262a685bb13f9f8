"""The change set of snapshot D against snapshot P, computed out of core by DuckDB.

A night is never loaded into Python objects: DuckDB reads both nights from whatever they
wrote (Parquet parts, NDJSON parts, the DuckDB sink's table) and writes the result to Parquet
files, which Arrow reads back in batches once DuckDB is closed. Values are compared as a
warehouse sees them (DESIGN "Change data", decisions):

    filename, creator, require_signed_urls, variants   equal as values; null equals null
                                                       (creator absent is null; "" differs)
    uploaded                                           equal as instants (TIMESTAMPTZ)
    meta, extra (the fields the reference does not     equal as JSON values: types kept
    list, as one object)                               (1, 1.0, true, "1" differ), object key
                                                       order ignored; null equals null only

Two passes keep the memory small. Pass 1 joins the nights on `id` carrying only three 64-bit
hashes per row (meta, extra, and the other compared fields: about 100 bytes a row instead of
the whole row), and keeps the ids that were added, removed, or whose hashes differ. Pass 2
never joins two whole rows: it stages P's per-field hashes of the changed ids (and P's JSON
text of meta or extra where it differs), then streams D's rows and P's removed rows past those
narrow tables. A field is listed where its hashes differ, and `meta` or `extra` is then kept
only where the texts are different JSON values (`canonical_json`, in Python, on those rows
alone). A 64-bit hash collision would
hide one field's change: at 3,000,000 ids the chance is about 1 in 6 million million.
A night with many changed images streams D's rows once per bucket of their keys
(`DiffSettings.bucket_rows`), so that the narrow tables' share of a join stays small.

DuckDB runs under a memory cap and spills beyond it, but some of its operators cannot; a
statement that runs out of memory runs again with one thread, then under the next, larger
cap (`DiffSettings.memory_limits`, `_Caps`). The result is written to a file first, so
nothing has been yielded when that happens.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exporter.errors import SinkError, first_line
from exporter.sinks.night import NightSource
from exporter.sinks.sql import file_list as _file_list
from exporter.sinks.sql import literal as _literal
from exporter.transform.schema import CORE, EXTRA_JSON, IMAGE_COLUMNS

if TYPE_CHECKING:  # imported where a diff runs: a first night never loads DuckDB (~25 MB)
    import duckdb

log = logging.getLogger("exporter.diff")

COMPARED_FIELDS = (
    "filename",
    "creator",
    "require_signed_urls",
    "uploaded",
    "variants",
    "meta",
    "extra",
)
# The fields compared as JSON values, and the column holding each one's text.
JSON_FIELDS = {"meta": "meta_json", "extra": EXTRA_JSON}
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
        pa.field(EXTRA_JSON, pa.string()),
    ]
)

# The core columns of a night, typed alike whatever format the night was written in.
_CORE = (
    "account_id::VARCHAR AS account_id, id::VARCHAR AS id, filename::VARCHAR AS filename, "
    "creator::VARCHAR AS creator, require_signed_urls::BOOLEAN AS require_signed_urls, "
    "uploaded::TIMESTAMPTZ AS uploaded, variants::VARCHAR[] AS variants"
)
_JSON_COLUMNS = "meta_json::VARCHAR AS meta_json, {} AS extra_json"
# An NDJSON line carries the extra fields as its own top-level keys: `extra_json` is the line
# less the keys of the core columns (a JSON merge patch with null removes a key), null if {}.
_LINE_KEYS = [field.ndjson_key or name for name, field in CORE.items() if field.ndjson != "spread"]
_NOT_EXTRA = "{" + ",".join(f'"{key}":null' for key in _LINE_KEYS) + "}"
# One parse of each line into the core fields (`->` would parse the line once per field).
_LINE_STRUCT = (
    '{"account_id":"VARCHAR","id":"VARCHAR","filename":"VARCHAR","creator":"VARCHAR",'
    '"require_signed_urls":"BOOLEAN","uploaded":"VARCHAR","variants":"VARCHAR[]","meta":"JSON"}'
)
_NDJSON_SELECT = (
    "s.account_id, s.id, s.filename, s.creator, s.require_signed_urls, "
    "s.uploaded::TIMESTAMPTZ AS uploaded, s.variants, "
    "nullif(s.meta::VARCHAR, 'null') AS meta_json, "
    f"nullif(json_merge_patch(json, '{_NOT_EXTRA}')::VARCHAR, '{{}}') AS extra_json"
)


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


def night_relation(con: duckdb.DuckDBPyConnection, source: NightSource, name: str) -> None:
    """Create view `name` over one night: the core columns plus `meta_json` and `extra_json`
    (JSON text; `extra_json` null throughout for a night written before it existed)."""
    date = _literal(source.snapshot_date)
    if source.kind == "ndjson":
        lines = (
            f"read_ndjson_objects({_file_list(source.paths)}, compression = 'auto', "
            "hive_partitioning = false)"
        )
        body = (
            f"SELECT {_NDJSON_SELECT} FROM "
            f"(SELECT json, from_json(json, '{_LINE_STRUCT}') AS s FROM {lines})"
        )
        con.execute(f"CREATE TEMP VIEW {name} AS {body}")
        return
    if source.kind == "parquet":
        relation = f"read_parquet({_file_list(source.paths)}, hive_partitioning = false)"
        names = pq.read_schema(source.paths[0]).names if source.paths else []
        where = ""
    elif source.kind == "duckdb":
        alias = f"{name}_db"
        con.execute(f"ATTACH {_literal(source.paths[0])} AS {alias} (READ_ONLY)")
        relation, where = f"{alias}.images", f" WHERE snapshot_date = {date}::DATE"
        names = [c[0] for c in con.execute(f"DESCRIBE {relation}").fetchall()]
    else:
        con.register(f"{name}_arrow", source.table)
        relation, where, names = f"{name}_arrow", "", source.table.schema.names
    extra = "extra_json::VARCHAR" if EXTRA_JSON in names else "NULL::VARCHAR"
    body = f"SELECT {_CORE}, {_JSON_COLUMNS.format(extra)} FROM {relation}{where}"
    con.execute(f"CREATE TEMP VIEW {name} AS {body}")


def _columns() -> tuple[str, ...]:
    return tuple(JSON_FIELDS.get(f, f) for f in COMPARED_FIELDS)


def _field_hash(column: str, alias: str = "") -> str:
    """Return the SQL hash of one compared column, null apart from every value.

    DuckDB hashes a null, [] and [null] alike (a row hash missed variants going from null
    to []): every value is hashed with a null flag, and lists with their length (`to_json`
    would do as well, but its buffers broke a 64 MB cap).
    """
    value = f"{alias}{column}"
    if column == "variants":
        return f"hash({value} IS NULL, len({value}), {value})"
    return f"hash({value} IS NULL, {value})"


@dataclass(frozen=True)
class DiffSettings:
    """DuckDB's resources for one diff: its memory caps, tried in turn, and threads.

    Each statement runs under the first of `_Caps` it fits in (a cap with `threads`, then
    with one thread), the result written to files, so nothing is yielded before the last
    ran. 48 MB holds a night with ~1% changed at 3,000,000 nasty images since pass 1 joins
    on a fixed-width key (`_key`); pass 2 of ~10% changed needs one thread there, and a
    mass-change night the next cap. DuckDB's instance alone holds ~28 MB.
    A first night runs no DuckDB at all (`_iter_added`), except one DuckDB must read (NDJSON,
    a DuckDB table), which is streamed as it is read and so gets one cap that holds
    (`streamed_limit`). Pass 2 runs in buckets of `bucket_rows` added or changed images: a
    night with more changes than images then stays under the first cap, for one more read of
    D per bucket. Measurements: docs/PERFORMANCE.md.
    """

    memory_limits: tuple[str, ...] = ("48MB", "96MB", "256MB", "1GB")
    streamed_limit: str = "96MB"  # a first night read by DuckDB (NDJSON, DuckDB table)
    # Pass 2 streams D's rows once per bucket of at most this many added or changed images
    # (up to `max_buckets`): its joins' tables then fit the first cap on a mass-change night.
    bucket_rows: int = 50_000
    max_buckets: int = 64
    small_rows: int = (
        20_000  # nights of at most this many images each: `exporter.changes.smalldiff`
    )
    threads: int = 2
    batch_rows: int = 8_192


def _threads(settings: DiffSettings) -> int:
    return max(1, min(settings.threads, os.cpu_count() or 1))


def connect(
    settings: DiffSettings, memory_limit: str, temp_directory: Path
) -> duckdb.DuckDBPyConnection:
    """Return an in-memory DuckDB connection capped at `memory_limit`, spilling to disk."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = {_literal(memory_limit)}")
    con.execute(f"SET threads = {_threads(settings)}")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = {_literal(str(temp_directory))}")
    return con


# madvise(2)'s MADV_PAGEOUT (Linux >= 5.4): reclaim a range's pages, keeping their content.
_MADV_PAGEOUT = 21


def release_duckdb_pages() -> None:
    """Hand back the pages of DuckDB's library once the diff's connection is closed.

    The joins touch ~40 MB of DuckDB's code and read-only data, which stay in the process's
    RSS though nothing runs them until the next diff: the read-back and the change parts'
    writer then peaked on top of them (the mass-change night at 194-205 MB). MADV_PAGEOUT
    asks the kernel to reclaim those pages: clean pages of the file are dropped and read
    again from it if DuckDB runs again (another account of a fleet, a sink's load); a page
    whose content exists only in memory (relocated data) is kept or swapped, never lost.
    Where madvise cannot (not Linux, a kernel before 5.4) nothing changes.
    """
    module_file = getattr(sys.modules.get("_duckdb"), "__file__", None)
    if module_file is None:
        return
    library = os.path.realpath(module_file)  # as /proc/self/maps names it
    try:
        madvise = ctypes.CDLL(None).madvise
        with open("/proc/self/maps", encoding="utf-8") as maps:
            ranges = [line.split(maxsplit=1)[0] for line in maps if line.rstrip().endswith(library)]
    except (AttributeError, OSError):
        return
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for span in ranges:
        start, end = (int(bound, 16) for bound in span.split("-"))
        madvise(start, end - start, _MADV_PAGEOUT)  # a failure leaves the pages where they are


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
    import duckdb

    if previous is None:  # a first night DuckDB must read (NDJSON, a DuckDB table)
        yield from _iter_streamed(current, settings, temp_directory)
        return
    try:
        results = _joined(current, previous, settings, temp_directory)
    except duckdb.Error as exc:  # e.g. out of memory under the last cap: one line, exit 5
        raise _failed(current, exc) from exc
    release_duckdb_pages()
    pool = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())  # see `_READ_BACK`
    try:
        for batch in _read_results(results, settings.batch_rows):
            batch = _settle_json(batch)
            if batch.num_rows:
                yield _conform(batch)
    finally:
        pa.set_memory_pool(pool)


# _READ_BACK: the joins' result is read back by Arrow once DuckDB is closed, and Arrow then
# allocates from the system allocator (which returns freed buffers, with `release_heap`'s
# threshold): reading back 36,381 change rows of a 3,000,000-image night through DuckDB
# under the default pool went 130 -> 198 MB, 184 MB under the system pool, 172 MB by Arrow.


def _iter_streamed(
    current: NightSource, settings: DiffSettings, temp_directory: Path
) -> Iterator[pa.RecordBatch]:
    """Yield every image of a night only DuckDB reads as an `added` row, streamed as it is
    read (so nothing could run again: one cap that holds, `streamed_limit`)."""
    import duckdb

    date = f"{_literal(current.snapshot_date)}::DATE"
    con = connect(settings, settings.streamed_limit, temp_directory)
    try:
        night_relation(con, current, "cur")
        query = (
            f"SELECT 'added' AS change, id, {date} AS snapshot_date, "
            "NULL::DATE AS previous_snapshot_date, []::VARCHAR[] AS changed_fields, "
            f"{', '.join(_CARRIED)} FROM cur"
        )
        for batch in con.sql(query).to_arrow_reader(settings.batch_rows):
            if batch.num_rows:
                yield _conform(batch)
    except duckdb.Error as exc:
        raise _failed(current, exc) from exc
    finally:
        con.close()


def _read_results(paths: Sequence[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Yield the rows of the joins' result files, a row group (`_RESULT_GROUPS`) at a time."""
    for path in paths:
        with pq.ParquetFile(path) as part:
            for index in range(part.metadata.num_row_groups):
                group = part.read_row_group(index, use_threads=False)
                yield from group.to_batches(max_chunksize=batch_rows)
                del group


def _failed(current: NightSource, exc: Exception) -> SinkError:
    return SinkError("changes", f"the diff of {current.snapshot_date} failed: {first_line(exc)}")


# The result's row groups are read back one at a time: small, so wide rows stay few MB (8,192
# rows peaked 205 MB on the mass-change night, 2,048 rows 193 MB).
_RESULT_GROUPS = "ROW_GROUP_SIZE 2048"


def _joined(
    current: NightSource,
    previous: NightSource,
    settings: DiffSettings,
    temp_directory: Path,
) -> list[str]:
    """Run the joins (each under the first of `_Caps` it fits in) and return the files that
    hold the change set; DuckDB is closed before they are read (`_READ_BACK`)."""
    if not settings.memory_limits:
        raise ValueError("DiffSettings.memory_limits is empty")
    date = f"{_literal(current.snapshot_date)}::DATE"
    results_directory = Path(tempfile.mkdtemp(prefix="diff-", dir=temp_directory))
    con = connect(settings, settings.memory_limits[0], temp_directory)
    try:
        night_relation(con, current, "cur")
        night_relation(con, previous, "prev")
        caps = _Caps(con, settings)
        caps.run(_candidates_sql())
        caps.run(_previous_sql())
        previous_date = _literal(previous.snapshot_date) + "::DATE"
        (changing,) = con.execute(_CHANGING).fetchone() or (0,)
        buckets = min(settings.max_buckets, max(1, -(-int(changing) // settings.bucket_rows)))
        # COPY streams the rows to disk: only the joins' narrow build sides stay in memory
        # (one query at a time: together their build sides broke a 64 MB cap).
        results = []
        for name, query in _changes_queries(date, previous_date, buckets).items():
            result = results_directory / f"{name}.parquet"
            copy = f"COPY ({query}) TO {_literal(str(result))} (FORMAT parquet, {_RESULT_GROUPS})"
            caps.run(copy, result)
            results.append(str(result))
        return results
    finally:
        con.close()


class _Caps:
    """The resources the diff's statements run under, in turn: each of the settings' memory
    caps with their threads, then with one thread (a thread's buffers are per thread).

    A statement that runs out of memory runs again under the next, and those after it stay
    there; the tables made before it are kept, so nothing runs twice but that statement.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, settings: DiffSettings) -> None:
        threads = _threads(settings)
        self.steps = list(
            dict.fromkeys((cap, n) for cap in settings.memory_limits for n in (threads, 1))
        )
        self.index = 0
        self.con = con

    def run(self, statement: str, output: Path | None = None) -> None:
        import duckdb

        while True:
            if output is not None:
                output.unlink(missing_ok=True)  # a COPY cut short
            try:
                self.con.execute(statement)
                return
            except duckdb.OutOfMemoryException:
                if self.index + 1 == len(self.steps):
                    raise
                (cap, threads), (bigger, fewer) = self.steps[self.index : self.index + 2]
                self.index += 1
                log.info(
                    "the change diff ran out of memory under %s with %d thread(s); "
                    "going on under %s with %d",
                    cap,
                    threads,
                    bigger,
                    fewer,
                )
                self.con.execute(f"SET memory_limit = {_literal(bigger)}")
                self.con.execute(f"SET threads = {fewer}")


# A row group whose core columns hold up to this many bytes is read whole, then sliced:
# on the nasty catalog (10,000-row groups, ~5 MB of core columns each) that peaked 80 MB
# lower than `iter_batches`, whose reads left the heap fragmented (~+145 MB at 300,000
# images). Larger groups are streamed by `iter_batches`, a batch at a time.
ROW_GROUP_READ_BYTES = 32 << 20

_CARRIED = tuple(c for c in IMAGE_COLUMNS if c != "id")  # what a change row copies after its id


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
        names = batch.schema.names
        batch = pa.RecordBatch.from_arrays(
            [
                batch.column(f.name).cast(f.type)
                if f.name in names
                else pa.nulls(batch.num_rows, f.type)
                for f in schema
            ],
            schema=schema,
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
    """Yield the core columns of a Parquet or Arrow night, `batch_rows` rows at a time (a
    night written before `extra_json` existed yields none: `_rebatch` fills in nulls)."""
    if source.kind == "arrow":
        table = source.table
        columns = [c for c in IMAGE_COLUMNS if c in table.schema.names]
        if isinstance(table, pa.Table):
            yield from table.select(columns).to_batches(max_chunksize=batch_rows)
        else:
            yield from table.to_batches(columns=columns, batch_size=batch_rows)
        return
    for path in source.paths:
        with pq.ParquetFile(path) as part:
            columns = [c for c in IMAGE_COLUMNS if c in part.schema_arrow.names]
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


def _candidates_sql() -> str:
    """Pass 1: table `candidates` of the keys (`_key`) of ids added, removed, or whose hashes
    differ, with whether their meta and extra texts differ."""
    rest = [_field_hash(c) for c in _columns() if c not in JSON_FIELDS.values()]
    hashed = "SELECT {} AS k, hash({}) AS h, {} FROM {{}}".format(
        _key(),
        ", ".join(rest),
        ", ".join(f"{_field_hash(c)} AS h_{f}" for f, c in JSON_FIELDS.items()),
    )
    differs = ", ".join(f"d.h_{f} <> p.h_{f} AS {f}_differs" for f in JSON_FIELDS)
    any_differs = " OR ".join(f"d.h_{f} <> p.h_{f}" for f in JSON_FIELDS)
    return (
        "CREATE TEMP TABLE candidates AS "
        "SELECT coalesce(d.k, p.k) AS k, "
        "CASE WHEN p.k IS NULL THEN 'added' WHEN d.k IS NULL THEN 'removed' "
        f"ELSE 'changed' END AS change, {differs} "
        f"FROM ({hashed.format('cur')}) d FULL OUTER JOIN ({hashed.format('prev')}) p "
        f"ON d.k = p.k WHERE d.k IS NULL OR p.k IS NULL OR d.h <> p.h OR {any_differs}"
    )


# Pass 1 joins the nights on a 128-bit digest of the id instead of the id itself: its rows are
# then of fixed width (no string heap), and the join spills within a smaller cap. Two ids
# share a digest with a chance of about 1 in 10^25 at 3,000,000 ids.
def _key(alias: str = "") -> str:
    return f"md5_number({alias}id)"


def _field_hashes(alias: str) -> str:
    return ", ".join(
        f"{_field_hash(c, alias + '.')} AS h_{f}"
        for f, c in zip(COMPARED_FIELDS, _columns(), strict=True)
    )


def _previous_sql() -> str:
    """Table `previous`: P's per-field hashes of the changed ids, and its `meta_json` and
    `extra_json` where those texts differ (narrow: pass 2 never holds two whole rows side by
    side)."""
    texts = ", ".join(
        f"CASE WHEN x.{f}_differs THEN p.{c} END AS {c}" for f, c in JSON_FIELDS.items()
    )
    return (
        f"CREATE TEMP TABLE previous AS SELECT x.k, {_field_hashes('p')}, {texts} "
        f"FROM prev p JOIN candidates x ON {_key('p.')} = x.k "
        "WHERE x.change = 'changed'"
    )


# How many images pass 2 streams from D: the added and changed ones.
_CHANGING = "SELECT count(*) FROM candidates WHERE change <> 'removed'"


def _changes_queries(date: str, previous_date: str, buckets: int = 1) -> dict[str, str]:
    """Pass 2: D's added and changed rows (one query per bucket of keys), and P's removed
    rows.

    A field is listed where its hashes differ; `meta` and `extra` are settled later
    (`_settle_json`) from `previous_meta_json` and `previous_extra_json`. A row whose hashes
    differed by collision alone lists no field and is dropped.
    """
    previous_texts = ", ".join(f"p.{c} AS previous_{c}" for c in JSON_FIELDS.values())
    no_texts = ", ".join(f"NULL::VARCHAR AS previous_{c}" for c in JSON_FIELDS.values())
    differs = [f"CASE WHEN d.h_{f} <> p.h_{f} THEN '{f}' END" for f in COMPARED_FIELDS]
    changed = f"list_filter([{', '.join(differs)}], lambda f: f IS NOT NULL)"

    def current(bucket: str) -> str:
        return (
            f"SELECT x.change, d.id, {date} AS snapshot_date, "
            f"{previous_date} AS previous_snapshot_date, "
            f"CASE WHEN x.change = 'changed' THEN {changed} ELSE []::VARCHAR[] END "
            "AS changed_fields, " + ", ".join(f"d.{c}" for c in _CARRIED) + f", {previous_texts} "
            f"FROM (SELECT *, {_field_hashes('cur')} FROM cur) d "
            f"JOIN (SELECT * FROM candidates WHERE change <> 'removed'{bucket}) x "
            f"ON {_key('d.')} = x.k "
            f"LEFT JOIN (SELECT * FROM previous WHERE true{bucket}) p ON x.k = p.k"
        )

    keys = [f" AND k % {buckets} = {i}" for i in range(buckets)] if buckets > 1 else [""]
    queries = {
        f"current-{i:02d}": f"SELECT * FROM ({current(bucket)}) "
        "WHERE change <> 'changed' OR len(changed_fields) > 0"
        for i, bucket in enumerate(keys)
    }
    removed = (
        f"SELECT 'removed' AS change, p.id, {date} AS snapshot_date, "
        f"{previous_date} AS previous_snapshot_date, []::VARCHAR[] AS changed_fields, "
        + ", ".join(f"p.{c}" for c in _CARRIED)
        + f", {no_texts} "
        f"FROM prev p JOIN candidates x ON {_key('p.')} = x.k "
        "WHERE x.change = 'removed'"
    )
    return {**queries, "removed": removed}


def _settle_json(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Drop `meta` or `extra` from `changed_fields` where both texts are the same JSON value.

    Rows left with no changed field (only the key order or spelling moved) are dropped.
    """
    fields: list[list[str]] | None = None
    keep = [True] * batch.num_rows
    for field, column in JSON_FIELDS.items():
        previous = batch.column(f"previous_{column}")
        rows = pc.indices_nonzero(pc.is_valid(previous)).to_pylist()
        if not rows:
            continue
        if fields is None:
            fields = batch.column("changed_fields").to_pylist()
        current = batch.column(column)
        for row in rows:
            if canonical_json(current[row].as_py()) == canonical_json(previous[row].as_py()):
                fields[row] = [f for f in fields[row] if f != field]
                keep[row] = bool(fields[row])
    if fields is None:
        return batch
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
    "JSON_FIELDS",
    "DiffSettings",
    "canonical_json",
    "iter_changes",
    "night_relation",
]
