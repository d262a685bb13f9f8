"""The walker against the emulator over real TCP: faults, ties, pacing, batch host, resume."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, aclosing
from typing import Any

import pytest

from exporter.api.auth import Credentials
from exporter.api.filters import matches, parse_filter
from exporter.api.pagination import Image, ListRequest
from exporter.api.retry import RetryPolicy
from exporter.emulator import RunningEmulator
from exporter.emulator.settings import FAULT_KINDS
from exporter.errors import AuthError
from exporter.stats import RunStats
from exporter.walk.walker import Chunk, Walker, WalkOptions, make_client

EmulatorFactory = Callable[..., AbstractAsyncContextManager[RunningEmulator]]
QUICK_RETRY = RetryPolicy(max_attempts=12, base_s=0.005, cap_s=0.05, deadline_s=30)
ALL_FAULTS = {"fault_rate": 0.1, "slow_s": 0.4}  # every kind, 10% of list requests


def options(**overrides: Any) -> WalkOptions:
    overrides.setdefault("retry", QUICK_RETRY)
    overrides.setdefault("read_timeout_s", 0.2)  # a "slow" fault times out and is retried
    return WalkOptions(**overrides)


async def walk(
    emu: RunningEmulator,
    request: ListRequest,
    opts: WalkOptions,
    state: dict[str, Any] | None = None,
    limit: int | None = None,
    stats: RunStats | None = None,
) -> list[Chunk]:
    stats = stats or RunStats()
    creds = Credentials(token=emu.token)
    chunks: list[Chunk] = []
    async with make_client(emu.base_url, emu.account_id, creds, opts, stats) as client:
        walker = Walker(client, request, opts, stats, state)
        async with aclosing(walker.chunks()) as stream:
            async for chunk in stream:
                chunks.append(chunk)
                if limit is not None and len(chunks) >= limit:
                    break
    return chunks


def ids(images: list[Image]) -> Counter[str]:
    return Counter(image["id"] for image in images)


def emitted(chunks: list[Chunk]) -> Counter[str]:
    return ids([image for chunk in chunks for image in chunk.images])


def catalog_ids(emu: RunningEmulator) -> Counter[str]:
    return ids(list(emu.catalog.iter_images()))


@pytest.mark.parametrize("mode", ["both", "single"])
async def test_every_image_once_through_faults_of_every_kind(
    emulator_factory: EmulatorFactory, mode: str
) -> None:
    """10% of pages fail (500, 502 HTML, 503, reset, truncated, slow): still exactly once."""
    async with emulator_factory(images=3000, seed=3, **ALL_FAULTS) as emu:
        stats = RunStats()
        chunks = await walk(emu, ListRequest(per_page=10), options(mode=mode), stats=stats)
        assert emitted(chunks) == catalog_ids(emu)
        faults = emu.counters.faults
        assert sum(faults.values()) >= 20 and set(faults) == FAULT_KINDS  # they did happen
        assert stats.retries >= sum(faults.values()) - faults["slow"]
        assert stats.requests == emu.counters.requests


@pytest.mark.parametrize(
    ("images", "per_page"),
    [
        pytest.param(0, 10, id="empty"),
        pytest.param(1, 10, id="one-image"),
        pytest.param(7, 10, id="one-short-page"),
        pytest.param(10, 10, id="one-full-page"),
        pytest.param(11, 10, id="two-pages"),
        pytest.param(600, 10, id="heavy-ties"),  # the catalog puts many images on one ms
    ],
)
@pytest.mark.parametrize("mode", ["both", "single"])
async def test_tiny_catalogs_and_ties(
    emulator_factory: EmulatorFactory, images: int, per_page: int, mode: str
) -> None:
    async with emulator_factory(images=images, seed=11) as emu:
        chunks = await walk(emu, ListRequest(per_page=per_page), options(mode=mode))
        assert emitted(chunks) == catalog_ids(emu)


async def test_the_catalog_really_has_ties(emulator: RunningEmulator) -> None:
    """Guard for the tie tests above: the emulator's catalog shares `uploaded` values."""
    uploaded = Counter(image["uploaded"] for image in emulator.catalog.iter_images())
    assert max(uploaded.values()) >= 3


async def test_filters_and_creator_reach_the_api(emulator_factory: EmulatorFactory) -> None:
    """The walk returns exactly the images the filters and creator select."""
    status = parse_filter("meta.status[in]=active|pending")
    request = ListRequest(per_page=10, creator="Zoë", filters=(status,))
    async with emulator_factory(images=2000, seed=5) as emu:
        chunks = await walk(emu, request, options())
        expected = [
            image
            for image in emu.catalog.iter_images()
            if image.get("creator") == "Zoë" and matches(status, image.get("meta"))
        ]
        assert expected and emitted(chunks) == ids(expected)


