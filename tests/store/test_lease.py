"""The bucket run lock: pure lease logic on an in-memory bucket, then real exports on moto's S3."""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from exporter.errors import ConcurrentRunError
from exporter.store.lease import Lease, LeaseLock, obstore_objects
from tests.helpers import PYTHON, EmulatorProcess, emulator_process, run_cli
from tests.s3_fixture import S3Server, s3_server


class MemoryBucket:
    """Conditional requests as S3 answers them, on a dict; etags count writes."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, str]] = {}
        self._etags = itertools.count(1)

    def create(self, key: str, data: bytes) -> str | None:
        if key in self.objects:
            return None
        return self._put(key, data)

    def read(self, key: str) -> tuple[bytes, str] | None:
        return self.objects.get(key)

    def replace(self, key: str, data: bytes, etag: str) -> str | None:
        if key not in self.objects or self.objects[key][1] != etag:
            return None
        return self._put(key, data)

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    def _put(self, key: str, data: bytes) -> str:
        etag = f'"{next(self._etags)}"'
        self.objects[key] = (data, etag)
        return etag


class Clock:
    """Wall time that only moves when the code under test sleeps (or a test says so)."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.on_sleep: list[object] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for hook in self.on_sleep:
            hook()  # type: ignore[operator]


def lock(bucket: MemoryBucket, clock: Clock, lease_s: float = 60.0) -> LeaseLock:
    return LeaseLock(
        bucket, "k.lock", where="s3://b/k.lock", lease_s=lease_s, clock=clock, sleep=clock.sleep
    )


class TestLeaseLock:
    def test_the_first_run_holds_and_a_second_one_beside_a_live_holder_gives_up(self) -> None:
        """The holder renews every quarter lease; the second run sees it and exits 8."""
        bucket, clock = MemoryBucket(), Clock()
        first = lock(bucket, clock)
        first.acquire()
        renewals = []

        def holder_renews() -> None:
            if clock.now >= 1_000 + 15 * (len(renewals) + 1):
                renewals.append(first.renew())

        clock.on_sleep.append(holder_renews)
        with pytest.raises(ConcurrentRunError, match="another export"):
            lock(bucket, clock).acquire()
        assert renewals == [True]
        assert clock.now - 1_000 <= 16, "a live holder is noticed within a quarter lease"

    def test_a_crashed_holders_lease_is_taken_over_once_it_expires(self) -> None:
        bucket, clock = MemoryBucket(), Clock()
        lock(bucket, clock).acquire()  # then "crashes": never renews, never releases
        successor = lock(bucket, clock)
        successor.acquire()
        assert 1_060 <= clock.now <= 1_061, "waited exactly until the lease expired"
        lease = Lease.decode(bucket.objects["k.lock"][0])
        assert lease is not None and lease.expires_at == clock.now + 60
        successor.verify()

    def test_of_two_successors_exactly_one_takes_over(self) -> None:
        bucket, clock = MemoryBucket(), Clock()
        lock(bucket, clock).acquire()
        clock.now += 61  # the holder crashed a lease ago
        stale = bucket.objects["k.lock"]
        winner, loser = lock(bucket, clock), lock(bucket, clock)
        winner.acquire()
        bucket.objects["k.lock"] = bucket.objects["k.lock"]  # the loser read the stale lease:
        with pytest.raises(ConcurrentRunError):
            loser._take_over(*stale)  # its If-Match no longer matches
        winner.verify()

    def test_a_holder_that_lost_its_lease_never_publishes(self) -> None:
        """A stalled holder's lease is taken over; its renewal and verify then fail."""
        bucket, clock = MemoryBucket(), Clock()
        stalled = lock(bucket, clock)
        stalled.acquire()
        clock.now += 61
        lock(bucket, clock).acquire()
        assert stalled.renew() is False
        with pytest.raises(ConcurrentRunError, match="taken over"):
            stalled.verify()

    def test_release_deletes_only_its_own_lease(self) -> None:
        bucket, clock = MemoryBucket(), Clock()
        stalled = lock(bucket, clock)
        stalled.acquire()
        clock.now += 61
        successor = lock(bucket, clock)
        successor.acquire()
        stalled.release()
        assert "k.lock" in bucket.objects
        successor.release()
        assert "k.lock" not in bucket.objects

    def test_something_not_a_lease_is_replaced_conditionally(self) -> None:
        bucket, clock = MemoryBucket(), Clock()
        bucket.create("k.lock", b"garbage")
        lock(bucket, clock).acquire()
        assert Lease.decode(bucket.objects["k.lock"][0]) is not None


