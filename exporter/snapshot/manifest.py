"""The snapshot manifest: build it (pure), verify a published snapshot against it (inspect).

`Manifest` is `_manifest.json` typed: `Manifest.from_json`/`decode_manifest` and `read_manifest`
are the one way in, `encode_manifest` the one way out (every kind keeps its key order, so the
files read as they always did). `build_manifest` makes a snapshot's from plain values;
`sealed_manifests` is the one walk over the sealed snapshots (the previous night, the
newest success, a change set's neighbours). `exporter.snapshot.verify` checks a directory
against its manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from exporter._version import __version__
from exporter.sinks import PartFile
from exporter.snapshot.checkpoint import redact_request
from exporter.store import Layout, LocalStore, Store
from exporter.store.layout import ROOT, manifest_path, success_path

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


class ManifestError(ValueError):
    """A manifest that is JSON but not of a manifest's shape (a section of the wrong type)."""


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ManifestError(f"{key!r} is not a string")
    return value


def _section(data: Mapping[str, Any], key: str, kind: type[Any]) -> Any:
    """Return `data[key]`, its empty default when missing or null, or raise ManifestError."""
    value = data.get(key)
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise ManifestError(f"{key!r} is not a JSON {'object' if kind is dict else 'array'}")
    return value


def _extra(data: Mapping[str, Any], known: Iterable[str]) -> JsonDict:
    """Return the keys of `data` this version does not know, kept for the next encode."""
    names = set(known)
    return {k: v for k, v in data.items() if k not in names}


def _keys(section: type[Any]) -> tuple[str, ...]:
    """Return the JSON keys of a section: its fields but `extra`, in their written order."""
    return tuple(f.name for f in fields(section) if f.name != "extra")


def _optional(data: Mapping[str, Any], key: str, parse: Callable[[JsonDict], Any]) -> Any:
    """Return the section `key` parsed, None when it is absent or null."""
    return None if data.get(key) is None else parse(_section(data, key, dict))


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    """One file of a sealed directory: its name, format, rows, bytes and sha256."""

    path: str
    format: str | None
    rows: int
    bytes: int
    sha256: str
    extra: JsonDict = field(default_factory=dict)

    @classmethod
    def of(cls, part: PartFile) -> FileEntry:
        return cls(
            path=part.path, format=part.format, rows=part.rows, bytes=part.bytes, sha256=part.sha256
        )

    @classmethod
    def from_json(cls, data: Any) -> FileEntry:
        if not isinstance(data, dict):
            raise ManifestError("a 'files' entry is not a JSON object")
        missing = [k for k in ("path", "rows", "bytes", "sha256") if k not in data]
        if missing:
            raise ManifestError(f"a 'files' entry has no {missing[0]!r}")
        return cls(
            path=str(data["path"]),
            format=data.get("format"),
            rows=data["rows"],
            bytes=data["bytes"],
            sha256=str(data["sha256"]),
            extra=_extra(data, _keys(cls)),
        )

    def to_json(self) -> JsonDict:
        return {
            "path": self.path,
            "format": self.format,
            "rows": self.rows,
            "bytes": self.bytes,
            "sha256": self.sha256,
            **self.extra,
        }


@dataclass(frozen=True, kw_only=True)
class Uploaded:
    """The oldest and newest `uploaded` instant of the rows (RFC 3339), None when unknown."""

    min: str | None = None
    max: str | None = None
    extra: JsonDict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Uploaded:
        low, high = data.get("min"), data.get("max")
        return cls(
            min=None if low is None else str(low),
            max=None if high is None else str(high),
            extra=_extra(data, _keys(cls)),
        )

    def to_json(self) -> JsonDict:
        return {"min": self.min, "max": self.max, **self.extra}


@dataclass(frozen=True, kw_only=True)
class Drift:
    """The normalizer's drift report against `previous_snapshot` (whose schema seeded it);
    each change is `schema`'s entry as the normalizer wrote it."""

    previous_snapshot: str | None = None
    changes: tuple[JsonDict, ...] = ()
    extra: JsonDict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Drift:
        previous = data.get("previous_snapshot")
        return cls(
            previous_snapshot=None if previous is None else str(previous),
            changes=tuple(_section(data, "changes", list)),
            extra=_extra(data, _keys(cls)),
        )

    def to_json(self) -> JsonDict:
        return {
            "previous_snapshot": self.previous_snapshot,
            "changes": list(self.changes),
            **self.extra,
        }


