"""export(config): one snapshot, walked, written, sealed and published.

Under the run lock of its request and date, a run first completes this request's runs of other
dates killed after their files were published, then walks and writes (`exporter.run.writer`:
walker -> normalizer -> sinks, a checkpoint after every committed part), builds the manifest,
and goes through the publication tail (`exporter.run.publication`: seal, publish the files,
the sinks' steps, the change set, discard staging). A run whose checkpoint says it was sealed
walks nothing: it resumes the tail where it stopped.
"""

from __future__ import annotations

import contextlib
import logging

import anyio
import anyio.to_thread

from exporter.config import ExportConfig
from exporter.errors import ConcurrentRunError, ExporterError
from exporter.options import ExportOptions
from exporter.run.heap import bulk_allocation
from exporter.run.plan import describe_request, dry_run_plan, is_unfiltered, lock_key
from exporter.run.publication import Start, finish, handed_over, refuse_other_request
from exporter.run.summary import RunSummary
from exporter.run.writer import (
    Run,
    Shared,
    abort_sinks,
    new_checkpoint,
    open_sinks,
    run_manifest,
    start_run,
    walk_and_write,
)
from exporter.sinks import PartFile
from exporter.snapshot.checkpoint import (
    Checkpoint,
    committing_runs,
    discard_run,
    load_checkpoint,
    request_fingerprint,
    staged_locks,
)
from exporter.snapshot.completeness import count_warning
from exporter.snapshot.manifest import Manifest, previous_manifest
from exporter.stats import RunStats
from exporter.store import Layout, Store, open_store
from exporter.store.layout import ROOT, run_key

log = logging.getLogger("exporter.pipeline")

RESUME_OTHER_OPTIONS = (
    "--resume: the staged run of %s was started with other options (page size, order, "
    "formats, walk or columns) and cannot go on with these: discarding it, starting afresh"
)


async def export(
    config: ExportConfig,
    *,
    stats: RunStats | None = None,
    layout: Layout = ROOT,
    shared: Shared | None = None,
) -> RunSummary:
    """Export one snapshot and publish it; return the summary (the CLI prints it).

    A fleet passes each account's `layout` (its `account_id=` level) and what it `shared`
    with other accounts (pacer, connections); a single export uses the root and its own.
    """
    with bulk_allocation():
        return await _export(config, stats if stats is not None else RunStats(), layout, shared)


async def _export(
    config: ExportConfig, stats: RunStats, layout: Layout, shared: Shared | None
) -> RunSummary:
    store = await anyio.to_thread.run_sync(
        lambda: open_store(
            config.output,
            s3_endpoint=config.s3_endpoint,
            lock_lease_s=config.section(ExportOptions).lock_lease_s,
        )
    )
    fingerprint = request_fingerprint(describe_request(config))
    date = config.snapshot_date.isoformat()
    with store.lock(layout.lock(lock_key(config, date))):
        await anyio.to_thread.run_sync(
            refuse_other_request, store, layout, config.output, date, describe_request(config)
        )
        await _complete_committing_runs(config, store, layout, fingerprint)
        return await _export_locked(config, store, layout, stats, shared)


async def _complete_committing_runs(
    config: ExportConfig, store: Store, layout: Layout, fingerprint: str
) -> None:
    """Finish step 3 for this request's runs of other dates killed after step 2.

    Without this, a run killed between its files and its DuckDB load and never resumed would
    leave that date's table rows behind its files for good. A run being resumed right now
    holds its lock and is left alone; a failure here is reported, and tonight's run goes on.
    """
    date = config.snapshot_date.isoformat()
    pending = await anyio.to_thread.run_sync(committing_runs, store, layout, fingerprint, date)
    for checkpoint in pending:
        try:
            with store.lock(layout.lock(lock_key(config, checkpoint.snapshot_date))):
                log.info(
                    "completing the publication of %s (its run stopped after the files)",
                    checkpoint.snapshot_date,
                )
                run = await anyio.to_thread.run_sync(
                    _prepare_run, config, store, layout, RunStats(), checkpoint
                )
                await finish(run, Start.OTHER_DATE)
        except ConcurrentRunError:
            continue
        except ExporterError as exc:
            log.warning(
                "could not complete the publication of %s: %s", checkpoint.snapshot_date, exc
            )