# -- on moto's S3 server, through the real CLI -------------------------------------------------

DATE = "2026-11-30"
_names = itertools.count()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorProcess]:
    with emulator_process(400, 5, "--latency", "0.05") as emulator:
        yield emulator


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"leases-{next(_names)}"
    s3.client().create_bucket(Bucket=name)
    return name


def export_args(uri: str, config: Path, *extra: str) -> list[str]:
    return ["export", "--config", str(config), "--output", uri, "--snapshot-date", DATE, *extra]


def lock_keys(s3: S3Server, bucket: str) -> list[str]:
    return [k for k in s3.objects(bucket) if k.endswith(".lock")]


def test_conditional_requests_hold_on_the_s3_server(s3: S3Server, bucket: str) -> None:
    """The adapter's create/replace really are conditional on a live S3 API (not just here)."""
    from exporter.store.bucket import BucketUri, conditional_store

    env = {**s3.env()}
    objects = obstore_objects(conditional_store(BucketUri("s3", bucket, ""), None, env))
    first = objects.create("x.lock", b"1")
    assert first is not None and objects.create("x.lock", b"2") is None
    second = objects.replace("x.lock", b"3", first)
    assert second is not None and objects.replace("x.lock", b"4", first) is None
    assert objects.read("x.lock") == (b"3", second)


def test_a_second_export_beside_a_running_one_exits_8(
    s3: S3Server, emu: EmulatorProcess, bucket: str, tmp_path: Path
) -> None:
    """Two runs of one request and date on one bucket: the second exits 8 and touches nothing."""
    config = tmp_path / "c.toml"
    config.write_text("[export]\nlock_lease_s = 4\n[request]\nper_page = 10\n")
    uri = f"s3://{bucket}/nightly"
    first = subprocess.Popen(
        [PYTHON, "-m", "exporter", *export_args(uri, config)],
        env=emu.env(**s3.env()),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not lock_keys(s3, bucket):
        assert first.poll() is None and time.monotonic() < deadline, "the first run never locked"
        time.sleep(0.02)
    second = run_cli(export_args(uri, config), env=emu.env(**s3.env()))
    assert second.returncode == 8, second.stderr
    assert "another export of this request and date is running" in second.stderr
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert not lock_keys(s3, bucket), "the lock is released at the end"


def test_a_killed_runs_lease_is_taken_over_by_resume(
    s3: S3Server, emu: EmulatorProcess, bucket: str, tmp_path: Path
) -> None:
    """A SIGKILLed run leaves its lease; `--resume` waits at most a lease, then finishes."""
    config = tmp_path / "c.toml"
    config.write_text("[export]\nlock_lease_s = 2\n[request]\nper_page = 10\n")
    uri = f"s3://{bucket}/nightly"
    first = subprocess.Popen(
        [PYTHON, "-m", "exporter", *export_args(uri, config)],
        env=emu.env(**s3.env()),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not lock_keys(s3, bucket):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    first.kill()
    first.wait()
    (key,) = lock_keys(s3, bucket)
    lease = orjson.loads(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())
    assert lease["expires_at"] > time.time() - 1, "the killed run's lease is still there"
    resumed = run_cli(export_args(uri, config, "--resume"), env=emu.env(**s3.env()))
    assert resumed.returncode == 0, resumed.stderr
    assert not lock_keys(s3, bucket)
