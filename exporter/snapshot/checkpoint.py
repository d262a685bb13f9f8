"""The run checkpoint: what --resume needs, replaced atomically after every committed part.

One checkpoint per run key (one request with one set of options on one date,
`Layout.checkpoint`), so a run with other filters, order, account or formats has a different
key and is never mixed into this one; runs of one request and date with other options share
one run lock, which the checkpoint records (`staged_locks`). A checkpoint names only parts
that were durable before it was written; anything else found in staging is discarded by the
sinks when they resume.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from exporter.sinks import PartFile
from exporter.store import Layout, Store
from exporter.store.layout import run_key, run_key_date

STALE_AFTER_DAYS = 7  # staged runs older than this (by snapshot date) are swept after a publish
CHECKPOINT_VERSION = 3  # 2: parts name their format; phase "committing"; 3: cursor positions
# Keys never part of a fingerprint or a file: credentials in any spelling.
SECRET_MARKERS = ("token", "secret", "password", "api_key", "apikey", "authorization", "email")

JsonDict = dict[str, Any]


def is_secret_key(key: str) -> bool:
    """Return True for keys that may hold a credential (compared case-insensitively)."""
    lowered = key.lower().replace("-", "_")
    return any(marker in lowered for marker in SECRET_MARKERS)


def redact_request(request: Mapping[str, Any]) -> JsonDict:
    """Return the request without any key that may hold a secret, at any depth."""

    def clean(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): clean(v) for k, v in value.items() if not is_secret_key(str(k))}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    cleaned: JsonDict = clean(request)
    return cleaned


def request_fingerprint(request: Mapping[str, Any]) -> str:
    """Return a stable digest of what a run exports (secrets dropped, key order ignored)."""
    canonical = orjson.dumps(redact_request(request), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


@dataclass(kw_only=True)
class Checkpoint:
    """Continuation state of one run.

    `phase`: "writing" (walking; parts committed so far), "publishing" (the staged snapshot
    is sealed; its publication may or may not have happened), "committing" (the snapshot is
    published; the sinks' publish steps, e.g. the DuckDB load, may not have run).
    """

    request_fingerprint: str
    run_id: str
    snapshot_date: str
    started_at: str
    walker_state: JsonDict | None = None
    normalizer_state: JsonDict | None = None
    parts: dict[str, list[PartFile]] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    phase: str = "writing"
    version: int = CHECKPOINT_VERSION
    lock: str | None = None  # the run lock's key: runs of one request and date share it

    @property
    def run_key(self) -> str:
        return run_key(self.request_fingerprint, self.snapshot_date)

    def to_dict(self) -> JsonDict:
        return {
            "version": self.version,
            "request_fingerprint": self.request_fingerprint,
            "run_id": self.run_id,
            "snapshot_date": self.snapshot_date,
            "started_at": self.started_at,
            "phase": self.phase,
            "walker_state": self.walker_state,
            "normalizer_state": self.normalizer_state,
            "parts": {sink: [p.to_dict() for p in ps] for sink, ps in self.parts.items()},
            "counts": self.counts,
            "lock": self.lock,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        return cls(
            version=int(data["version"]),
            request_fingerprint=str(data["request_fingerprint"]),
            run_id=str(data["run_id"]),
            snapshot_date=str(data["snapshot_date"]),
            started_at=str(data["started_at"]),
            phase=str(data.get("phase", "writing")),
            walker_state=data.get("walker_state"),
            normalizer_state=data.get("normalizer_state"),
            parts={
                str(sink): [PartFile.from_dict(p) for p in parts]
                for sink, parts in dict(data.get("parts") or {}).items()
            },
            counts=dict(data.get("counts") or {}),
            lock=str(data["lock"]) if data.get("lock") is not None else None,
        )


def encode_checkpoint(checkpoint: Checkpoint) -> bytes:
    """Return the checkpoint as JSON bytes (non-string dict keys are an error, not coerced)."""
    return orjson.dumps(checkpoint.to_dict(), option=orjson.OPT_INDENT_2)


def save_checkpoint(store: Store, layout: Layout, checkpoint: Checkpoint) -> None:
    """Replace the run's checkpoint atomically: a crash leaves the old one or the new one."""
    store.write_atomic(layout.checkpoint(checkpoint.run_key), encode_checkpoint(checkpoint))


@dataclass(frozen=True)
class ResumePoint:
    """What `load_checkpoint` found: a checkpoint to continue, or why a run starts afresh."""

    checkpoint: Checkpoint | None
    message: str


def load_checkpoint(
    store: Store, layout: Layout, fingerprint: str, snapshot_date: str
) -> ResumePoint:
    """Return the checkpoint of this request and date, or None with the reason to start afresh.

    A checkpoint that cannot be read or belongs to another request (or an older format) is
    never used; the message says so, and the caller discards that staging directory.
    """
    raw = store.read_bytes(layout.checkpoint(run_key(fingerprint, snapshot_date)))
    if raw is None:
        return ResumePoint(None, "nothing to resume for this request and date: starting afresh")
    try:
        checkpoint = Checkpoint.from_dict(orjson.loads(raw))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        return ResumePoint(None, f"checkpoint unreadable ({exc}): starting afresh")
    if checkpoint.version != CHECKPOINT_VERSION:
        return ResumePoint(None, f"checkpoint format {checkpoint.version} is not supported")
    if checkpoint.request_fingerprint != fingerprint or checkpoint.snapshot_date != snapshot_date:
        return ResumePoint(None, "checkpoint belongs to a different request: starting afresh")
    images = checkpoint.counts.get("images", 0)
    return ResumePoint(checkpoint, f"resuming run {checkpoint.run_id} after {images} images")


def committing_runs(
    store: Store, layout: Layout, fingerprint: str, snapshot_date: str
) -> list[Checkpoint]:
    """Return this request's runs of other dates killed after publishing their files.

    Their checkpoints say "committing": the snapshot is published, the sinks' publish steps
    (the DuckDB load) may not have run. The next run of the request completes them.
    """
    found = []
    for key in store.list_dir(layout.staging):
        day = run_key_date(key)
        if day is None or day.isoformat() == snapshot_date:
            continue
        if key != run_key(fingerprint, day.isoformat()):
            continue  # another request's run
        checkpoint = load_checkpoint(store, layout, fingerprint, day.isoformat()).checkpoint
        if checkpoint is not None and checkpoint.phase == "committing":
            found.append(checkpoint)
    return found


def staged_locks(store: Store, layout: Layout) -> dict[str, str]:
    """Return the run lock's key of each staged run whose checkpoint records one, by run key.

    Runs of one request and date with other options stage apart under one lock; this is how
    a run finds the others of its request and date (older checkpoints record no lock).
    """
    found = {}
    for key in store.list_dir(layout.staging):
        if run_key_date(key) is None:
            continue
        raw = store.read_bytes(layout.checkpoint(key))
        try:
            data = orjson.loads(raw) if raw is not None else None
        except orjson.JSONDecodeError:
            continue
        if isinstance(data, dict) and isinstance(data.get("lock"), str):
            found[key] = data["lock"]
    return found


def loading_tables(store: Store, layout: Layout, snapshot_date: str, run_id: str) -> bool:
    """Return whether run `run_id` of `snapshot_date` stopped after publishing its files.

    Its checkpoint still says "committing": the sinks' publish steps (the DuckDB load, the
    Delta commit) may not have run yet, so its tables may not hold the date's rows until
    `--resume` (or the request's next run) completes them. That is unfinished, not corrupt.
    """
    for key in store.list_dir(layout.staging):
        if run_key_date(key) is None or key[:10] != snapshot_date:
            continue
        raw = store.read_bytes(layout.checkpoint(key))
        try:
            data = orjson.loads(raw) if raw is not None else {}
        except orjson.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("run_id") == run_id:
            return bool(data.get("phase") == "committing")
    return False


def stale_staged_runs(
    store: Store, layout: Layout, snapshot_date: str, keep_days: int = STALE_AFTER_DAYS
) -> list[str]:
    """Return staging keys of runs dated more than `keep_days` before `snapshot_date`.

    A run that failed and was never resumed leaves its staged parts behind; once a later
    night has published, one that old is not worth resuming (and can be re-exported).
    """
    cutoff = dt.date.fromisoformat(snapshot_date) - dt.timedelta(days=keep_days)
    stale = []
    for key in store.list_dir(layout.staging):
        day = run_key_date(key)  # None: a lock, or not a run directory of ours
        if day is not None and day < cutoff:
            stale.append(key)
    return sorted(stale)


def discard_run(store: Store, layout: Layout, key: str) -> None:
    """Delete a run's whole staging directory (its checkpoint and staged files)."""
    store.delete_tree(layout.run(key))
