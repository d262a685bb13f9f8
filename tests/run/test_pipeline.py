"""export() end to end in-process against the emulator over loopback: resume, failures, drift."""

from __future__ import annotations

import datetime as dt
import errno
import logging
from pathlib import Path
from typing import Any

import anyio
import duckdb
import orjson
import pytest

from exporter.config import ExportConfig
from exporter.emulator import RunningEmulator
from exporter.errors import ConcurrentRunError, SchemaContractError, SinkError
from exporter.options import WalkOptions
from exporter.run import heap, pipeline, writer
from exporter.run.plan import lock_key
from exporter.store import HashingWriter, LocalStore
from exporter.store.layout import ROOT, Layout
from tests.conftest import EmulatorFactory
from tests.helpers import (
    PYTHON,
    catalog_rows,
    clean_env,
    emulator_config,
    exported_rows,
    query_rows,
    snapshot_rows,
)

DATE = dt.date(2026, 11, 27)
SNAPSHOT = "snapshot_date=2026-11-27"


class Crash(Exception):
    """Stands in for a kill at a chosen instant."""


def make_config(emu: RunningEmulator, out: Path, **keys: Any) -> ExportConfig:
    defaults = {"request.per_page": 25, "parquet.part_rows": 50}
    return emulator_config(emu, out, today=DATE, **{**defaults, **keys})


def published_rows(out: Path) -> dict[str, dict[str, Any]]:
    return snapshot_rows(out, DATE.isoformat())


def expected_rows(emu: RunningEmulator) -> dict[str, dict[str, Any]]:
    return catalog_rows(len(emu.catalog), emu.settings.seed, emu.account_id)


def crash_after_commits(monkeypatch: pytest.MonkeyPatch, commits: int) -> None:
    """Make the run die right after its N-th checkpoint, as a kill there would."""
    real = writer._commit
    seen = 0

    async def commit(run: Any, state: Any) -> None:
        nonlocal seen
        await real(run, state)
        seen += 1
        if seen == commits:
            raise Crash

    monkeypatch.setattr(writer, "_commit", commit)


