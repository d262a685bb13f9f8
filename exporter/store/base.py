"""What every store shares: the `Store` protocol, hashing writes, and OSError wrapping.

Paths handed to a store are relative POSIX strings ("a/b/c"), built by `exporter.store.layout`;
only the store knows how they map to a disk (`local`) or a bucket (`bucket`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol, runtime_checkable

from exporter.errors import SinkError
from exporter.store.layout import manifest_path, success_path


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
    failed = exc.filename if isinstance(exc.filename, str) else path
    if failed != path and path.startswith(failed.rstrip("/") + "/"):
        # Creating a missing parent of `path` failed: name that directory, the one to fix. With
        # its own parent there, ENOENT is a file system that holds no new entries (/proc), not
        # something removed meanwhile.
        parent = os.path.dirname(failed.rstrip("/"))
        if exc.errno == errno.ENOENT and os.path.isdir(parent):
            reason = f"{parent} cannot hold new files or directories"
        elif exc.errno == errno.ENOTDIR and os.path.isfile(parent):
            reason = f"{parent} is a file, not a directory"
        return f"cannot create {failed}: {reason}"
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
    # The S3-compatible service (`--s3-endpoint`) as a URL, for the bucket's other clients
    # (delta-rs); None on disk, on GCS and for AWS itself.
    endpoint_url: str | None

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

    def publish(self, staged: str, target: str, *, grace_seconds: float = 1.0) -> None:
        """Make the sealed directory `staged` (parts, manifest, `_SUCCESS`) become `target`.

        A reader of `target` sees the old complete directory or the new complete one, never
        a mix; each implementation documents its steps and what a kill between them leaves.
        """
        ...

    def lock(self, path: str) -> contextlib.AbstractContextManager[None]:
        """Hold the exclusive lock `path` for the block: a second holder fails at once.

        `ConcurrentRunError` when another run holds it. The path comes from the layout
        (`Layout.lock`); a store that cannot lock says so in its docstring.
        """
        ...


def file_digest(store: Store, path: str, chunk: int = 1 << 20) -> tuple[int, str]:
    """Return the size and sha256 of a stored file, read in 1 MiB chunks."""
    sha, size = hashlib.sha256(), 0
    with os_errors("store", "read", path), store.open_read(path) as raw:
        while block := raw.read(chunk):
            sha.update(block)
            size += len(block)
    return size, sha.hexdigest()


def seal(store: Store, staged: str, manifest: bytes) -> None:
    """Write `_manifest.json`, then `_SUCCESS` last, into a staged directory."""
    store.write_atomic(manifest_path(staged), manifest)
    store.write_atomic(success_path(staged), b"")
