"""Change sets published beside the snapshots: guard, scope, re-runs, kills, inspect.

The emulator's catalog of n images (one seed) is a prefix of the catalog of n + k images, so
nights with different sizes are uploads (growing) or deletions (shrinking) of known images.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from exporter.changes import change_set as changes_module
from exporter.changes import diff
from exporter.config import ExportConfig
from exporter.emulator import RunningEmulator
from exporter.errors import ChangesWithheldError, SinkError
from exporter.run import pipeline
from exporter.store import LocalStore
from exporter.store.layout import ROOT
from tests.conftest import EmulatorFactory
from tests.helpers import emulator_config, emulator_process, query_rows, run_cli


class Crash(BaseException):
    """Stands in for a kill at a chosen instant (BaseException: nothing may swallow it)."""


def config(emu: RunningEmulator, out: Path, date: str, **keys: Any) -> ExportConfig:
    defaults = {"export.snapshot_date": date, "request.per_page": 50}
    return emulator_config(emu, out, today=dt.date(2026, 1, 1), **{**defaults, **keys})


def change_rows(out: Path, date: str) -> dict[str, dict[str, Any]]:
    """Return the published change set of a date keyed by id ({} when none is published)."""
    directory = out / ROOT.changes(date)
    if not (directory / "_SUCCESS").exists():
        return {}
    rows = query_rows(f"SELECT * FROM read_parquet('{directory}/*.parquet')")
    return {row["id"]: row for row in rows}


def kinds(rows: dict[str, dict[str, Any]]) -> dict[str, int]:
    found: dict[str, int] = {}
    for row in rows.values():
        found[row["change"]] = found.get(row["change"], 0) + 1
    return found


async def export_night(
    factory: EmulatorFactory, out: Path, date: str, images: int, **keys: Any
) -> dict[str, Any]:
    async with factory(images=images) as emu:
        return await pipeline.export(config(emu, out, date, **keys))


async def test_rerun_of_a_middle_night_rewrites_the_next_nights_changes(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """Nights of 100, 120, 130 images; re-running night 2 with 110 changes nights 2 and 3."""
    for date, images in (("2026-01-01", 100), ("2026-01-02", 120), ("2026-01-03", 130)):
        await export_night(emulator_factory, tmp_path, date, images)
    assert kinds(change_rows(tmp_path, "2026-01-01")) == {"added": 100}
    assert kinds(change_rows(tmp_path, "2026-01-03")) == {"added": 10}
    await export_night(emulator_factory, tmp_path, "2026-01-02", 110)
    assert kinds(change_rows(tmp_path, "2026-01-02")) == {"added": 10}
    night3 = change_rows(tmp_path, "2026-01-03")
    assert kinds(night3) == {"added": 20}
    assert {r["previous_snapshot_date"] for r in night3.values()} == {dt.date(2026, 1, 2)}


async def test_other_request_is_never_compared(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """A creator-filtered night after an unfiltered one is its scope's first: all added,
    and its manifest says the changes are within the filter."""
    await export_night(emulator_factory, tmp_path, "2026-01-01", 200)
    await export_night(
        emulator_factory, tmp_path, "2026-01-02", 200, **{"request.creator": "user-001"}
    )
    rows = change_rows(tmp_path, "2026-01-02")
    assert rows and kinds(rows) == {"added": len(rows)}
    assert {r["creator"] for r in rows.values()} == {"user-001"}
    manifest = (tmp_path / ROOT.changes("2026-01-02") / "_manifest.json").read_text()
    assert "within this filter" in manifest


@pytest.mark.parametrize("kill_at", ["parts", "seal", "after-publish"])
async def test_kill_during_change_publication_then_resume(
    tmp_path: Path,
    emulator_factory: EmulatorFactory,
    monkeypatch: pytest.MonkeyPatch,
    kill_at: str,
) -> None:
    """A kill while D's changes are being published leaves no partial change set, and
    `--resume` publishes them exactly, without walking again."""
    await export_night(emulator_factory, tmp_path, "2026-01-01", 100)
    old = change_rows(tmp_path, "2026-01-01")
    real_parts = changes_module._write_parts
    real_publish = LocalStore.publish

    def parts(*args: Any, **kwargs: Any) -> Any:
        real_parts(*args, **kwargs)
        raise Crash

    def encode(manifest: Any) -> bytes:
        raise Crash

    def publish(self: LocalStore, staged: str, target: str, **kwargs: Any) -> None:
        real_publish(self, staged, target, **kwargs)
        if target.startswith("changes/"):
            raise Crash

    if kill_at == "parts":
        monkeypatch.setattr(changes_module, "_write_parts", parts)
    elif kill_at == "seal":
        monkeypatch.setattr(changes_module, "encode_manifest", encode)
    else:
        monkeypatch.setattr(LocalStore, "publish", publish)
    async with emulator_factory(images=150) as emu:
        with pytest.raises(Crash):
            await pipeline.export(config(emu, tmp_path, "2026-01-02"))
        monkeypatch.undo()
        assert change_rows(tmp_path, "2026-01-01") == old
        if kill_at != "after-publish":
            assert not (tmp_path / ROOT.changes("2026-01-02")).exists()
        pages = emu.counters.pages
        await pipeline.export(config(emu, tmp_path, "2026-01-02", resume=True))
        assert emu.counters.pages == pages  # the sealed snapshot is not walked again
    assert kinds(change_rows(tmp_path, "2026-01-02")) == {"added": 50}
    assert not list((tmp_path / ".staging").glob("*/changes"))


async def test_diff_out_of_memory_under_every_cap_fails_in_one_line_then_resumes(
    tmp_path: Path, emulator_factory: EmulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB's out-of-memory error was a traceback (exit 1): now one line (exit 5) after the
    snapshot is published, and `--resume` publishes the change set."""
    await export_night(emulator_factory, tmp_path, "2026-01-01", 120)
    tiny = diff.DiffSettings(memory_limits=("1MB",), small_rows=0)
    monkeypatch.setattr(diff, "DiffSettings", lambda: tiny)
    with pytest.raises(SinkError) as failed:
        await export_night(emulator_factory, tmp_path, "2026-01-02", 150)
    assert "changes: the diff of 2026-01-02 failed: Out of Memory Error" in str(failed.value)
    assert "\n" not in str(failed.value)
    assert (tmp_path / "snapshot_date=2026-01-02" / "_SUCCESS").exists()
    assert change_rows(tmp_path, "2026-01-02") == {}
    monkeypatch.undo()
    await export_night(emulator_factory, tmp_path, "2026-01-02", 150, resume=True)
    assert kinds(change_rows(tmp_path, "2026-01-02")) == {"added": 30}


