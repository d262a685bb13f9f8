"""Small HTTP helpers shared by the emulator tests."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from exporter.emulator import RunningEmulator

# The type of the `emulator_factory` fixture of tests/conftest.py.
EmulatorFactory = Callable[..., AbstractAsyncContextManager[RunningEmulator]]


@dataclass(frozen=True)
class Reply:
    """One HTTP reply, body kept raw."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def error(self) -> tuple[int, str]:
        """Return (code, message) of the first error of a failure envelope."""
        first = self.json()["errors"][0]
        return first["code"], first["message"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get(
    session: aiohttp.ClientSession,
    url: str,
    params: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """GET a URL and return its reply (no raise on error statuses)."""
    async with session.get(url, params=params, headers=headers) as response:
        return Reply(response.status, dict(response.headers), await response.read())


async def list_page(
    session: aiohttp.ClientSession,
    emu: RunningEmulator,
    params: Any = None,
    *,
    url: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """GET one List V2 page with the emulator's token unless headers are given."""
    return await get(session, url or emu.list_url, params, headers or bearer(emu.token))


async def walk(
    session: aiohttp.ClientSession,
    emu: RunningEmulator,
    params: list[tuple[str, str]],
    *,
    url: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Follow continuation tokens to the end; return every image and the page count."""
    images: list[dict[str, Any]] = []
    token: str | None = None
    pages = 0
    while True:
        # A walk that never ends is a failure, not a hang: no walk needs more pages than images.
        assert pages <= len(emu.catalog), "the continuation tokens loop"
        query = params + ([("continuation_token", token)] if token else [])
        reply = await list_page(session, emu, query, url=url, headers=headers)
        assert reply.status == 200, reply.body[:300]
        result = reply.json()["result"]
        images.extend(result["images"])
        pages += 1
        token = result["continuation_token"]
        if token is None:
            return images, pages