class TestResume:
    async def test_resume_after_a_crash_is_exact(
        self,
        emulator: RunningEmulator,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A run that dies after its 3rd checkpoint resumes (not restarts) to every image once."""
        caplog.set_level(logging.INFO, logger="exporter")
        crash_after_commits(monkeypatch, 3)
        with pytest.raises(Crash):
            await pipeline.export(make_config(emulator, tmp_path))
        assert not (tmp_path / SNAPSHOT).exists()
        monkeypatch.undo()
        before = emulator.counters.requests
        summary = await pipeline.export(make_config(emulator, tmp_path, resume=True))
        assert "resuming run" in caplog.text
        # The committed pages are not refetched: the rest of the walk, the page where the
        # cursors meet, the count, and what each cursor read ahead (at most `prefetch`).
        rest = (len(emulator.catalog) - 3 * 50) // 25  # three committed parts of 50
        read_ahead = 2 * WalkOptions().prefetch
        assert emulator.counters.requests - before <= rest + 1 + 1 + read_ahead
        assert summary.images == len(emulator.catalog)
        assert published_rows(tmp_path) == expected_rows(emulator)
        assert not list((tmp_path / ".staging").iterdir())

    async def test_rejected_token_on_resume_restarts_and_deduplicates(
        self,
        emulator: RunningEmulator,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A checkpointed token the API refuses: the cursor restarts, no image is duplicated."""
        crash_after_commits(monkeypatch, 2)
        with pytest.raises(Crash):
            await pipeline.export(make_config(emulator, tmp_path))
        monkeypatch.undo()
        (checkpoint,) = (tmp_path / ".staging").glob("*/_checkpoint.json")
        data = orjson.loads(checkpoint.read_bytes())
        for side in data["walker_state"]["sides"]:
            for key in ("token", "entry"):  # a resume starts from the entry token
                if side.get(key):
                    side[key] = "Zm9yZ2VkLXRva2Vu"  # expired/forged: the API answers 400
        checkpoint.write_bytes(orjson.dumps(data))
        await pipeline.export(make_config(emulator, tmp_path, resume=True))
        assert published_rows(tmp_path) == expected_rows(emulator)
        assert "restart" in caplog.text.lower()

    async def test_killed_after_sealing_publishes_without_walking_again(
        self, emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A kill between sealing and the atomic publish: resume publishes the sealed snapshot."""

        def die(*args: Any, **kwargs: Any) -> str:
            raise Crash

        monkeypatch.setattr(LocalStore, "publish", die)
        with pytest.raises(Crash):
            await pipeline.export(make_config(emulator, tmp_path))
        monkeypatch.undo()
        requests_before = emulator.counters.requests
        await pipeline.export(make_config(emulator, tmp_path, resume=True))
        assert emulator.counters.requests == requests_before
        assert published_rows(tmp_path) == expected_rows(emulator)

    async def test_resume_with_nothing_to_resume_starts_afresh(
        self, emulator: RunningEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """--resume is always safe to pass: with no checkpoint the run starts and says so."""
        caplog.set_level(logging.INFO, logger="exporter")
        await pipeline.export(make_config(emulator, tmp_path, resume=True))
        assert "nothing to resume" in caplog.text
        assert published_rows(tmp_path) == expected_rows(emulator)

    async def test_other_request_is_never_mixed_in(
        self, emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A filtered run's staging is not resumed by an unfiltered run of the same date."""
        crash_after_commits(monkeypatch, 1)
        filtered = {"request.filters": ["meta.status[eq]=active"]}
        with pytest.raises(Crash):
            await pipeline.export(make_config(emulator, tmp_path, **filtered))
        monkeypatch.undo()
        await pipeline.export(make_config(emulator, tmp_path, resume=True))
        assert published_rows(tmp_path) == expected_rows(emulator)


async def test_a_publish_sweeps_staging_abandoned_over_a_week_ago(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    """Staged parts of a run dated 2026-11-01 that nobody resumed are removed tonight."""
    abandoned = tmp_path / ".staging" / "2026-11-01-0123456789abcdef"
    abandoned.mkdir(parents=True)
    (abandoned / "_checkpoint.json").write_text("{}")
    recent = tmp_path / ".staging" / "2026-11-25-0123456789abcdef"
    recent.mkdir()
    await pipeline.export(make_config(emulator, tmp_path))
    assert not abandoned.exists() and recent.exists()


class TestDuckdbSink:
    @pytest.mark.parametrize("formats", [["duckdb"], ["parquet", "duckdb"]], ids=["alone", "both"])
    async def test_table_holds_the_catalog_and_the_manifest_counts_it(
        self, emulator: RunningEmulator, tmp_path: Path, formats: list[str]
    ) -> None:
        """The `images` table equals the catalog for that date; the manifest's rows agree."""
        database = tmp_path / "db.duckdb"
        keys = {"export.formats": formats, "duckdb.path": str(database)}
        await pipeline.export(make_config(emulator, tmp_path / "out", **keys))
        rows = query_rows("SELECT * EXCLUDE (snapshot_date) FROM images", str(database))
        assert exported_rows(rows) == expected_rows(emulator)
        dates = query_rows("SELECT DISTINCT snapshot_date FROM images", str(database))
        assert dates == [{"snapshot_date": DATE}]
        manifest = orjson.loads((tmp_path / "out" / SNAPSHOT / "_manifest.json").read_bytes())
        assert manifest["counts"]["rows"] == len(emulator.catalog)
        assert manifest["complete"] is True


class TestAccountLayout:
    async def test_an_account_level_holds_everything_of_its_run(
        self, emulator: RunningEmulator, tmp_path: Path
    ) -> None:
        """With `Layout.for_account`, snapshot, staging and DuckDB live under `account_id=<id>/`,
        and one Hive-partitioned glob reads the account's rows back."""
        config = make_config(emulator, tmp_path, **{"export.formats": ["parquet", "duckdb"]})
        await pipeline.export(config, layout=Layout.for_account(emulator.account_id))
        level = tmp_path / f"account_id={emulator.account_id}"
        listed = {d.name: sorted(p.name for p in d.iterdir()) for d in (tmp_path, level)}
        assert listed == {
            tmp_path.name: [level.name],
            level.name: [".staging", "changes", "images.duckdb", SNAPSHOT],
        }
        glob = tmp_path / "account_id=*" / "snapshot_date=*" / "*.parquet"
        rows = query_rows(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")
        assert {r["account_id"] for r in rows} == {emulator.account_id}
        assert exported_rows(rows) == expected_rows(emulator)
        table = query_rows(
            "SELECT * EXCLUDE (snapshot_date) FROM images", str(level / "images.duckdb")
        )
        assert exported_rows(table) == expected_rows(emulator)


class TestConcurrentRuns:
    async def test_a_second_run_of_the_same_export_is_refused(
        self, emulator: RunningEmulator, tmp_path: Path
    ) -> None:
        """While one run holds the lock, another of the same request and date exits 8 and
        touches nothing; once the lock is free, the next run proceeds."""
        config = make_config(emulator, tmp_path)
        with LocalStore(tmp_path).lock(ROOT.lock(lock_key(config, DATE.isoformat()))):
            with pytest.raises(ConcurrentRunError) as caught:
                await pipeline.export(config)
            assert caught.value.exit_code == 8
            assert not (tmp_path / SNAPSHOT).exists()
        await pipeline.export(config)
        assert published_rows(tmp_path) == expected_rows(emulator)


class TestFailures:
    async def test_disk_full_is_a_sink_error_and_resume_finishes(
        self, emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ENOSPC mid-run: SinkError (exit 5), the old snapshot untouched, --resume completes."""
        await pipeline.export(make_config(emulator, tmp_path))
        before = {p.name: p.read_bytes() for p in (tmp_path / SNAPSHOT).iterdir()}
        real_write, writes = HashingWriter.write, 0

        def full(self: HashingWriter, data: Any) -> int:
            """Fail as the file system does once the disk fills (the writer records it)."""
            nonlocal writes
            writes += 1
            if writes > 8 and self.error is None:
                self.error = OSError(errno.ENOSPC, "No space left on device")
            return real_write(self, data)

        monkeypatch.setattr(HashingWriter, "write", full)
        with pytest.raises(SinkError, match="no space left") as caught:
            await pipeline.export(make_config(emulator, tmp_path, **{"parquet.codec": "snappy"}))
        assert caught.value.exit_code == 5
        assert {p.name: p.read_bytes() for p in (tmp_path / SNAPSHOT).iterdir()} == before
        monkeypatch.undo()
        config = make_config(emulator, tmp_path, resume=True, **{"parquet.codec": "snappy"})
        await pipeline.export(config)
        assert published_rows(tmp_path) == expected_rows(emulator)


class TestSchemaAcrossNights:
    async def test_freeze_refuses_a_new_column_and_publishes_nothing(
        self, emulator: RunningEmulator, tmp_path: Path
    ) -> None:
        """Night 1 flattens only `status`; night 2 under freeze meets more keys: exit 6."""
        first = make_config(emulator, tmp_path, **{"normalize.include": ["status"]})
        await pipeline.export(first)
        night2 = {"export.snapshot_date": "2026-11-28", "normalize.schema_contract": "freeze"}
        with pytest.raises(SchemaContractError) as caught:
            await pipeline.export(make_config(emulator, tmp_path, **night2))
        assert caught.value.exit_code == 6
        assert not (tmp_path / "snapshot_date=2026-11-28").exists()

    async def test_second_night_keeps_the_schema_and_reports_drift(
        self, emulator_factory: EmulatorFactory, tmp_path: Path
    ) -> None:
        """Night 2 (another catalog) keeps night 1's columns in order; the manifest says so."""
        async with emulator_factory(images=200, seed=1) as emu:
            first = await pipeline.export(make_config(emu, tmp_path))
        assert str(first.drift).startswith("first snapshot")  # nothing to drift from
        # another catalog removes every image of night 1: the removal guard (exit 9) is
        # not what this test is about
        night2 = {"export.snapshot_date": "2026-11-28", "changes.max_removed_share": 1.0}
        async with emulator_factory(images=120, seed=2) as emu:
            await pipeline.export(make_config(emu, tmp_path, **night2))
        one = orjson.loads((tmp_path / SNAPSHOT / "_manifest.json").read_bytes())
        two = orjson.loads((tmp_path / "snapshot_date=2026-11-28" / "_manifest.json").read_bytes())
        names_one = [c["name"] for c in one["schema"]]
        names_two = [c["name"] for c in two["schema"]]
        assert names_two[: len(names_one)] == names_one
        assert two["drift"]["previous_snapshot"] == "2026-11-27"
        with duckdb.connect() as con:  # a plain glob over both nights, no union_by_name
            total = con.execute(
                f"SELECT count(*) FROM read_parquet('{tmp_path}/snapshot_date=*/*.parquet')"
            ).fetchone()
        assert total == (320,)


def _rss_kb() -> int:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0])


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RSS read from /proc")
def test_the_heap_trimmer_gives_freed_holes_back() -> None:
    """Freed blocks under a few live ones stay resident until the trimmer releases them."""
    blocks = [bytes(1000) + bytes([i % 256]) for i in range(100_000)]  # malloc'd, not pymalloc
    survivors = blocks[::64]
    del blocks
    before = _rss_kb()
    heap.heap_trimmer()()
    assert before - _rss_kb() > 40_000  # ~95 MB freed in holes; most of it given back
    assert len(survivors) == 1563


@pytest.mark.parametrize(("images", "single"), [(45, True), (50, False)])
async def test_a_catalog_of_under_two_pages_last_night_is_walked_with_one_cursor(
    emulator_factory: EmulatorFactory, tmp_path: Path, images: int, single: bool
) -> None:
    """From both ends, a catalog of under two pages is served almost twice (a page from each
    end, and what each prefetched); one cursor serves it once. Only a previous night of the
    same request under two pages (per_page 25 here) takes it."""
    async with emulator_factory(images=images) as emu:
        first = make_config(emu, tmp_path, **{"export.snapshot_date": "2026-11-26"})
        await pipeline.export(first)
        both_ends = emu.counters.images_served
        assert both_ends >= 2 * 25  # a full page from each end at least
        served = emu.counters.images_served
        await pipeline.export(make_config(emu, tmp_path))
        assert emu.counters.images_served - served == (images if single else both_ends)
        assert published_rows(tmp_path) == expected_rows(emu)


@pytest.mark.parametrize(("images", "single"), [(45, True), (50, False)])
async def test_the_dry_run_plan_says_which_cursors_the_walk_takes(
    emulator_factory: EmulatorFactory, tmp_path: Path, images: int, single: bool
) -> None:
    """`--dry-run` with `--walk auto` reads last night's manifest as the run does: it plans
    (and lists the requests of) one cursor exactly when the run then walks one (a catalog
    walked by one cursor is served once, from both ends almost twice)."""
    async with emulator_factory(images=images) as emu:
        env = clean_env()
        env.update(CLOUDFLARE_API_TOKEN=emu.token, CLOUDFLARE_BASE_URL=emu.base_url)
        common = ["export", "--output", str(tmp_path), "--per-page", "25"]
        common += ["--account-id", emu.account_id]

        async def cli(*args: str) -> str:
            command = [PYTHON, "-m", "exporter", *common, *args]
            with anyio.fail_after(120):  # the emulator serves from this loop: never block it
                result = await anyio.run_process(command, env=env, check=False)
            assert result.returncode == 0, result.stderr.decode()
            return result.stdout.decode()

        plan = orjson.loads(await cli("--snapshot-date", "2026-11-26", "--dry-run"))
        assert plan["walk"] == "both ends at once (an asc and a desc cursor)"
        await cli("--snapshot-date", "2026-11-26")
        plan = orjson.loads(await cli("--snapshot-date", "2026-11-27", "--dry-run"))
        lists = [r for r in plan["requests"] if "/images/v2?" in r]
        if single:
            assert plan["walk"] == (
                f"one cursor, desc: the previous night (2026-11-26) held {images} images, "
                "under two pages of 25"
            )
            assert len(lists) == 1 and "sort_order=desc" in lists[0]
        else:
            assert plan["walk"] == "both ends at once (an asc and a desc cursor)"
            assert len(lists) == 2
        served = emu.counters.images_served
        await cli("--snapshot-date", "2026-11-27")
        assert (emu.counters.images_served - served == images) is single
