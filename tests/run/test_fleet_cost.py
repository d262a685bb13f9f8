"""A fleet's fixed cost per account: what each small account asks of the API, and when.

The real `fleet` command over loopback against an in-process emulator, whose record says
which requests each account made: a small account's walk does not wait for the image count,
asks it again only when it disagreed, and reuses the connections of the accounts before it.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from aiohttp import web

from exporter.emulator import AccountSettings, RunningEmulator, app
from tests.helpers import PYTHON, clean_env

EmulatorFactory = Callable[..., AbstractAsyncContextManager[RunningEmulator]]
DATE = "2026-11-28"
SIZES = (30, 45, 12, 60, 25)  # the other accounts'; the primary one has 40


def other_accounts() -> tuple[AccountSettings, ...]:
    return tuple(
        AccountSettings(account_id=f"{i:02d}" + "cd" * 15, token=f"fleet-{i}", images=n, seed=i)
        for i, n in enumerate(SIZES, 1)
    )


async def run_fleet(emu: RunningEmulator, tmp_path: Path, workers: int) -> list[dict[str, Any]]:
    """Run `fleet` over every served account; return each account's manifest."""
    tokens = {ident: account.settings.token for ident, account in emu.state.accounts.items()}
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        "".join(
            f'[[account]]\nid = "{ident}"\ntoken_env = "TOKEN_{n}"\n\n'
            for n, ident in enumerate(tokens)
        )
    )
    env = clean_env()
    env["CLOUDFLARE_BASE_URL"] = emu.base_url
    env.update({f"TOKEN_{n}": token for n, token in enumerate(tokens.values())})
    out = tmp_path / "out"
    command = [PYTHON, "-m", "exporter", "fleet", "--accounts", str(accounts)]
    command += ["--output", str(out), "--snapshot-date", DATE, "--workers", str(workers)]
    with anyio.fail_after(180):
        result = await anyio.run_process(command, env=env, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return [
        orjson.loads((out / f"account_id={ident}/snapshot_date={DATE}/_manifest.json").read_bytes())
        for ident in tokens
    ]


@pytest.fixture
def stats_after_the_walk(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[bool]]:
    """Make `/stats` answer only once its account's catalog has been served (or after 60 s):
    an export that waited for the count before walking would wait that long. Returns, per
    account, whether each count was answered after the walk."""
    answered: dict[str, list[bool]] = {}
    original = app._stats

    async def stats(request: web.Request) -> web.StreamResponse:
        account = request.app[app.STATE].accounts.get(request.match_info["account_id"])
        if account is None:
            return await original(request)
        walked = lambda: account.images_served >= len(account.catalog)  # noqa: E731
        for _ in range(12_000):  # 60 s
            if walked():
                break
            await asyncio.sleep(0.005)
        answered.setdefault(account.settings.account_id, []).append(walked())
        return await original(request)

    monkeypatch.setattr(app, "_stats", stats)
    return answered


async def test_a_slow_count_neither_delays_the_walk_nor_loses_its_warning(
    emulator_factory: EmulatorFactory,
    tmp_path: Path,
    stats_after_the_walk: dict[str, list[bool]],
) -> None:
    """`/stats` counts 2 images no listing shows and answers after the walk: every account
    walks at once, asks the count again (it disagreed) and warns; its rows are exact."""
    async with emulator_factory(images=40, seed=3, drafts=2, accounts=other_accounts()) as emu:
        manifests = await run_fleet(emu, tmp_path, workers=1)
        served = {ident: len(account.catalog) for ident, account in emu.state.accounts.items()}
    assert stats_after_the_walk == {ident: [True, True] for ident in served}
    for manifest in manifests:
        rows = served[manifest["account_id"]]
        assert (manifest["counts"]["rows"], manifest["api_count"]) == (rows, rows + 2)
        (warning,) = manifest["normalize"]["warnings"]
        counted = f"{rows} images were exported and the API counted {rows + 2} both before and"
        assert counted in warning


async def test_small_accounts_ask_the_count_once_and_share_connections(
    emulator_factory: EmulatorFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Six accounts of one page each, one at a time: a count and a page from each end per
    account, the count asked once (it agreed), over the connections the first account opened
    (one per concurrent request: three) instead of new ones for each account."""
    asked: Counter[str] = Counter()
    original = app._stats

    async def stats(request: web.Request) -> web.StreamResponse:
        asked[request.match_info["account_id"]] += 1
        return await original(request)

    monkeypatch.setattr(app, "_stats", stats)
    async with emulator_factory(images=40, seed=3, accounts=other_accounts()) as emu:
        manifests = await run_fleet(emu, tmp_path, workers=1)
        connections = emu.counters.connections
        served = {ident: len(account.catalog) for ident, account in emu.state.accounts.items()}
    assert asked == dict.fromkeys(served, 1)
    for manifest in manifests:
        assert manifest["counts"]["rows"] == manifest["api_count"] == served[manifest["account_id"]]
        assert manifest["counts"]["requests"] == 3  # the count, one page from each end
    # The first account's three, plus at most one more per account: a page prefetched when
    # the cursors met is cancelled mid-answer and its connection closed (more often under
    # load). Unshared, each account opens its own: two cursors at once, at least 12 here.
    assert connections <= len(served) + 3, connections
