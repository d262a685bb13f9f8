"""The publication tail of a run: seal, publish the files, the sinks, the changes, discard.

Every run ends here, a snapshot's (`pipeline`) and a batch of new uploads' (`new_uploads_run`),
from wherever it stands (`Start`). In this order, each step recorded before the next, so a kill
anywhere resumes:
0. a snapshot of D published by another request (`refuse_other_request`) is never replaced:
   checked before the walk and again under D's publication lock just before 1-2.
1. seal: `_manifest.json`, then `_SUCCESS`, into the staged directory; checkpoint "publishing".
2. the store publishes it as `OUT/snapshot_date=D` (a batch: `OUT/new_uploads/...`; one atomic
   step on a disk, `_SUCCESS` last on a bucket); checkpoint "committing".
3. each sink's `publish` step (DuckDB: replace D's rows in one transaction; a batch: append
   to `new_uploads`); a snapshot then retires D's batches made against another run of D.
4. a snapshot's change set is published (`exporter.changes`; also the next snapshot's after
   a re-run; after a walk, by a fresh process: `exporter.handoff`),
   and the tables derived from it (DuckDB, Delta) are updated; exit 9 stops here when too
   many images were removed.
5. the run's staging is discarded.
A kill before 2 leaves the previous snapshot of D (if any) and DuckDB as they were; between 2
and 3 the files hold the new D and DuckDB the old one until `--resume` (which then walks
nothing: it publishes what is sealed, or only repeats step 3, which is idempotent) or the next
run of the same request on another date (which repeats step 3 for D before its own walk).

Which steps a start takes is `plan_tail` (pure); `finish` drives them.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from exporter import handoff
from exporter.changes.change_set import ChangeSet, change_scope, refresh
from exporter.errors import ChangesWithheldError, ConfigError, SinkError
from exporter.run.crashpoint import crash_point
from exporter.run.heap import release_heap
from exporter.run.plan import lock_key
from exporter.run.summary import RunSummary, summarize
from exporter.run.writer import Run
from exporter.sinks import Publication, TableKeeper, table_keepers
from exporter.snapshot.checkpoint import discard_run, stale_staged_runs
from exporter.snapshot.manifest import Manifest, encode_manifest, published_run_id, read_manifest
from exporter.store import Layout, Store, seal
from exporter.store.layout import success_path

log = logging.getLogger("exporter.pipeline")  # the name JSON log lines have always carried


class Start(enum.Enum):
    """Where a run stands when its publication tail begins."""

    FRESH = "fresh"  # this process walked: nothing is sealed yet
    RESUMED = "resumed"  # `--resume` of a sealed run (checkpoint "publishing" or "committing")
    HANDED_OVER = "handed over"  # this process was started for the change step (handoff)
    OTHER_DATE = "other date"  # a run of another date of this request, killed in "committing"


# What is said when the published directory is no longer the run's (another run replaced it):
# a resumed run names the directory, a run on its way names the snapshot; texts users know.
RESUMED_NOT_OURS = "{published} is not this run's snapshot any more; export again"
RESUMED_BATCH_NOT_OURS = "{published} is not this run's batch any more"
NOT_OURS = "the published snapshot is not this run's any more; export again"


@dataclass(frozen=True)
class Steps:
    """Which steps of the tail a run takes (`plan_tail`); each field says why."""

    seal: bool  # 1-2 with their crash points: only a run that walked has anything to seal
    publish_sealed: bool  # 2 again, unless done: resumed while still "publishing"
    not_ours: str  # the error when the published directory is another run's (before 3)
    sinks: bool  # 3: not in a handed-over process, whose parent published the sinks
    retire_batches: bool  # 3: a snapshot (a batch is never retired by another batch)
    hand_off: bool  # 4 in a fresh process: only a snapshot's fresh run, whose heap is the walk's
    restore_stats: bool  # the counts come from the checkpoint: this process did not walk
    changes: bool  # 4: a snapshot has a change set, a batch has none
    discard_abandoned: bool  # 5 also drops runs abandoned long ago: once per night's walk


def plan_tail(start: Start, phase: str, *, batch: bool) -> Steps:
    """Return the steps a run takes from `start`, its checkpoint's `phase`, and its kind."""
    fresh = start is Start.FRESH
    if batch:
        not_ours = RESUMED_BATCH_NOT_OURS
    elif start in (Start.RESUMED, Start.HANDED_OVER):
        not_ours = RESUMED_NOT_OURS
    else:
        not_ours = NOT_OURS
    return Steps(
        seal=fresh,
        publish_sealed=not fresh and phase == "publishing",
        not_ours=not_ours,
        sinks=start is not Start.HANDED_OVER,
        retire_batches=not batch and start is not Start.HANDED_OVER,
        hand_off=fresh and not batch,
        restore_stats=not fresh,
        changes=not batch,
        discard_abandoned=fresh and not batch,
    )


