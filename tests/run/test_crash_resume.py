"""Kill the exporter with SIGKILL at many points, resume, and never let a reader see a partial
snapshot: the test behind "impossible to corrupt" (issue 5).

Where a kill lands does not depend on how fast or loaded the machine is.
A run that is to be killed may send only a planned number of requests (`walk.quota` per an
hour-long window, fewer than the rest of the walk needs), so it is still running, blocked
mid-walk, whatever its speed; the in-process emulator's request count and the run's own
checkpoint say when it got there, and only then does the kill go out. Runs left to finish
are killed when they are seen publishing, wherever that lands: the invariants are asserted
for whatever happened.
"""

from __future__ import annotations

import math
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import duckdb
import orjson
import pytest
from anyio.abc import Process

from exporter.emulator import RunningEmulator
from tests.helpers import PYTHON, catalog_rows, emulator_env, run_cli, snapshot_rows

EmulatorFactory = Callable[..., AbstractAsyncContextManager[RunningEmulator]]
DATE = "2026-11-27"
IMAGES = 2000
SEED = 5
PER_PAGE = 40
KILLS = 20
CONFIG = f"""
[request]
per_page = {PER_PAGE}
[parquet]
part_rows = 160
"""


class GlobReader(threading.Thread):
    """Reads `OUT/snapshot_date=*/*.parquet` with DuckDB in a loop, recording what it saw."""

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True)
        self.glob = str(out / "snapshot_date=*" / "*.parquet")
        self.out = out
        self.stop = threading.Event()
        self.seen: list[tuple[int, int]] = []  # (rows, distinct ids) of each successful read
        self.errors: list[str] = []

    def run(self) -> None:
        with duckdb.connect() as con:
            while not self.stop.is_set():
                if not any(self.out.glob("snapshot_date=*/*.parquet")):
                    self.seen.append((0, 0))
                    time.sleep(0.005)
                    continue
                try:
                    row = con.execute(
                        f"SELECT count(*), count(DISTINCT id) FROM read_parquet('{self.glob}')"
                    ).fetchone()
                except duckdb.Error as exc:  # a file listed just before a swap: never data
                    self.errors.append(str(exc).splitlines()[0])
                    continue
                assert row is not None
                self.seen.append((int(row[0]), int(row[1])))


@dataclass(frozen=True)
class Kill:
    """Where one run is killed: once blocked after `requests`, maybe after a part of its own;
    or (`requests` 0) left to finish its walk and killed when seen publishing."""

    requests: int
    after_part: bool = False
    delay_s: float = 0.0  # then this long more (the run may still be writing what it fetched)


PUBLISHING = Kill(0)


def plan(seed: int) -> list[Kill]:
    """Return KILLS kill points: at startup, mid-part, just after a checkpoint, publishing."""
    rng = random.Random(seed)
    kills = [Kill(1), Kill(10, after_part=True)]  # at startup; just after a first checkpoint
    while len(kills) < KILLS - 1:
        if len(kills) in (7, 14):
            kills.append(PUBLISHING)
            continue
        requests = rng.randint(1, 14)
        after_part = requests >= 8 and rng.random() < 0.6
        kills.append(Kill(requests, after_part, rng.uniform(0, 0.2)))
    return [*kills, Kill(10, after_part=True)]  # the final run resumes a checkpoint


