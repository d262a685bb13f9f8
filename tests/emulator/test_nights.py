"""Evolution between nights: deterministic, every kind of change, and a truthful record."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from exporter.emulator import Catalog, EmulatorSettings, build_catalog
from exporter.emulator.edits import changed_fields
from exporter.emulator.nights import NightChanges, NightPlan, catalog_at_night

from .helpers import EmulatorFactory, get, walk


@pytest.fixture(scope="module")
def base() -> Catalog:
    return build_catalog(1500, seed=9)


def _snapshot(catalog: Catalog) -> dict[str, dict[str, Any]]:
    return {image["id"]: image for image in catalog.iter_images()}


def _diff(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]]) -> NightChanges:
    """The changes between two snapshots, computed the brute-force way."""
    changed = {i: changed_fields(old[i], new[i]) for i in old.keys() & new.keys()}
    return NightChanges(
        0,
        frozenset(new.keys() - old.keys()),
        frozenset(old.keys() - new.keys()),
        {i: fields for i, fields in changed.items() if fields},
    )


class TestNights:
    def test_record_is_the_truth(self, base: Catalog) -> None:
        """Each night's record equals the diff of the two nights' snapshots, for 7 nights."""
        plan = NightPlan()
        previous = _snapshot(base)
        for night in range(1, 8):
            catalog, changes = catalog_at_night(base, night, plan)
            assert list(catalog.keys) == sorted(set(catalog.keys))
            current = _snapshot(catalog)
            truth = _diff(previous, current)
            assert (changes.added, changes.removed) == (truth.added, truth.removed), night
            assert dict(changes.changed) == dict(truth.changed), night
            previous = current

    def test_every_kind_of_change(self, base: Catalog) -> None:
        """Normal nights edit every field, re-upload ids, bring back deleted ones; a quiet
        night changes nothing; the mass deletion night removes 30%."""
        plan = NightPlan()
        nights = {k: catalog_at_night(base, k, plan) for k in range(1, 6)}
        edited = {f for k in (1, 2) for fs in nights[k][1].changed.values() for f in fs}
        assert edited == {"filename", "creator", "require_signed_urls", "uploaded", "variants",
                          "meta"}  # fmt: skip
        assert nights[1][1].added and nights[1][1].removed
        assert nights[2][1].added & nights[1][1].removed  # deleted, then uploaded again
        assert any(set(fs) == {"filename", "uploaded"} for fs in nights[1][1].changed.values())
        quiet = nights[3][1]
        assert not (quiet.added or quiet.removed or quiet.changed)
        mass = nights[5][1]
        assert len(mass.removed) == round(0.3 * len(nights[4][0])) and not mass.added

    def test_deterministic_and_base_untouched(self, base: Catalog) -> None:
        """The same night twice gives the same bytes; the base catalog is never mutated."""
        before = list(base.blobs)
        first, _ = catalog_at_night(base, 4, NightPlan())
        second, _ = catalog_at_night(base, 4, NightPlan())
        assert list(first.blobs) == list(second.blobs)
        assert list(base.blobs) == before

    def test_nasty_profile_evolves(self) -> None:
        """The nasty profile evolves too (edits render on top of its on-demand bytes)."""
        base = build_catalog(800, seed=2, profile="nasty")
        catalog, changes = catalog_at_night(base, 2, NightPlan(churn=0.05))
        assert changes.changed and changes.added
        assert _snapshot(catalog).keys() >= changes.added

    def test_extra_fields_evolve_and_appear(self) -> None:
        """With extra fields on, nights edit them too: the record names `extra` and is the
        truth, and `reviewed` appears only from night 1 on."""
        base = build_catalog(1500, seed=9, extras=True)
        before = _snapshot(base)
        assert not any("reviewed" in image for image in before.values())
        catalog, changes = catalog_at_night(base, 1, NightPlan())
        after = _snapshot(catalog)
        expected = _diff(before, after)
        assert (changes.added, changes.removed, changes.changed) == (
            expected.added,
            expected.removed,
            expected.changed,
        )
        extra = [i for i, fields in changes.changed.items() if "extra" in fields]
        assert extra and all("reviewed" in after[i] for i in extra)


async def test_served_night_and_endpoint(
    emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    """`night=2` serves night 2's catalog; `emu.changes` and the debug endpoint agree."""
    async with emulator_factory(images=300, night=2) as emu:
        assert emu.settings == EmulatorSettings(images=300, night=2)
        images, _ = await walk(session, emu, [("per_page", "100")])
        expected, changes = catalog_at_night(build_catalog(300), 2, NightPlan())
        assert [img["id"] for img in images] == [key[1] for key in expected.keys][::-1]
        assert emu.changes == changes
        root = emu.base_url.removesuffix("/client/v4")
        reply = await get(session, f"{root}/_emulator/accounts/{emu.account_id}/changes")
        assert reply.json()["result"] == changes.to_json()
    async with emulator_factory(images=300) as emu:
        assert emu.changes is None
