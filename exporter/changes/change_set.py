"""Publish the change set of snapshot D under `OUT/changes/snapshot_date=D/`.

D's changes are computed against P, the newest sealed snapshot dated before D of the same
request (account, creator and filters: `change_scope`); snapshots of another request are
never compared, and without such a P every image is `added`. The diff itself is
`exporter.changes.diff` (DuckDB, out of core); this module finds the nights, stages the parts, seals
them with a manifest and `_SUCCESS`, and publishes them with the store's own atomic step.

A night written only by sinks the diff cannot read back (a plugin's CSV), or following such a
night, has no change set: nothing is published, D's earlier one is withdrawn, and the summary
says why (`ChangeSet.missing`); the snapshot itself stands.

Order of steps and what a reader sees (same guarantees as a snapshot):
1. the parts are written into `.staging/<run-key>/changes/snapshot_date=D/` (never globbed);
2. if the removed share (removed / P's image count) exceeds `max_removed_share` and removals
   are not accepted, D's published change set (from an earlier run) is withdrawn, the staged
   one deleted, and `ChangesWithheldError` (exit 9) raised;
3. `_manifest.json`, then `_SUCCESS`, are written into the staged directory;
4. the store publishes it as `changes/snapshot_date=D` (one rename locally; on a bucket
   `_SUCCESS` is rewritten last).
A kill at any instant leaves the old change set of D or the new one, never a mix; the run
keeps its checkpoint until its changes are published, so `--resume` recomputes them (the diff
reads only published snapshots, so it gives the same rows).

Re-running an older date D changes what the next snapshot N was compared with: `refresh`
publishes D's changes, then N's against D.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import posixpath
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from exporter.changes.diff import CHANGE_KINDS, CHANGES_SCHEMA
from exporter.changes.smalldiff import iter_night_changes
from exporter.errors import ChangesWithheldError, SinkError, first_line
from exporter.options import ChangeOptions
from exporter.sinks import (
    NightSource,
    PartFile,
    PublishedChanges,
    PublishedNight,
    night_sinks,
    read_night,
    readable_formats,
    table_keepers,
)
from exporter.snapshot.checkpoint import redact_request
from exporter.snapshot.manifest import (
    CHANGES,
    ChangeFacts,
    FileEntry,
    Manifest,
    encode_manifest,
    misplaced,
    rfc3339,
    sealed_directories,
    sealed_manifests,
)
from exporter.store import Layout, Store, seal
from exporter.store.layout import success_path

log = logging.getLogger("exporter.changes")

PART_ROWS = 1_000_000
JsonDict = dict[str, Any]


def change_dates(store: Store, layout: Layout) -> list[str]:
    """Return the dates that have a change set directory in `layout`, oldest first."""
    return layout.snapshot_dates(store.list_dir(posixpath.dirname(layout.changes("D"))))


def change_scope(request: Mapping[str, Any]) -> JsonDict:
    """Return what makes two snapshots comparable: account, creator and filters."""
    return {
        "account_id": request.get("account_id"),
        "creator": request.get("creator"),
        "filters": sorted(str(f) for f in request.get("filters") or []),
    }


def describe_scope(scope: Mapping[str, Any]) -> str:
    """Return the sentence a change manifest states about what its removals mean."""
    if scope["creator"] is None and not scope["filters"]:
        return "every image of the account"
    parts = [f"creator={scope['creator']!r}"] if scope["creator"] is not None else []
    parts += list(scope["filters"])
    return "within this filter: " + ", ".join(parts) + " (an image leaving it counts as removed)"


def removed_share(removed: int, previous_images: int) -> float:
    """Return removed / P's image count (0 when P was empty)."""
    return removed / previous_images if previous_images else 0.0


def neighbours(
    store: Store, layout: Layout, date: str, scope: Mapping[str, Any]
) -> tuple[Manifest | None, Manifest | None]:
    """Return (P, N): the newest sealed snapshot before `date` and the oldest after it,
    of the same scope."""
    same = [m for m in sealed_manifests(store, layout) if change_scope(m.request) == scope]
    before = [m for m in same if m.snapshot_date < date]
    after = [m for m in same if m.snapshot_date > date]
    return (before[-1] if before else None, after[0] if after else None)


