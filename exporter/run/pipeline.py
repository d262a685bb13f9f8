"""export(config): walker -> normalizer -> sinks -> checkpoint -> publication.

The walker fetches pages in background tasks while this loop normalizes (on the event loop:
pure Python gains nothing from a thread under the GIL) and the sinks write (in worker threads,
where Parquet encoding releases the GIL), so network, CPU and disk overlap; every queue between
them is bounded. After each committed part a checkpoint names the walker state, the column
plan and the parts, so `--resume` after a kill at any instant finishes with every image once.

Publication, in this order (each step recorded before the next, so a kill anywhere resumes):
1. seal: `_manifest.json`, then `_SUCCESS`, into the staged snapshot; checkpoint "publishing".
2. the store publishes the staged snapshot as `OUT/snapshot_date=D` (one atomic step on a
   disk, `_SUCCESS` last on a bucket); checkpoint "committing".
3. each sink's `publish` step (DuckDB: replace D's rows in one transaction).
4. D's change set is published (`exporter.changes`; also the next snapshot's after a re-run;
   after a walk with a previous night, by a fresh process: `exporter.handoff`),
   and the tables derived from it (DuckDB, Delta) are updated; exit 9 stops here when too many
   images were removed.
5. the run's staging is discarded.
A kill before 2 leaves the previous snapshot of D (if any) and DuckDB as they were; between 2
and 3 the files hold the new D and DuckDB the old one until `--resume` (which then walks
nothing: it publishes what is sealed, or only repeats step 3, which is idempotent) or the next
run of the same request on another date (which repeats step 3 for D before its own walk).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import posixpath
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc
import anyio.to_thread
import pyarrow as pa

from exporter import handoff
from exporter.api.pacing import Pacer
from exporter.changes.change_set import ChangeSet, refresh
from exporter.config import ExportConfig
from exporter.errors import ChangesWithheldError, ConcurrentRunError, ExporterError, SinkError
from exporter.options import ExportOptions
from exporter.run.cadence import Cadence
from exporter.run.crashpoint import crash_point
from exporter.run.heap import TRIM_EVERY_IMAGES, bulk_allocation, heap_trimmer, release_heap
from exporter.run.plan import describe_request, dry_run_plan, is_unfiltered, walk_options
from exporter.sinks import PartFile, Publication, Sink, open_sink, table_keepers
from exporter.snapshot.checkpoint import (
    Checkpoint,
    committing_runs,
    discard_run,
    load_checkpoint,
    request_fingerprint,
    save_checkpoint,
    stale_staged_runs,
)
from exporter.snapshot.completeness import count_warning
from exporter.snapshot.manifest import (
    Manifest,
    UploadedBounds,
    build_manifest,
    encode_manifest,
    previous_manifest,
    read_manifest,
)
from exporter.stats import RunStats
from exporter.store import Layout, Store, open_store, seal
from exporter.store.layout import ROOT, run_key, success_path
from exporter.tasks import FirstErrorGroup
from exporter.transform.normalize import Normalizer
from exporter.transform.schema import ColumnSpec

if TYPE_CHECKING:  # the walk's modules (aiohttp: ~14 MB) stay out of a handed-off change step
    from exporter.api.client import ApiClient
    from exporter.walk.walker import Chunk

log = logging.getLogger("exporter.pipeline")


@dataclass
class Run:
    """The mutable state of one export run, as a checkpoint records it."""

    config: ExportConfig
    store: Store
    layout: Layout
    stats: RunStats
    checkpoint: Checkpoint
    normalizer: Normalizer
    sinks: list[Sink]
    bounds: UploadedBounds = field(default_factory=UploadedBounds)
    previous: Manifest | None = None
    pacer: Pacer | None = None  # shared with other accounts of a fleet; None: the run's own

    @property
    def staged(self) -> str:
        return self.layout.staged_snapshot(self.checkpoint.run_key, self.checkpoint.snapshot_date)

    def directory(self, sink: Sink) -> str:
        """Return where `sink` writes: the staged snapshot, or its own place (adds no file)."""
        if sink.file_formats:
            return self.staged
        key, date = self.checkpoint.run_key, self.checkpoint.snapshot_date
        return self.layout.sink_work(key, date, sink.name)

    def set_phase(self, phase: str) -> None:
        """Record a publication phase; parts, states and counts stay as last saved."""
        self.checkpoint.phase = phase
        save_checkpoint(self.store, self.layout, self.checkpoint)

    def save(
        self,
        walker_state: dict[str, Any] | None,
        phase: str = "writing",
        normalizer_state: dict[str, Any] | None = None,
    ) -> None:
        """Record every committed part, the walker and normalizer state, atomically.

        `normalizer_state` is the normalizer's state as of the last written batch (the
        normalizer itself may be working ahead on later pages); None takes it as it is now.
        """
        self.checkpoint.walker_state = walker_state
        self.checkpoint.normalizer_state = normalizer_state or self.normalizer.state()
        self.checkpoint.parts = {s.name: s.parts for s in self.sinks}
        self.checkpoint.counts = {**self.stats.as_dict(), **_bounds_state(self.bounds)}
        self.checkpoint.phase = phase
        save_checkpoint(self.store, self.layout, self.checkpoint)


def _bounds_state(bounds: UploadedBounds) -> dict[str, Any]:
    return {
        "uploaded_min": bounds.low.isoformat() if bounds.low else None,
        "uploaded_max": bounds.high.isoformat() if bounds.high else None,
    }


def _restore_bounds(counts: dict[str, Any]) -> UploadedBounds:
    parse = dt.datetime.fromisoformat
    low, high = counts.get("uploaded_min"), counts.get("uploaded_max")
    return UploadedBounds(parse(low) if low else None, parse(high) if high else None)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def export(
    config: ExportConfig,
    *,
    stats: RunStats | None = None,
    layout: Layout = ROOT,
    pacer: Pacer | None = None,
) -> dict[str, Any]:
    """Export one snapshot and publish it; return the summary (the CLI prints it).

    A fleet passes each account's `layout` (its `account_id=` level) and the `pacer` its
    credential shares with other accounts; a single export uses the root and its own pacer.
    """
    with bulk_allocation():
        return await _export(config, stats if stats is not None else RunStats(), layout, pacer)


async def _export(
    config: ExportConfig, stats: RunStats, layout: Layout, pacer: Pacer | None
) -> dict[str, Any]:
    store = await anyio.to_thread.run_sync(
        lambda: open_store(
            config.output,
            s3_endpoint=config.s3_endpoint,
            lock_lease_s=config.section(ExportOptions).lock_lease_s,
        )
    )
    fingerprint = request_fingerprint(describe_request(config))
    with store.lock(layout.lock(run_key(fingerprint, config.snapshot_date.isoformat()))):
        await _complete_committing_runs(config, store, layout, fingerprint)
        return await _export_locked(config, store, layout, stats, pacer)


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
            with store.lock(layout.lock(checkpoint.run_key)):
                log.info(
                    "completing the publication of %s (its run stopped after the files)",
                    checkpoint.snapshot_date,
                )
                run = await anyio.to_thread.run_sync(
                    _prepare_run, config, store, layout, RunStats(), checkpoint
                )
                await _publish_sinks(run)
                await anyio.to_thread.run_sync(_retire_stale_batches, run)
                await anyio.to_thread.run_sync(_publish_changes, run)
                await anyio.to_thread.run_sync(discard_run, store, layout, checkpoint.run_key)
        except ConcurrentRunError:
            continue
        except ExporterError as exc:
            log.warning(
                "could not complete the publication of %s: %s", checkpoint.snapshot_date, exc
            )


async def _export_locked(
    config: ExportConfig, store: Store, layout: Layout, stats: RunStats, pacer: Pacer | None
) -> dict[str, Any]:
    """Run the export while holding the run lock of its request and date."""
    run = await anyio.to_thread.run_sync(_prepare_run, config, store, layout, stats)
    run.pacer = pacer
    if run.checkpoint.phase in ("publishing", "committing"):
        if not _handed_over(run.checkpoint.run_key):
            log.info("the checkpointed run was sealed; finishing its publication")
        return await _finish_publishing(run)
    try:
        await _open_sinks(run)
        files, api_count = await _walk_and_write(run)
    except BaseException:
        with anyio.CancelScope(shield=True):
            for sink in run.sinks:
                with contextlib.suppress(Exception):
                    await sink.abort()
        raise
    manifest = await anyio.to_thread.run_sync(_seal_and_publish, run, files, api_count)
    await _publish_sinks(run)
    await anyio.to_thread.run_sync(_retire_stale_batches, run)
    _hand_off_changes(run)  # a later night's change step goes on in a fresh process
    published = run.layout.snapshot(run.checkpoint.snapshot_date)
    changes = await _publish_changes_or_say(run, published, manifest)
    await anyio.to_thread.run_sync(_discard_staging, run)
    return _summary(run, published, manifest, changes)


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
    key = run_key(fingerprint, date)
    if checkpoint is None and (config.resume or _handed_over(key)):
        point = load_checkpoint(store, layout, fingerprint, date)
        log.log(logging.DEBUG if _handed_over(key) else logging.INFO, "%s", point.message)
        checkpoint = point.checkpoint
    if checkpoint is None:
        if store.exists(layout.run(key)):
            log.info("discarding the staged files of an earlier, unfinished run of this request")
        discard_run(store, layout, key)
        checkpoint = Checkpoint(
            request_fingerprint=fingerprint,
            run_id=uuid.uuid4().hex,
            snapshot_date=date,
            started_at=_now().isoformat(),
        )
    previous = previous_manifest(store, date, layout)
    options = dataclasses.replace(config.sinks, run_tag=checkpoint.run_id[:8])
    sinks = [open_sink(name, options, config.plugins.get(name)) for name in config.formats]
    if checkpoint.normalizer_state is not None:
        normalizer = Normalizer.from_state(
            config.account_id, config.normalize, checkpoint.normalizer_state
        )
        stats.restore(checkpoint.counts)
        bounds = _restore_bounds(checkpoint.counts)
    else:
        seed = [ColumnSpec.from_dict(c) for c in (previous.schema if previous else ())]
        normalizer = Normalizer(config.account_id, config.normalize, seed=seed or None)
        bounds = UploadedBounds()
    return Run(config, store, layout, stats, checkpoint, normalizer, sinks, bounds, previous)


async def _open_sinks(run: Run) -> None:
    schema = run.normalizer.final_schema()
    for sink in run.sinks:
        committed = run.checkpoint.parts.get(sink.name, [])
        await sink.open(run.store, run.directory(sink), schema, committed)


WRITE_AHEAD = 4  # normalized batches queued for the sinks while the next pages normalize


@dataclass
class _Written:
    """One normalized chunk on its way to the sinks, with the states it completes."""

    batch: pa.RecordBatch | None
    pages: int
    walker_state: dict[str, Any]
    normalizer_state: dict[str, Any]


@dataclass
class _Progress:
    """What the writer has made durable or written so far (the next checkpoint's content)."""

    walker_state: dict[str, Any] | None
    normalizer_state: dict[str, Any] | None = None


# What a run walks instead of the snapshot's walker (a batch of new uploads): the chunks it
# yields from the run's client.
WalkSource = Callable[["ApiClient"], AsyncIterator["Chunk"]]


async def _walk_and_write(
    run: Run, walk: WalkSource | None = None
) -> tuple[list[PartFile], int | None]:
    """Walk every page, write every image, checkpoint after each committed part.

    `walk` replaces the snapshot's walker (and its count request), e.g. for new uploads.

    Two stages overlap: this task normalizes page after page while a writer task feeds the
    sinks (Parquet encoding and compression release the GIL), through a queue of WRITE_AHEAD
    batches. Each batch carries the walker and normalizer states as of
    its page, so a checkpoint names exactly what the committed parts hold.
    """
    config, stats = run.config, run.stats
    from exporter.walk.walker import Walker, make_client

    client = make_client(
        config.base_url, config.account_id, config.credentials, config.walk, stats, run.pacer
    )
    progress = _Progress(run.checkpoint.walker_state, run.checkpoint.normalizer_state)
    cadence = Cadence(config.sinks.part_s)
    async with client:
        if walk is None:
            state = run.checkpoint.walker_state
            options = walk_options(config, run.previous)
            chunks = Walker(client, config.request, options, stats, state).chunks()
        else:
            chunks = walk(client)
        send, receive = anyio.create_memory_object_stream[_Written | None](WRITE_AHEAD)
        # A writer failure first breaks the queue: the writer's error is the one raised.
        async with FirstErrorGroup() as tasks:
            if walk is None and is_unfiltered(config):  # a filtered walk has no count to meet
                tasks.start_soon(_count_images, client, stats)
            tasks.start_soon(_write_batches, run, receive, progress, cadence)
            ticks = anyio.CancelScope()
            tasks.start_soon(_tick, send.clone(), cadence, ticks)
            try:
                async with send:
                    await _normalize_chunks(run, chunks, send)
            finally:
                ticks.cancel()  # the writer's queue ends once the ticks' end of it closes
        if (
            walk is None
            and is_unfiltered(config)
            and stats.extra.get("api_count") not in (None, stats.images)
        ):
            # Asked again only when the rows differ: did the catalog change meanwhile?
            stats.extra["api_count_after"] = await client.get_count()
    await _commit(run, progress)
    stats.anomalies = run.normalizer.anomalies
    final = run.normalizer.final_schema()
    files: list[PartFile] = []
    for sink in run.sinks:
        files += await sink.finish(final, run.normalizer.conform)
    return files, stats.extra.get("api_count")


async def _count_images(client: ApiClient, stats: RunStats) -> None:
    """Ask the API's image count beside the first pages, not one round trip before them."""
    stats.extra["api_count"] = await client.get_count()


async def _tick(
    send: anyio.abc.ObjectSendStream[_Written | None], cadence: Cadence, scope: anyio.CancelScope
) -> None:
    """Wake the writer when a checkpoint falls due while no page arrives (a paced walk)."""
    with scope:
        async with send:
            while True:
                await anyio.sleep(max(cadence.remaining(), 0.25))
                if cadence.due():
                    await send.send(None)


async def _normalize_chunks(
    run: Run, walk: AsyncIterator[Chunk], send: anyio.abc.ObjectSendStream[_Written | None]
) -> None:
    """Normalize each chunk of the walk and queue it for the writer, in walk order."""
    chunks_gen = cast("AsyncGenerator[Chunk, None]", walk)
    async with contextlib.aclosing(chunks_gen) as chunks:
        async for chunk in chunks:
            batch = None
            if chunk.images:
                # Inline, not in a worker thread: normalizing holds the GIL throughout, so a
                # thread only added hand-offs, and its allocator arena ~30 MB of peak RSS.
                batch = run.normalizer.normalize(chunk.images)
            # Taken between two normalize calls: the plan as of this very page.
            state = run.normalizer.state()
            await send.send(_Written(batch, chunk.pages, chunk.state, state))


async def _write_batches(
    run: Run,
    receive: anyio.abc.ObjectReceiveStream[_Written | None],
    progress: _Progress,
    cadence: Cadence,
) -> None:
    """Write queued batches to every sink; commit a part (and checkpoint) when one is full
    or when the cadence says one is due (None in the queue: a tick, nothing to write)."""
    stats = run.stats
    trim, written = heap_trimmer(), 0
    async with receive:
        async for item in receive:
            if item is None:
                if cadence.due():
                    await _commit(run, progress)
                    cadence.committed()
                continue
            if item.batch is not None:
                run.bounds.update(item.batch)
                for sink in run.sinks:
                    await sink.write(item.batch)
                stats.images += item.batch.num_rows
                written += item.batch.num_rows
                if written >= TRIM_EVERY_IMAGES:
                    await anyio.to_thread.run_sync(trim)
                    written = 0
            stats.pages += item.pages
            progress.walker_state = item.walker_state
            progress.normalizer_state = item.normalizer_state
            cadence.wrote()
            if cadence.due() or any(sink.should_rotate() for sink in run.sinks):
                await _commit(run, progress)
                cadence.committed()


async def _commit(run: Run, progress: _Progress) -> None:
    for sink in run.sinks:
        await sink.commit_part()
    await anyio.to_thread.run_sync(
        functools.partial(
            run.save, progress.walker_state, normalizer_state=progress.normalizer_state
        )
    )
    run.stats.committed_images = run.stats.images
    run.stats.committed_pages = run.stats.pages
    parts = sum(len(sink.parts) for sink in run.sinks)
    log.debug("checkpoint: %s images in %s committed part(s)", f"{run.stats.images:,}", parts)


def _seal_and_publish(run: Run, files: list[PartFile], api_count: int | None) -> Manifest:
    """Write the manifest and _SUCCESS into the staged snapshot, publish it; return the manifest.

    Steps 1 and 2 of the module docstring: the checkpoint says "publishing" once the staged
    snapshot is sealed and "committing" once it is published.
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
    manifest = build_manifest(
        run_id=run.checkpoint.run_id,
        snapshot_date=run.checkpoint.snapshot_date,
        account_id=config.account_id,
        request=describe_request(config),
        started_at=dt.datetime.fromisoformat(run.checkpoint.started_at),
        finished_at=_now(),
        counts=stats.as_dict(),
        files=files,
        columns=[c.to_dict() for c in run.normalizer.columns()],
        uploaded=run.bounds.as_dict(),
        api_count=api_count if unfiltered else None,
        previous_snapshot=run.previous.snapshot_date if run.previous else None,
        drift=run.normalizer.drift(),
        findings={**run.normalizer.report(), "warnings": warnings},
    )
    for warning in logged:
        log.warning("%s", warning)
    seal(run.store, run.staged, encode_manifest(manifest))
    run.save(None, phase="publishing")
    crash_point("sealed")
    run.store.publish(run.staged, run.layout.snapshot(run.checkpoint.snapshot_date))
    run.set_phase("committing")
    crash_point("files-published")
    return manifest


def _batch_fallback_warning(reason: str) -> str:
    """Return the manifest's and summary's words for a walk the batch host refused."""
    why = f" ({reason})" if reason else ""
    return (
        f"the batch host refused List V2{why}; the walk went on over the account API under "
        "its normal pacing (--batch-api gave no speed-up)"
    )


async def _publish_sinks(run: Run) -> None:
    """Step 3: each sink's publish step, given its own directory and checkpointed parts."""
    schema = run.normalizer.final_schema()
    for sink in run.sinks:
        publication = Publication(
            store=run.store,
            layout=run.layout,
            snapshot_date=run.checkpoint.snapshot_date,
            schema=schema,
            directory=run.directory(sink),
            parts=run.checkpoint.parts.get(sink.name, []),
        )
        await sink.publish(publication)


def _retire_stale_batches(run: Run) -> None:
    """Delete the new-upload batches of this date made against another run of its snapshot.

    A re-run of date D publishes a snapshot that already holds what D's earlier batches
    added: left in place, those ids would stand in D and in a batch of D. Each batch records
    the run of D it followed (`new_uploads.base_run_id`). Its rows in the tables that keep
    batches (DuckDB, Delta) go first (a kill then leaves the batch to be found again), then
    `_SUCCESS`, so a reader never takes a half-deleted batch for a published one.
    """
    store, layout, date = run.store, run.layout, run.checkpoint.snapshot_date
    for name in layout.batch_names(store.list_dir(layout.new_uploads(date))):
        batch = layout.batch(date, name)
        manifest = read_manifest(store, batch)
        followed = manifest.new_uploads if manifest else None
        if followed and followed.base_run_id == run.checkpoint.run_id:
            continue
        log.info("removing %s: it followed an earlier run of snapshot %s", batch, date)
        for keeper in table_keepers(run.sinks):  # its rows go first
            keeper.drop_new_uploads(store, layout, date, [name])
        store.delete(success_path(batch))
        store.delete_tree(batch)


def _handed_over(key: str) -> bool:
    """Return whether this process was started to finish run `key` (`exporter.handoff`)."""
    handed = handoff.received()
    return handed is not None and handed.run_key == key


def _hand_off_changes(run: Run) -> None:
    """Publish a later night's change set from a fresh process (`exporter.handoff`).

    Only where it pays: a night with a previous snapshot (a first night's change set needs
    no diff), on a local store (whose lock can be inherited), in the CLI's own process.
    """
    if run.previous is None or not handoff.allowed():
        return
    held = getattr(run.store, "held_lock", lambda _: None)(run.layout.lock(run.checkpoint.run_key))
    if held is None:
        return
    log.debug("publishing the change set from a fresh process")
    handoff.hand_off(run.checkpoint.run_key, *held)


def _discard_staging(run: Run) -> None:
    """Step 5: drop this run's staging, and that of runs abandoned long before this date."""
    discard_run(run.store, run.layout, run.checkpoint.run_key)
    for key in stale_staged_runs(run.store, run.layout, run.checkpoint.snapshot_date):
        log.info("removing the staged files of an abandoned run: %s", run.layout.run(key))
        discard_run(run.store, run.layout, key)


def _publish_changes(run: Run) -> list[ChangeSet]:
    """Step 4: publish the snapshot's change set (and the next snapshot's, see `refresh`).

    Runs after the sinks' publish steps (a DuckDB-only night is read from its table). The
    checkpoint ("committing") outlives a kill or a withheld change set (exit 9), so `--resume`
    (with `--accept-removals` after exit 9) publishes the changes without walking.
    """
    manifest = read_manifest(run.store, run.layout.snapshot(run.checkpoint.snapshot_date))
    if manifest is None or manifest.run_id != run.checkpoint.run_id:
        raise SinkError("store", "the published snapshot is not this run's any more; export again")
    release_heap()
    return refresh(
        run.store,
        run.layout,
        manifest,
        run_key=run.checkpoint.run_key,
        options=run.config.changes,
    )


async def _finish_publishing(run: Run) -> dict[str, Any]:
    """Resume a run killed after sealing: complete publication from where it stopped.

    The staged snapshot holds parts, manifest and `_SUCCESS`; walking again would duplicate
    every image, so the run only completes what publication had left to do: publish the
    files unless they were already swapped in ("publishing"), then the sinks' publish steps.
    """
    published = run.layout.snapshot(run.checkpoint.snapshot_date)
    if run.checkpoint.phase == "publishing":
        await anyio.to_thread.run_sync(_publish_sealed, run, published)
    manifest = await anyio.to_thread.run_sync(read_manifest, run.store, published)
    if manifest is None or manifest.run_id != run.checkpoint.run_id:
        raise SinkError("store", f"{published} is not this run's snapshot any more; export again")
    if _handed_over(run.checkpoint.run_key):  # the walk's process published the sinks
        crash_point("changes-handed-over")
    else:
        await _publish_sinks(run)
        await anyio.to_thread.run_sync(_retire_stale_batches, run)
    run.stats.restore(run.checkpoint.counts)
    changes = await _publish_changes_or_say(run, published, manifest)
    await anyio.to_thread.run_sync(discard_run, run.store, run.layout, run.checkpoint.run_key)
    return _summary(run, published, manifest, changes)


async def _publish_changes_or_say(run: Run, published: str, manifest: Manifest) -> list[ChangeSet]:
    """Step 4; a withheld change set (exit 9) carries the published snapshot's summary."""
    try:
        return await anyio.to_thread.run_sync(_publish_changes, run)
    except ChangesWithheldError as exc:
        exc.summary = {**_summary(run, published, manifest), "changes": "withheld (exit 9)"}
        raise


def _publish_sealed(run: Run, published: str) -> None:
    """Publish the sealed staged snapshot unless this run's is already published."""
    manifest = read_manifest(run.store, published)
    if manifest is None or manifest.run_id != run.checkpoint.run_id:
        # Not swapped in yet: the staged directory is still this run's sealed snapshot.
        run.store.publish(run.staged, published)
    run.set_phase("committing")


def _summary(
    run: Run, published: str, manifest: Manifest, changes: Sequence[ChangeSet] = ()
) -> dict[str, Any]:
    files = manifest.files
    started = dt.datetime.fromisoformat(manifest.started_at.replace("Z", "+00:00"))
    finished = dt.datetime.fromisoformat(manifest.finished_at.replace("Z", "+00:00"))
    drift_report = manifest.drift
    drift = drift_report.changes
    warnings = manifest.findings.warnings
    return {
        "snapshot": _display_path(run.config.output, published),
        "images": run.stats.images,
        "files": len(files),
        "bytes": sum(int(f.bytes) for f in files),
        "duration_s": round((finished - started).total_seconds(), 2),
        "requests": run.stats.requests,
        "retries": run.stats.retries,
        "throttled": run.stats.throttled,
        "drift": _drift_text(drift, first=drift_report.previous_snapshot is None),
        "warnings": "; ".join(warnings) if warnings else "none",
        "changes": changes[0].describe() if changes else "none",
        "change_counts": dict(changes[0].counts) if changes and changes[0].published else {},
        "run_id": run.checkpoint.run_id,
    }


def _drift_text(changes: Sequence[dict[str, Any]], *, first: bool) -> str:
    """Return the summary's drift: against the previous snapshot, or what a first one widened
    while it walked (a column seen as bool, then as a number), which is not drift."""
    if first:
        return (
            f"first snapshot ({len(changes)} column(s) widened during the walk)"
            if changes
            else ("first snapshot")
        )
    return f"{len(changes)} change(s)" if changes else "none"


def _display_path(output: str, published: str) -> str:
    return posixpath.join(output.rstrip("/"), published)


__all__ = ["describe_request", "dry_run_plan", "export", "is_unfiltered"]