@dataclass(frozen=True, kw_only=True)
class Findings:
    """The manifest's `normalize` section: the normalizer's notes and the run's warnings.
    The extra fields' caps appear only when one was reached (None: absent)."""

    anomalies: int = 0
    capped_values: int = 0
    capped_keys: tuple[list[str], ...] = ()
    capped_extra_values: int | None = None
    capped_extra_keys: tuple[list[str], ...] | None = None
    warnings: tuple[str, ...] = ()
    extra: JsonDict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Findings:
        extra_keys = data.get("capped_extra_keys")
        return cls(
            anomalies=data.get("anomalies", 0),
            capped_values=data.get("capped_values", 0),
            capped_keys=tuple(_section(data, "capped_keys", list)),
            capped_extra_values=data.get("capped_extra_values"),
            capped_extra_keys=None if extra_keys is None else tuple(extra_keys),
            warnings=tuple(str(w) for w in _section(data, "warnings", list)),
            extra=_extra(data, _keys(cls)),
        )

    def to_json(self) -> JsonDict:
        data: JsonDict = {
            "anomalies": self.anomalies,
            "capped_values": self.capped_values,
            "capped_keys": list(self.capped_keys),
        }
        if self.capped_extra_values is not None:
            data["capped_extra_values"] = self.capped_extra_values
        if self.capped_extra_keys is not None:
            data["capped_extra_keys"] = list(self.capped_extra_keys)
        return {**data, "warnings": list(self.warnings), **self.extra}


@dataclass(frozen=True, kw_only=True)
class NewUploads:
    """A batch's `new_uploads` section: its plan (`BatchPlan.describe()`), its name and the
    run of snapshot D it followed."""

    base_snapshot: str
    watermark: str
    lag_s: float
    cutoff: str
    earlier_batches: tuple[str, ...] = ()
    batch: str = ""
    base_run_id: str | None = None
    extra: JsonDict = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NewUploads:
        run_id = data.get("base_run_id")
        return cls(
            base_snapshot=_text(data, "base_snapshot"),
            watermark=_text(data, "watermark"),
            lag_s=data.get("lag_s", 0.0),
            cutoff=_text(data, "cutoff"),
            earlier_batches=tuple(str(b) for b in _section(data, "earlier_batches", list)),
            batch=str(data.get("batch", "")),
            base_run_id=None if run_id is None else str(run_id),
            extra=_extra(data, _keys(cls)),
        )

    def to_json(self) -> JsonDict:
        return {
            "base_snapshot": self.base_snapshot,
            "watermark": self.watermark,
            "lag_s": self.lag_s,
            "cutoff": self.cutoff,
            "earlier_batches": list(self.earlier_batches),
            "batch": self.batch,
            "base_run_id": self.base_run_id,
            **self.extra,
        }


@dataclass(frozen=True, kw_only=True)
class ChangeFacts:
    """What only a change set's manifest (`kind: "changes"`) says: P, its size, the guard."""

    previous_snapshot_date: str | None = None
    scope: str = ""
    previous_images: int = 0
    removed_share: float = 0.0
    max_removed_share: float = 0.0
    accepted_removals: bool = False