def moved_previous(store: Store, layout: Layout, date: str, scope: Mapping[str, Any]) -> str | None:
    """Return why `date` has no previous night to compare with when the newest sealed
    directory before it of the same scope was moved or renamed by hand (`misplaced`), else
    None. Comparing with an older night instead would repeat in the change log the changes
    that the moved night's own change set already holds."""
    for found, manifest in sealed_directories(store, layout, before=date, newest_first=True):
        if change_scope(manifest.request) == scope:
            why = misplaced(found, manifest)
            if why is None:
                return None
            return f"the previous night snapshot_date={found}: {why}, then export {date} again"
    return None


# -- reading a night -------------------------------------------------------------------------


def night_source(store: Store, layout: Layout, manifest: Manifest, scratch: Path) -> NightSource:
    """Return where DuckDB reads a published night (`find_night_source`); SinkError when no
    sink that wrote it can read it back."""
    source = find_night_source(store, layout, manifest, scratch)
    if source is None:
        batch = manifest.new_uploads.batch if manifest.new_uploads else None
        date = manifest.snapshot_date
        what = f"batch {batch} of snapshot {date}" if batch else f"snapshot {date}"
        raise SinkError("changes", f"{what} wrote nothing the change diff can read")
    return source


def find_night_source(
    store: Store, layout: Layout, manifest: Manifest, scratch: Path
) -> NightSource | None:
    """Return where DuckDB reads a published night (a snapshot, or a batch of new uploads
    following one): through the sinks that wrote it, the cheapest to read first
    (`exporter.sinks.read_night`); files on a bucket are copied into `scratch` first. None
    when only sinks the diff cannot read wrote it (a plugin's CSV, say)."""
    date = manifest.snapshot_date
    batch = manifest.new_uploads.batch if manifest.new_uploads else None
    night = PublishedNight(
        store=store,
        layout=layout,
        snapshot_date=date,
        directory=layout.batch(date, str(batch)) if batch else layout.snapshot(date),
        files=[(f.path, str(f.format or "")) for f in manifest.files],
        batch=str(batch) if batch else None,
    )
    return read_night(night_sinks(manifest.request), night, scratch)


def unreadable(date: str | None = None) -> str:
    """Return why a night has no change set: a snapshot (`date`, else the night's own) was
    written by no sink the diff reads back."""
    formats = ", ".join(readable_formats())
    whose = f"snapshot {date} has " if date else ""
    return f"{whose}no format the diff reads ({formats})"


# -- publishing ------------------------------------------------------------------------------


@dataclass
class ChangeSet:
    """What one published (or withheld) change set holds."""

    snapshot_date: str
    previous_snapshot_date: str | None
    counts: dict[str, int]
    previous_images: int
    published: str | None
    missing: str | None = None  # why there is no change set: a night no readable sink wrote

    def describe(self) -> str:
        if self.missing:
            return f"none: {self.missing}"
        text = ", ".join(f"{self.counts[k]} {k}" for k in CHANGE_KINDS)
        since = self.previous_snapshot_date or "nothing (first snapshot)"
        return f"{text} since {since}"


