"""The walker's read-ahead: bounded in pages and in images per cursor, whatever the page size."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import cast

import anyio
import anyio.lowlevel
import pytest

from exporter.api.pagination import Image, ListRequest, Page, SortOrder
from exporter.stats import RunStats
from exporter.walk.walker import Chunk, Walker, WalkOptions


class CountingClient:
    """Serves a catalog of distinct upload times; records how far requests ran ahead."""

    base_url = "fake://api"

    def __init__(self, images: int, per_page: int) -> None:
        self.catalog: list[Image] = [
            {"id": f"img-{i:05d}", "uploaded": f"2024-01-01T00:{i // 60:02d}:{i % 60:02d}Z"}
            for i in range(images)
        ]
        self.per_page = per_page
        self.requests = 0
        self.received = 0  # chunks the consumer has been handed
        self.ahead: list[int] = []  # requests beyond the received chunks, at each request

    async def iter_pages(
        self,
        request: ListRequest,
        sort_order: SortOrder | None,
        token: str | None = None,
        *,
        batch: bool = False,
    ) -> AsyncIterator[Page]:
        ordered = self.catalog if sort_order == "asc" else self.catalog[::-1]
        while True:
            self.requests += 1
            self.ahead.append(self.requests - self.received)
            await anyio.lowlevel.checkpoint()
            start = int(token or 0)
            end = min(start + self.per_page, len(ordered))
            page = Page(
                images=ordered[start:end], next_token=str(end) if end < len(ordered) else None
            )
            yield page
            if page.next_token is None:
                return
            token = page.next_token


async def walk(client: CountingClient, per_page: int, **options: int) -> list[str]:
    """Consume every chunk slowly (so unbounded cursors would race ahead); return the ids."""
    walker = Walker(
        client,  # type: ignore[arg-type]
        ListRequest(per_page=per_page),
        WalkOptions(mode="both", **options),  # type: ignore[arg-type]
        RunStats(),
    )
    ids: list[str] = []
    async with aclosing(cast(AsyncGenerator[Chunk, None], walker.chunks())) as chunks:
        async for chunk in chunks:
            client.received += 1
            ids += [image["id"] for image in chunk.images]
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
    return ids


@pytest.mark.parametrize(
    ("per_page", "options", "most_ahead"),
    [
        # A page larger than the image bound: one request per cursor ahead of the consumer.
        # The page-only buffer this replaced let four run ahead here.
        (100, {"prefetch": 2, "prefetch_images": 50}, 2),
        # Small pages: the page bound holds (two pages ahead per cursor, four in all).
        (10, {"prefetch": 2, "prefetch_images": 2_000}, 4),
        # One page stays under the image bound, two reach it: the page bound is not.
        (10, {"prefetch": 8, "prefetch_images": 15}, 4),
    ],
)
async def test_requests_ahead_of_the_consumer_are_bounded(
    per_page: int, options: dict[str, int], most_ahead: int
) -> None:
    client = CountingClient(600, per_page)
    ids = await walk(client, per_page, **options)
    assert sorted(ids) == sorted(image["id"] for image in client.catalog)  # each exactly once
    assert len(ids) == len(set(ids))
    assert max(client.ahead) <= most_ahead


async def test_an_empty_buffer_always_has_room() -> None:
    """Zero limits still walk (one page per cursor at a time) instead of waiting forever."""
    client = CountingClient(100, 10)
    ids = await walk(client, 10, prefetch=0, prefetch_images=0)
    assert len(ids) == 100 == len(set(ids))
    assert max(client.ahead) <= 2