class Exports:
    """Runs of `cf-images-export export --resume` of DATE against an in-process emulator."""

    def __init__(self, emu: RunningEmulator, tmp_path: Path) -> None:
        self.emu = emu
        self.out = tmp_path / "out"
        self.tmp = tmp_path
        self.log = tmp_path / "runs.log"
        self.resumable = 0  # runs started (into runs.log) while a checkpoint existed
        self.env = emulator_env(emu)

    def command(self, requests: int | None) -> list[str]:
        """Return the command line; `requests`: how many the run may send before it blocks."""
        config = self.tmp / f"kill-{requests}.toml"
        walk = f"[walk]\nquota = {requests}\nwindow_s = 3600\nmargin = 1.0\n" if requests else ""
        config.write_text(CONFIG + walk)  # walk.quota is not part of the request's identity
        args = ["--config", str(config), "--output", str(self.out), "--snapshot-date", DATE]
        return [PYTHON, "-m", "exporter", "export", *args, "--resume"]

    async def start(self, requests: int | None = None) -> Process:
        """Start a run logging to `runs.log`; count it in `resumable` beside a checkpoint."""
        self.resumable += self.checkpoint() is not None
        with self.log.open("ab") as stderr:
            return await anyio.open_process(
                self.command(requests), env=self.env, stdout=subprocess.DEVNULL, stderr=stderr
            )

    async def finish(self) -> subprocess.CompletedProcess[bytes]:
        """Run an export to its end (no request limit)."""
        return await anyio.run_process(self.command(None), env=self.env, check=False)

    def last_lines(self) -> str:
        """Return the end of the runs' log, for a failure's message."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-8:])

    def checkpoint(self) -> dict[str, Any] | None:
        found = list(self.out.glob(".staging/*/_checkpoint.json"))
        if not found:
            return None
        try:
            data = orjson.loads(found[0].read_bytes())
        except (OSError, orjson.JSONDecodeError):  # replaced or removed while listed
            return None
        return data if isinstance(data, dict) else None

    def committed(self) -> tuple[int, int]:
        """Return (parts, rows) the checkpoint holds, (0, 0) without one."""
        parts = (self.checkpoint() or {}).get("parts", {}).get("parquet", [])
        return len(parts), sum(int(part["rows"]) for part in parts)

    async def until(self, process: Process, done: Callable[[], bool], what: str) -> None:
        """Poll until `done()`; the run must not exit first (it is blocked, or publishing)."""
        while not done():
            if process.returncode is not None:
                raise AssertionError(
                    f"the run exited ({process.returncode}) before {what}: {self.last_lines()}"
                )
            await anyio.sleep(0.005)


async def kill_at(exports: Exports, kill: Kill) -> bool:
    """Run one export and SIGKILL it at `kill`; return True when it was blocked mid-walk."""
    parts, rows = exports.committed()
    # The walk still needs at least this many list pages: the run never gets them all.
    requests = min(kill.requests, math.ceil((IMAGES - rows) / PER_PAGE) - 1)
    if (exports.checkpoint() or {}).get("phase") in ("publishing", "committing") or requests < 1:
        # Killed while publishing (the kill may land after the files are published, in
        # "committing"), or with the walk all but done: this run only completes it.
        finished = await exports.finish()
        assert finished.returncode == 0, finished.stderr.decode()
        return False
    if kill is PUBLISHING:
        await publish_and_kill(exports)
        return False
    sent = exports.emu.counters.requests
    process = await exports.start(requests)
    await exports.until(
        process, lambda: exports.emu.counters.requests >= sent + requests, "its requests"
    )
    if kill.after_part and requests >= 8:  # 7 pages or more: at least one part of 160 rows
        await exports.until(process, lambda: exports.committed()[0] > parts, "a part")
    await anyio.sleep(kill.delay_s)
    assert process.returncode is None, f"a blocked run cannot finish: {exports.last_lines()}"
    process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL
    return True


async def publish_and_kill(exports: Exports) -> None:
    """Let a run finish its walk and kill it as soon as it is seen publishing (or done)."""
    process = await exports.start()
    while (exports.checkpoint() or {}).get("phase") != "publishing":
        if process.returncode is not None:
            break
        await anyio.sleep(0.002)
    if process.returncode is None:
        process.send_signal(signal.SIGKILL)
    assert await process.wait() in (0, -signal.SIGKILL)


@pytest.mark.parametrize("republish", [False, True], ids=["first-publish", "re-run-same-date"])
async def test_sigkill_at_every_stage_then_resume(
    emulator_factory: EmulatorFactory, tmp_path: Path, republish: bool
) -> None:
    """After 20 SIGKILLs (most blocked mid-walk, some publishing) and a final --resume, the
    snapshot holds every image once, and a concurrent reader only ever saw none or all."""
    async with emulator_factory(images=IMAGES, seed=SEED) as emu:
        exports = Exports(emu, tmp_path)
        if republish:  # a complete snapshot of the same date is already published
            first = await exports.finish()
            assert first.returncode == 0, first.stderr.decode()
        reader = GlobReader(exports.out)
        reader.start()
        landed = 0
        try:
            with anyio.fail_after(600):
                for kill in plan(20261127 + republish):
                    landed += await kill_at(exports, kill)
                final = await exports.finish()
            assert final.returncode == 0, final.stderr.decode()
            assert b"resuming run" in final.stderr
        finally:
            reader.stop.set()
            reader.join()
    # Deterministic coverage: every run but the publishing ones was killed blocked mid-walk
    # (kill_at asserts it), and every run that started beside a checkpoint resumed from it.
    assert landed >= KILLS - 4, landed
    resumed = exports.log.read_text().count("resuming run")
    # A run is counted as resumable when it starts beside a checkpoint; under load it can be
    # killed before it logs its decision (requests the previous, killed run had in flight may
    # still reach the emulator's counter), so the log may show fewer resumes than starts.
    assert 5 <= resumed <= exports.resumable, (resumed, exports.resumable)
    out = exports.out
    assert snapshot_rows(out, DATE) == catalog_rows(IMAGES, SEED, emu.account_id)
    assert reader.seen, "the reader never ran"
    allowed = {IMAGES} if republish else {0, IMAGES}
    assert {rows for rows, _ in reader.seen} <= allowed
    assert all(rows == distinct for rows, distinct in reader.seen)
    assert len(reader.errors) <= len(reader.seen) // 20, reader.errors[:3]
    assert not list(out.glob("snapshot_date=*/*.tmp"))
    verify = run_cli(["inspect", str(out)])
    assert verify.returncode == 0, verify.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_cleanly_with_exit_130_then_resume(
    emulator_factory: EmulatorFactory, tmp_path: Path, signum: signal.Signals
) -> None:
    """SIGTERM/SIGINT mid-walk: exit 130 with one line, checkpoint kept; --resume finishes."""
    async with emulator_factory(images=IMAGES, seed=SEED) as emu:
        exports = Exports(emu, tmp_path)
        command = exports.command(12)  # blocked after 12 requests: signalled mid-walk
        async with await anyio.open_process(command, env=exports.env) as process:
            with anyio.fail_after(120):
                await exports.until(process, lambda: exports.committed()[0] > 0, "a part")
            process.send_signal(signum)
            assert process.stderr is not None
            stderr = (await receive_all(process.stderr)).decode()
            assert await process.wait() == 130, stderr
        assert "Traceback" not in stderr
        assert "--resume" in next(line for line in stderr.splitlines() if "error:" in line)
        assert exports.checkpoint() is not None
        assert not (exports.out / f"snapshot_date={DATE}").exists()
        final = await exports.finish()
        assert final.returncode == 0, final.stderr.decode()
        assert b"resuming run" in final.stderr
    assert snapshot_rows(exports.out, DATE) == catalog_rows(IMAGES, SEED, emu.account_id)


async def receive_all(stream: anyio.abc.ByteReceiveStream) -> bytes:
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_part_is_committed_every_part_s_of_walking(
    emulator_factory: EmulatorFactory, tmp_path: Path, signum: signal.Signals
) -> None:
    """With parts far larger than the catalog, a walk that stalls (its quota spent) still
    commits what it fetched once `parquet.part_s` has passed; the stop line names what the
    checkpoint keeps, and --resume sends fewer requests than a whole walk, exactly."""
    async with emulator_factory(images=IMAGES, seed=SEED) as emu:
        exports = Exports(emu, tmp_path)
        timed = CONFIG.replace("part_rows = 160", "part_rows = 1000000\npart_s = 0.5")

        def command(out: Path, quota: str) -> list[str]:
            config = tmp_path / f"timed{len(quota)}.toml"
            config.write_text(timed + quota)
            args = ["--config", str(config), "--output", str(out), "--snapshot-date", DATE]
            return [PYTHON, "-m", "exporter", "export", *args, "--resume"]

        sent = emu.counters.requests
        whole = await anyio.run_process(command(tmp_path / "whole", ""), env=exports.env)
        assert whole.returncode == 0, whole.stderr.decode()
        whole_requests = emu.counters.requests - sent

        blocked = command(exports.out, "[walk]\nquota = 12\nwindow_s = 3600\nmargin = 1.0\n")
        async with await anyio.open_process(blocked, env=exports.env) as process:
            with anyio.fail_after(120):
                await exports.until(process, lambda: exports.committed()[1] > 0, "a part")
            process.send_signal(signum)
            assert process.stderr is not None
            stderr = (await receive_all(process.stderr)).decode()
            assert await process.wait() == 130, stderr
        parts, rows = exports.committed()
        assert parts >= 1 and 0 < rows < IMAGES, (parts, rows)
        line = next(line for line in stderr.splitlines() if "error:" in line)
        assert f"the checkpoint keeps {rows:,} images" in line, line
        assert "--resume" in line

        sent = emu.counters.requests
        final = await anyio.run_process(command(exports.out, ""), env=exports.env, check=False)
        assert final.returncode == 0, final.stderr.decode()
        assert b"resuming run" in final.stderr
        resumed_requests = emu.counters.requests - sent
    # The rows kept are not fetched again; each cursor re-reads its entry page (the page where
    # its position's instant began: the order inside an instant may change across a restart).
    # Where the two cursors meet, each may have one page in flight that the other already
    # served, in the whole walk or in the resumed one, as the machine's timing falls: two more.
    assert resumed_requests <= whole_requests - rows // PER_PAGE + 2 + 2, (
        resumed_requests,
        whole_requests,
    )
    assert snapshot_rows(exports.out, DATE) == catalog_rows(IMAGES, SEED, emu.account_id)


async def test_a_resumed_runs_summary_says_its_own_time_apart_from_the_wall_clock(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """Stopped mid-walk, resumed 3 s later: the summary's duration is the resuming process's
    time (as the metrics' duration_seconds), not the pause; the wall clock since the first
    start is shown apart. A run that was not resumed shows no such figure."""
    async with emulator_factory(images=IMAGES, seed=SEED) as emu:
        exports = Exports(emu, tmp_path)
        async with await anyio.open_process(exports.command(12), env=exports.env) as process:
            with anyio.fail_after(120):
                await exports.until(process, lambda: exports.committed()[0] > 0, "a part")
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 130
        await anyio.sleep(3)
        began = time.monotonic()
        final = await exports.finish()
        resumed_for = time.monotonic() - began
        again = await anyio.run_process(
            [*exports.command(None)[:-1], "--snapshot-date", "2026-01-02"], env=exports.env
        )
    stderr = final.stderr.decode()
    assert final.returncode == 0, stderr
    (summary,) = [line for line in stderr.splitlines() if "summary:" in line]
    fields = dict(item.split(": ", 1) for item in summary.split("summary: ", 1)[1].split("; "))
    duration, since_start = float(fields["duration (s)"]), float(fields["since first start (s)"])
    assert duration <= resumed_for
    # the wall clock runs to the snapshot's finish, the duration on through its change step
    assert since_start >= 3 and since_start > duration
    fresh = again.stderr.decode()
    assert "duration (s): " in fresh and "since first start" not in fresh