def publish_changes(
    store: Store,
    layout: Layout,
    current: Manifest,
    *,
    staged: str,
    options: ChangeOptions,
    started_at: dt.datetime | None = None,
) -> ChangeSet:
    """Compute, stage, seal and publish the change set of the sealed snapshot `current`.

    Raises ChangesWithheldError (after withdrawing D's change set) when too many images
    were removed and removals are not accepted.
    """
    started_at = started_at or dt.datetime.now(dt.UTC)
    date = current.snapshot_date
    scope = change_scope(current.request)
    previous, _ = neighbours(store, layout, date, scope)
    moved = moved_previous(store, layout, date, scope)
    if moved is not None:
        return _no_change_set(store, layout, current, None, staged, moved)
    store.delete_tree(staged)
    with tempfile.TemporaryDirectory(prefix="cf-images-changes-") as scratch_dir:
        scratch = Path(scratch_dir)
        try:
            source = find_night_source(store, layout, current, scratch)
            prev_source = find_night_source(store, layout, previous, scratch) if previous else None
            if source is None or (previous is not None and prev_source is None):
                blind = None if source is None or previous is None else previous.snapshot_date
                missing = unreadable(blind)
                return _no_change_set(store, layout, current, previous, staged, missing)
            files, counts = _write_parts(
                store,
                staged,
                source,
                prev_source,
                run_tag=(current.run_id or "")[:8],
                options=options,
                scratch=scratch,
            )
        except (OSError, pa.ArrowException, _duckdb_error()) as exc:
            raise _read_failure(current, previous, exc) from exc
    previous_images = previous.rows if previous else 0
    result = ChangeSet(
        date, previous.snapshot_date if previous else None, counts, previous_images, None
    )
    share = removed_share(counts["removed"], previous_images)
    if share > options.max_removed_share and not options.accept_removals:
        store.delete_tree(staged)
        withdraw(store, layout.changes(date), staged)
        raise ChangesWithheldError(
            date,
            counts["removed"],
            previous_images,
            result.previous_snapshot_date or "",
            share,
            options.max_removed_share,
            counts,
        )
    manifest = build_changes_manifest(
        current, result, files, scope, options, started_at, dt.datetime.now(dt.UTC)
    )
    seal(store, staged, encode_manifest(manifest))
    result.published = layout.changes(date)
    store.publish(staged, result.published)
    _load_tables(store, layout, current, result.published, [f.path for f in files])
    log.info("changes of %s published: %s", date, result.describe())
    return result


def _read_failure(current: Manifest, previous: Manifest | None, exc: Exception) -> SinkError:
    """Return the one line of a diff whose nights' files could not be read (a part file
    missing or damaged since its night was published): exit 5, the checkpoint kept, so
    `--resume` publishes the change set once the night is whole again."""
    against = f" against {previous.snapshot_date}" if previous else ""
    return SinkError(
        "changes",
        f"the change set of {current.snapshot_date}{against} could not be computed "
        f"({first_line(exc)}); `cf-images-export inspect OUT` names a damaged night: export "
        "that date again, then `--resume`",
    )


def _duckdb_error() -> type[Exception]:
    """Return DuckDB's error class, imported once a diff has failed: this module is imported
    by every export, and a walk's process must not load DuckDB (~25 MB resident)."""
    import duckdb

    return duckdb.Error


def _no_change_set(
    store: Store,
    layout: Layout,
    current: Manifest,
    previous: Manifest | None,
    staged: str,
    missing: str,
) -> ChangeSet:
    """Return the change set of a night that cannot have one (`missing` says why): nothing
    is published, and D's change set of an earlier run, compared with other data, is
    withdrawn."""
    date = current.snapshot_date
    withdraw(store, layout.changes(date), staged)
    store.delete_tree(staged)
    log.warning("snapshot %s has no change set: %s", date, missing)
    previous_date = previous.snapshot_date if previous else None
    return ChangeSet(date, previous_date, {}, previous.rows if previous else 0, None, missing)


def _load_tables(
    store: Store, layout: Layout, night: Manifest, published: str, names: list[str]
) -> None:
    """Hand a published change set to each sink of its night keeping derived tables."""
    changes = PublishedChanges(
        store=store,
        layout=layout,
        snapshot_date=night.snapshot_date,
        run_id=night.run_id or "",
        directory=published,
        parts=names,
        schema=CHANGES_SCHEMA,
    )
    for keeper in table_keepers(night_sinks(night.request)):
        keeper.load_changes(changes)


def _write_parts(
    store: Store,
    staged: str,
    current: NightSource,
    previous: NightSource | None,
    *,
    run_tag: str,
    options: ChangeOptions,
    scratch: Path,
) -> tuple[list[PartFile], dict[str, int]]:
    """Stream the diff into Parquet parts of at most PART_ROWS rows; return them and counts."""
    counts = dict.fromkeys(CHANGE_KINDS, 0)
    files: list[PartFile] = []
    part: _Part | None = None
    batches = iter_night_changes(current, previous, settings=options.diff, temp_directory=scratch)
    try:
        for batch in batches:
            for item in pc.value_counts(batch.column("change")).to_pylist():
                counts[str(item["values"])] += int(item["counts"])
            if part is None:
                part = _Part(store, staged, len(files), run_tag)
            part.write(batch)
            if part.rows >= PART_ROWS:
                files.append(part.close())
                part = None
        if part is not None or not files:
            files.append((part or _Part(store, staged, 0, run_tag)).close())
    finally:
        if part is not None:
            part.abandon()
    return files, counts


