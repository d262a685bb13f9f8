"""A run lock on a bucket: a lease object created only if absent, renewed, taken over if stale.

Buckets have no flock. The lock is an object at the layout's lock path holding a lease
(`owner`, `expires_at`). Every step is a conditional request, so two runs can never both
believe they hold it:

1. acquire: create the object only if it does not exist (S3 `If-None-Match: *`, GCS
   `ifGenerationMatch=0`). The first run wins. A second one watches the lease until it
   expires: a live holder renews it (its etag changes) within a quarter lease, and the
   second run stops with exit 8 (`ConcurrentRunError`); a crashed holder does not.
2. take over: a lease past `expires_at` belongs to a holder that crashed (or stalled longer
   than a lease). It is replaced only if unchanged since it was read (`If-Match: <etag>`):
   of several successors exactly one wins. So a `--resume` right after a kill waits at most
   one lease, and a second run beside a live one gives up within about a quarter lease.
3. renew: the holder replaces its lease with a later `expires_at`, again `If-Match` its own
   last etag, every `lease_s / 4`; a renewal that finds another owner marks the lock lost.
4. verify: before publishing, the holder re-reads the lease: lost means another run took it
   over, and this run must not publish (`ConcurrentRunError`) — so a retried or duplicated
   task (Dask) never publishes the same account and date twice at once.
5. release: delete the object if this run still owns it.

`LeaseLock` is the logic over `ConditionalObjects`, with the clock injected, so it is tested
without a bucket; `obstore_objects` adapts a real bucket.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from exporter.errors import ConcurrentRunError, first_line

LEASE_S = 60.0  # a crashed holder's successor waits at most this long
POLL_S = 1.0


class ConditionalObjects(Protocol):
    """The conditional requests a lease needs; etags are opaque strings."""

    def create(self, key: str, data: bytes) -> str | None:
        """Write `data` only if `key` does not exist; return its etag, None if it exists."""
        ...

    def read(self, key: str) -> tuple[bytes, str] | None:
        """Return (data, etag), or None when `key` does not exist."""
        ...

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        """Write `data` only if `key` still has `etag`; return the new etag, None if not."""
        ...

    def delete(self, key: str) -> None: ...


@dataclass(frozen=True)
class Lease:
    """Who holds the lock, until when (wall-clock seconds), and from where (for the message)."""

    owner: str
    expires_at: float
    holder: str

    def encode(self) -> bytes:
        return orjson.dumps(self.__dict__)

    @classmethod
    def decode(cls, data: bytes) -> Lease | None:
        try:
            raw = orjson.loads(data)
            return cls(str(raw["owner"]), float(raw["expires_at"]), str(raw.get("holder", "?")))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None  # not a lease of ours: treated as expired, taken over conditionally


class LeaseLock:
    """One run's hold on one lock object (see the module docstring for the protocol)."""

    def __init__(
        self,
        objects: ConditionalObjects,
        key: str,
        *,
        where: str,
        lease_s: float = LEASE_S,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._objects = objects
        self._key = key
        self._where = where
        self._lease_s = lease_s
        self._clock = clock
        self._sleep = sleep
        self._owner = uuid.uuid4().hex
        self._holder = f"{socket.gethostname()} pid {os.getpid()}"
        self._etag: str | None = None
        self.lost = False

    def _lease(self) -> bytes:
        return Lease(self._owner, self._clock() + self._lease_s, self._holder).encode()

    @property
    def renew_every_s(self) -> float:
        return self._lease_s / 4

    def acquire(self) -> None:
        """Hold the lock, taking over an expired lease; ConcurrentRunError while it is live."""
        etag = self._objects.create(self._key, self._lease())
        while etag is None:
            current = self._objects.read(self._key)
            if current is None:  # released since: create it again
                etag = self._objects.create(self._key, self._lease())
                continue
            etag = self._take_over(*current)
        self._etag = etag

    def _take_over(self, data: bytes, their_etag: str) -> str:
        """Wait for a lease to expire unrenewed, then replace it; ConcurrentRunError if live."""
        lease = Lease.decode(data)
        while lease is not None and lease.expires_at > self._clock():
            self._sleep(min(POLL_S, max(0.0, lease.expires_at - self._clock())))
            current = self._objects.read(self._key)
            if current is None or current[1] != their_etag:  # renewed or released: alive
                raise self._busy(lease)
        etag = self._objects.replace(self._key, self._lease(), their_etag)
        if etag is None:  # another successor won the race
            raise self._busy(lease)
        return etag

    def renew(self) -> bool:
        """Extend the lease; False (and `lost`) when another run has taken it over."""
        if self._etag is None or self.lost:
            return False
        etag = self._objects.replace(self._key, self._lease(), self._etag)
        if etag is None:
            self.lost = True
            return False
        self._etag = etag
        return True

    def verify(self) -> None:
        """Raise ConcurrentRunError unless this run still holds an unexpired lease."""
        current = self._objects.read(self._key)
        lease = Lease.decode(current[0]) if current is not None else None
        if self.lost or lease is None or lease.owner != self._owner:
            self.lost = True
            raise ConcurrentRunError(
                f"the run lock {self._where} was taken over by another run (this one stalled "
                "longer than its lease); not publishing: re-run with --resume"
            )

    def release(self) -> None:
        """Delete the lock object if this run still owns it."""
        current = self._objects.read(self._key)
        lease = Lease.decode(current[0]) if current is not None else None
        if lease is not None and lease.owner == self._owner:
            self._objects.delete(self._key)
        self._etag = None

    def _busy(self, lease: Lease | None) -> ConcurrentRunError:
        who = f" ({lease.holder}, lease until {time.ctime(lease.expires_at)})" if lease else ""
        return ConcurrentRunError(
            f"another export of this request and date is running{who}; lock {self._where}: "
            "wait for it to finish, or re-run with --resume once its lease has expired"
        )


class Renewer:
    """Renew a lease every `interval_s` in a daemon thread until stopped."""

    def __init__(self, lock: LeaseLock, interval_s: float) -> None:
        self._lock = lock
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)

    def __enter__(self) -> Renewer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self._lock.renew():
                    return
            except Exception:  # a failed renewal is retried; the lease outlives a few
                continue


