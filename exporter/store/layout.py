"""OUT's layout: the one module that knows where anything lives under the output root.

    OUT/[account_id=<id>/]snapshot_date=D/part-*, _manifest.json, _SUCCESS     published
    OUT/[account_id=<id>/]changes/snapshot_date=D/...                          published
    OUT/[account_id=<id>/]new_uploads/snapshot_date=D/batch=<B>/...            published
    OUT/[account_id=<id>/]images.duckdb                    the DuckDB sink's default database
    OUT/[account_id=<id>/].staging/<lock-key>.lock         the run lock (held while running)
    OUT/[account_id=<id>/].staging/<run-key>/_checkpoint.json            run state, --resume
    OUT/[account_id=<id>/].staging/<run-key>/snapshot_date=D/            snapshot being built
    OUT/[account_id=<id>/].staging/<run-key>/changes/snapshot_date=D/    changes being built
    OUT/[account_id=<id>/].staging/<run-key>/snapshot_date=D.<sink>/     a sink's own parts
    OUT/[account_id=<id>/].staging/<run-key>/new_uploads/snapshot_date=D/batch=<B>/   a batch

`<B>` is `<YYYYMMDDTHHMMSSZ>-<run8>`: when the batch's run started (UTC) and its run id, so
batch names sort by time. A batch run's `<run-key>` is keyed by its own fingerprint (the
request's plus "new_uploads") and by D, the snapshot the batch follows.

`<run-key>` is `D-<request fingerprint[:16]>`: one request on one date with one set of options.
`<lock-key>` has the same shape over the request's identity alone (account, creator, filters;
`exporter.run.plan.lock_key`), so runs of one request and date with other options stage apart
under one lock. The `account_id=<id>`
level exists only for a fleet (`Layout.for_account`), so one Hive-partitioned glob reads every
account. `.staging` starts with a dot and matches no `snapshot_date=*` glob, and it lives in
the same store as what it publishes, so a local publication is one rename.

Every path here is relative to the root and "/"-separated; a store maps it to a disk or a
bucket. Nothing here does I/O.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass

STAGING = ".staging"
SNAPSHOT_PREFIX = "snapshot_date="
ACCOUNT_PREFIX = "account_id="
CHANGES = "changes"
NEW_UPLOADS = "new_uploads"
BATCH_PREFIX = "batch="
MANIFEST_NAME = "_manifest.json"
SUCCESS_NAME = "_SUCCESS"
CHECKPOINT_NAME = "_checkpoint.json"
DATABASE_NAME = "images.duckdb"
LOCK_SUFFIX = ".lock"
RUN_KEY_DIGITS = 16  # of the request fingerprint: distinct requests, short names

_ACCOUNT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def manifest_path(directory: str) -> str:
    """Return the manifest of a snapshot (or change set) directory."""
    return posixpath.join(directory, MANIFEST_NAME)


def success_path(directory: str) -> str:
    """Return the `_SUCCESS` marker of a snapshot (or change set) directory."""
    return posixpath.join(directory, SUCCESS_NAME)


def snapshot_name(snapshot_date: str) -> str:
    """Return the directory name of one snapshot date: `snapshot_date=D`."""
    return f"{SNAPSHOT_PREFIX}{snapshot_date}"


def parse_snapshot_name(name: str) -> str | None:
    """Return D for a `snapshot_date=D` directory name, else None.

    D is not validated: a stray `snapshot_date=x` is listed, so `inspect` reports it.
    """
    return name.removeprefix(SNAPSHOT_PREFIX) if name.startswith(SNAPSHOT_PREFIX) else None


def batch_name(started: dt.datetime, run_id: str) -> str:
    """Return a batch's name: its start `YYYYMMDDTHHMMSSZ` (UTC) and its run id's 8 digits."""
    return f"{started.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}-{run_id[:8]}"


def run_key(fingerprint: str, snapshot_date: str) -> str:
    """Return the staging name of one request (by its fingerprint) on one date."""
    return f"{snapshot_date}-{fingerprint[:RUN_KEY_DIGITS]}"


def run_key_date(key: str) -> dt.date | None:
    """Return the date of a staging entry named by `run_key`, None for anything else."""
    if key.endswith(LOCK_SUFFIX):
        return None
    try:
        return dt.date.fromisoformat(key[:10])
    except ValueError:
        return None


def split_snapshot_path(path: str) -> tuple[str, str] | None:
    """Return (root, `snapshot_date=D`) when `path` names one snapshot directory, else None;
    (root, `new_uploads/snapshot_date=D/batch=B`) when it names one batch of new uploads.

    `inspect` takes either an output root or one snapshot directory, as a path or a URI.
    """
    parent, _, last = path.rstrip("/").rpartition("/")
    if last.startswith(BATCH_PREFIX):  # one batch: .../new_uploads/snapshot_date=D/batch=B
        above, _, date = parent.rpartition("/")
        root, _, name = above.rpartition("/")
        if name == NEW_UPLOADS and parse_snapshot_name(date) is not None and root:
            return root, posixpath.join(NEW_UPLOADS, date, last)
        return None
    if parse_snapshot_name(last) is None or not parent:
        return None
    return parent, last


@dataclass(frozen=True)
class Layout:
    """The paths of one output: the root itself, or one account's level of a fleet."""

    prefix: str = ""

    @classmethod
    def for_account(cls, account_id: str) -> Layout:
        """Return the layout of one fleet account: everything under `account_id=<id>/`."""
        if not _ACCOUNT_RE.fullmatch(account_id):
            raise ValueError(f"not a path-safe account id: {account_id!r}")
        return cls(f"{ACCOUNT_PREFIX}{account_id}")

    def _join(self, *parts: str) -> str:
        return posixpath.join(self.prefix, *parts) if self.prefix else posixpath.join(*parts)

    @property
    def snapshots(self) -> str:
        """Return the directory whose `snapshot_date=*` entries are the snapshots ("" = root)."""
        return self.prefix

    @property
    def staging(self) -> str:
        return self._join(STAGING)

    def snapshot(self, snapshot_date: str) -> str:
        """Return the published snapshot directory of a date."""
        return self._join(snapshot_name(snapshot_date))

    def changes(self, snapshot_date: str) -> str:
        """Return the published change set directory of a date."""
        return self._join(CHANGES, snapshot_name(snapshot_date))

    def new_uploads(self, snapshot_date: str) -> str:
        """Return the directory whose `batch=*` entries are the batches following D."""
        return self._join(NEW_UPLOADS, snapshot_name(snapshot_date))

    def batch(self, snapshot_date: str, batch: str) -> str:
        """Return the published directory of one batch of new uploads following D."""
        return posixpath.join(self.new_uploads(snapshot_date), BATCH_PREFIX + batch)

    def batch_names(self, names: Iterable[str]) -> list[str]:
        """Return the batch names among a listing of `new_uploads(D)`, oldest first."""
        return sorted(n.removeprefix(BATCH_PREFIX) for n in names if n.startswith(BATCH_PREFIX))

    @property
    def new_uploads_root(self) -> str:
        """Return the directory whose `snapshot_date=*` entries hold batches."""
        return self._join(NEW_UPLOADS)

    def database(self) -> str:
        """Return the DuckDB sink's default database file."""
        return self._join(DATABASE_NAME)

    def snapshot_dates(self, names: Iterable[str]) -> list[str]:
        """Return the dates among a listing of `snapshots`, oldest first."""
        return sorted(d for d in map(parse_snapshot_name, names) if d is not None)

    # -- staging ----------------------------------------------------------------------------

    def run(self, key: str) -> str:
        """Return the staging directory of one run (its checkpoint and staged files)."""
        return self._join(STAGING, key)

    def lock(self, key: str) -> str:
        """Return the lock file of one run (beside its directory, so a discard keeps it)."""
        return self._join(STAGING, key + LOCK_SUFFIX)

    def checkpoint(self, key: str) -> str:
        return posixpath.join(self.run(key), CHECKPOINT_NAME)

    def staged_snapshot(self, key: str, snapshot_date: str) -> str:
        return posixpath.join(self.run(key), snapshot_name(snapshot_date))

    def staged_changes(self, key: str, snapshot_date: str) -> str:
        return posixpath.join(self.run(key), CHANGES, snapshot_name(snapshot_date))

    def staged_batch(self, key: str, snapshot_date: str, batch: str) -> str:
        return posixpath.join(
            self.run(key), NEW_UPLOADS, snapshot_name(snapshot_date), BATCH_PREFIX + batch
        )

    def sink_work(self, key: str, snapshot_date: str, sink: str) -> str:
        """Return where a sink that adds no file to the snapshot (DuckDB) keeps its parts."""
        return posixpath.join(self.run(key), f"{snapshot_name(snapshot_date)}.{sink}")


ROOT = Layout()  # a single export's layout: everything directly under OUT


def account_layouts(names: Iterable[str]) -> list[Layout]:
    """Return the layouts of the fleet accounts among a listing of OUT (`account_id=<id>`)."""
    found = [n.removeprefix(ACCOUNT_PREFIX) for n in names if n.startswith(ACCOUNT_PREFIX)]
    return [Layout.for_account(a) for a in sorted(found) if _ACCOUNT_RE.fullmatch(a)]
