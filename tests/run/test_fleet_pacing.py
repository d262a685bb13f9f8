"""Fleet pacing: accounts that share a credential share one budget (the limit is per user).

Two accounts on one token, against an in-process emulator whose limiter is per credential:
with a pacer each they would spend two allowances in one window and draw 429s; sharing one,
the emulator's own record shows no 429 and no window above one allowance.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import anyio
import pytest

from exporter.emulator import AccountSettings, RunningEmulator
from exporter.emulator.settings import DEMO_TOKEN
from tests.helpers import PYTHON, clean_env

EmulatorFactory = Callable[..., AbstractAsyncContextManager[RunningEmulator]]
DATE = "2026-11-27"
SECOND = "fe" * 16


@pytest.mark.parametrize("workers", [2, 1])
async def test_accounts_sharing_a_token_share_one_allowance(
    emulator_factory: EmulatorFactory, tmp_path: Path, workers: int
) -> None:
    quota, window = 12, 1.0
    limits = {"rate_quota": quota, "rate_window_s": window, "lockout_s": 60}
    second = AccountSettings(account_id=SECOND, token=DEMO_TOKEN, images=150, seed=4, **limits)
    async with emulator_factory(images=200, seed=3, accounts=(second,), **limits) as emu:
        accounts = tmp_path / "accounts.toml"
        accounts.write_text(
            f'[[account]]\nid = "{emu.account_id}"\ntoken_env = "SHARED"\n\n'
            f'[[account]]\nid = "{SECOND}"\ntoken_env = "SHARED"\n'
        )
        config = tmp_path / "c.toml"
        config.write_text("[request]\nper_page = 10\n")
        env = clean_env()
        env.update(SHARED=emu.token, CLOUDFLARE_BASE_URL=emu.base_url)
        command = [PYTHON, "-m", "exporter", "fleet", "--accounts", str(accounts)]
        command += ["--config", str(config), "--output", str(tmp_path / "out")]
        command += ["--snapshot-date", DATE, "--workers", str(workers)]
        with anyio.fail_after(180):
            result = await anyio.run_process(command, env=env, check=False)
        assert result.returncode == 0, result.stderr.decode()
        limiter = emu.state.limiter
        assert limiter is not None
        assert emu.counters.throttled == 0
        assert limiter.peak <= int(quota * 0.95)
