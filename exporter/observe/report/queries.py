"""The report's figures: manifests read as they are, the latest night queried by DuckDB.

Nothing here builds HTML, and no night is loaded into Python objects: the nights' history comes
from their manifests (a few KB each), and the latest snapshot is aggregated by DuckDB over its
files (Parquet parts, else NDJSON parts, else the DuckDB sink's table, as the change diff reads
them) under a memory cap, so each query returns a handful of rows whatever the catalog's size.

Meta columns are read where the snapshot keeps them flattened (`meta__*` in Parquet); NDJSON
and DuckDB nights answer from `meta_json` by JSON pointer (RFC 6901), one spelling for any key.
The fields the API added (`extra__*`, from `extra_json`) are read the same way, apart from meta.
The new-upload batches following the latest snapshot are counted from their manifests.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.changes.change_set import change_dates, find_night_source
from exporter.changes.diff import CHANGE_KINDS, night_relation
from exporter.errors import IntegrityError, first_line
from exporter.sinks import NightSource
from exporter.sinks.sql import file_list, identifier, literal
from exporter.snapshot.manifest import CHANGES, Manifest, Uploaded, read_manifest, sealed_manifests
from exporter.store import Layout, Store
from exporter.store.layout import ROOT, account_layouts, run_key_date
from exporter.transform.schema import EXTRA_JSON, EXTRA_PREFIX, META_JSON, display_path

if TYPE_CHECKING:
    import duckdb

JsonDict = dict[str, Any]
TOP_VALUES_DISTINCT = 12  # a string column with at most this many values shows its top values
TOP_VALUES_COLUMNS = 12  # ... for at most this many columns (the most covered first)
TOP_CREATORS = 20
VARIANTS_CAP = 10  # images with at least this many variants share one bar ("10+")
DEFAULT_DEPTH = 5  # normalize.depth when a manifest does not say
DAILY_SPAN_DAYS = 92  # uploads spanning more than this are counted per month, else per day


@dataclass(frozen=True)
class ReportSettings:
    """DuckDB's resources for the report: well under an export's own peak (~200-300 MB)."""

    memory_limit: str = "128MB"
    threads: int = 2


@dataclass(frozen=True)
class Night:
    """One published snapshot, as its manifest says."""

    date: str
    images: int
    started_at: str
    finished_at: str
    duration_s: float
    requests: int
    throttled: int
    retries: int
    complete: bool | None
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class ChangeNight:
    """One published change set's counts."""

    date: str
    previous_date: str | None
    added: int
    removed: int
    changed: int


@dataclass(frozen=True)
class DriftEntry:
    """One column change a night's manifest reported against the night before."""

    date: str
    change: str
    column: str
    path: str
    type_from: str | None
    type_to: str | None
    reason: str

    @property
    def extra(self) -> bool:
        """True for a column of a field the API added (not meta)."""
        return self.column.startswith(EXTRA_PREFIX)


@dataclass(frozen=True)
class MetaColumn:
    """A meta column of the latest snapshot: its type, and how many images have a value."""

    name: str
    path: str
    type: str
    images: int
    share: float
    distinct: int | None  # approximate; strings only


@dataclass(frozen=True)
class Batch:
    """One published batch of new uploads following the latest snapshot, as its manifest says."""

    name: str
    images: int
    oldest: str | None  # the batch's oldest and newest `uploaded`
    newest: str | None
    finished_at: str


@dataclass(frozen=True)
class Catalog:
    """What the latest snapshot holds, aggregated by DuckDB."""

    date: str
    images: int
    uploads: list[tuple[str, int]]
    uploads_by: str  # "month" or "day"
    no_upload_time: int
    meta: list[MetaColumn]
    extra: list[MetaColumn]  # the `extra__` columns: top-level fields the API added
    top_values: list[tuple[str, list[tuple[str, int]]]]
    without_meta: int
    creators: list[tuple[str, int]]
    creators_distinct: int
    no_creator: int
    signed: int
    variants: list[tuple[str, int]]


