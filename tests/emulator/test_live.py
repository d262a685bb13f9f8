"""Live mode: changes while a walk runs, cursor tokens, and the emulator's record of truth."""

from __future__ import annotations

from typing import Any

import aiohttp

from exporter.emulator import EmulatorSettings, build_catalog
from exporter.emulator.live import LiveCatalog

from .helpers import EmulatorFactory, bearer, get, walk


class TestLiveCatalog:
    def test_deterministic_changes_and_record(self) -> None:
        """The same seed changes the same images at the same requests; the record says which."""
        records = []
        for _ in range(2):
            catalog = build_catalog(300, seed=4)
            live = LiveCatalog(catalog, seed=4, every=2, mutations=3)
            for _ in range(40):
                live.on_request()
            records.append(live.record.to_json())
            assert live.record.mutations == 60
            assert len(catalog) == 300 + len(live.record.uploaded) - len(live.record.deleted)
            assert list(catalog.keys) == sorted(set(catalog.keys))
        assert records[0] == records[1]
        record = records[0]
        assert record["uploaded"] and record["deleted"] and record["edited"]
        assert all(len(versions) >= 2 for versions in record["edited"].values())

    def test_stable_ids_exclude_deleted_and_uploaded(self) -> None:
        """Stable = present at the start and never deleted; uploads are not stable."""
        catalog = build_catalog(200, seed=1)
        start = {key[1] for key in catalog.keys}
        live = LiveCatalog(catalog, seed=1, every=1, mutations=5)
        for _ in range(10):
            live.on_request()
        record = live.record
        assert record.stable_ids() == start - record.deleted.keys()
        assert not record.stable_ids() & record.uploaded.keys()
        edited = next(iter(record.edited))
        assert len(record.versions(edited)) == len(record.edited[edited])


def _check_promise(images: list[dict[str, Any]], truth: dict[str, Any]) -> None:
    """Assert DESIGN's promise for one walk against the emulator's record."""
    ids = [image["id"] for image in images]
    assert len(ids) == len(set(ids)), "an id twice"
    assert set(truth["stable_ids"]) <= set(ids), "a stable image missing"
    for image in images:
        versions = truth["edited"].get(image["id"])
        if versions is not None:
            assert image in versions


async def test_walks_keep_the_promise_while_changing(
    emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    """A walk in each order under churn: no id twice, every stable image, edits in a version.

    The debug endpoint serves the same record as the Python API.
    """
    for order in ("asc", "desc"):
        async with emulator_factory(images=400, live_every=1, live_mutations=4) as emu:
            images, _ = await walk(session, emu, [("sort_order", order), ("per_page", "20")])
            reply = await get(session, f"{emu.base_url.removesuffix('/client/v4')}"
                              f"/_emulator/accounts/{emu.account_id}/live")  # fmt: skip
            truth = reply.json()["result"]
            assert truth == emu.live.to_json()
            assert truth["mutations"] >= 80 and truth["deleted"] and truth["edited"]
            _check_promise(images, truth)
            present_at_end = {key[1] for key in emu.catalog.keys}
            assert set(truth["uploaded"]) - set(truth["deleted"]) <= present_at_end


async def test_batch_host_walk_under_churn(
    emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    """The batch host serves the same live catalog, with the same promise and record."""
    async with emulator_factory(images=300, live_every=2, live_mutations=3) as emu:
        token_url = emu.list_url.replace("/v2", "/v1/batch_token")
        batch = (await get(session, token_url, headers=bearer(emu.token))).json()["result"]
        images, pages = await walk(
            session,
            emu,
            [("per_page", "10"), ("sort_order", "asc")],
            url=emu.batch_base_url + "/images/v2",
            headers=bearer(batch["token"]),
        )
        truth = emu.live.to_json()
        assert truth["mutations"] == 3 * (pages // 2)
        _check_promise(images, truth)
        for image in images[:20]:
            assert image in emu.live.versions(image["id"])
        assert emu.account().images_served == len(images)


async def test_live_off_has_no_record(
    emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    """Without live mode the catalog never changes and the debug endpoint says so (404)."""
    async with emulator_factory(images=50) as emu:
        await walk(session, emu, [("per_page", "10")])
        assert emu.settings == EmulatorSettings(images=50)
        reply = await get(session, f"{emu.base_url.removesuffix('/client/v4')}"
                          f"/_emulator/accounts/{emu.account_id}/live")  # fmt: skip
        assert reply.status == 404