class _Part:
    """One Parquet part of a change set, hashed on its way to the store."""

    def __init__(self, store: Store, staged: str, index: int, run_tag: str) -> None:
        tag = f"-{run_tag}" if run_tag else ""
        self.name = f"part-{index:05d}{tag}.parquet"
        self._stack = contextlib.ExitStack()
        self._sink = self._stack.enter_context(store.open_write(posixpath.join(staged, self.name)))
        self._writer = pq.ParquetWriter(self._sink, CHANGES_SCHEMA, compression="zstd")
        self.rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)
        self._sink.check()
        self.rows += batch.num_rows

    def close(self) -> PartFile:
        self._writer.close()
        self._sink.check()
        self._stack.close()
        return PartFile(
            path=self.name,
            rows=self.rows,
            bytes=self._sink.bytes_written,
            sha256=self._sink.hexdigest(),
            schema_fingerprint="changes-v1",
            format="parquet",
        )

    def abandon(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()
        with contextlib.suppress(Exception):
            self._stack.close()


def build_changes_manifest(
    current: Manifest,
    result: ChangeSet,
    files: list[PartFile],
    scope: Mapping[str, Any],
    options: ChangeOptions,
    started_at: dt.datetime,
    finished_at: dt.datetime,
) -> Manifest:
    """Return the manifest of a change set (read by `inspect` like a snapshot's)."""
    share = removed_share(result.counts["removed"], result.previous_images)
    return Manifest(
        kind=CHANGES,
        run_id=current.run_id,
        snapshot_date=result.snapshot_date,
        account_id=current.account_id,
        request=redact_request(current.request),
        started_at=rfc3339(started_at),
        finished_at=rfc3339(finished_at),
        counts={**result.counts, "rows": sum(result.counts.values())},
        files=tuple(FileEntry.of(f) for f in files),
        schema=tuple({"name": f.name, "type": str(f.type)} for f in CHANGES_SCHEMA),
        changes=ChangeFacts(
            previous_snapshot_date=result.previous_snapshot_date,
            scope=describe_scope(scope),
            previous_images=result.previous_images,
            removed_share=round(share, 6),
            max_removed_share=options.max_removed_share,
            accepted_removals=options.accept_removals,
        ),
    )


def withdraw(store: Store, published: str, aside: str) -> None:
    """Remove a published change set so no reader sees a part of it: `_SUCCESS` first; on a
    local disk the directory is first moved aside (`aside`) in one rename."""
    if not store.list_dir(published):
        return
    log.info("withdrawing the earlier change set %s", published)
    if store.local_path(published) is not None:
        store.make_dirs(posixpath.dirname(aside))
        store.replace(published, aside)
        store.delete_tree(aside)
        return
    store.delete(success_path(published))
    store.delete_tree(published)


def refresh(
    store: Store,
    layout: Layout,
    current: Manifest,
    *,
    run_key: str,
    options: ChangeOptions,
) -> list[ChangeSet]:
    """Publish D's change set, then that of the next snapshot N of the same scope (its P is
    now D). A withheld set raises ChangesWithheldError after both were attempted."""
    date = current.snapshot_date
    _, following = neighbours(store, layout, date, change_scope(current.request))
    results: list[ChangeSet] = []
    withheld: ChangesWithheldError | None = None
    for night in (current, following):
        if night is None:
            continue
        staged = layout.staged_changes(run_key, night.snapshot_date)
        try:
            results.append(publish_changes(store, layout, night, staged=staged, options=options))
        except ChangesWithheldError as exc:
            withheld = withheld or exc
    if withheld is not None:
        raise withheld
    return results


__all__ = [
    "ChangeOptions",
    "ChangeSet",
    "change_dates",
    "change_scope",
    "publish_changes",
    "refresh",
    "removed_share",
]
