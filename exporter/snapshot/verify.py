"""`inspect`'s check: re-read every file of a sealed directory through a store for its rows,
size and sha256, and compare them with its manifest; a snapshot's rows kept in tables
(DuckDB, Delta: the sinks that keep tables) are counted there for its date, unless the run
that published it stopped before loading them (its checkpoint says "committing")."""

from __future__ import annotations

import posixpath
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from exporter.errors import IntegrityError, SinkError
from exporter.sinks import (
    NightSource,
    PublishedNight,
    ReadableNights,
    TableKeeper,
    find_file_format,
    night_sinks,
)
from exporter.snapshot.checkpoint import loading_tables
from exporter.snapshot.manifest import (
    FileEntry,
    Manifest,
    ManifestError,
    decode_manifest,
    misplaced,
    rows_by_format,
    snapshot_dates,
)
from exporter.store import LocalStore, Store, file_digest
from exporter.store.layout import (
    MANIFEST_NAME,
    ROOT,
    SUCCESS_NAME,
    Layout,
    manifest_path,
    parse_snapshot_name,
    success_path,
)


@dataclass
class VerifyReport:
    """What `verify_snapshot` checked; `problems` is empty when the snapshot is intact.
    `manifest` is None when there was none to read."""

    directory: str
    manifest: Manifest | None = None
    files: int = 0
    rows: int = 0
    bytes: int = 0
    tables: list[str] = field(default_factory=list)  # the sinks whose table rows were counted
    problems: list[str] = field(default_factory=list)
    # Tables whose rows of the date are not loaded yet because the run that published the
    # files stopped before loading them (checkpoint "committing"): unfinished, not damaged.
    unfinished: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def locate_snapshot(target: str | Path) -> tuple[Store, str]:
    """Return (store, snapshot dir) for a snapshot directory or an output root (newest date)."""
    path = Path(target)
    if (path / MANIFEST_NAME).exists() or parse_snapshot_name(path.name) is not None:
        return LocalStore(path.parent), path.name
    store = LocalStore(path)
    dates = snapshot_dates(store)
    if not dates:
        raise IntegrityError(f"no snapshot_date=* directory in {path}")
    return store, ROOT.snapshot(dates[-1])


def _check_file(store: Store, directory: str, entry: FileEntry) -> list[str]:
    name = entry.path
    path = posixpath.join(directory, name)
    if not store.exists(path):
        return [f"{name}: missing"]
    size, digest = file_digest(store, path)
    problems = []
    if size != entry.bytes:
        problems.append(f"{name}: {size} bytes, manifest says {entry.bytes}")
    if digest != entry.sha256:
        problems.append(f"{name}: sha256 {digest[:12]}..., manifest says {entry.sha256[:12]}...")
    kind = find_file_format(str(entry.format))  # the sink that wrote it counts its rows
    if kind is None:
        return [*problems, f"{name}: no installed sink reads format {entry.format!r}"]
    try:
        with store.open_read(path) as raw:
            rows = kind.count_rows(raw)
    except (OSError, pa.ArrowException, EOFError, ValueError) as exc:
        return [*problems, f"{name}: unreadable ({exc})"]
    if rows != entry.rows:
        problems.append(f"{name}: {rows} rows, manifest says {entry.rows}")
    return problems