@pytest.mark.parametrize("mode", ["both", "single"])
async def test_resume_from_a_mid_walk_state(emulator_factory: EmulatorFactory, mode: str) -> None:
    """Stop after a few chunks; a new walker from the last state finishes exactly once."""
    async with emulator_factory(images=700, seed=4) as emu:
        request = ListRequest(per_page=10)
        first = await walk(emu, request, options(mode=mode), limit=12)
        state = json.loads(json.dumps(first[-1].state()))
        rest = await walk(emu, request, options(mode=mode), state=state)
        assert emitted(first) + emitted(rest) == catalog_ids(emu)


@pytest.mark.parametrize("mode", ["both", "single"])
async def test_resume_with_a_rejected_token(
    emulator_factory: EmulatorFactory, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A stored token the API refuses (400): restart that cursor, de-duplicate, warn."""
    async with emulator_factory(images=700, seed=4) as emu:
        request = ListRequest(per_page=10)
        first = await walk(emu, request, options(mode=mode), limit=12)
        state = json.loads(json.dumps(first[-1].state()))
        for side in state["sides"]:  # a resume starts from the entry token
            if side["entry"]:
                side["entry"] = "not-a-token-of-this-api"
        rest = await walk(emu, request, options(mode=mode), state=state)
        assert emitted(first) + emitted(rest) == catalog_ids(emu)
        assert emu.counters.by_status[400] >= 1
        assert "rejected the stored continuation token" in caplog.text


async def test_pacing_keeps_the_allowance_without_a_single_429(
    emulator_factory: EmulatorFactory,
) -> None:
    """20 requests per 1.5 s window with lockout: zero 429s, and no emulator window admits more
    than floor(20 * 0.95) = 19 (the default margin keeps 5% for the user's other traffic).

    Counts only, so it holds at any speed; the share of the quota used is measured on a
    virtual clock (test_ratelimit.py) and timed by `make bench`."""
    quota, window = 20, 1.5
    async with emulator_factory(
        images=800, seed=2, rate_quota=quota, rate_window_s=window, lockout_s=60
    ) as emu:
        opts = options(quota=quota, window_s=window)
        chunks = await walk(emu, ListRequest(per_page=10), opts)
        assert emitted(chunks) == catalog_ids(emu)
        assert emu.counters.throttled == 0
        assert emu.state.limiter is not None and emu.state.limiter.peak <= 19
        assert emu.counters.requests >= 3 * quota  # a walk across several window resets


async def test_batch_mode_exact_with_a_token_expiring_mid_walk(
    emulator_factory: EmulatorFactory,
) -> None:
    """Batch tokens living 0.5 s on a walk of ~1.5 s: refreshed in time, each image once."""
    async with emulator_factory(images=1200, seed=6, batch_token_ttl_s=0.5, latency_s=0.01) as emu:
        opts = options(batch_api=True, batch_base_url=emu.batch_base_url, read_timeout_s=5)
        start = time.monotonic()
        chunks = await walk(emu, ListRequest(per_page=10), opts)
        assert time.monotonic() - start > 0.5  # the walk did outlive a token
        assert emitted(chunks) == catalog_ids(emu)
        assert emu.counters.batch_requests >= 100
        token_requests = emu.counters.requests - emu.counters.batch_requests
        assert token_requests >= 2


async def test_batch_mode_refused_says_what_to_do(emulator_factory: EmulatorFactory) -> None:
    async with emulator_factory(images=20, allow_batch_tokens=False) as emu:
        opts = options(batch_api=True, batch_base_url=emu.batch_base_url)
        with pytest.raises(AuthError) as info:
            await walk(emu, ListRequest(per_page=10), opts)
        assert "batch tokens" in str(info.value) and info.value.exit_code == 3


async def test_wrong_token_is_an_auth_error(emulator: RunningEmulator) -> None:
    opts = options()
    stats = RunStats()
    creds = Credentials(token="wrong-token")
    async with make_client(emulator.base_url, emulator.account_id, creds, opts, stats) as client:
        with pytest.raises(AuthError) as info:
            async with aclosing(Walker(client, ListRequest(), opts, stats).chunks()) as stream:
                async for _ in stream:
                    pass
        assert "Images Read" in str(info.value) and "wrong-token" not in str(info.value)
        assert await _count_or_error(client) == "auth"


async def _count_or_error(client: Any) -> str:
    try:
        await client.get_count()
    except AuthError:
        return "auth"
    return "count"


async def test_count_matches_the_catalog(emulator: RunningEmulator) -> None:
    opts = options()
    creds = Credentials(token=emulator.token)
    async with make_client(emulator.base_url, emulator.account_id, creds, opts, RunStats()) as c:
        assert await c.get_count() == len(emulator.catalog)
