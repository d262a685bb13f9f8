"""Pacing end to end: the CLI over loopback against the emulator's window quota with lockout.

The emulator runs in this process so the test reads its own record: the 429s it sent and the
most requests one of its windows admitted (`RateLimiter.peak`). Both are counts, so they hold
however fast or loaded the machine is; how much of the allowance a run uses is measured on a
virtual clock in `test_ratelimit.py` and timed by `make bench`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import orjson
import pytest

from exporter.emulator import RunningEmulator
from tests.helpers import PYTHON, emulator_env

EmulatorFactory = Callable[..., AbstractAsyncContextManager[RunningEmulator]]
IMAGES = 300  # 30 pages of 10: about three windows of an 11-request allowance
DATE = "2026-11-27"


async def export(emu: RunningEmulator, tmp_path: Path, walk: str = "") -> dict[str, object]:
    """Run `cf-images-export export` against `emu`; return the published manifest."""
    config = tmp_path / "paced.toml"
    config.write_text(f"[request]\nper_page = 10\n[walk]\n{walk}\n")
    out = tmp_path / "out"
    env = emulator_env(emu)
    command = [PYTHON, "-m", "exporter", "export", "--config", str(config)]
    command += ["--output", str(out), "--snapshot-date", DATE]
    # The emulator serves from this event loop, so the CLI must not block it.
    result = await anyio.run_process(command, env=env, check=False)
    assert result.returncode == 0, result.stderr.decode()
    manifest = orjson.loads((out / f"snapshot_date={DATE}" / "_manifest.json").read_bytes())
    assert isinstance(manifest, dict)
    return manifest


@pytest.mark.parametrize(
    ("server", "walk", "allowance"),
    [
        # Issue 12: the default config's reserve (60 of 1200) swallowed a small announced
        # quota, one request a window; the test would time out.
        pytest.param((12, 1.0), "", 11, id="announced-12/1s-under-the-default-config"),
        pytest.param((12, 1.5), "", 11, id="announced-12/1.5s-rounded-to-w=2"),
        # Issue 12: a configured share below the announced quota was ignored (24 a window).
        pytest.param((24, 1.0), "quota = 12\nwindow_s = 1", 11, id="configured-12/1s-under-24/1s"),
    ],
)
async def test_export_never_exceeds_its_allowance_and_gets_no_429(
    emulator_factory: EmulatorFactory,
    tmp_path: Path,
    server: tuple[int, float],
    walk: str,
    allowance: int,
) -> None:
    """floor(min(configured, announced) * 0.95) per window at most, zero 429s, all exported."""
    quota, window = server
    async with emulator_factory(
        images=IMAGES, seed=3, rate_quota=quota, rate_window_s=window, lockout_s=60
    ) as emu:
        with anyio.fail_after(120):  # a pacer stuck at one request a window takes minutes
            manifest = await export(emu, tmp_path, walk)
        limiter = emu.state.limiter
        assert limiter is not None
        assert emu.counters.throttled == 0
        assert limiter.peak <= allowance
        assert emu.counters.requests > 2 * allowance  # the run crossed window resets
    counts = manifest["counts"]
    assert isinstance(counts, dict)
    assert counts["images"] == IMAGES and counts["throttled"] == 0