def verify_snapshot(target: str | Path | tuple[Store, str], *, strict: bool = True) -> VerifyReport:
    """Re-read a snapshot's files and compare rows, bytes and sha256 with its manifest.

    Raises IntegrityError on any mismatch (a missing `_SUCCESS`, a missing, extra or changed
    file, row totals that disagree) unless `strict` is False; the report lists every problem.
    A manifest that is missing, not JSON or not of a manifest's shape raises IntegrityError.
    """
    store, directory = target if isinstance(target, tuple) else locate_snapshot(target)
    raw = store.read_bytes(manifest_path(directory))
    if raw is None:
        raise IntegrityError(f"{directory}: no {MANIFEST_NAME}")
    try:
        manifest = decode_manifest(raw)
    except ManifestError as exc:
        raise IntegrityError(f"{directory}: {MANIFEST_NAME} is {_not_a(exc)}") from exc
    report = VerifyReport(directory=directory, manifest=manifest)
    if not store.exists(success_path(directory)):
        report.problems.append(f"no {SUCCESS_NAME}: the snapshot was never completed")
    date = _directory_date(directory)
    moved = None if date is None else misplaced(date, manifest)
    if moved is not None:
        report.problems.append(moved)
    listed = {f.path for f in manifest.files}
    for entry in manifest.files:
        try:
            report.problems.extend(_check_file(store, directory, entry))
        except SinkError as exc:
            report.problems.append(str(exc))
        report.files += 1
        report.bytes += int(entry.bytes)
    extra = set(store.list_dir(directory)) - listed - {MANIFEST_NAME, SUCCESS_NAME}
    report.problems.extend(f"{name}: not in the manifest" for name in sorted(extra))
    declared = manifest.counts.get("rows")
    report.rows = int(declared or 0)
    totals = rows_by_format((str(f.format), int(f.rows)) for f in manifest.files)
    for kind, rows in totals.items():
        if declared is not None and declared != rows:
            report.problems.append(f"{kind} files hold {rows} rows, counts say {declared}")
    # A snapshot (not a batch or changes) also in tables, by date: not a moved one's, whose
    # date there is another night's.
    if manifest.kind is None and declared is not None and moved is None:
        _check_tables(store, directory, manifest, int(declared), report)
    if strict and report.problems:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise IntegrityError(f"{directory}: {report.problems[0]}{more}")
    return report


def _directory_date(directory: str) -> str | None:
    """Return the date a directory's path names (`snapshot_date=D`, a batch's parent)."""
    for name in reversed(directory.split("/")):
        date = parse_snapshot_name(name)
        if date is not None:
            return date
    return None


def _check_tables(
    store: Store, directory: str, manifest: Manifest, declared: int, report: VerifyReport
) -> None:
    """Count D's rows in every table its request kept (the DuckDB `images` table, the Delta
    partition) against the manifest's count: a file's sha256 says nothing about them."""
    date = manifest.snapshot_date
    layout = Layout(posixpath.dirname(directory))  # the root, or a fleet account's level
    night = PublishedNight(store=store, layout=layout, snapshot_date=date, directory=directory)
    run_id = manifest.run_id
    loading = run_id is not None and loading_tables(store, layout, date, run_id)
    with tempfile.TemporaryDirectory(prefix="cf-inspect-") as scratch:
        for sink in night_sinks(manifest.request):
            name = sink.name
            if not isinstance(sink, TableKeeper) or not isinstance(sink, ReadableNights):
                continue
            try:
                source = sink.night_source(night, Path(scratch))
                rows = None if source is None else _count(source)
            except (SinkError, OSError, pa.ArrowException, duckdb.Error) as exc:
                report.problems.append(f"{name} table: unreadable ({exc})")
                continue
            if rows != declared and loading:
                report.unfinished.append(
                    f"{name} table not loaded yet: run the same export with --resume to finish it"
                )
            elif rows is None:
                report.problems.append(f"{name} table: not found")
            elif rows != declared:
                report.problems.append(
                    f"{name} table holds {rows} rows of {date}, counts say {declared}"
                )
            report.tables.append(name)


def _count(source: NightSource) -> int:
    """Return the rows of a table source: D's rows of the DuckDB file's `images`, or the
    Arrow dataset's (a Delta partition)."""
    if source.kind == "duckdb":
        con = duckdb.connect(source.paths[0], read_only=True)
        try:
            found = con.execute(
                "SELECT count(*) FROM images WHERE snapshot_date = CAST($date AS DATE)",
                {"date": source.snapshot_date},
            ).fetchone()
        finally:
            con.close()
        return int(found[0]) if found else 0
    table = source.table
    return int(table.count_rows() if hasattr(table, "count_rows") else table.num_rows)


def _not_a(exc: ManifestError) -> str:
    """Return how a manifest that does not read is described: "not JSON (...)" as before,
    "not a manifest (...)" for JSON of another shape."""
    text = str(exc)
    return text if text.startswith("not JSON") else f"not a manifest ({text})"
