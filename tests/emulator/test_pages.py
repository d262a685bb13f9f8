"""Page sizes: Cloudflare's cap of 1000 per page, short pages, and pages that misbehave."""

from __future__ import annotations

import aiohttp
import orjson

from exporter.emulator import EmulatorSettings
from exporter.emulator.app import short_page_size

from .helpers import EmulatorFactory, list_page, walk


class TestPageCap:
    def test_default_is_1000(self) -> None:
        """The default cap is the reference's "up to 1000 results per page"."""
        assert EmulatorSettings().page_cap == 1000

    async def test_per_page_10000_serves_1000(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """per_page=10000 is accepted but a page holds at most 1000; the walk stays exact."""
        async with emulator_factory(images=2500) as emu:
            images, pages = await walk(session, emu, [("per_page", "10000")])
            assert pages == 3
            assert [img["id"] for img in images] == [key[1] for key in emu.catalog.keys][::-1]
        async with emulator_factory(images=2500, page_cap=None) as emu:
            assert (await walk(session, emu, [("per_page", "10000")]))[1] == 1


class TestShortPages:
    def test_size_is_deterministic_and_in_range(self) -> None:
        """The size depends on the cursor only, within 1..size, and varies."""
        sizes = {short_page_size(1, (5, f"id{i}"), "asc", 100) for i in range(200)}
        assert min(sizes) >= 1 and max(sizes) <= 100 and len(sizes) > 50
        assert short_page_size(1, (5, "x"), "asc", 100) == short_page_size(1, (5, "x"), "asc", 100)

    async def test_walk_exact_with_short_pages(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """Every page is short of per_page yet both orders walk every image exactly once."""
        async with emulator_factory(images=600, short_pages=True) as emu:
            expected = [key[1] for key in emu.catalog.keys]
            for order, want in (("asc", expected), ("desc", expected[::-1])):
                query = [("sort_order", order), ("per_page", "100")]
                images, pages = await walk(session, emu, query)
                assert [img["id"] for img in images] == want
                assert pages > 600 // 100 + 1  # short: more pages than full ones would take
            again = await list_page(session, emu, {"per_page": "100"})
            first = await list_page(session, emu, {"per_page": "100"})
            assert again.body == first.body and len(first.json()["result"]["images"]) < 100


class TestMisbehaviour:
    async def test_disorder(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """disorder_every=2: every second page serves two images out of order."""
        async with emulator_factory(images=100, disorder_every=2) as emu:
            images, pages = await walk(session, emu, [("sort_order", "asc"), ("per_page", "10")])
            keys = [(img["uploaded"], img["id"]) for img in images]
            assert sorted(keys) == sorted(set(keys)) and len(keys) == 100
            broken = sum(keys[i] > keys[i + 1] for i in range(len(keys) - 1))
            assert broken == pages // 2 == emu.counters.misbehaved

    async def test_repeat_cursor_image(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """repeat_every=3: every third page after a token starts with its cursor's image."""
        async with emulator_factory(images=100, repeat_every=3) as emu:
            images, _ = await walk(session, emu, [("per_page", "10")])
            ids = [img["id"] for img in images]
            assert set(ids) == {key[1] for key in emu.catalog.keys}
            assert len(ids) - len(set(ids)) == emu.counters.misbehaved == 3
            repeats = [i for i in range(1, len(ids)) if ids[i] == ids[i - 1]]
            assert all(orjson.dumps(images[i]) == orjson.dumps(images[i - 1]) for i in repeats)
