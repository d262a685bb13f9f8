"""A store in a local directory: fsync'd files and directories, rename-based publication.

Every `OSError` (ENOSPC, EACCES, EROFS, a vanished directory) leaves as `SinkError` with one
clear line; published snapshots are never touched by a failed write. Staging lives in the same
directory tree as what it publishes (see `exporter.store.layout`), so publication is a rename.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from exporter import handoff
from exporter.errors import ConcurrentRunError, SinkError
from exporter.store.base import HashingWriter, os_errors
from exporter.store.layout import SUCCESS_NAME, success_path

# renameat2(2) flag: swap two existing paths atomically (Linux >= 3.15; ext4, xfs, btrfs, tmpfs).
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class LocalStore:
    """A store in a local directory: fsync'd files and directories, rename-based publication."""

    name = "store"

    def __init__(self, root: str | Path) -> None:
        self._root = Path(root)
        self.root = str(self._root)
        self.endpoint_url: str | None = None
        self._held: dict[str, IO[bytes]] = {}  # the lock files this process holds, by path

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
            _make_dirs(target)

    def delete(self, path: str) -> None:
        target = self._abs(path)
        with os_errors(self.name, "delete", str(target)):
            target.unlink(missing_ok=True)

    def delete_tree(self, path: str) -> None:
        target = self._abs(path)
        with os_errors(self.name, "delete", str(target)):
            if target.exists():
                shutil.rmtree(target)

    def held_lock(self, path: str) -> tuple[str, int] | None:
        """Return the file and descriptor of the lock `path` this process holds, if any."""
        handle = self._held.get(path)
        return None if handle is None else (str(self._abs(path)), handle.fileno())

    @contextlib.contextmanager
    def lock(self, path: str) -> Iterator[None]:
        """Hold an exclusive flock on the file `path` for the block, then remove the file.

        Two overlapping runs of one request and date (a cron run still going when the next
        starts) would otherwise discard or mix each other's staged parts.
        """
        lock_file = self._abs(path)
        inherited = handoff.adopt_lock(str(lock_file))
        with os_errors(self.name, "lock", str(lock_file)):
            lock_file.parent.mkdir(parents=True, exist_ok=True)
            # held open, and locked, for the whole run (or handed on locked: exporter.handoff)
            handle = open(lock_file, "a+b") if inherited is None else open(inherited, "a+b")
        self._held[path] = handle
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConcurrentRunError(
                    f"another export of this request and date is running (lock {lock_file}); "
                    "wait for it to finish, or stop it and re-run with --resume"
                ) from None
            try:
                yield
            finally:
                self._held.pop(path, None)
            lock_file.unlink(missing_ok=True)  # a finished run leaves nothing behind in .staging

    def publish(self, staged: str, target: str, *, grace_seconds: float = 1.0) -> None:
        """Make the sealed directory `staged` become `target` (`snapshot_date=D`) atomically.

        `staged` already holds the parts, `_manifest.json` and `_SUCCESS`. When the date has
        no snapshot yet this is one rename(2). When it has one, renameat2(RENAME_EXCHANGE)
        swaps the two directories in one step, so a reader resolving the path finds the old
        complete snapshot or the new complete one. The old one, now at `staged`, is deleted
        after `grace_seconds`: a reader that opened the old directory just before the swap
        finishes listing it before its entries start to disappear (readdir during unlinks
        would show a partial listing). Where the kernel or file system lacks RENAME_EXCHANGE
        (EINVAL/ENOSYS: e.g. macOS, NFS, old kernels) the fallback is two renames: the old
        snapshot moves to staging, then the new one moves in; between the two a reader finds
        no snapshot for that date (never a partial or mixed one). A kill before the rename
        leaves `target` as it was and `staged` sealed (publishing again finishes); a kill
        after it leaves `target` new and, after an exchange, the old snapshot at `staged`.
        """
        source = self._abs(staged)
        destination = self._abs(target)
        with os_errors(self.name, "publish", str(destination)):
            if not self._abs(success_path(staged)).exists():
                raise SinkError(self.name, f"refusing to publish {source}: no {SUCCESS_NAME}")
            _make_dirs(destination.parent)  # `changes/` or `account_id=<id>/`: on first use
            _fsync_dir(source)
            try:
                os.rename(source, destination)  # fails with ENOTEMPTY/EEXIST when D exists
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if not _exchange(source, destination):
                    _two_step_replace(source, destination)
                _fsync_dir(destination.parent)
                time.sleep(grace_seconds)
                shutil.rmtree(source)  # the previous snapshot, now at the staged path
            _fsync_dir(destination.parent)


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


def _make_dirs(path: Path) -> None:
    """Create `path` and its missing parents, each entry fsync'd into its parent."""
    if path.is_dir():
        return
    _make_dirs(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir()
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """fsync a directory so a created or renamed entry survives a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
