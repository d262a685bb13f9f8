"""A run's state and its writer: walker -> normalizer -> sinks, checkpointed after each part.

The walker fetches pages in background tasks while this loop normalizes (on the event loop:
pure Python gains nothing from a thread under the GIL) and the sinks write (in worker threads,
where Parquet encoding releases the GIL), so network, CPU and disk overlap; every queue between
them is bounded. After each committed part a checkpoint names the walker state, the column
plan and the parts, so `--resume` after a kill at any instant finishes with every image once.

A snapshot's run (`pipeline`) and a batch of new uploads (`new_uploads_run`) both write through
here; a batch passes its own walk (`WalkSource`) in place of the snapshot's walker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.abc
import anyio.to_thread
import pyarrow as pa

from exporter.api.pacing import Pacer
from exporter.config import ExportConfig
from exporter.run.cadence import Cadence
from exporter.run.heap import TRIM_EVERY_IMAGES, heap_trimmer
from exporter.run.new_uploads import BatchPlan
from exporter.run.plan import describe_request, is_unfiltered, walk_options
from exporter.sinks import PartFile, Sink, open_sink
from exporter.snapshot.checkpoint import Checkpoint, save_checkpoint
from exporter.snapshot.manifest import Manifest, UploadedBounds, build_manifest
from exporter.stats import RunStats
from exporter.store import Layout, Store
from exporter.tasks import FirstErrorGroup
from exporter.transform.normalize import Normalizer
from exporter.transform.schema import ColumnSpec

if TYPE_CHECKING:  # the walk's modules (aiohttp: ~14 MB) stay out of a handed-off change step
    from exporter.api.client import ApiClient, ConnectionPool
    from exporter.walk.walker import Chunk

log = logging.getLogger("exporter.pipeline")  # the name JSON log lines have always carried


@dataclass(frozen=True)
class Shared:
    """What a fleet's account shares with the others: its credential's pacer (Cloudflare's
    limit is per user) and the fleet's connections (a new one costs TCP and TLS handshakes,
    as much as a small account's whole walk)."""

    pacer: Pacer
    pool: ConnectionPool


@dataclass
class Run:
    """The mutable state of one export run (a snapshot, or a batch), as a checkpoint records it."""

    config: ExportConfig
    store: Store
    layout: Layout
    stats: RunStats
    checkpoint: Checkpoint
    normalizer: Normalizer
    sinks: list[Sink]
    bounds: UploadedBounds = field(default_factory=UploadedBounds)
    previous: Manifest | None = None
    shared: Shared | None = None  # a fleet's account's; None: its own pacer and connections
    batch: str | None = None  # a batch of new uploads following snapshot D: its name
    plan: BatchPlan | None = None  # and its plan (`exporter.run.new_uploads`)

    @property
    def staged(self) -> str:
        """Return the staged directory: the snapshot's, or the batch's."""
        key, date = self.checkpoint.run_key, self.checkpoint.snapshot_date
        if self.batch is not None:
            return self.layout.staged_batch(key, date, self.batch)
        return self.layout.staged_snapshot(key, date)

    @property
    def published(self) -> str:
        """Return where the sealed run is published: `snapshot_date=D`, or D's batch."""
        date = self.checkpoint.snapshot_date
        if self.batch is not None:
            return self.layout.batch(date, self.batch)
        return self.layout.snapshot(date)

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
        self._sealed()

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
        self._sealed()

    def _sealed(self) -> None:
        """Tell the stats the run is sealed once its saved checkpoint says so (the stop line)."""
        if self.checkpoint.phase != "writing":
            self.stats.publishing = self.published


def _bounds_state(bounds: UploadedBounds) -> dict[str, Any]:
    return {
        "uploaded_min": bounds.low.isoformat() if bounds.low else None,
        "uploaded_max": bounds.high.isoformat() if bounds.high else None,
    }


def restore_bounds(counts: dict[str, Any]) -> UploadedBounds:
    """Return the `uploaded` bounds a checkpoint's counts recorded."""
    parse = dt.datetime.fromisoformat
    low, high = counts.get("uploaded_min"), counts.get("uploaded_max")
    return UploadedBounds(parse(low) if low else None, parse(high) if high else None)


def utc_now() -> dt.datetime:
    """Return now, in UTC (a run's started_at and finished_at)."""
    return dt.datetime.now(dt.UTC)


