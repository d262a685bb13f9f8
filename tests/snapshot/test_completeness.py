"""The completeness warning says what the walk can and cannot explain."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import orjson

from exporter.emulator import RunningEmulator
from exporter.snapshot.completeness import count_warning
from tests.helpers import PYTHON, emulator_env, image_row, snapshot_rows

EmulatorFactory = Callable[..., AbstractAsyncContextManager[RunningEmulator]]
DATE = "2026-12-03"


class TestCountWarning:
    def test_agreeing_or_missing_counts_say_nothing(self) -> None:
        assert count_warning(10, None, 10) is None
        assert count_warning(None, None, 10) is None

    def test_a_still_count_names_drafts_and_says_nothing_is_missing(self) -> None:
        text = count_warning(12, 12, 10)
        assert text is not None
        assert text.startswith("10 images were exported and the API counted 12 both before")
        assert "images no listing shows (such as drafts)" in text
        assert "no image that existed for the whole walk is missing" in text

    def test_a_moving_count_is_the_catalog_changing(self) -> None:
        text = count_warning(12, 15, 10)
        assert text is not None and "15 when it ended" in text and "uploads and deletions" in text

    def test_without_a_second_count_it_says_may(self) -> None:
        text = count_warning(12, None, 10)
        assert text is not None and "may account" in text


async def export(emu: RunningEmulator, out: Path) -> tuple[int, str, dict[str, Any]]:
    env = emulator_env(emu)
    args = ["export", "--output", str(out), "--snapshot-date", DATE, "--per-page", "20"]
    done = await anyio.run_process([PYTHON, "-m", "exporter", *args], env=env, check=False)
    manifest = orjson.loads((out / f"snapshot_date={DATE}" / "_manifest.json").read_bytes())
    return done.returncode, done.stderr.decode(), manifest


async def test_a_count_with_drafts_on_a_still_catalog_says_the_walk_cannot_explain_it(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """`/stats` counts 3 images no listing shows: exact rows, exit 0, and a warning that does
    not blame uploads and deletions (summary and manifest)."""
    async with emulator_factory(images=300, seed=4, drafts=3) as emu:
        code, stderr, manifest = await export(emu, tmp_path)
        images = list(emu.catalog.iter_images())
    truth = {image["id"]: image_row(image, emu.account_id) for image in images}
    assert code == 0, stderr
    assert snapshot_rows(tmp_path, DATE) == truth
    assert (manifest["api_count"], manifest["counts"]["rows"]) == (303, 300)
    (warning,) = manifest["normalize"]["warnings"]
    assert warning.startswith("300 images were exported and the API counted 303 both before")
    assert "no image that existed for the whole walk is missing" in warning
    assert warning in stderr


async def test_drafts_with_churn_that_cancels_out_are_reported_as_what_they_can_be(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """Drafts plus uploads and deletions between pages that leave the count where it was: the
    warning names both causes and says nothing the snapshot promises is missing, which holds
    (every image that existed for the whole walk is in the snapshot, exactly)."""
    async with emulator_factory(
        images=300, seed=1, drafts=3, live_every=1, live_mutations=3
    ) as emu:
        first = {image["id"]: image for image in emu.catalog.iter_images()}
        code, stderr, manifest = await export(emu, tmp_path)
        last = {image["id"] for image in emu.catalog.iter_images()}
    assert code == 0, stderr
    rows = snapshot_rows(tmp_path, DATE)
    assert set(first) & last <= set(rows)  # existed for the whole walk: not missing
    (warning,) = [w for w in manifest["normalize"]["warnings"] if "API counted" in w]
    count = manifest["api_count"]
    exported = manifest["counts"]["rows"]
    same = (
        f"{exported} images were exported and the API counted {count} both before and after "
        "the walk: the difference is images no listing shows (such as drafts) or uploads "
        "and deletions during the walk that left the count unchanged, and no image that "
        "existed for the whole walk is missing"
    )
    # The churn is random (upload, delete or edit): when it moved the count this time, the
    # warning says so instead (the wording of the test below).
    moved = f"the API counted {count} images when the walk began and "
    assert warning == same or warning.startswith(moved), warning
    assert warning in stderr


async def test_a_count_that_moved_is_put_down_to_uploads_and_deletions(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """Uploads and deletions between pages: the count moved, and the warning says so."""
    async with emulator_factory(images=300, seed=4, live_every=1, live_mutations=3) as emu:
        code, stderr, manifest = await export(emu, tmp_path)
        final = len(emu.catalog)
    assert code == 0, stderr
    rows = manifest["counts"]["rows"]
    assert manifest["api_count"] == 300 != rows
    (warning,) = [w for w in manifest["normalize"]["warnings"] if "counted" in w]
    assert f"and {final} when it ended, and {rows} were exported" in warning
    assert "uploads and deletions during the walk account for a difference" in warning
