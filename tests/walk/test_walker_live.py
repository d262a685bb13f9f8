"""Live catalogs end to end: the real export over loopback while the emulator's catalog changes.

The emulator's live mode uploads, deletes and edits images between the pages it serves and
records the truth (`emu.live`); its misbehaviour knobs serve pages that break the order or
repeat the cursor's image. DESIGN "Live catalogs": no id twice; every image present for the
whole walk exported exactly, an edited one in one of its versions; a misbehaving page is
detected, handled and counted in the manifest, never a silent duplicate.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from contextlib import aclosing
from pathlib import Path
from typing import Any

import orjson
import pytest

from exporter.api.auth import Credentials
from exporter.api.pagination import ListRequest
from exporter.config import ExportConfig
from exporter.emulator import RunningEmulator
from exporter.run import pipeline
from exporter.stats import RunStats
from exporter.walk.walker import Walker, WalkOptions, make_client
from tests.conftest import EmulatorFactory
from tests.helpers import emulator_config, image_row, snapshot_rows

DATE = dt.date(2026, 12, 1)


def make_config(emu: RunningEmulator, out: Path, **keys: Any) -> ExportConfig:
    # a checkpoint every few pages
    return emulator_config(emu, out, today=DATE, **{"parquet.part_rows": 100, **keys})


def manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(
        (out / f"snapshot_date={DATE.isoformat()}" / "_manifest.json").read_bytes()
    )
    return data


def assert_promise(emu: RunningEmulator, rows: dict[str, dict[str, Any]]) -> None:
    """The snapshot against the emulator's record (`snapshot_rows` already refused an id twice)."""
    truth = emu.live
    stable = truth.stable_ids()
    assert stable <= rows.keys(), f"{len(stable - rows.keys())} stable image(s) missing"
    assert rows.keys() <= stable | truth.uploaded.keys() | truth.deleted.keys()  # none invented
    for image_id in stable & truth.edited.keys():
        versions = [image_row(v, emu.account_id) for v in truth.versions(image_id)]
        assert rows[image_id] in versions
    for image_id in stable - truth.edited.keys():
        (version,) = truth.versions(image_id)
        assert rows[image_id] == image_row(version, emu.account_id)


LIVE = [
    pytest.param({"walk.mode": "single"}, 10, {"live_mutations": 3}, id="single-full-pages"),
    pytest.param(
        {"walk.mode": "single", "request.sort_order": "asc"},
        23,
        {"short_pages": True, "live_mutations": 6},
        id="single-asc-short-pages",
    ),
    pytest.param({"walk.mode": "both"}, 10, {"live_mutations": 1}, id="both-light-churn"),
    pytest.param(
        {"walk.mode": "both"}, 17, {"short_pages": True, "live_mutations": 8}, id="both-short"
    ),
    pytest.param(
        {"walk.mode": "both"}, 40, {"tie_group": 300, "live_mutations": 4}, id="both-tie-group"
    ),
    pytest.param(
        {"walk.mode": "both"},
        40,
        {"tie_group": 300, "live_mutations": 4, "tie_order": "hash"},
        id="both-tie-group-hash",
    ),
    pytest.param(
        {"walk.mode": "single"},
        25,
        {"tie_group": 300, "live_mutations": 4, "tie_order": "id-desc"},
        id="single-tie-group-id-desc",
    ),
    pytest.param(
        {"walk.mode": "both", "walk.batch_api": True},
        25,
        {"tie_group": 300, "live_mutations": 3, "tie_order": "same"},
        id="batch-both-tie-group-same",
    ),
    pytest.param({"walk.mode": "both", "walk.batch_api": True}, 12, {}, id="batch-both"),
    pytest.param({"walk.mode": "single", "walk.batch_api": True}, 12, {}, id="batch-single"),
]