@dataclass(frozen=True)
class AccountFigures:
    """Everything the page shows of one account (or of a single export's OUT)."""

    account_id: str
    nights: list[Night]
    changes: list[ChangeNight]
    drift: list[DriftEntry]
    catalog: Catalog | None
    unfinished: list[str]  # dates of runs left in staging after the latest snapshot
    batches: list[Batch] = field(default_factory=list)  # new uploads since the latest, oldest first

    @property
    def new_uploads(self) -> int:
        """Return the images the latest snapshot's batches of new uploads hold."""
        return sum(b.images for b in self.batches)

    @property
    def latest(self) -> Night | None:
        return self.nights[-1] if self.nights else None

    @property
    def last_run(self) -> str:
        """Return what OUT tells of the last run: published, changes withheld, or unfinished.

        An exit code is not kept in OUT; these are the endings a run leaves a trace of.
        """
        if self.unfinished:
            return f"unfinished run of {self.unfinished[-1]} (resume it)"
        latest = self.latest
        if latest is None:
            return "nothing published"
        if len(self.nights) > 1 and not any(c.date == latest.date for c in self.changes):
            return "published; changes withheld (exit 9)"
        return "published (exit 0)"


@dataclass(frozen=True)
class Report:
    """The figures of OUT: one account, or a fleet's accounts (sorted by id)."""

    out: str
    generated_at: str
    accounts: list[AccountFigures] = field(default_factory=list)
    fleet: bool = False


# -- manifests -------------------------------------------------------------------------------