def test_mass_removal_withholds_changes_with_exit_9_then_accept(tmp_path: Path) -> None:
    """Half the catalog gone: the snapshot is published, its changes are not (an earlier
    change set of that date is withdrawn), exit 9 with one line; `--resume --accept-removals`
    then publishes them without walking again."""
    out = str(tmp_path)
    with emulator_process(200, 3) as emu:
        for date in ("2026-01-01", "2026-01-02"):
            args = ["export", "--output", out, "--snapshot-date", date, "-q"]
            assert run_cli(args, env=emu.env()).returncode == 0
    assert (tmp_path / ROOT.changes("2026-01-02") / "_SUCCESS").exists()
    with emulator_process(100, 3) as emu:
        args = ["export", "--output", out, "--snapshot-date", "2026-01-02", "-q"]
        withheld = run_cli(args, env=emu.env())
        assert withheld.returncode == ChangesWithheldError.exit_code, withheld.stderr
        assert withheld.stderr.count("\n") == 1
        assert "100 of 200 images (50.0%)" in withheld.stderr
        assert "--accept-removals" in withheld.stderr
        assert (tmp_path / "snapshot_date=2026-01-02" / "_SUCCESS").exists()
        assert not (tmp_path / ROOT.changes("2026-01-02")).exists()
        # the snapshot is published: the run ends with its summary, every line JSON
        logged = run_cli([*args[:-1], "--log-format", "json"], env=emu.env())
        assert logged.returncode == ChangesWithheldError.exit_code, logged.stderr
        records = [orjson.loads(line) for line in logged.stderr.splitlines()]
        (summary,) = [r["summary"] for r in records if r["message"] == "summary"]
        assert summary["images"] == 100 and summary["changes"] == "withheld (exit 9)"
        assert records[-1]["level"] == "error" and records[-1]["exit_code"] == 9
        assert "--accept-removals" in records[-1]["message"]
        accepted = run_cli([*args, "--resume", "--accept-removals"], env=emu.env())
        assert accepted.returncode == 0, accepted.stderr
    assert kinds(change_rows(tmp_path, "2026-01-02")) == {"removed": 100}
    inspected = run_cli(["inspect", out])
    assert inspected.returncode == 0, inspected.stderr
    assert "changes/snapshot_date=2026-01-02: ok" in inspected.stdout


