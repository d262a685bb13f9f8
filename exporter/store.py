"""Where output files live: durable writes, atomic replaces and snapshot publication.

Layout under the output root `OUT`:

    OUT/snapshot_date=D/part-*.{parquet,ndjson,ndjson.gz}, _manifest.json, _SUCCESS
    OUT/.staging/<run-key>/_checkpoint.json           run state for --resume
    OUT/.staging/<run-key>/snapshot_date=D/           the snapshot being built

`.staging` starts with a dot and does not match `OUT/snapshot_date=*/*`, and it lives on the
same file system as the published snapshots, so publication is one `rename`. Paths handed to a
store are relative POSIX strings ("a/b/c"); only the store knows how they map to the disk
(`exporter.objectstore.ObjectStore` maps them into a bucket and publishes by copying).

Every `OSError` (ENOSPC, EACCES, EROFS, a vanished directory) leaves as `SinkError` with one
clear line; published snapshots are never touched by a failed write.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import os
import posixpath
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from exporter.errors import ConcurrentRunError, ConfigError, SinkError

STAGING = ".staging"
SNAPSHOT_PREFIX = "snapshot_date="
MANIFEST_NAME = "_manifest.json"
SUCCESS_NAME = "_SUCCESS"

# renameat2(2) flag: swap two existing paths atomically (Linux >= 3.15; ext4, xfs, btrfs, tmpfs).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def snapshot_dir(snapshot_date: str) -> str:
    """Return the published directory of one snapshot date, relative to the root."""
    return f"{SNAPSHOT_PREFIX}{snapshot_date}"


def staging_dir(run_key: str) -> str:
    """Return the staging directory of one run key, relative to the root."""
    return f"{STAGING}/{run_key}"


def describe_os_error(exc: OSError, action: str, path: str) -> str:
    """Return one line naming what failed, where, and why (the errno's text)."""
    reasons = {
        errno.ENOSPC: "no space left on device",
        errno.EDQUOT: "disk quota exceeded",
        errno.EACCES: "permission denied",
        errno.EPERM: "operation not permitted",
        errno.EROFS: "read-only file system",
        errno.ENOENT: "no such file or directory (was it removed during the run?)",
    }
    reason = reasons.get(exc.errno or 0) or exc.strerror or str(exc)
    return f"cannot {action} {path}: {reason}"


@contextlib.contextmanager
def os_errors(sink: str, action: str, path: str) -> Iterator[None]:
    """Turn any `OSError` raised inside into a one-line `SinkError` for `sink`."""
    try:
        yield
    except SinkError:
        raise
    except OSError as exc:
        raise SinkError(sink, describe_os_error(exc, action, path)) from exc


class HashingWriter:
    """A binary file-like that counts and sha256-hashes every byte on its way to `raw`.

    Part files are written sequentially (Parquet and gzip never seek back), so the checksum
    for the manifest is known when the file closes, without reading it again.

    A failed write is recorded, not raised: the caller is often pyarrow's C++ writer, and a
    Python exception thrown through it (worse, from its destructor during garbage collection)
    corrupts the interpreter's recursion counter on CPython 3.11. Later writes are dropped,
    and `check()` (called after every format operation and before the file is made durable)
    raises the recorded error from Python code.
    """

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()
        self.bytes_written = 0
        self.error: OSError | None = None

    def check(self) -> None:
        """Raise the first write error, if any."""
        if self.error is not None:
            raise self.error

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def write(self, data: bytes | bytearray | memoryview) -> int:
        view = memoryview(data)
        if self.error is None:
            try:
                self._raw.write(view)
            except OSError as exc:
                self.error = exc
            else:
                self._sha.update(view)
                self.bytes_written += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self.bytes_written

    def flush(self) -> None:
        if self.error is None:
            try:
                self._raw.flush()
            except OSError as exc:
                self.error = exc

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        """Do nothing: the store closes the file once it is durable."""

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


@runtime_checkable
class Store(Protocol):
    """Where files live; every path is relative to the store's root, "/"-separated."""

    root: str

    def open_write(self, path: str) -> contextlib.AbstractContextManager[HashingWriter]:
        """Write a new file, durable (flushed to stable storage) when the context exits."""
        ...

    def open_read(self, path: str) -> IO[bytes]: ...

    def write_atomic(self, path: str, data: bytes) -> None:
        """Replace `path` with `data`: a reader sees the old or the new content, never a mix."""
        ...

    def replace(self, src: str, dst: str) -> None: ...

    def read_bytes(self, path: str) -> bytes | None: ...

    def exists(self, path: str) -> bool: ...

    def size(self, path: str) -> int: ...

    def list_dir(self, path: str) -> list[str]: ...

    def make_dirs(self, path: str) -> None: ...

    def delete(self, path: str) -> None: ...

    def delete_tree(self, path: str) -> None: ...

    def local_path(self, path: str) -> Path | None:
        """Return the local file system path, or None for a remote store."""
        ...

    def publish(self, staged: str, snapshot_date: str, *, grace_seconds: float = 1.0) -> str: ...

    def lock(self, run_key: str) -> contextlib.AbstractContextManager[None]:
        """Hold the run's exclusive lock: a second export of the same request and date fails."""
        ...


class LocalStore:
    """A store in a local directory: fsync'd files and directories, rename-based publication."""

    name = "store"

    def __init__(self, root: str | Path) -> None:
        self._root = Path(root)
        self.root = str(self._root)

    def _abs(self, path: str) -> Path:
        if path.startswith("/") or ".." in path.split("/"):
            raise ValueError(f"store paths are relative and stay inside the root: {path!r}")
        return self._root / path if path else self._root

    def local_path(self, path: str) -> Path | None:
        return self._abs(path)

    @contextlib.contextmanager
    def open_write(self, path: str) -> Iterator[HashingWriter]:
        target = self._abs(path)
        with os_errors(self.name, "write", str(target)):
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as raw:
                writer = HashingWriter(raw)
                yield writer
                writer.check()
                raw.flush()
                os.fsync(raw.fileno())
            _fsync_dir(target.parent)

    def open_read(self, path: str) -> IO[bytes]:
        target = self._abs(path)
        with os_errors(self.name, "read", str(target)):
            return open(target, "rb")

    def write_atomic(self, path: str, data: bytes) -> None:
        target = self._abs(path)
        tmp = target.with_name(f".{target.name}.tmp")
        with os_errors(self.name, "write", str(target)):
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(tmp, "wb") as raw:
                    raw.write(data)
                    raw.flush()
                    os.fsync(raw.fileno())
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            _fsync_dir(target.parent)

    def replace(self, src: str, dst: str) -> None:
        source, target = self._abs(src), self._abs(dst)
        with os_errors(self.name, "replace", str(target)):
            os.replace(source, target)
            _fsync_dir(target.parent)

    def read_bytes(self, path: str) -> bytes | None:
        target = self._abs(path)
        with os_errors(self.name, "read", str(target)):
            try:
                return target.read_bytes()
            except FileNotFoundError:
                return None

    def exists(self, path: str) -> bool:
        with os_errors(self.name, "read", str(self._abs(path))):  # EACCES is an error, not False
            return self._abs(path).exists()

    def size(self, path: str) -> int:
        target = self._abs(path)
        with os_errors(self.name, "stat", str(target)):
            return target.stat().st_size

    def list_dir(self, path: str) -> list[str]:
        """Return the sorted entry names of a directory, [] when it does not exist."""
        target = self._abs(path)
        with os_errors(self.name, "list", str(target)):
            try:
                return sorted(os.listdir(target))
            except FileNotFoundError:
                return []

    def make_dirs(self, path: str) -> None:
        target = self._abs(path)
        with os_errors(self.name, "create directory", str(target)):
            target.mkdir(parents=True, exist_ok=True)
            _fsync_dir(target.parent)

    def delete(self, path: str) -> None:
        target = self._abs(path)
        with os_errors(self.name, "delete", str(target)):
            target.unlink(missing_ok=True)

    def delete_tree(self, path: str) -> None:
        target = self._abs(path)
        with os_errors(self.name, "delete", str(target)):
            if target.exists():
                shutil.rmtree(target)

    @contextlib.contextmanager
    def lock(self, run_key: str) -> Iterator[None]:
        """Hold an exclusive flock on `.staging/<run_key>.lock` for the duration of a run.

        Two overlapping runs of one request and date (a cron run still going when the next
        starts) would otherwise discard or mix each other's staged parts.
        """
        path = self._abs(posixpath.join(STAGING, f"{run_key}.lock"))
        with os_errors(self.name, "lock", str(path)):
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(path, "a+b")  # held open, and locked, for the whole run
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConcurrentRunError(
                    f"another export of this request and date is running (lock {path}); "
                    "wait for it to finish, or stop it and re-run with --resume"
                ) from None
            yield
            path.unlink(missing_ok=True)  # a finished run leaves nothing behind in .staging

    def publish(self, staged: str, snapshot_date: str, *, grace_seconds: float = 1.0) -> str:
        """Make the sealed directory `staged` become `snapshot_date=D` in one atomic step.

        `staged` already holds the parts, `_manifest.json` and `_SUCCESS`. When the date has
        no snapshot yet this is one rename(2). When it has one, renameat2(RENAME_EXCHANGE)
        swaps the two directories in one step, so a reader resolving the path finds the old
        complete snapshot or the new complete one. The old one, now at `staged`, is deleted
        after `grace_seconds`: a reader that opened the old directory just before the swap
        finishes listing it before its entries start to disappear (readdir during unlinks
        would show a partial listing). Where the kernel or file system lacks RENAME_EXCHANGE
        (EINVAL/ENOSYS: e.g. macOS, NFS, old kernels) the fallback is two renames: the old
        snapshot moves to staging, then the new one moves in; between the two a reader finds
        no snapshot for that date (never a partial or mixed one). Returns the published
        path, relative to the root.
        """
        source = self._abs(staged)
        published = snapshot_dir(snapshot_date)
        target = self._abs(published)
        with os_errors(self.name, "publish", str(target)):
            if not (source / SUCCESS_NAME).exists():
                raise SinkError(self.name, f"refusing to publish {source}: no {SUCCESS_NAME}")
            _fsync_dir(source)
            try:
                os.rename(source, target)  # fails with ENOTEMPTY/EEXIST when D exists
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if not _exchange(source, target):
                    _two_step_replace(source, target)
                _fsync_dir(target.parent)
                time.sleep(grace_seconds)
                shutil.rmtree(source)  # the previous snapshot, now at the staged path
            _fsync_dir(target.parent)
        return published


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths with renameat2(RENAME_EXCHANGE); False when unsupported here."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _two_step_replace(source: Path, target: Path) -> None:
    """Move the old snapshot aside, then the new one in: briefly absent, never mixed."""
    aside = source.with_name(source.name + ".previous")
    if aside.exists():
        shutil.rmtree(aside)
    os.rename(target, aside)
    os.rename(source, target)
    os.rename(aside, source)  # so the caller deletes the old snapshot at one known path


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _fsync_dir(path: Path) -> None:
    """fsync a directory so a created or renamed entry survives a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_digest(store: Store, path: str, chunk: int = 1 << 20) -> tuple[int, str]:
    """Return the size and sha256 of a stored file, read in 1 MiB chunks."""
    sha, size = hashlib.sha256(), 0
    with os_errors("store", "read", path), store.open_read(path) as raw:
        while block := raw.read(chunk):
            sha.update(block)
            size += len(block)
    return size, sha.hexdigest()


def seal(store: Store, staged: str, manifest: bytes) -> None:
    """Write `_manifest.json`, then `_SUCCESS` last, into a staged snapshot directory."""
    store.write_atomic(posixpath.join(staged, MANIFEST_NAME), manifest)
    store.write_atomic(posixpath.join(staged, SUCCESS_NAME), b"")


def open_store(output: str | Path, *, s3_endpoint: str | None = None) -> Store:
    """Return the store for `--output`: a directory, `s3://bucket/prefix` or `gs://bucket/prefix`.

    `s3_endpoint` (flag or config) points S3 at a compatible service (MinIO, R2, Ceph); without
    it `AWS_ENDPOINT_URL` is used. A bucket store checks its bucket here, so a missing bucket or
    refused credentials fail before any page is fetched.
    """
    text = str(output)
    if "://" in text and not text.startswith("file://"):
        scheme = text.split("://", 1)[0]
        if scheme in ("s3", "gs"):
            from exporter.objectstore import open_object_store  # pyarrow.fs S3/GCS load on use

            return open_object_store(text, s3_endpoint=s3_endpoint)
        raise ConfigError(
            "output", f"{scheme}:// outputs are not supported; use a directory, s3:// or gs://"
        )
    return LocalStore(Path(text.removeprefix("file://")).expanduser())
