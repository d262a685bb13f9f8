"""The walker: the pure both-ends merge on simulated cursors, then the async plumbing."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from exporter.errors import ConfigError, CursorError, ResponseError
from exporter.pagination import Image, ListRequest, Page, SortOrder
from exporter.stats import RunStats
from exporter.walker import Chunk, Merge, Walker, WalkOptions


def make_catalog(n: int, distinct: int, rng: random.Random) -> list[Image]:
    """n images over `distinct` upload instants: few instants make heavy ties."""
    seconds = sorted(rng.randrange(distinct) for _ in range(n))
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return [
        {"id": f"img-{i:05d}", "uploaded": (start + timedelta(seconds=s)).isoformat()}
        for i, s in enumerate(seconds)
    ]


class Source:
    """Serves asc and desc pages of a catalog; ties come in a different order per cursor."""

    def __init__(
        self, catalog: list[Image], per_page: int, rng: random.Random, empty_tail: bool = False
    ) -> None:
        tie_a = {img["id"]: rng.random() for img in catalog}
        tie_d = {img["id"]: rng.random() for img in catalog}
        self.orders: dict[str, list[Image]] = {
            "asc": sorted(catalog, key=lambda i: (i["uploaded"], tie_a[i["id"]])),
            "desc": sorted(catalog, key=lambda i: (i["uploaded"], tie_d[i["id"]]), reverse=True),
        }
        self.per_page = per_page
        self.empty_tail = empty_tail
        self.requests = 0

    def page(self, order: str, token: str | None) -> Page:
        self.requests += 1
        if token == "bad":
            raise ResponseError("u", 400, 5400, "Invalid continuation_token")
        start = int(token or 0)
        items = self.orders[order][start : start + self.per_page]
        end = start + len(items)
        more = end < len(self.orders[order]) or (self.empty_tail and items and end % 7 == 0)
        return Page(images=list(items), next_token=str(end) if more else None)


def drive(
    merge: Merge, source: Source, rng: random.Random, steps: int | None = None
) -> list[Image]:
    """Feed pages in a random interleaving, plus stale pages of stopped cursors."""
    out: list[Image] = []
    while (sides := merge.wanted()) and steps != 0:
        side = rng.choice(sides)
        page = source.page(side.order, side.token)
        out.extend(merge.feed(side.order, page))
        if rng.random() < 0.2:  # a page prefetched before its cursor stopped arrives late
            for other in merge.sides.values():
                if other.stopped and other.token is not None:
                    assert merge.feed(other.order, source.page(other.order, other.token)) == []
        held = sum(len(s.held) for s in merge.sides.values())
        assert held <= merge.hold_cap + source.per_page
        steps = None if steps is None else steps - 1
    return out


def ids(images: list[Image]) -> Counter[str]:
    return Counter(img["id"] for img in images)


CASES = [
    pytest.param(0, 5, 10, id="empty"),
    pytest.param(1, 5, 10, id="one-image"),
    pytest.param(10, 5, 10, id="one-full-page"),
    pytest.param(7, 3, 10, id="one-short-page"),
    pytest.param(200, 1, 10, id="all-one-instant"),
    pytest.param(200, 3, 10, id="three-instants"),
    pytest.param(300, 40, 10, id="heavy-ties"),
    pytest.param(300, 10_000, 10, id="few-ties"),
    pytest.param(123, 20, 17, id="odd-sizes"),
]


class TestMerge:
    @pytest.mark.parametrize(("n", "distinct", "per_page"), CASES)
    @pytest.mark.parametrize("seed", range(6))
    def test_both_ends_emit_each_image_once(
        self, n: int, distinct: int, per_page: int, seed: int
    ) -> None:
        """Whatever the interleaving and the ties, the union is the catalog, once each."""
        rng = random.Random(seed)
        catalog = make_catalog(n, distinct, rng)
        source = Source(catalog, per_page, rng, empty_tail=seed % 2 == 1)
        merge = Merge.start(("asc", "desc"), hold_cap=50)
        assert ids(drive(merge, source, rng)) == ids(catalog)
        assert merge.done

    def test_both_ends_read_no_more_pages_than_one_cursor(self) -> None:
        """Two cursors meeting in the middle read the catalog once between them (+1 page)."""
        rng = random.Random(3)
        catalog = make_catalog(1000, 100_000, rng)
        source = Source(catalog, 10, rng)
        merge = Merge.start(("asc", "desc"))
        out: list[Image] = []
        while sides := merge.wanted():
            side = rng.choice(sides)
            out.extend(merge.feed(side.order, source.page(side.order, side.token)))
        assert ids(out) == ids(catalog)
        assert source.requests <= 100 + 1

    @pytest.mark.parametrize("order", ["asc", "desc"])
    def test_single_cursor_emits_every_page_at_once(self, order: SortOrder) -> None:
        rng = random.Random(1)
        catalog = make_catalog(95, 4, rng)
        source = Source(catalog, 10, rng)
        merge = Merge.start((order,))
        page = source.page(order, None)
        assert merge.feed(order, page) == page.images  # nothing held back
        assert ids(page.images + drive(merge, source, rng)) == ids(catalog)

    def test_huge_tie_group_is_bounded_by_the_hold_cap(self) -> None:
        """One instant for everything: desc is frozen once the held ties pass the cap."""
        rng = random.Random(5)
        catalog = make_catalog(500, 1, rng)
        source = Source(catalog, 10, rng)
        merge = Merge.start(("asc", "desc"), hold_cap=25)
        assert ids(drive(merge, source, rng)) == ids(catalog)
        assert merge.frozen

    @pytest.mark.parametrize("seed", range(8))
    @pytest.mark.parametrize("both", [True, False], ids=["both", "single"])
    def test_resume_from_any_state(self, seed: int, both: bool) -> None:
        """A JSON round-tripped state continues with every image exactly once."""
        rng = random.Random(seed)
        catalog = make_catalog(250, 30, rng)
        source = Source(catalog, 10, rng)
        merge = Merge.start(("asc", "desc") if both else ("desc",), hold_cap=40)
        first = drive(merge, source, rng, steps=rng.randrange(1, 20))
        state = json.loads(json.dumps(merge.state()))
        resumed = Merge.from_state(state, hold_cap=40)
        rest = drive(resumed, source, rng)
        assert ids(first + rest) == ids(catalog)

    @pytest.mark.parametrize("seed", range(8))
    @pytest.mark.parametrize("both", [True, False], ids=["both", "single"])
    def test_resume_with_rejected_tokens_restarts_and_deduplicates(
        self, seed: int, both: bool
    ) -> None:
        """Cursors restarted from the beginning skip what was already emitted or held."""
        rng = random.Random(100 + seed)
        catalog = make_catalog(250, 25, rng)
        source = Source(catalog, 10, rng)
        merge = Merge.start(("asc", "desc") if both else ("asc",), hold_cap=40)
        first = drive(merge, source, rng, steps=rng.randrange(1, 20))
        resumed = Merge.from_state(json.loads(json.dumps(merge.state())), hold_cap=40)
        for side in resumed.wanted():
            resumed.restart(side.order)
        rest = drive(resumed, source, rng)
        assert ids(first + rest) == ids(catalog)

    def test_out_of_order_page_is_a_cursor_error(self) -> None:
        merge = Merge.start(("asc", "desc"))
        late = {"id": "a", "uploaded": "2024-01-01T00:00:05Z"}
        early = {"id": "b", "uploaded": "2024-01-01T00:00:01Z"}
        with pytest.raises(CursorError):
            merge.feed("asc", Page([late, early], "t"))

    def test_unknown_state_version(self) -> None:
        with pytest.raises(ConfigError):
            Merge.from_state({"version": 99, "sides": []})


# -- the async walker, on a fake client ----------------------------------------------------


class FakeClient:
    """iter_pages() over a Source, with a little latency so cursors interleave."""

    base_url = "fake://api"

    def __init__(self, source: Source, fail_after: int | None = None) -> None:
        self.source = source
        self.fail_after = fail_after
        self.calls: list[tuple[str | None, str | None]] = []

    async def iter_pages(
        self,
        request: ListRequest,
        sort_order: SortOrder | None,
        token: str | None = None,
        *,
        batch: bool = False,
    ) -> AsyncIterator[Page]:
        while True:
            self.calls.append((sort_order, token))
            if self.fail_after is not None and len(self.calls) > self.fail_after:
                raise ResponseError("fake://api", 404, 7003, "No route for the URI")
            await anyio.sleep(0.001 * (1 + len(self.calls) % 3))
            page = self.source.page(sort_order or "desc", token)
            yield page
            if page.next_token is None:
                return
            token = page.next_token


def walker(client: FakeClient, state: dict[str, Any] | None = None, **opts: Any) -> Walker:
    request = ListRequest(per_page=10, sort_order=opts.pop("sort_order", None))
    return Walker(client, request, WalkOptions(**opts), RunStats(), state)  # type: ignore[arg-type]


async def collect(w: Walker, limit: int | None = None) -> list[Chunk]:
    chunks: list[Chunk] = []
    async with aclosing(w.chunks()) as stream:
        async for chunk in stream:
            chunks.append(chunk)
            if limit is not None and len(chunks) >= limit:
                break
    return chunks


def all_images(chunks: list[Chunk]) -> list[Image]:
    return [img for chunk in chunks for img in chunk.images]


class TestWalker:
    @pytest.mark.parametrize("mode", ["auto", "both", "single"])
    async def test_every_image_once(self, mode: str) -> None:
        rng = random.Random(2)
        catalog = make_catalog(333, 40, rng)
        client = FakeClient(Source(catalog, 10, rng))
        chunks = await collect(walker(client, mode=mode))
        assert ids(all_images(chunks)) == ids(catalog)
        orders = {order for order, _ in client.calls}
        assert orders == ({"desc"} if mode == "single" else {"asc", "desc"})
        assert all(chunk.pages == 1 for chunk in chunks)
        json.dumps(chunks[-1].state)  # JSON-ready

    async def test_sort_order_means_one_cursor(self) -> None:
        rng = random.Random(2)
        catalog = make_catalog(50, 40, rng)
        client = FakeClient(Source(catalog, 10, rng))
        chunks = await collect(walker(client, sort_order="asc"))
        assert [img["id"] for img in all_images(chunks)] == [
            img["id"] for img in client.source.orders["asc"]
        ]

    @pytest.mark.parametrize("cut", [1, 4, 9])
    async def test_resume_from_a_chunk_state(self, cut: int) -> None:
        """A new Walker from a chunk's state finishes with every image exactly once."""
        rng = random.Random(cut)
        catalog = make_catalog(300, 25, rng)
        source = Source(catalog, 10, rng)
        first = await collect(walker(FakeClient(source)), limit=cut)
        rest = await collect(walker(FakeClient(source), state=first[-1].state))
        assert ids(all_images(first) + all_images(rest)) == ids(catalog)

    async def test_rejected_token_restarts_with_a_warning(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A 400 on a stored token restarts that cursor, de-duplicates, and warns."""
        rng = random.Random(9)
        catalog = make_catalog(300, 25, rng)
        source = Source(catalog, 10, rng)
        first = await collect(walker(FakeClient(source)), limit=6)
        state = json.loads(json.dumps(first[-1].state))
        for side in state["sides"]:
            if side["token"] is not None:
                side["token"] = "bad"
        with caplog.at_level(logging.WARNING, logger="exporter.walker"):
            rest = await collect(walker(FakeClient(source), state=state))
        assert ids(all_images(first) + all_images(rest)) == ids(catalog)
        assert "rejected the stored continuation token" in caplog.text

    async def test_a_cursor_error_surfaces_as_itself(self) -> None:
        """A failing cursor raises its own error (never an ExceptionGroup) and stops the other."""
        rng = random.Random(1)
        client = FakeClient(Source(make_catalog(300, 50, rng), 10, rng), fail_after=5)
        with pytest.raises(ResponseError) as info:
            await collect(walker(client))
        assert info.value.status == 404

    async def test_an_out_of_order_page_surfaces_as_a_cursor_error(self) -> None:
        rng = random.Random(1)
        source = Source(make_catalog(300, 300, rng), 10, rng)
        source.orders["asc"][20:30] = reversed(source.orders["asc"][20:30])
        with pytest.raises(CursorError):
            await collect(walker(FakeClient(source), mode="single", sort_order="asc"))

    async def test_early_close_stops_the_fetchers(self) -> None:
        rng = random.Random(1)
        client = FakeClient(Source(make_catalog(500, 50, rng), 10, rng))
        chunks = await collect(walker(client), limit=2)
        assert len(chunks) == 2
        calls = len(client.calls)
        await anyio.sleep(0.02)
        assert len(client.calls) == calls  # nothing keeps fetching in the background

    async def test_bad_request_fails_before_any_request(self) -> None:
        rng = random.Random(1)
        client = FakeClient(Source(make_catalog(5, 5, rng), 10, rng))
        bad = Walker(client, ListRequest(per_page=5), WalkOptions(), RunStats())  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            await collect(bad)
        with pytest.raises(ConfigError):
            await collect(walker(client, mode="both", sort_order="asc"))
        assert client.calls == []

    async def test_finished_state_yields_nothing(self) -> None:
        rng = random.Random(1)
        source = Source(make_catalog(30, 5, rng), 10, rng)
        chunks = await collect(walker(FakeClient(source)))
        assert chunks[-1].state["done"]
        client = FakeClient(source)
        assert await collect(walker(client, state=chunks[-1].state)) == []
        assert client.calls == []
