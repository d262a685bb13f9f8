"""Shared fixtures: the Images API emulator served on loopback for the test's duration."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from exporter.emulator import EmulatorSettings, RunningEmulator, run_emulator

SMALL_CATALOG = 300

EmulatorFactory = Callable[..., AbstractAsyncContextManager[RunningEmulator]]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/contract_golden/ from the code (then review the diff)",
    )


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    """A running emulator with a small catalog, default token and account, no faults."""
    async with run_emulator(EmulatorSettings(images=SMALL_CATALOG)) as emu:
        yield emu


@pytest.fixture
def emulator_factory() -> EmulatorFactory:
    """Return `factory(**overrides)`: `async with factory(images=50, fault_rate=0.5) as emu:`.

    Keyword arguments are EmulatorSettings fields (images defaults to the small catalog), plus
    `clock=` / `wall=` callables to drive rate limits and token expiry without sleeping.
    """

    def factory(
        *,
        clock: Callable[[], float] | None = None,
        wall: Callable[[], float] | None = None,
        **overrides: Any,
    ) -> AbstractAsyncContextManager[RunningEmulator]:
        overrides.setdefault("images", SMALL_CATALOG)
        return run_emulator(
            EmulatorSettings(**overrides), clock=clock or time.monotonic, wall=wall or time.time
        )

    return factory
