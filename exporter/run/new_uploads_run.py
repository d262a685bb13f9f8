"""`export --new-uploads`: one batch of the images uploaded since the latest snapshot D.

The plan is pure (`exporter.run.new_uploads`); this module does its I/O with the snapshot's own
machinery (`writer`: normalizer seeded from D's schema, sinks, checkpoint after every
committed part; `publication`: sealing and the tail) and publishes
`OUT/new_uploads/snapshot_date=D/batch=<B>/`:
1. under the run locks (below), find D and its published batches again, plan the batch, and
   read the ids of D and those batches uploaded at or after the cutoff (DuckDB over their
   files with a filter on `uploaded`: memory follows the lag window);
2. walk desc from the newest image, writing the new uploads, checkpointing as a snapshot does;
   nothing new: the staging is discarded, nothing is published, exit 0;
3. seal (`_manifest.json`, then `_SUCCESS`) and publish the staged batch (checkpoint
   "publishing", then "committing"); then each table-keeping sink's `load_new_uploads` (the
   DuckDB and Delta `new_uploads` tables, idempotent); then the staging is discarded.
A kill anywhere leaves no partial batch; `--resume` continues from the checkpoint.

Locks. The batch run holds its own lock (one batch run per request at a time) and the run
lock of the request's nightly export for D, for the run's snapshot date (today by default:
tonight's snapshot), and for any later date staged for the request, whatever the options of
each (`plan.lock_key`): a nightly export running makes the batch exit 8, and a nightly
starting during a batch (seconds) exits 8 the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import posixpath
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from exporter.api.pagination import ListRequest
from exporter.changes.change_set import change_scope, night_source, unreadable
from exporter.changes.diff import night_relation
from exporter.config import ExportConfig
from exporter.errors import ConcurrentRunError, ConfigError, SinkError, first_line
from exporter.options import ExportOptions, NewUploadsOptions
from exporter.run.heap import bulk_allocation
from exporter.run.new_uploads import BatchPlan, BatchWalk, plan_batch
from exporter.run.pipeline import export
from exporter.run.plan import describe_request, lock_key
from exporter.run.publication import Start, finish
from exporter.run.summary import RunSummary, summarize
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
from exporter.sinks import PartFile, ReadableNights, night_sinks, readable_formats
from exporter.snapshot.checkpoint import (
    discard_run,
    load_checkpoint,
    redact_request,
    request_fingerprint,
    staged_locks,
)
from exporter.snapshot.manifest import (
    NEW_UPLOADS,
    Manifest,
    NewUploads,
    read_manifest,
    sealed_manifests,
)
from exporter.stats import RunStats
from exporter.store import Layout, Store, open_store
from exporter.store.layout import LOCK_SUFFIX, ROOT, batch_name, run_key

if TYPE_CHECKING:  # the walk's modules (aiohttp) load only when a batch walks
    from exporter.api.client import ApiClient
    from exporter.walk.walker import Chunk

log = logging.getLogger("exporter.new_uploads")

NO_SNAPSHOT = "no published snapshot of this request in the output yet: run export first"


@dataclass
class Base:
    """Snapshot D (its manifest) and the manifests of its published batches, oldest first."""

    manifest: Manifest
    batches: list[Manifest] = field(default_factory=list)

    @property
    def date(self) -> str:
        return self.manifest.snapshot_date


def batch_fingerprint(config: ExportConfig) -> str:
    """Return the fingerprint of the request's batch runs (apart from its snapshot runs)."""
    return request_fingerprint({**describe_request(config), "new_uploads": True})


def find_base(store: Store, layout: Layout, config: ExportConfig) -> Base:
    """Return the latest sealed snapshot of the request and its sealed batches.

    ConfigError (exit 2) when the request has no snapshot yet.
    """
    scope = change_scope(redact_request(describe_request(config)))
    for manifest in sealed_manifests(store, layout, newest_first=True):
        if change_scope(manifest.request) == scope:
            date = manifest.snapshot_date
            names = layout.batch_names(store.list_dir(layout.new_uploads(date)))
            batches = [read_manifest(store, layout.batch(date, name)) for name in names]
            base = Base(manifest, [b for b in batches if b is not None])
            _check_readable(base, describe_request(config))
            return base
    raise ConfigError("--new-uploads", NO_SNAPSHOT)