# The top-level keys of each kind, in the order they are written; the optional ones are
# written only when set.
_SNAPSHOT_KEYS = (
    "format_version",
    "exporter_version",
    "run_id",
    "snapshot_date",
    "account_id",
    "request",
    "started_at",
    "finished_at",
    "counts",
    "api_count",
    "complete",
    "uploaded",
    "files",
    "schema",
    "drift",
    "normalize",
    "kind",
    "new_uploads",
)
_CHANGES_KEYS = (
    "format_version",
    "kind",
    "exporter_version",
    "run_id",
    "snapshot_date",
    "previous_snapshot_date",
    "account_id",
    "request",
    "scope",
    "started_at",
    "finished_at",
    "counts",
    "previous_images",
    "removed_share",
    "max_removed_share",
    "accepted_removals",
    "files",
    "schema",
)
_OPTIONAL_KEYS = frozenset({"normalize", "kind", "new_uploads"})
CHANGES = "changes"
NEW_UPLOADS = "new_uploads"


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """`_manifest.json` of a sealed directory: a snapshot's, a new-uploads batch's (`kind`
    "new_uploads", with `new_uploads`) or a change set's (`kind` "changes", with `changes`).

    `counts` are the run's counters as `RunStats.as_dict()` (or the change kinds) gave them,
    plus `rows`; `request` is `describe_request`'s, redacted; `schema` holds
    `ColumnSpec.to_dict()` entries. Those three stay plain JSON: their keys have owners
    elsewhere. Keys this version does not know are kept in `extra` and written back last.
    """

    format_version: int = FORMAT_VERSION
    kind: str | None = None
    exporter_version: str = __version__
    run_id: str | None = None
    snapshot_date: str
    account_id: str | None = None
    request: JsonDict = field(default_factory=dict)
    started_at: str
    finished_at: str
    counts: JsonDict = field(default_factory=dict)
    api_count: int | None = None
    complete: bool | None = None
    uploaded: Uploaded = field(default_factory=Uploaded)
    files: tuple[FileEntry, ...] = ()
    schema: tuple[JsonDict, ...] = ()
    drift: Drift = field(default_factory=Drift)
    normalize: Findings | None = None
    new_uploads: NewUploads | None = None
    changes: ChangeFacts | None = None
    extra: JsonDict = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """Return the rows the directory holds (`counts.rows`, else the images counted)."""
        return int(self.counts.get("rows", self.counts.get("images", 0)) or 0)

    @property
    def formats(self) -> list[str]:
        """Return the sink names the request wrote."""
        return [str(f) for f in self.request.get("formats") or []]

    @property
    def findings(self) -> Findings:
        """Return the `normalize` section, empty when the manifest has none."""
        return self.normalize or Findings()

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """Return the manifest of decoded JSON; ManifestError unless it has a manifest's shape."""
        if not isinstance(data, dict):
            raise ManifestError("not a JSON object")
        kind = data.get("kind")
        changes = None
        if kind == CHANGES:
            previous = data.get("previous_snapshot_date")
            changes = ChangeFacts(
                previous_snapshot_date=None if previous is None else str(previous),
                scope=str(data.get("scope", "")),
                previous_images=data.get("previous_images", 0),
                removed_share=data.get("removed_share", 0.0),
                max_removed_share=data.get("max_removed_share", 0.0),
                accepted_removals=bool(data.get("accepted_removals", False)),
            )
        run_id, account = data.get("run_id"), data.get("account_id")
        return cls(
            format_version=data.get("format_version", FORMAT_VERSION),
            kind=None if kind is None else str(kind),
            exporter_version=str(data.get("exporter_version", "")),
            run_id=None if run_id is None else str(run_id),
            snapshot_date=_text(data, "snapshot_date"),
            account_id=None if account is None else str(account),
            request=_section(data, "request", dict),
            started_at=_text(data, "started_at"),
            finished_at=_text(data, "finished_at"),
            counts=_section(data, "counts", dict),
            api_count=data.get("api_count"),
            complete=data.get("complete"),
            uploaded=Uploaded.from_json(_section(data, "uploaded", dict)),
            files=tuple(FileEntry.from_json(f) for f in _section(data, "files", list)),
            schema=tuple(_section(data, "schema", list)),
            drift=Drift.from_json(_section(data, "drift", dict)),
            normalize=_optional(data, "normalize", Findings.from_json),
            new_uploads=_optional(data, "new_uploads", NewUploads.from_json),
            changes=changes,
            extra=_extra(data, _CHANGES_KEYS if kind == CHANGES else _SNAPSHOT_KEYS),
        )

    def to_json(self) -> JsonDict:
        """Return the JSON object, keys in the order each kind has always been written."""
        facts = self.changes or ChangeFacts()
        values: JsonDict = {
            "format_version": self.format_version,
            "kind": self.kind,
            "exporter_version": self.exporter_version,
            "run_id": self.run_id,
            "snapshot_date": self.snapshot_date,
            "previous_snapshot_date": facts.previous_snapshot_date,
            "account_id": self.account_id,
            "request": self.request,
            "scope": facts.scope,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "counts": self.counts,
            "previous_images": facts.previous_images,
            "removed_share": facts.removed_share,
            "max_removed_share": facts.max_removed_share,
            "accepted_removals": facts.accepted_removals,
            "api_count": self.api_count,
            "complete": self.complete,
            "uploaded": self.uploaded.to_json(),
            "files": [f.to_json() for f in self.files],
            "schema": list(self.schema),
            "drift": self.drift.to_json(),
            "normalize": self.normalize.to_json() if self.normalize else None,
            "new_uploads": self.new_uploads.to_json() if self.new_uploads else None,
        }
        keys = _CHANGES_KEYS if self.kind == CHANGES else _SNAPSHOT_KEYS
        written = {k: values[k] for k in keys if values[k] is not None or k not in _OPTIONAL_KEYS}
        return {**written, **self.extra}


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
) -> Manifest:
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
    return Manifest(
        run_id=run_id,
        snapshot_date=snapshot_date,
        account_id=account_id,
        request=redact_request(request),
        started_at=rfc3339(started_at),
        finished_at=rfc3339(finished_at),
        counts={**counts, "rows": rows},
        api_count=api_count,
        complete=None if api_count is None else api_count == rows,
        uploaded=Uploaded.from_json(uploaded or {}),
        files=tuple(FileEntry.of(f) for f in files),
        schema=tuple(dict(c) for c in columns),
        drift=Drift(previous_snapshot=previous_snapshot, changes=tuple(dict(d) for d in drift)),
        normalize=Findings.from_json(findings) if findings else None,
    )


