"""The snapshot manifest: build it (pure), verify a published snapshot against it (inspect).

`build_manifest` takes plain values and returns the JSON-ready dict DESIGN.md lists.
`verify_snapshot` re-reads every file through a store for its rows, size and sha256.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from exporter._version import __version__
from exporter.errors import IntegrityError, SinkError
from exporter.sinks import PartFile, find_file_format
from exporter.snapshot.checkpoint import redact_request
from exporter.store import Layout, LocalStore, Store, file_digest
from exporter.store.layout import (
    MANIFEST_NAME,
    ROOT,
    SUCCESS_NAME,
    manifest_path,
    parse_snapshot_name,
    success_path,
)

FORMAT_VERSION = 1
JsonDict = dict[str, Any]


def rfc3339(moment: datetime) -> str:
    """Return `moment` in UTC as RFC 3339 with a Z suffix (microseconds only when set)."""
    text = moment.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def rows_by_format(files: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Return the total rows per format name; every format holds the whole snapshot once."""
    totals: dict[str, int] = {}
    for kind, rows in files:
        totals[kind] = totals.get(kind, 0) + rows
    return totals


@dataclass
class UploadedBounds:
    """Running min/max of the `uploaded` column over the batches of a run."""

    low: datetime | None = None
    high: datetime | None = None

    def update(self, batch: pa.RecordBatch) -> None:
        index = batch.schema.get_field_index("uploaded")
        if index < 0 or batch.num_rows == 0:
            return
        bounds = pc.min_max(batch.column(index)).as_py()
        low, high = bounds["min"], bounds["max"]
        if low is not None and (self.low is None or low < self.low):
            self.low = low
        if high is not None and (self.high is None or high > self.high):
            self.high = high

    def as_dict(self) -> JsonDict:
        return {
            "min": rfc3339(self.low) if self.low else None,
            "max": rfc3339(self.high) if self.high else None,
        }


def build_manifest(
    *,
    run_id: str,
    snapshot_date: str,
    account_id: str,
    request: Mapping[str, Any],
    started_at: datetime,
    finished_at: datetime,
    counts: Mapping[str, Any],
    files: Sequence[PartFile],
    columns: Sequence[Mapping[str, Any]],
    uploaded: Mapping[str, str | None] | None = None,
    api_count: int | None = None,
    previous_snapshot: str | None = None,
    drift: Sequence[Mapping[str, Any]] = (),
    findings: Mapping[str, Any] | None = None,
) -> JsonDict:
    """Return the manifest of one snapshot.

    `columns` are `ColumnSpec.to_dict()` entries ({name, type, path}), stored as is so the
    next run can seed its column plan from them; `drift` is the normalizer's report against
    `previous_snapshot` (whose schema seeded it); `api_count` only for unfiltered exports;
    `findings` holds the normalizer's other notes (anomalies, capped keys).
    """
    per_format = rows_by_format((f.format, f.rows) for f in files)
    if len(set(per_format.values())) > 1:
        raise ValueError(f"formats disagree on the row count: {per_format}")
    # With no file sink (e.g. DuckDB only) the snapshot directory holds no parts: the rows
    # are the images exported.
    rows = max(per_format.values(), default=int(counts.get("images", 0)))
    return {
        "format_version": FORMAT_VERSION,
        "exporter_version": __version__,
        "run_id": run_id,
        "snapshot_date": snapshot_date,
        "account_id": account_id,
        "request": redact_request(request),
        "started_at": rfc3339(started_at),
        "finished_at": rfc3339(finished_at),
        "counts": {**counts, "rows": rows},
        "api_count": api_count,
        "complete": None if api_count is None else api_count == rows,
        "uploaded": dict(uploaded or {"min": None, "max": None}),
        "files": [
            {
                "path": f.path,
                "format": f.format,
                "rows": f.rows,
                "bytes": f.bytes,
                "sha256": f.sha256,
            }
            for f in files
        ],
        "schema": [dict(c) for c in columns],
        "drift": {"previous_snapshot": previous_snapshot, "changes": [dict(d) for d in drift]},
        **({"normalize": dict(findings)} if findings else {}),
    }


def encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    """Return the manifest as indented JSON with a trailing newline."""
    return orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"


# -- reading published snapshots ----------------------------------------------------------


def _as_store(out: Store | str | Path) -> Store:
    return LocalStore(out) if isinstance(out, str | Path) else out