def _check_readable(base: Base, request: dict[str, Any]) -> None:
    """ConfigError (exit 2, before any request) unless D, its batches and this batch are each
    written by a sink that reads its nights back: a batch leaves out the ids D and the earlier
    batches hold, so one that cannot read them could repeat ids; one written unreadable would
    stop every later batch of D."""
    why = "a batch must read it to leave out the images already in it"
    if not _reads_back(base.manifest.request):
        raise ConfigError("--new-uploads", f"{unreadable(base.date)}; {why}")
    for batch in base.batches:
        if not _reads_back(batch.request):
            name = batch.new_uploads.batch if batch.new_uploads else "?"
            raise ConfigError("--new-uploads", f"batch {name} of {unreadable(base.date)}; {why}")
    if not _reads_back(request):
        formats = ", ".join(readable_formats())
        raise ConfigError(
            "--new-uploads",
            f"this batch would have no format a later batch reads ({formats}); add one",
        )


def _reads_back(request: Mapping[str, Any]) -> bool:
    return any(isinstance(sink, ReadableNights) for sink in night_sinks(request))


def dry_run_plan(config: ExportConfig) -> dict[str, Any]:
    """Return `--dry-run`'s plan of a batch: the base snapshot, watermark, lag, first request."""
    from urllib.parse import urlencode

    store = open_store(config.output, s3_endpoint=config.s3_endpoint)
    base = find_base(store, ROOT, config)
    plan = plan_batch(base.manifest, base.batches, config.section(NewUploadsOptions).lag_s)
    params = urlencode(config.request.params("desc", None))
    url = f"{config.base_url}/accounts/{config.account_id}/images/v2?{params}"
    target = posixpath.join(config.output, ROOT.new_uploads(base.date), "batch=<new>")
    return {
        "plan": config.plan(),
        "new_uploads": plan.describe(),
        "requests": [f"GET {url}"],
        "publishes": target,
    }


def _lock_keys(store: Store, layout: Layout, config: ExportConfig, base: str) -> list[str]:
    """Return the run lock keys to take: the nightly's of D, of the run's date and of any later
    date staged or running for the request (whatever its options), then the batch run's own."""
    nightly = request_fingerprint(describe_request(config))
    dates = {base, config.snapshot_date.isoformat()}
    names = [*store.list_dir(layout.staging), *staged_locks(store, layout).values()]
    for name in names:
        key = name.removesuffix(LOCK_SUFFIX)
        day = key[:10]
        if day >= base and key in (run_key(nightly, day), lock_key(config, day)):
            dates.add(day)
    keys = [lock_key(config, d) for d in sorted(d for d in dates if d >= base)]
    return [*keys, lock_key(config, base, new_uploads=True)]


async def run_export(
    config: ExportConfig,
    *,
    stats: RunStats | None = None,
    layout: Layout = ROOT,
    shared: Shared | None = None,
) -> RunSummary:
    """Run what `config` asks: a batch of new uploads (`--new-uploads`), else a snapshot.

    The one entry point of `export` and of a fleet's accounts, as `pipeline.export` is.
    """
    if not config.new_uploads:
        return await export(config, stats=stats, layout=layout, shared=shared)
    with bulk_allocation():
        stats = stats if stats is not None else RunStats()
        return await export_new_uploads(config, stats, layout, shared)


async def export_new_uploads(
    config: ExportConfig, stats: RunStats, layout: Layout, shared: Shared | None
) -> RunSummary:
    """Publish one batch of new uploads after the latest snapshot; return the summary."""
    store = await anyio.to_thread.run_sync(
        lambda: open_store(
            config.output,
            s3_endpoint=config.s3_endpoint,
            lock_lease_s=config.section(ExportOptions).lock_lease_s,
        )
    )
    base = await anyio.to_thread.run_sync(find_base, store, layout, config)
    keys = await anyio.to_thread.run_sync(_lock_keys, store, layout, config, base.date)
    with contextlib.ExitStack() as locks:
        for key in keys:
            locks.enter_context(store.lock(layout.lock(key)))
        base = await anyio.to_thread.run_sync(find_base, store, layout, config)
        if keys[-1] != lock_key(config, base.date, new_uploads=True):
            raise ConcurrentRunError("a snapshot was published while the batch began; run again")
        return await _export_locked(config, store, layout, stats, shared, base)


def _prepare(
    config: ExportConfig, store: Store, layout: Layout, stats: RunStats, base: Base
) -> Run:
    """Return the batch run: resumed from its checkpoint, or fresh with its staging cleared."""
    fingerprint, date = batch_fingerprint(config), base.date
    checkpoint = None
    if config.resume:
        point = load_checkpoint(store, layout, fingerprint, date)
        log.info("%s", point.message)
        checkpoint = point.checkpoint
    if checkpoint is None:
        discard_run(store, layout, run_key(fingerprint, date))
        checkpoint = new_checkpoint(fingerprint, date, lock_key(config, date, new_uploads=True))
    run = start_run(config, store, layout, stats, checkpoint, base.manifest)
    walker_state = checkpoint.walker_state
    if walker_state is not None:
        plan = BatchPlan.from_dict(walker_state["plan"])
    else:
        lag = config.section(NewUploadsOptions).lag_s
        plan = plan_batch(base.manifest, base.batches, lag)
    started = dt.datetime.fromisoformat(checkpoint.started_at)
    run.batch, run.plan = batch_name(started, checkpoint.run_id), plan
    return run