def run_manifest(
    run: Run,
    files: list[PartFile],
    *,
    previous_snapshot: str | None,
    warnings: list[str],
    api_count: int | None = None,
) -> Manifest:
    """Return the manifest of what `run` walked and wrote: the one place a snapshot's and a
    batch's manifests are built from a run (a batch adds its section to it)."""
    return build_manifest(
        run_id=run.checkpoint.run_id,
        snapshot_date=run.checkpoint.snapshot_date,
        account_id=run.config.account_id,
        request=describe_request(run.config),
        started_at=dt.datetime.fromisoformat(run.checkpoint.started_at),
        finished_at=utc_now(),
        counts=run.stats.as_dict(),
        files=files,
        columns=[c.to_dict() for c in run.normalizer.columns()],
        uploaded=run.bounds.as_dict(),
        api_count=api_count,
        previous_snapshot=previous_snapshot,
        drift=run.normalizer.drift(),
        findings={**run.normalizer.report(), "warnings": warnings},
    )


def new_checkpoint(fingerprint: str, snapshot_date: str, lock: str) -> Checkpoint:
    """Return the checkpoint of a new run of the request `fingerprint` for a date, held
    under the run lock `lock` (`exporter.run.plan.lock_key`)."""
    return Checkpoint(
        request_fingerprint=fingerprint,
        run_id=uuid.uuid4().hex,
        snapshot_date=snapshot_date,
        started_at=utc_now().isoformat(),
        lock=lock,
    )


def start_run(
    config: ExportConfig,
    store: Store,
    layout: Layout,
    stats: RunStats,
    checkpoint: Checkpoint,
    previous: Manifest | None,
) -> Run:
    """Return the run of `checkpoint`: its normalizer, counts and bounds as the checkpoint
    left them, or, before its first part, a normalizer seeded with `previous`'s columns (the
    manifest this run follows), so a night keeps the column order of the one before.

    The sinks' files carry the run id's first characters (`run_tag`): a resumed run's parts
    never collide with those of another run of the date.
    """
    options = dataclasses.replace(config.sinks, run_tag=checkpoint.run_id[:8])
    sinks = [open_sink(name, options, config.plugins.get(name)) for name in config.formats]
    if checkpoint.normalizer_state is not None:
        normalizer = Normalizer.from_state(
            config.account_id, config.normalize, checkpoint.normalizer_state
        )
        stats.restore(checkpoint.counts)
        bounds = restore_bounds(checkpoint.counts)
    else:
        seed = [ColumnSpec.from_dict(c) for c in (previous.schema if previous else ())]
        normalizer = Normalizer(config.account_id, config.normalize, seed=seed or None)
        bounds = UploadedBounds()
    run = Run(config, store, layout, stats, checkpoint, normalizer, sinks, bounds, previous)
    run._sealed()
    return run


async def open_sinks(run: Run) -> None:
    """Open every sink where it writes, resumed from the parts its checkpoint names."""
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
    walker_state: Callable[[], dict[str, Any]]  # built at a checkpoint only (`Chunk.state`)
    normalizer_state: dict[str, Any]


@dataclass
class _Progress:
    """What the writer has made durable or written so far (the next checkpoint's content)."""

    walker_state: Callable[[], dict[str, Any] | None]  # built at a checkpoint only
    normalizer_state: dict[str, Any] | None = None


# What a run walks instead of the snapshot's walker (a batch of new uploads): the chunks it
# yields from the run's client.
WalkSource = Callable[["ApiClient"], AsyncIterator["Chunk"]]


async def walk_and_write(
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

    shared = run.shared
    client = make_client(
        config.base_url,
        config.account_id,
        config.credentials,
        config.walk,
        stats,
        shared.pacer if shared else None,
        shared.pool if shared else None,
    )
    resumed = run.checkpoint.walker_state
    progress = _Progress(lambda: resumed, run.checkpoint.normalizer_state)
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
    walker_state = progress.walker_state()  # here, not in the thread: the walk goes on
    await anyio.to_thread.run_sync(
        functools.partial(run.save, walker_state, normalizer_state=progress.normalizer_state)
    )
    run.stats.committed_images = run.stats.images
    run.stats.committed_pages = run.stats.pages
    parts = sum(len(sink.parts) for sink in run.sinks)
    log.debug("checkpoint: %s images in %s committed part(s)", f"{run.stats.images:,}", parts)


async def abort_sinks(run: Run) -> None:
    """Abort every sink (shielded: also while the run is being cancelled); errors ignored."""
    with anyio.CancelScope(shield=True):
        for sink in run.sinks:
            with contextlib.suppress(Exception):
                await sink.abort()


__all__ = [
    "Run",
    "WalkSource",
    "abort_sinks",
    "new_checkpoint",
    "open_sinks",
    "restore_bounds",
    "start_run",
    "utc_now",
    "walk_and_write",
]