def read_manifest(store: Store, directory: str) -> JsonDict | None:
    """Return the manifest of a sealed snapshot directory, None unless `_SUCCESS` is there."""
    if not store.exists(success_path(directory)):
        return None
    raw = store.read_bytes(manifest_path(directory))
    if raw is None:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def snapshot_dates(store: Store, layout: Layout = ROOT) -> list[str]:
    """Return the dates that have a snapshot directory in `layout`, oldest first."""
    return layout.snapshot_dates(store.list_dir(layout.snapshots))


def published_run_id(store: Store, directory: str) -> str | None:
    """Return the run id of the sealed snapshot (or batch) published at `directory`, if any.

    After a crash during publication, a resumed run compares this with its checkpoint's run
    id: equal means the swap happened (only staging is left to clean); the staged directory
    may then hold the *previous* snapshot and must never be published again.
    """
    manifest = read_manifest(store, directory)
    run_id = manifest.get("run_id") if manifest else None
    return str(run_id) if run_id is not None else None


def previous_manifest(
    out: Store | str | Path, before_date: str, layout: Layout = ROOT
) -> JsonDict | None:
    """Return the manifest of the newest sealed snapshot dated before `before_date`."""
    store = _as_store(out)
    for date in reversed(snapshot_dates(store, layout)):
        if date < before_date:
            manifest = read_manifest(store, layout.snapshot(date))
            if manifest is not None:
                return manifest
    return None


@dataclass
class VerifyReport:
    """What `verify_snapshot` checked; `problems` is empty when the snapshot is intact."""

    directory: str
    manifest: JsonDict
    files: int = 0
    rows: int = 0
    bytes: int = 0
    problems: list[str] = field(default_factory=list)

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


def _check_file(store: Store, directory: str, entry: Mapping[str, Any]) -> list[str]:
    name = str(entry["path"])
    path = posixpath.join(directory, name)
    if not store.exists(path):
        return [f"{name}: missing"]
    size, digest = file_digest(store, path)
    problems = []
    if size != entry["bytes"]:
        problems.append(f"{name}: {size} bytes, manifest says {entry['bytes']}")
    if digest != entry["sha256"]:
        problems.append(f"{name}: sha256 {digest[:12]}..., manifest says {entry['sha256'][:12]}...")
    kind = find_file_format(str(entry.get("format")))  # the sink that wrote it counts its rows
    if kind is None:
        return [*problems, f"{name}: no installed sink reads format {entry.get('format')!r}"]
    try:
        with store.open_read(path) as raw:
            rows = kind.count_rows(raw)
    except (OSError, pa.ArrowException, EOFError, ValueError) as exc:
        return [*problems, f"{name}: unreadable ({exc})"]
    if rows != entry["rows"]:
        problems.append(f"{name}: {rows} rows, manifest says {entry['rows']}")
    return problems


def verify_snapshot(target: str | Path | tuple[Store, str], *, strict: bool = True) -> VerifyReport:
    """Re-read a snapshot's files and compare rows, bytes and sha256 with its manifest.

    Raises IntegrityError on any mismatch (a missing `_SUCCESS`, a missing, extra or changed
    file, row totals that disagree) unless `strict` is False; the report lists every problem.
    """
    store, directory = target if isinstance(target, tuple) else locate_snapshot(target)
    raw = store.read_bytes(manifest_path(directory))
    if raw is None:
        raise IntegrityError(f"{directory}: no {MANIFEST_NAME}")
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise IntegrityError(f"{directory}: {MANIFEST_NAME} is not JSON ({exc})") from exc
    report = VerifyReport(directory=directory, manifest=manifest)
    if not store.exists(success_path(directory)):
        report.problems.append(f"no {SUCCESS_NAME}: the snapshot was never completed")
    listed = {str(f["path"]) for f in manifest.get("files", [])}
    for entry in manifest.get("files", []):
        try:
            report.problems.extend(_check_file(store, directory, entry))
        except SinkError as exc:
            report.problems.append(str(exc))
        report.files += 1
        report.bytes += int(entry["bytes"])
    extra = set(store.list_dir(directory)) - listed - {MANIFEST_NAME, SUCCESS_NAME}
    report.problems.extend(f"{name}: not in the manifest" for name in sorted(extra))
    report.rows = int(manifest.get("counts", {}).get("rows") or 0)
    declared = manifest.get("counts", {}).get("rows")
    entries = manifest.get("files", [])
    totals = rows_by_format((str(f.get("format")), int(f["rows"])) for f in entries)
    for kind, rows in totals.items():
        if declared is not None and declared != rows:
            report.problems.append(f"{kind} files hold {rows} rows, counts say {declared}")
    if strict and report.problems:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise IntegrityError(f"{directory}: {report.problems[0]}{more}")
    return report