async def _export_locked(
    config: ExportConfig,
    store: Store,
    layout: Layout,
    stats: RunStats,
    shared: Shared | None,
    base: Base,
) -> RunSummary:
    run = await anyio.to_thread.run_sync(_prepare, config, store, layout, stats, base)
    run.shared = shared
    assert run.plan is not None
    plan = run.plan
    if run.checkpoint.phase in ("publishing", "committing"):
        log.info("the checkpointed batch was sealed; finishing its publication")
        return await finish(run, Start.RESUMED)
    log.info(
        "new uploads after snapshot %s: watermark %s, lag %gs, cutoff %s, %d earlier batch(es)",
        plan.base,
        plan.describe()["watermark"],
        plan.lag_s,
        plan.describe()["cutoff"],
        len(plan.batches),
    )
    known = await anyio.to_thread.run_sync(known_ids, store, layout, base, plan)
    state = run.checkpoint.walker_state
    walk = BatchWalk.from_state(state, known) if state else BatchWalk(plan, known)
    try:
        await open_sinks(run)
        files, _ = await walk_and_write(run, walk=_walk_source(config.request, walk, stats))
    except BaseException:
        await abort_sinks(run)
        raise
    if stats.images == 0:
        await abort_sinks(run)
        await anyio.to_thread.run_sync(discard_run, store, layout, run.checkpoint.run_key)
        summary = summarize(run, None)
        log.info("%s", summary.nothing_new())
        return summary
    return await finish(run, Start.FRESH, _batch_manifest(run, files), walk.state())


def _walk_source(
    request: ListRequest, walk: BatchWalk, stats: RunStats
) -> Callable[[ApiClient], AsyncIterator[Chunk]]:
    """Return the chunks of the desc walk over the lag window, one chunk per page."""

    async def chunks(client: ApiClient) -> AsyncIterator[Chunk]:
        from exporter.walk.walker import Chunk

        if walk.done:
            return
        pages = client.iter_pages(request, "desc", walk.token)
        async with contextlib.aclosing(pages):  # type: ignore[type-var]
            async for page in pages:
                images = walk.feed(page)
                stats.duplicates_dropped = walk.repeats
                yield Chunk.built(images, walk.state(), 1)
                if walk.done:
                    return

    return chunks


def known_ids(store: Store, layout: Layout, base: Base, plan: BatchPlan) -> set[str]:
    """Return the ids of D and of its batches uploaded at or after the cutoff.

    DuckDB reads the files with the filter pushed down (row groups whose `uploaded` is all
    older are skipped), so only the lag window's ids reach Python.
    """
    import duckdb  # here: every export imports this module, and a walk needs no DuckDB

    with tempfile.TemporaryDirectory(prefix="cf-new-uploads-") as scratch:
        con = duckdb.connect()
        try:
            nights = [base.manifest, *base.batches]  # each read through the sinks that wrote it
            sources = [night_source(store, layout, night, Path(scratch)) for night in nights]
            selects = []
            for index, source in enumerate(sources):
                night_relation(con, source, f"known_{index}")
                selects.append(f"SELECT id FROM known_{index} WHERE uploaded >= $cutoff")
            rows = con.execute(" UNION ALL ".join(selects), {"cutoff": plan.cutoff}).fetchall()
        except duckdb.Error as exc:
            message = f"cannot read snapshot {base.date}: {first_line(exc)}"
            raise SinkError("new_uploads", message) from None
        finally:
            con.close()
    return {str(row[0]) for row in rows}


def _batch_manifest(run: Run, files: list[PartFile]) -> Manifest:
    """Return the manifest of the walked batch: a snapshot's, with its plan and base run."""
    assert run.plan is not None
    manifest = run_manifest(run, files, previous_snapshot=run.checkpoint.snapshot_date, warnings=[])
    section = NewUploads.from_json(
        {
            **run.plan.describe(),
            "batch": run.batch,
            "base_run_id": run.previous.run_id if run.previous else None,
        }
    )
    return dataclasses.replace(manifest, kind=NEW_UPLOADS, new_uploads=section)
