"""`inspect`'s check: re-read every file of a sealed directory through a store for its rows,
size and sha256, and compare them with its manifest."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from exporter.errors import IntegrityError, SinkError
from exporter.sinks import find_file_format
from exporter.snapshot.manifest import (
    FileEntry,
    Manifest,
    ManifestError,
    decode_manifest,
    rows_by_format,
    snapshot_dates,
)
from exporter.store import LocalStore, Store, file_digest
from exporter.store.layout import (
    MANIFEST_NAME,
    ROOT,
    SUCCESS_NAME,
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
    if strict and report.problems:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise IntegrityError(f"{directory}: {report.problems[0]}{more}")
    return report


def _not_a(exc: ManifestError) -> str:
    """Return how a manifest that does not read is described: "not JSON (...)" as before,
    "not a manifest (...)" for JSON of another shape."""
    text = str(exc)
    return text if text.startswith("not JSON") else f"not a manifest ({text})"
