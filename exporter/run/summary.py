"""RunSummary: what a finished run reports, built in one place, printed through `to_dict`.

Three kinds of run end with a summary, each a subset of the fields, in this order:
- a snapshot: snapshot, images, files, bytes, duration_s, since_start_s (resumed), requests,
  retries, throttled, drift, warnings, changes, change_counts, run_id;
- a batch of new uploads: batch, images, new_images, base_snapshot, watermark, lag_s, files,
  bytes, requests, retries, throttled, run_id;
- an account of a fleet already published under `--resume`: snapshot, images,
  already_published.
A field another kind does not have is None and `to_dict` leaves it out, so the dict the CLI
prints (a table, a log line, or the JSON record) is what each kind always printed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import posixpath
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter import handoff

if TYPE_CHECKING:
    from exporter.changes.change_set import ChangeSet
    from exporter.run.writer import Run
    from exporter.snapshot.manifest import Manifest

WITHHELD = "withheld (exit 9)"  # `changes` when too many removals withheld the change set


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """The end of one run as users see it; field order is the printed order (`to_dict`)."""

    snapshot: str | None = None  # where the snapshot is published (OUT joined with its path)
    batch: str | None = None  # where the batch is published; "none" when nothing was new
    images: int
    new_images: int | None = None  # a batch: the images it holds (the metrics' series)
    base_snapshot: str | None = None  # a batch: the snapshot date D it follows
    watermark: str | None = None
    lag_s: float | None = None
    already_published: bool | None = None  # a fleet account that `--resume` did not redo
    files: int | None = None
    bytes: int | None = None
    duration_s: float | None = None  # this process's time, as the metrics' duration_seconds
    since_start_s: float | None = None  # a resumed snapshot: wall clock since its first start
    requests: int | None = None
    retries: int | None = None
    throttled: int | None = None
    drift: str | None = None
    warnings: str | None = None
    changes: str | None = None
    # changes by kind: published, or found and withheld (exit 9); {} when none
    change_counts: Mapping[str, int] | None = None
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as printed and logged: this kind's fields, in field order."""
        shown: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is not None:
                shown[item.name] = dict(value) if isinstance(value, Mapping) else value
        return shown

    def nothing_new(self) -> str | None:
        """Return what a batch run that found nothing new says (its log line, a fleet's table
        row), or None when it published a batch or was no batch run."""
        if self.batch != "none":
            return None
        return f"0 new uploads since the watermark {self.watermark}: nothing published"

    def withheld(self, counts: Mapping[str, int] | None = None) -> RunSummary:
        """Return this summary of a published snapshot whose change set was withheld (exit 9);
        `counts` are the withheld set's, which the metrics report (the removals that tripped
        the guard are what an alert looks at)."""
        return dataclasses.replace(self, changes=WITHHELD, change_counts=dict(counts or {}))


def summarize(run: Run, manifest: Manifest | None, changes: Sequence[ChangeSet] = ()) -> RunSummary:
    """Return the summary of `run`, published with `manifest` (a batch: None when empty)."""
    if run.plan is not None:
        return _batch_summary(run, manifest)
    assert manifest is not None, "a snapshot's summary needs its manifest"
    files = manifest.files
    started = dt.datetime.fromisoformat(manifest.started_at.replace("Z", "+00:00"))
    finished = dt.datetime.fromisoformat(manifest.finished_at.replace("Z", "+00:00"))
    drift = manifest.drift.changes
    warnings = manifest.findings.warnings
    # A fresh run's process began before the manifest's started_at, so wall <= worked; more
    # is a resumed run's first attempts and the pause before `--resume`, shown apart. A change
    # step handed to a fresh process counts from the walk's process start, as the metrics do.
    worked = time.monotonic() - handoff.began(run.stats.began)
    wall = (finished - started).total_seconds()
    return RunSummary(
        snapshot=display_path(run.config.output, run.published),
        images=run.stats.images,
        files=len(files),
        bytes=sum(int(f.bytes) for f in files),
        duration_s=round(worked, 2),
        since_start_s=round(wall, 2) if wall > worked + 1 else None,
        requests=run.stats.requests,
        retries=run.stats.retries,
        throttled=run.stats.throttled,
        drift=drift_text(drift, first=manifest.drift.previous_snapshot is None),
        warnings="; ".join(warnings) if warnings else "none",
        changes=changes[0].describe() if changes else "none",
        change_counts=dict(changes[0].counts) if changes and changes[0].published else {},
        run_id=run.checkpoint.run_id,
    )


def _batch_summary(run: Run, manifest: Manifest | None) -> RunSummary:
    """Return a batch's summary; no manifest: nothing was new, nothing was published."""
    assert run.plan is not None
    files = manifest.files if manifest else ()
    return RunSummary(
        batch=display_path(run.config.output, run.published) if manifest else "none",
        images=run.stats.images,
        new_images=run.stats.images,
        base_snapshot=run.plan.base,
        watermark=run.plan.describe()["watermark"],
        lag_s=run.plan.lag_s,
        files=len(files),
        bytes=sum(int(f.bytes) for f in files),
        requests=run.stats.requests,
        retries=run.stats.retries,
        throttled=run.stats.throttled,
        run_id=run.checkpoint.run_id,
    )


def drift_text(changes: Sequence[Mapping[str, Any]], *, first: bool) -> str:
    """Return the summary's drift: against the previous snapshot, or what a first one widened
    while it walked (a column seen as bool, then as a number), which is not drift."""
    if first:
        return (
            f"first snapshot ({len(changes)} column(s) widened during the walk)"
            if changes
            else ("first snapshot")
        )
    return f"{len(changes)} change(s)" if changes else "none"


def display_path(output: str, published: str) -> str:
    """Return a published directory as users name it: the output joined with its path."""
    return posixpath.join(output.rstrip("/"), published)


__all__ = ["WITHHELD", "RunSummary", "display_path", "drift_text", "summarize"]