async def finish(
    run: Run,
    start: Start,
    manifest: Manifest | None = None,
    walker_state: dict[str, Any] | None = None,
) -> RunSummary:
    """Publish `run` from `start` to the end; return its summary.

    A fresh run passes the `manifest` to seal (and the `walker_state` its last checkpoint
    keeps: a batch's walk, None for a snapshot's); a sealed run's is read from the store.
    """
    steps = plan_tail(start, run.checkpoint.phase, batch=run.batch is not None)
    if steps.seal:
        assert manifest is not None, "a fresh run seals the manifest it built"
        await anyio.to_thread.run_sync(seal_and_publish, run, manifest, walker_state)
    elif steps.publish_sealed:
        await anyio.to_thread.run_sync(_publish_sealed, run)
    await anyio.to_thread.run_sync(_check_ours, run, steps.not_ours)
    if steps.sinks:
        await publish_sinks(run)
    else:
        crash_point("changes-handed-over")
    if steps.retire_batches:
        await anyio.to_thread.run_sync(_retire_stale_batches, run)
    if steps.hand_off:
        _hand_off_changes(run)  # the change step goes on in a fresh process
    if steps.restore_stats:
        run.stats.restore(run.checkpoint.counts)
    changes: list[ChangeSet] = []
    if steps.changes or manifest is None:
        # The change step reads the manifest as published, as every later night will.
        stored = await anyio.to_thread.run_sync(read_manifest, run.store, run.published)
        if stored is None:  # checked above: only a store failing under us gets here
            raise SinkError("store", steps.not_ours.format(published=run.published))
        manifest = manifest or stored
        if steps.changes:
            run.stats.concluding = True
            changes = await _publish_changes_or_say(run, stored, manifest)
    await anyio.to_thread.run_sync(_discard_staging, run, steps.discard_abandoned)
    return summarize(run, manifest, changes)


def refuse_other_request(
    store: Store, layout: Layout, output: str, date: str, request: Mapping[str, Any]
) -> None:
    """Refuse (exit 2) when D's published snapshot belongs to another request.

    Two requests (account, creator, filters: `change_scope`; formats and other options do
    not count) sharing one output have different run locks, so nothing else stops the second
    from replacing the first's snapshot of D and its change set. A usage error, not exit 8:
    waiting or retrying never helps, another --output does.
    """
    theirs = read_manifest(store, layout.snapshot(date))
    if theirs is None or change_scope(theirs.request) == change_scope(request):
        return
    raise ConfigError(
        "--output",
        f"{posixpath.join(output, layout.snapshot(date))} holds a snapshot of another request "
        f"({_scope_words(change_scope(theirs.request))}; this run: "
        f"{_scope_words(change_scope(request))}): use another --output, or remove that "
        "snapshot first",
    )


def _scope_words(scope: Mapping[str, Any]) -> str:
    words = [f"account {scope['account_id']}"]
    if scope["creator"] is not None:
        words.append(f"creator {scope['creator']!r}")
    words.append("filters " + (", ".join(scope["filters"]) or "none"))
    return ", ".join(words)


@contextlib.contextmanager
def _date_publication(run: Run, manifest: Mapping[str, Any] | None) -> Iterator[None]:
    """Hold D's publication lock (shared by every request) and re-check D's owner in it.

    A snapshot's run locks are per request, so a run of another request may have published
    D since this run's first check; under this lock no other run can swap D in between.
    """
    if run.batch is not None:  # a batch publishes under its own directory
        yield
        return
    date = run.checkpoint.snapshot_date
    with run.store.lock(run.layout.lock(f"{date}-publication")):
        if manifest is not None:
            refuse_other_request(run.store, run.layout, run.config.output, date, manifest)
        yield


def seal_and_publish(run: Run, manifest: Manifest, walker_state: dict[str, Any] | None) -> None:
    """Steps 1 and 2: seal the staged directory with `manifest`, then publish it.

    The checkpoint says "publishing" once the staged directory is sealed and "committing" once
    it is published. A refusal (another request's snapshot of D) comes before the seal: the
    staged parts stay, with their checkpoint.
    """
    with _date_publication(run, manifest.request):
        seal(run.store, run.staged, encode_manifest(manifest))
        run.save(walker_state, phase="publishing")
        crash_point("sealed")
        run.store.publish(run.staged, run.published)
    run.set_phase("committing")
    crash_point("files-published")


