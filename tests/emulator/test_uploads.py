"""Uploads between walks: ordinary, tied and late uploads, and the record of them."""

from __future__ import annotations

import aiohttp

from exporter.emulator import build_catalog
from exporter.emulator.uploads import Uploads

from .helpers import EmulatorFactory, walk


class TestUploads:
    def test_a_burst_is_newest_tied_or_late_and_late_ones_list_only_after_the_next(self) -> None:
        """Ordinary uploads sort after everything, ties sit on the newest instant listed, late
        ones lie within `lateness_s` before the burst's newest and list only from the next call."""
        catalog = build_catalog(100, seed=2)
        newest = catalog.uploaded[-1]
        uploads = Uploads(catalog, seed=2)
        burst = uploads.add(6, late=3, ties=2, lateness_s=60)
        listed = {key[1] for key in catalog.keys}
        added = [image["id"] for image in burst["added"]]
        late = [image["id"] for image in burst["late"]]
        assert len(catalog) == 108 and set(added) <= listed and not set(late) & listed
        instants = {key[1]: key[0] for key in catalog.keys}
        assert [instants[i] for i in added[:2]] == [newest, newest]
        assert all(instants[i] > newest for i in added[2:])
        top = max(instants.values())
        assert uploads.record.pending == set(late)
        assert uploads.add(0)["released"] == late
        instants = {key[1]: key[0] for key in catalog.keys}
        assert all(top - 60_000 <= instants[i] <= top for i in late)
        assert not uploads.record.pending and set(uploads.record.visible()) == {*added, *late}
        assert list(catalog.keys) == sorted(set(catalog.keys))

    def test_the_same_seed_uploads_the_same_images(self) -> None:
        """A test gets the same burst on every run."""
        bursts = [Uploads(build_catalog(50, seed=3), seed=3).add(4, late=2) for _ in range(2)]
        assert bursts[0] == bursts[1]


async def test_the_http_aid_adds_uploads_a_walk_then_lists(
    emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    """POST adds a burst (the next walk lists it), GET returns the record, bad input is 400."""
    async with emulator_factory(images=40) as emu:
        root = emu.base_url.removesuffix("/client/v4")
        url = f"{root}/_emulator/accounts/{emu.account_id}/uploads"
        async with session.post(url, params={"count": "5", "late": "1"}) as reply:
            assert reply.status == 200
            added = (await reply.json())["result"]
        images, _ = await walk(session, emu, [("per_page", "10")])
        ids = {image["id"] for image in images}
        assert {i["id"] for i in added["added"]} <= ids and added["late"][0]["id"] not in ids
        async with session.get(url) as reply:
            record = (await reply.json())["result"]
        assert record["pending"] == [added["late"][0]["id"]] and len(record["images"]) == 6
        async with session.post(url, params={"count": "-1"}) as reply:
            assert reply.status == 400
        async with session.post(f"{root}/_emulator/accounts/nobody/uploads") as reply:
            assert reply.status == 404