async def test_duckdb_keeps_image_changes_history_and_current(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """Nights of 100, 120 and 90 images into DuckDB only: `image_changes` holds every set,
    `images_current` equals the last snapshot, `images_history` ends the removed versions."""
    nights = (("2026-01-01", 100), ("2026-01-02", 120), ("2026-01-03", 90))
    for date, images in nights:
        keys = {"export.formats": ["duckdb"], "changes.max_removed_share": 0.5}
        await export_night(emulator_factory, tmp_path, date, images, **keys)
    database = str(tmp_path / "images.duckdb")
    counts = query_rows(
        "SELECT snapshot_date, change, count(*) AS n FROM image_changes GROUP BY ALL ORDER BY ALL",
        database,
    )
    assert [(str(r["snapshot_date"]), r["change"], r["n"]) for r in counts] == [
        ("2026-01-01", "added", 100),
        ("2026-01-02", "added", 20),
        ("2026-01-03", "removed", 30),
    ]
    columns = (
        "id, account_id, filename, creator, require_signed_urls, uploaded, variants, meta_json"
    )
    current = query_rows(f"SELECT {columns} FROM images_current ORDER BY id", database)
    latest = query_rows(
        f"SELECT {columns} FROM images WHERE snapshot_date = '2026-01-03' ORDER BY id", database
    )
    assert current == latest and len(current) == 90
    ended = query_rows(
        "SELECT valid_from, valid_to, is_current, is_deleted FROM images_history WHERE is_deleted",
        database,
    )
    versions = sorted((str(r["valid_from"]), str(r["valid_to"]), r["is_current"]) for r in ended)
    assert (
        versions
        == [("2026-01-01", "2026-01-03", False)] * 10 + [("2026-01-02", "2026-01-03", False)] * 20
    )


@pytest.mark.parametrize("formats", [["parquet"], ["ndjson"], ["duckdb"]])
async def test_first_night_adds_every_image_of_the_catalog(
    tmp_path: Path, emulator_factory: EmulatorFactory, formats: list[str]
) -> None:
    """A first night read back from whichever format it was written in: the change set holds
    each of the catalog's ids once, all `added`, with no previous date."""
    async with emulator_factory(images=130) as emu:
        await pipeline.export(config(emu, tmp_path, "2026-01-01", **{"export.formats": formats}))
        catalog = sorted(image["id"] for image in emu.catalog.iter_images())
    rows = change_rows(tmp_path, "2026-01-01")
    assert sorted(rows) == catalog
    assert kinds(rows) == {"added": 130}
    assert {r["previous_snapshot_date"] for r in rows.values()} == {None}
    assert all(r["changed_fields"] == [] for r in rows.values())


async def test_export_leaves_arrow_memory_pool_as_it_found_it(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """The walk and the change step each pick Arrow's allocator for their own pattern (memory
    bounded in bytes); a caller embedding the exporter keeps its own pool afterwards."""
    import pyarrow as pa

    before = pa.default_memory_pool().backend_name
    await export_night(emulator_factory, tmp_path, "2026-01-01", 60)
    await export_night(emulator_factory, tmp_path, "2026-01-02", 80)
    assert pa.default_memory_pool().backend_name == before
    assert kinds(change_rows(tmp_path, "2026-01-02")) == {"added": 20}