def _publish_sealed(run: Run) -> None:
    """Publish the sealed staged directory unless this run's is already published."""
    if not is_published(run):
        # Not swapped in yet: the staged directory is still this run's sealed one.
        staged = read_manifest(run.store, run.staged)
        with _date_publication(run, staged.request if staged else None):
            run.store.publish(run.staged, run.published)
    run.set_phase("committing")


def is_published(run: Run) -> bool:
    """Return whether the directory published for the run is this run's (by its manifest).

    After a kill during publication the staged directory may hold the *previous* snapshot
    (a swap happened) and must never be published again; another run of D may also have
    replaced this one's since.
    """
    return published_run_id(run.store, run.published) == run.checkpoint.run_id


def _check_ours(run: Run, not_ours: str) -> None:
    if not is_published(run):
        raise SinkError("store", not_ours.format(published=run.published))


async def publish_sinks(run: Run) -> None:
    """Step 3: each sink's publish step, given its own directory and checkpointed parts; a
    batch goes only to the sinks keeping tables (`TableKeeper.load_new_uploads`: DuckDB's and
    Delta's `new_uploads`), as nothing outside its files holds it elsewhere."""
    schema = run.normalizer.final_schema()
    for sink in run.sinks:
        if run.batch is not None and not isinstance(sink, TableKeeper):
            continue
        publication = Publication(
            store=run.store,
            layout=run.layout,
            snapshot_date=run.checkpoint.snapshot_date,
            schema=schema,
            directory=run.directory(sink),
            parts=run.checkpoint.parts.get(sink.name, []),
            batch=run.batch,
            run_id=run.checkpoint.run_id,
        )
        if isinstance(sink, TableKeeper) and run.batch is not None:
            await anyio.to_thread.run_sync(sink.load_new_uploads, publication)
        else:
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


def handed_over(key: str) -> bool:
    """Return whether this process was started to finish run `key` (`exporter.handoff`)."""
    handed = handoff.received()
    return handed is not None and handed.run_key == key


def _hand_off_changes(run: Run) -> None:
    """Publish a night's change set from a fresh process (`exporter.handoff`).

    A first night's change set needs no diff, but it reads the whole snapshot back and writes
    it again, and in the walk's process it stood on what the walk left behind (the tie ids
    of a bulk import, the heap's holes): 201 MB at 3,000,000 nasty images. On a local store
    (whose lock can be inherited), in the CLI's own process.
    """
    if not handoff.allowed():
        return
    lock = run.layout.lock(lock_key(run.config, run.checkpoint.snapshot_date))
    held = getattr(run.store, "held_lock", lambda _: None)(lock)
    if held is None:
        return
    log.debug("publishing the change set from a fresh process")
    lock_path, lock_fd = held
    handoff.hand_off(run.checkpoint.run_key, lock_path, lock_fd, run.published)


def _publish_changes(run: Run, manifest: Manifest) -> list[ChangeSet]:
    """Step 4: publish the snapshot's change set (and the next snapshot's, see `refresh`).

    Runs after the sinks' publish steps (a DuckDB-only night is read from its table). The
    checkpoint ("committing") outlives a kill or a withheld change set (exit 9), so `--resume`
    (with `--accept-removals` after exit 9) publishes the changes without walking.
    """
    release_heap()
    published = refresh(
        run.store,
        run.layout,
        manifest,
        run_key=run.checkpoint.run_key,
        options=run.config.changes,
    )
    crash_point("changes-published")
    return published


async def _publish_changes_or_say(
    run: Run, stored: Manifest, manifest: Manifest
) -> list[ChangeSet]:
    """Step 4 from the `stored` manifest; a withheld change set (exit 9) carries the
    published snapshot's summary (of `manifest`, the one the run sealed)."""
    try:
        return await anyio.to_thread.run_sync(_publish_changes, run, stored)
    except ChangesWithheldError as exc:
        own = exc.snapshot_date == manifest.snapshot_date  # else the next night's (`refresh`)
        exc.summary = summarize(run, manifest).withheld(exc.counts if own else None)
        raise


def _discard_staging(run: Run, abandoned: bool) -> None:
    """Step 5: drop this run's staging, and (`abandoned`) that of runs abandoned long before."""
    discard_run(run.store, run.layout, run.checkpoint.run_key)
    if not abandoned:
        return
    for key in stale_staged_runs(run.store, run.layout, run.checkpoint.snapshot_date):
        log.info("removing the staged files of an abandoned run: %s", run.layout.run(key))
        discard_run(run.store, run.layout, key)


__all__ = [
    "Start",
    "Steps",
    "finish",
    "handed_over",
    "is_published",
    "plan_tail",
    "publish_sinks",
    "seal_and_publish",
]