def _instant(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def night_of(manifest: Manifest) -> Night:
    """Return a snapshot manifest's figures."""
    counts = manifest.counts
    started, finished = manifest.started_at, manifest.finished_at
    findings = manifest.findings
    warnings = list(findings.warnings)
    if findings.anomalies:
        warnings.append(f"{findings.anomalies} meta value(s) could not be parsed (kept raw)")
    if findings.capped_keys:
        warnings.append(f"{len(findings.capped_keys)} meta key(s) over the column cap")
    return Night(
        date=manifest.snapshot_date,
        images=manifest.rows,
        started_at=started,
        finished_at=finished,
        duration_s=(_instant(finished) - _instant(started)).total_seconds(),
        requests=int(counts.get("requests", 0)),
        throttled=int(counts.get("throttled", 0)),
        retries=int(counts.get("retries", 0)),
        complete=manifest.complete,
        warnings=tuple(warnings),
    )


def drift_of(manifest: Manifest) -> list[DriftEntry]:
    """Return the drift entries of a snapshot manifest."""
    return [
        DriftEntry(
            date=manifest.snapshot_date,
            change=str(d.get("change", "")),
            column=str(d.get("column", "")),
            path=display_path([str(k) for k in d.get("path") or ()]),
            type_from=d.get("from"),
            type_to=d.get("to"),
            reason=str(d.get("reason", "")),
        )
        for d in manifest.drift.changes
    ]


def batch_of(manifest: Manifest) -> Batch:
    """Return a batch manifest's figures."""
    return Batch(
        name=manifest.new_uploads.batch if manifest.new_uploads else "",
        images=manifest.rows,
        oldest=manifest.uploaded.min,
        newest=manifest.uploaded.max,
        finished_at=manifest.finished_at,
    )


def batches_of(store: Store, layout: Layout, snapshot_date: str) -> list[Batch]:
    """Return the sealed batches of new uploads following one snapshot, oldest first."""
    names = layout.batch_names(store.list_dir(layout.new_uploads(snapshot_date)))
    found = [read_manifest(store, layout.batch(snapshot_date, name)) for name in names]
    # By publication, not name: two batches of one second sort by their random run tags.
    return sorted((batch_of(m) for m in found if m is not None), key=lambda b: b.finished_at)


def change_nights(store: Store, layout: Layout) -> list[ChangeNight]:
    """Return every sealed change set's counts, oldest first."""
    found = []
    for date in change_dates(store, layout):
        manifest = read_manifest(store, layout.changes(date))
        if manifest is None:
            continue
        added, removed, changed = (int(manifest.counts.get(k, 0)) for k in CHANGE_KINDS)
        previous = manifest.changes.previous_snapshot_date if manifest.changes else None
        found.append(ChangeNight(date, previous, added, removed, changed))
    return found


def unfinished_runs(store: Store, layout: Layout, after: str | None) -> list[str]:
    """Return the dates of staged runs not published (on or after the latest snapshot)."""
    dates = {run_key_date(name) for name in store.list_dir(layout.staging)}
    return sorted(d.isoformat() for d in dates if d and (after is None or d.isoformat() >= after))


# -- the latest snapshot, by DuckDB ----------------------------------------------------------


def json_pointer(path: Sequence[str]) -> str:
    """Return the RFC 6901 pointer of a meta path (`~` -> `~0`, `/` -> `~1`)."""
    return "".join("/" + str(k).replace("~", "~0").replace("/", "~1") for k in path)


def connect(settings: ReportSettings, scratch: Path) -> duckdb.DuckDBPyConnection:
    """Return an in-memory DuckDB connection under the report's memory cap."""
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = {literal(settings.memory_limit)}")
    con.execute(f"SET threads = {max(1, settings.threads)}")
    con.execute(f"SET temp_directory = {literal(str(scratch))}")
    return con


def _night_view(con: duckdb.DuckDBPyConnection, source: NightSource) -> set[str]:
    """Create view `night` over the latest snapshot; return its flattened columns' names."""
    if source.kind == "parquet":
        files = file_list(source.paths)
        con.execute(
            "CREATE TEMP VIEW night AS SELECT * FROM "
            f"read_parquet({files}, union_by_name = true, hive_partitioning = false)"
        )
        return {str(row[0]) for row in con.execute("DESCRIBE night").fetchall()}
    night_relation(con, source, "night")
    return set()


def _is_extra(column: Mapping[str, Any]) -> bool:
    return str(column["name"]).startswith(EXTRA_PREFIX)


def _meta_expression(column: Mapping[str, Any], flattened: set[str], depth: int) -> str:
    """Return the SQL of one meta (or extra) column's cells, as the snapshot's Parquet would
    hold them.

    From `meta_json` (`extra_json`), an object above the flatten depth is null (its keys have
    their own columns), as `normalize` leaves it.
    """
    name = str(column["name"])
    if name in flattened:
        return identifier(name)
    source = EXTRA_JSON if _is_extra(column) else META_JSON
    pointer = literal(json_pointer(column["path"]))
    value = f"json_extract_string({source}, {pointer})"
    if len(column["path"]) < depth:
        return f"CASE WHEN json_type({source}, {pointer}) = 'OBJECT' THEN NULL ELSE {value} END"
    return value


def _meta_columns(
    con: duckdb.DuckDBPyConnection, manifest: Manifest, flattened: set[str]
) -> tuple[list[MetaColumn], list[MetaColumn], dict[str, str]]:
    """Return the meta and the extra columns' coverage and (strings) approximate distinct
    values, and the SQL of each column's cells (for one column at a time)."""
    columns = [c for c in manifest.schema if c.get("path")]
    depth = int(manifest.request.get("normalize", {}).get("depth") or DEFAULT_DEPTH)
    expressions = {str(c["name"]): _meta_expression(c, flattened, depth) for c in columns}
    meta = _coverage(con, [c for c in columns if not _is_extra(c)], flattened, depth)
    extra = _coverage(con, [c for c in columns if _is_extra(c)], flattened, depth)
    return meta, extra, expressions


def _cells(
    columns: Sequence[Mapping[str, Any]], flattened: set[str], depth: int
) -> tuple[str, dict[str, str]]:
    """Return a relation over `night` and the SQL of each column's cells in it.

    The columns read from `meta_json`/`extra_json` are extracted by one list of JSON pointers,
    so each document is parsed once, not once per column: an expression per column holds a
    parse per column per vector, which overran the memory cap from a few thousand nasty
    NDJSON images.
    """
    cells = {str(c["name"]): identifier(str(c["name"])) for c in columns}
    lists = []
    for source in (META_JSON, EXTRA_JSON):
        read = [c for c in columns if str(c["name"]) not in flattened]
        read = [c for c in read if (EXTRA_JSON if _is_extra(c) else META_JSON) == source]
        if not read:
            continue
        pointers = "[" + ", ".join(literal(json_pointer(c["path"])) for c in read) + "]"
        values, types = f"{source}_values", f"{source}_types"
        lists.append(f"json_extract_string({source}, {pointers}) AS {values}")
        lists.append(f"json_type({source}, {pointers}) AS {types}")
        for i, c in enumerate(read, start=1):
            value = f"{values}[{i}]"
            if len(c["path"]) < depth:
                value = f"CASE WHEN {types}[{i}] = 'OBJECT' THEN NULL ELSE {value} END"
            cells[str(c["name"])] = value
    relation = f"(SELECT *, {', '.join(lists)} FROM night)" if lists else "night"
    return relation, cells


def _coverage(
    con: duckdb.DuckDBPyConnection,
    columns: Sequence[Mapping[str, Any]],
    flattened: set[str],
    depth: int,
) -> list[MetaColumn]:
    """Return the columns' coverage and distinct values, most covered first, by one query."""
    if not columns:
        return []
    relation, cells = _cells(columns, flattened, depth)
    selects = ["count(*)"]
    for c in columns:
        expression = cells[str(c["name"])]
        selects.append(f"count({expression})")
        strings = c.get("type") == "string"
        selects.append(f"approx_count_distinct({expression})" if strings else "NULL")
    row = con.execute(f"SELECT {', '.join(selects)} FROM {relation}").fetchone()
    assert row is not None
    total = int(row[0]) or 1
    found = []
    for i, c in enumerate(columns):
        images, distinct = int(row[1 + 2 * i]), row[2 + 2 * i]
        found.append(
            MetaColumn(
                name=str(c["name"]),
                path=display_path(c["path"]),
                type=str(c.get("type", "")),
                images=images,
                share=images / total,
                distinct=None if distinct is None else int(distinct),
            )
        )
    found.sort(key=lambda m: (-m.images, m.path))
    return found


def _top_values(
    con: duckdb.DuckDBPyConnection, meta: Sequence[MetaColumn], expressions: Mapping[str, str]
) -> list[tuple[str, list[tuple[str, int]]]]:
    """Return the most frequent values of the low-cardinality string columns.

    One query per column: as one UNION ALL, DuckDB scans them all at once and breaks its
    memory cap on a large night, for no gain in time (docs/PERFORMANCE.md).
    """
    chosen = [m for m in meta if m.distinct is not None and 0 < m.distinct <= TOP_VALUES_DISTINCT]
    found = []
    for m in chosen[:TOP_VALUES_COLUMNS]:
        expression = expressions[m.name]
        rows = con.execute(
            f"SELECT {expression}::VARCHAR AS v, count(*) AS n FROM night "
            f"WHERE {expression} IS NOT NULL GROUP BY v ORDER BY n DESC, v "
            f"LIMIT {TOP_VALUES_DISTINCT}"
        ).fetchall()
        found.append((m.path, [(str(v), int(n)) for v, n in rows]))
    return found


def _uploads(con: duckdb.DuckDBPyConnection, bounds: Uploaded) -> tuple[list[tuple[str, int]], str]:
    low, high = bounds.min, bounds.max
    span = (_instant(high) - _instant(low)).days if low and high else 0
    by = "month" if span > DAILY_SPAN_DAYS else "day"
    pattern = "%Y-%m" if by == "month" else "%Y-%m-%d"
    rows = con.execute(
        f"SELECT strftime(uploaded, '{pattern}') AS k, count(*) FROM night "
        "WHERE uploaded IS NOT NULL GROUP BY k ORDER BY k"
    ).fetchall()
    return [(str(k), int(n)) for k, n in rows], by


def catalog_of(con: duckdb.DuckDBPyConnection, source: NightSource, manifest: Manifest) -> Catalog:
    """Return the aggregates of one snapshot (the view `night` is created here)."""
    flattened = _night_view(con, source)
    row = con.execute(
        "SELECT count(*), "
        "count(*) FILTER (WHERE meta_json IS NULL OR meta_json IN ('{}', 'null')), "
        "count(*) FILTER (WHERE creator IS NULL), "
        "approx_count_distinct(creator), "
        "count(*) FILTER (WHERE require_signed_urls), "
        "count(*) FILTER (WHERE uploaded IS NULL) FROM night"
    ).fetchone()
    assert row is not None
    images, without_meta, no_creator, creators_distinct, signed, no_upload = map(int, row)
    creators = con.execute(
        "SELECT creator, count(*) AS n FROM night WHERE creator IS NOT NULL "
        f"GROUP BY creator ORDER BY n DESC, creator LIMIT {TOP_CREATORS}"
    ).fetchall()
    variants = con.execute(
        f"SELECT least(coalesce(len(variants), 0), {VARIANTS_CAP}) AS k, count(*) FROM night "
        "GROUP BY k ORDER BY k"
    ).fetchall()
    uploads, by = _uploads(con, manifest.uploaded)
    meta, extra, expressions = _meta_columns(con, manifest, flattened)
    return Catalog(
        date=manifest.snapshot_date,
        images=images,
        uploads=uploads,
        uploads_by=by,
        no_upload_time=no_upload,
        meta=meta,
        extra=extra,
        top_values=_top_values(con, meta, expressions),
        without_meta=without_meta,
        creators=[(str(c), int(n)) for c, n in creators],
        creators_distinct=creators_distinct,
        no_creator=no_creator,
        signed=signed,
        variants=[(f"{k}+" if k == VARIANTS_CAP else str(k), int(n)) for k, n in variants],
    )


def _catalog_or_error(
    source: NightSource, manifest: Manifest, work: Path, settings: ReportSettings
) -> Catalog:
    """Return `catalog_of` the night; a file DuckDB cannot read is an IntegrityError."""
    import duckdb

    try:
        with connect(settings, work) as con:
            return catalog_of(con, source, manifest)
    except duckdb.Error as exc:
        date = manifest.snapshot_date
        raise IntegrityError(f"snapshot {date}: DuckDB cannot read it: {first_line(exc)}") from exc


# -- OUT -------------------------------------------------------------------------------------


def account_layouts_of(store: Store) -> tuple[list[Layout], bool]:
    """Return the layouts under OUT to report and whether OUT is a fleet."""
    accounts = account_layouts(store.list_dir(ROOT.snapshots))
    return (accounts, True) if accounts else ([ROOT], False)


def account_figures(
    store: Store, layout: Layout, scratch: Path, settings: ReportSettings
) -> AccountFigures:
    """Return one account's figures: its manifests, and DuckDB over its latest snapshot."""
    manifests = [m for m in sealed_manifests(store, layout) if m.kind != CHANGES]
    nights = [night_of(m) for m in manifests]
    drift = [entry for m in manifests for entry in drift_of(m)]
    catalog = None
    if manifests:
        latest = manifests[-1]
        work = scratch / (layout.prefix or "root")
        work.mkdir(parents=True, exist_ok=True)
        source = find_night_source(store, layout, latest, work)
        if source is not None:  # None: only a plugin's format, which DuckDB does not read
            catalog = _catalog_or_error(source, latest, work, settings)
    account = (manifests[-1].account_id or "") if manifests else ""
    return AccountFigures(
        account_id=account or layout.prefix.removeprefix("account_id=") or "(unknown)",
        nights=nights,
        changes=change_nights(store, layout),
        drift=drift,
        catalog=catalog,
        unfinished=unfinished_runs(store, layout, nights[-1].date if nights else None),
        batches=batches_of(store, layout, nights[-1].date) if nights else [],
    )