def obstore_objects(store: Any) -> ConditionalObjects:
    """Return the conditional requests of an obstore store (S3 or GCS).

    obstore's other errors (credentials, network) become OSError, which the bucket store
    turns into one line with exit 5, like any other storage failure.
    """
    import obstore
    from obstore.exceptions import AlreadyExistsError, BaseError, NotFoundError, PreconditionError

    @contextlib.contextmanager
    def as_os_error() -> Iterator[None]:
        try:
            yield
        except (AlreadyExistsError, NotFoundError, PreconditionError):
            raise
        except BaseError as exc:
            raise OSError(first_line(exc)) from exc

    class _Objects:
        def create(self, key: str, data: bytes) -> str | None:
            try:
                with as_os_error():
                    return str(obstore.put(store, key, data, mode="create")["e_tag"])
            except AlreadyExistsError:
                return None

        def read(self, key: str) -> tuple[bytes, str] | None:
            try:
                with as_os_error():
                    got = obstore.get(store, key)
                    return bytes(got.bytes()), str(got.meta["e_tag"])
            except (NotFoundError, FileNotFoundError):  # obstore raises both, by call
                return None

        def replace(self, key: str, data: bytes, etag: str) -> str | None:
            try:
                with as_os_error():
                    return str(obstore.put(store, key, data, mode={"e_tag": etag})["e_tag"])
            except (PreconditionError, NotFoundError, FileNotFoundError):
                return None

        def delete(self, key: str) -> None:
            with as_os_error():
                obstore.delete(store, key)

    return _Objects()
