"""The manifest's request counts against the emulator's own record of what it served.

The CLI runs over loopback against an in-process emulator whose rate limit the test has
already exhausted with the same token, so the export starts locked out and is answered 429
first. Every 429 and every request the emulator served it must appear once in `counts`. The
emulator's clock stands still until the export's first request, so a slow start of the CLI
cannot outlast the lockout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiohttp
import anyio
import orjson
import pytest

from exporter.emulator import RunningEmulator
from tests.helpers import PYTHON, emulator_env

EmulatorFactory = Callable[..., AbstractAsyncContextManager[RunningEmulator]]
DATE = "2026-11-27"


class HeldClock:
    """Monotonic time that stands still until its first reading after `arm()`, from then on
    running again: the lockout primed before the export starts when its first request comes."""

    def __init__(self) -> None:
        self.held_at: float | None = time.monotonic()
        self.offset = 0.0
        self.armed = False

    def arm(self) -> None:
        self.armed = True

    def __call__(self) -> float:
        if self.held_at is None:
            return time.monotonic() - self.offset
        now = self.held_at
        if self.armed:
            self.offset, self.held_at = time.monotonic() - now, None
        return now


async def exhaust(emu: RunningEmulator, quota: int) -> None:
    """Spend the token's whole window and one more request: the caller is now locked out."""
    url = f"{emu.base_url}/accounts/{emu.account_id}/images/v1/stats"
    headers = {"Authorization": f"Bearer {emu.token}"}
    async with aiohttp.ClientSession() as session:
        for _ in range(quota + 1):
            async with session.get(url, headers=headers) as reply:
                await reply.read()
    assert emu.counters.throttled == 1


@pytest.mark.parametrize("walk", ["both", "single"])
async def test_counts_match_what_the_emulator_served(
    emulator_factory: EmulatorFactory, tmp_path: Path, walk: str
) -> None:
    quota, clock = 6, HeldClock()
    async with emulator_factory(
        images=120, seed=5, rate_quota=quota, rate_window_s=1.0, lockout_s=1.0, clock=clock
    ) as emu:
        await exhaust(emu, quota)
        throttled_before, requests_before = emu.counters.throttled, emu.counters.requests
        env = emulator_env(emu)
        out = tmp_path / "out"
        command = [PYTHON, "-m", "exporter", "export", "--output", str(out)]
        command += ["--snapshot-date", DATE, "--per-page", "20", "--walk", walk]
        clock.arm()
        with anyio.fail_after(120):  # the emulator serves from this loop: never block it
            result = await anyio.run_process(command, env=env, check=False)
        assert result.returncode == 0, result.stderr.decode()
        served_429 = emu.counters.throttled - throttled_before
        served = emu.counters.requests - requests_before
    counts = orjson.loads((out / f"snapshot_date={DATE}" / "_manifest.json").read_bytes())["counts"]
    assert served_429 >= 1  # the run really started locked out
    assert counts["throttled"] == served_429
    assert counts["requests"] == served
    assert counts["retries"] >= served_429 and counts["images"] == 120
    assert 1 <= counts["waits"] <= counts["requests"]  # at most one pause before each request


@pytest.mark.parametrize(
    ("request_args", "counted"),
    [
        pytest.param([], True, id="unfiltered"),
        pytest.param(["--creator", ""], False, id="creator"),
        pytest.param(["--filter", "meta.status[eq]=active"], False, id="meta-filter"),
    ],
)
async def test_only_an_unfiltered_export_asks_the_count(
    emulator_factory: EmulatorFactory, tmp_path: Path, request_args: list[str], counted: bool
) -> None:
    """`/stats` counts the whole catalog: a filtered export does not ask it (the emulator
    serves nothing but list pages), so no count stands beside its rows in the manifest."""
    async with emulator_factory(images=150, seed=6) as emu:
        env = emulator_env(emu)
        out = tmp_path / "out"
        command = [PYTHON, "-m", "exporter", "export", "--output", str(out)]
        command += ["--snapshot-date", DATE, "--per-page", "20", *request_args]
        with anyio.fail_after(120):  # the emulator serves from this loop: never block it
            result = await anyio.run_process(command, env=env, check=False)
        assert result.returncode == 0, result.stderr.decode()
        not_pages = emu.counters.requests - emu.counters.pages
    manifest = orjson.loads((out / f"snapshot_date={DATE}" / "_manifest.json").read_bytes())
    assert not_pages == (1 if counted else 0)
    assert (manifest["api_count"] is not None) == counted
    assert manifest["complete"] is (True if counted else None)
    assert not manifest["normalize"]["warnings"]
