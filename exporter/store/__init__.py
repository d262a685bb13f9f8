"""Where output lives: the layout of OUT, and the stores that write and publish it.

    layout.py   the only module that knows OUT's paths (pure: no I/O)
    base.py     the `Store` protocol, `HashingWriter`, `seal`, OSError -> SinkError
    local.py    `LocalStore`: a directory; fsync'd writes, rename/exchange publication, flock
    bucket.py   `ObjectStore`: s3:// and gs:// through pyarrow.fs; copy-based publication

`open_store(output)` picks the store for `--output`. The bucket module (and pyarrow.fs) is
imported only when an output is a bucket.
"""

from __future__ import annotations

from pathlib import Path

from exporter.errors import ConfigError
from exporter.store.base import HashingWriter, Store, file_digest, os_errors, seal
from exporter.store.layout import Layout
from exporter.store.local import LocalStore


def open_store(
    output: str | Path, *, s3_endpoint: str | None = None, lock_lease_s: float | None = None
) -> Store:
    """Return the store for `--output`: a directory, `s3://bucket/prefix` or `gs://bucket/prefix`.

    `s3_endpoint` (flag or config) points S3 at a compatible service (MinIO, R2, Ceph); without
    it `AWS_ENDPOINT_URL` is used. A bucket store checks its bucket here, so a missing bucket or
    refused credentials fail before any page is fetched. `lock_lease_s` is a bucket run lock's
    lease (a directory's lock is an flock, released by the kernel when a run dies).
    """
    text = str(output)
    if "://" in text and not text.startswith("file://"):
        scheme = text.split("://", 1)[0]
        if scheme in ("s3", "gs"):
            from exporter.store.bucket import open_object_store  # pyarrow.fs S3/GCS load on use

            if lock_lease_s is None:
                return open_object_store(text, s3_endpoint=s3_endpoint)
            return open_object_store(text, s3_endpoint=s3_endpoint, lease_s=lock_lease_s)
        raise ConfigError(
            "output", f"{scheme}:// outputs are not supported; use a directory, s3:// or gs://"
        )
    return LocalStore(Path(text.removeprefix("file://")).expanduser())


__all__ = [
    "HashingWriter",
    "Layout",
    "LocalStore",
    "Store",
    "file_digest",
    "open_store",
    "os_errors",
    "seal",
]