async def _export_locked(
    config: ExportConfig, store: Store, layout: Layout, stats: RunStats, shared: Shared | None
) -> RunSummary:
    """Run the export while holding the run lock of its request and date."""
    run = await anyio.to_thread.run_sync(_prepare_run, config, store, layout, stats)
    run.shared = shared
    if run.checkpoint.phase in ("publishing", "committing"):
        if handed_over(run.checkpoint.run_key):
            return await finish(run, Start.HANDED_OVER)
        log.info("the checkpointed run was sealed; finishing its publication")
        return await finish(run, Start.RESUMED)
    try:
        await open_sinks(run)
        files, api_count = await walk_and_write(run)
    except BaseException:
        await abort_sinks(run)
        await _discard_if_nothing_committed(run)
        raise
    manifest = _snapshot_manifest(run, files, api_count)
    return await finish(run, Start.FRESH, manifest)


async def _discard_if_nothing_committed(run: Run) -> None:
    """Delete the staging of a run that failed before its first checkpoint.

    Nothing in it is resumable (a checkpoint names every committed part), so leaving it would
    only make the next `--resume` find a run with nothing to continue. A run with a checkpoint
    keeps its staging whatever happens. Shielded: also while the run is being cancelled; a
    failure here never hides the run's own error.
    """
    key = run.checkpoint.run_key
    with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
        if not await anyio.to_thread.run_sync(run.store.exists, run.layout.checkpoint(key)):
            await anyio.to_thread.run_sync(discard_run, run.store, run.layout, key)


def _prepare_run(
    config: ExportConfig,
    store: Store,
    layout: Layout,
    stats: RunStats,
    checkpoint: Checkpoint | None = None,
) -> Run:
    """Return the run: resumed from its (or the given) checkpoint, or fresh with staging cleared."""
    date = checkpoint.snapshot_date if checkpoint else config.snapshot_date.isoformat()
    fingerprint = request_fingerprint(describe_request(config))
    key, lock = run_key(fingerprint, date), lock_key(config, date)
    if checkpoint is None and (config.resume or handed_over(key)):
        point = load_checkpoint(store, layout, fingerprint, date)
        checkpoint = point.checkpoint
        if checkpoint is None and _staged_apart(store, layout, lock, key):
            log.warning(RESUME_OTHER_OPTIONS, date)
        else:
            log.log(logging.DEBUG if handed_over(key) else logging.INFO, "%s", point.message)
    if checkpoint is None:
        others = _staged_apart(store, layout, lock, key)
        if not config.resume and (others or store.exists(layout.run(key))):
            log.info("discarding the staged files of an earlier, unfinished run of this request")
        for staged in (*others, key):
            discard_run(store, layout, staged)
        checkpoint = new_checkpoint(fingerprint, date, lock)
    previous = previous_manifest(store, date, layout)
    return start_run(config, store, layout, stats, checkpoint, previous)


def _staged_apart(store: Store, layout: Layout, lock: str, key: str) -> list[str]:
    """Return the staged runs of this request and date (under `lock`) with other options
    than this run's (`key`): a fresh run, holding that lock, replaces them."""
    return sorted(k for k, held in staged_locks(store, layout).items() if held == lock and k != key)


def _snapshot_manifest(run: Run, files: list[PartFile], api_count: int | None) -> Manifest:
    """Return the manifest of the walked snapshot; log its warnings (the summary has them).

    The count warning compares the API's count with the rows only for an unfiltered export.
    """
    config, stats = run.config, run.stats
    unfiltered = is_unfiltered(config)
    warnings = []
    after = stats.extra.pop("api_count_after", None)  # not a count of the manifest
    counted = count_warning(api_count, after, stats.images) if unfiltered else None
    if counted is not None:
        warnings.append(counted)
    if stats.out_of_order or stats.duplicates_dropped:
        warnings.append(
            f"the API served {stats.out_of_order} image(s) out of order (kept) and repeated "
            f"{stats.duplicates_dropped} id(s) (dropped); each image is exported once"
        )
    logged = list(warnings)
    if stats.batch_fallback:  # the client logged it when it happened
        warnings.append(_batch_fallback_warning(stats.batch_refusal))
    manifest = run_manifest(
        run,
        files,
        previous_snapshot=run.previous.snapshot_date if run.previous else None,
        warnings=warnings,
        api_count=api_count if unfiltered else None,
    )
    for warning in logged:
        log.warning("%s", warning)
    return manifest


def _batch_fallback_warning(reason: str) -> str:
    """Return the manifest's and summary's words for a walk the batch host refused."""
    why = f" ({reason})" if reason else ""
    return (
        f"the batch host refused List V2{why}; the walk went on over the account API under "
        "its normal pacing (--batch-api gave no speed-up)"
    )


__all__ = ["describe_request", "dry_run_plan", "export", "is_unfiltered"]