@pytest.mark.parametrize(("walk", "per_page", "live"), LIVE)
async def test_a_live_catalog_keeps_the_promise(
    emulator_factory: EmulatorFactory,
    tmp_path: Path,
    walk: dict[str, Any],
    per_page: int,
    live: dict[str, Any],
) -> None:
    """Uploads, deletions and edits between pages: the snapshot keeps DESIGN's promise."""
    settings = {"images": 600, "seed": 12, "live_every": 1, "live_mutations": 2, **live}
    async with emulator_factory(**settings) as emu:
        if walk.get("walk.batch_api"):
            walk = {**walk, "walk.batch_base_url": emu.batch_base_url}
        config = make_config(emu, tmp_path, **walk, **{"request.per_page": per_page})
        await pipeline.export(config)
        assert emu.live.mutations >= 20 and emu.live.deleted and emu.live.edited  # it did churn
        assert_promise(emu, snapshot_rows(tmp_path, DATE.isoformat()))
        counts = manifest(tmp_path)["counts"]
        assert (counts["out_of_order"], counts["duplicates_dropped"]) == (0, 0)


@pytest.mark.parametrize("mode", ["single", "both"])
@pytest.mark.parametrize(
    ("knob", "count"),
    [
        pytest.param("disorder_every", "out_of_order", id="disorder"),
        pytest.param("repeat_every", "duplicates_dropped", id="repeat"),
    ],
)
async def test_a_misbehaving_page_is_detected_and_counted(
    emulator_factory: EmulatorFactory, tmp_path: Path, mode: str, knob: str, count: str
) -> None:
    """Every 3rd page swaps two images or repeats the cursor's last: exact, and counted."""
    async with emulator_factory(images=500, seed=3, **{knob: 3}) as emu:
        config = make_config(emu, tmp_path, **{"walk.mode": mode, "request.per_page": 10})
        await pipeline.export(config)
        rows = snapshot_rows(tmp_path, DATE.isoformat())  # refuses an id twice
        assert rows.keys() == {key[1] for key in emu.catalog.keys}
        data = manifest(tmp_path)
        assert 1 <= data["counts"][count] <= emu.counters.misbehaved
        other = "duplicates_dropped" if count == "out_of_order" else "out_of_order"
        assert data["counts"][other] == 0
        assert any("out of order" in w for w in data["normalize"]["warnings"])


@pytest.mark.parametrize("mode", ["single", "both"])
async def test_a_bulk_import_on_one_instant_stays_flat(
    emulator_factory: EmulatorFactory, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20,000 images on one `uploaded` instant: exact, states bounded by the tie's ids, and
    the recent ids a cursor remembers stay within their cap whatever the tie."""
    from exporter.walk import walker as walker_module

    largest = 0
    real_add = walker_module._Recent.add

    def add(self: Any, ids: list[str], position: Any) -> None:
        nonlocal largest
        real_add(self, ids, position)
        largest = max(largest, len(self.ids))

    monkeypatch.setattr(walker_module._Recent, "add", add)
    async with emulator_factory(images=21_000, seed=2, tie_group=20_000) as emu:
        instants = Counter(key[0] for key in emu.catalog.keys)
        assert instants.most_common(1)[0][1] >= 20_000
        options = WalkOptions(mode=mode, recent_ids=1500)  # type: ignore[arg-type]
        stats = RunStats()
        seen: Counter[str] = Counter()
        sizes = []
        creds = Credentials(token=emu.token)
        async with make_client(emu.base_url, emu.account_id, creds, options, stats) as client:
            walker = Walker(client, ListRequest(per_page=1000), options, stats)
            async with aclosing(walker.chunks()) as chunks:
                async for chunk in chunks:
                    seen.update(image["id"] for image in chunk.images)
                    sizes.append(len(json.dumps(chunk.state())))
        assert seen == Counter(key[1] for key in emu.catalog.keys)
        longest = max(len(key[1]) for key in emu.catalog.keys)
        cursors = 2 if mode == "both" else 1  # each holds at most the tie's ids
        assert max(sizes) < cursors * 20_000 * (longest + 4) + 1500  # bytes of walker state
        assert largest <= 1500 + 1000  # the cap, plus the page that passed it