def encode_manifest(manifest: Manifest) -> bytes:
    """Return the manifest as indented JSON with a trailing newline."""
    return orjson.dumps(manifest.to_json(), option=orjson.OPT_INDENT_2) + b"\n"


def decode_manifest(raw: bytes) -> Manifest:
    """Return the manifest in `raw`; ManifestError (a ValueError) unless it is one."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"not JSON ({exc})") from exc
    return Manifest.from_json(data)


# -- reading published snapshots ----------------------------------------------------------


def _as_store(out: Store | str | Path) -> Store:
    return LocalStore(out) if isinstance(out, str | Path) else out


def read_manifest(store: Store, directory: str) -> Manifest | None:
    """Return the manifest of a sealed directory, None unless `_SUCCESS` is there and the
    manifest reads (a damaged one is `inspect`'s to report, not a reader's to trust)."""
    if not store.exists(success_path(directory)):
        return None
    raw = store.read_bytes(manifest_path(directory))
    if raw is None:
        return None
    try:
        return decode_manifest(raw)
    except ManifestError:
        return None


def snapshot_dates(store: Store, layout: Layout = ROOT) -> list[str]:
    """Return the dates that have a snapshot directory in `layout`, oldest first."""
    return layout.snapshot_dates(store.list_dir(layout.snapshots))


def sealed_directories(
    store: Store, layout: Layout = ROOT, *, before: str | None = None, newest_first: bool = False
) -> Iterator[tuple[str, Manifest]]:
    """Yield (the directory's date, its manifest) of every sealed `snapshot_date=` directory
    in `layout` dated before `before` (all when None), oldest first unless `newest_first`,
    moved ones (`misplaced`) included; each manifest is read only when reached."""
    dates = [d for d in snapshot_dates(store, layout) if before is None or d < before]
    for date in reversed(dates) if newest_first else dates:
        manifest = read_manifest(store, layout.snapshot(date))
        if manifest is not None:
            yield date, manifest


def sealed_manifests(
    store: Store, layout: Layout = ROOT, *, before: str | None = None, newest_first: bool = False
) -> Iterator[Manifest]:
    """Yield the manifest of every sealed snapshot in `layout` dated before `before` (all
    when None), oldest first unless `newest_first`; each is read only when reached.

    A directory whose manifest names another date (`misplaced`) is not a night: its files
    are read where the manifest's date says, so no run may take it for one."""
    found = sealed_directories(store, layout, before=before, newest_first=newest_first)
    for date, manifest in found:
        if misplaced(date, manifest) is None:
            yield manifest


def misplaced(date: str, manifest: Manifest) -> str | None:
    """Return why the sealed directory of `date` is not the night its manifest describes (it
    was moved or renamed by hand), None when it is."""
    if manifest.snapshot_date == date:
        return None
    other = manifest.snapshot_date
    return f"its manifest is of {other} (moved by hand?): move it back to snapshot_date={other}"


def published_run_id(store: Store, directory: str) -> str | None:
    """Return the run id of the sealed snapshot (or batch) published at `directory`, if any.

    After a crash during publication, a resumed run compares this with its checkpoint's run
    id: equal means the swap happened (only staging is left to clean); the staged directory
    may then hold the *previous* snapshot and must never be published again.
    """
    manifest = read_manifest(store, directory)
    return manifest.run_id if manifest else None


def previous_manifest(
    out: Store | str | Path, before_date: str, layout: Layout = ROOT
) -> Manifest | None:
    """Return the manifest of the newest sealed snapshot dated before `before_date`."""
    found = sealed_manifests(_as_store(out), layout, before=before_date, newest_first=True)
    return next(found, None)
