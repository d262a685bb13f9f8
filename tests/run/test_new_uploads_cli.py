"""`export --new-uploads` through the CLI against the emulator, compared with its record.

Each test exports snapshot D, adds uploads with `emu.account().uploads.add(...)` (ordinary
ones, ties on D's newest instant, late ones listable only from the next call), runs batches,
and checks every batch against the emulator's record of uploads: exactly the listable images
uploaded at or after W - lag that D and earlier batches lack, each once.
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import orjson
import pytest

from exporter.emulator import AccountSettings, RunningEmulator
from exporter.run.crashpoint import CRASH_AT_ENV
from exporter.snapshot.manifest import decode_manifest, encode_manifest
from tests.helpers import (
    PYTHON,
    clean_env,
    emulator_env,
    exported_rows,
    image_row,
    parse_time,
    query_rows,
    run_cli,
    snapshot_rows,
)

EmulatorFactory = Callable[..., AbstractAsyncContextManager[RunningEmulator]]
D, NEXT = "2026-03-01", "2026-03-02"
FORMATS = ["--format", "parquet", "--format", "duckdb"]


class Output:
    """One output directory exported from one in-process emulator through the CLI."""

    def __init__(self, emu: RunningEmulator, tmp_path: Path, per_page: int = 10) -> None:
        self.emu, self.out = emu, tmp_path / "out"
        self.env = emulator_env(emu)
        self.common = ["--output", str(self.out), "--per-page", str(per_page), *FORMATS]

    async def cli(self, *args: str, env: dict[str, str] | None = None) -> Any:
        argv = ["export", *self.common, *args]
        return await anyio.to_thread.run_sync(lambda: run_cli(argv, env or self.env))

    async def snapshot(self, date: str) -> None:
        result = await self.cli("--snapshot-date", date)
        assert result.returncode == 0, result.stderr

    async def batch(self, *args: str) -> dict[str, dict[str, Any]]:
        """Run one batch; return its rows by id ({} when nothing was published)."""
        before = set(self.batches())
        result = await self.cli("--new-uploads", "--snapshot-date", NEXT, *args)
        assert result.returncode == 0, result.stderr
        new = sorted(set(self.batches()) - before)
        assert len(new) <= 1
        return self.rows(new[0]) if new else {}

    def batches(self) -> list[Path]:
        return sorted(self.out.glob(f"new_uploads/snapshot_date={D}/batch=*"))

    def rows(self, directory: Path) -> dict[str, dict[str, Any]]:
        glob = directory / "*.parquet"
        return exported_rows(query_rows(f"SELECT * FROM read_parquet('{glob}')"))

    def latest(self) -> dict[str, dict[str, Any]]:
        """Return DuckDB's `images_latest` by id."""
        database = str(self.out / "images.duckdb")
        return exported_rows(query_rows("SELECT * FROM images_latest", database))

    def watermark(self) -> dt.datetime:
        """Return the newest `uploaded` in D and its batches, from the files themselves."""
        rows = snapshot_rows(self.out, D)
        for directory in self.batches():
            rows.update(self.rows(directory))
        return max(r["uploaded"] for r in rows.values())


def catalog(emu: RunningEmulator) -> dict[str, dict[str, Any]]:
    """Return the emulator's listable catalog as the exporter must write it."""
    return {i["id"]: image_row(i, emu.account_id) for i in emu.catalog.iter_images()}


def expected(
    emu: RunningEmulator, ids: Sequence[str], cutoff: dt.datetime
) -> dict[str, dict[str, Any]]:
    """Return the uploads among `ids` at or after the cutoff, as the emulator recorded them."""
    images = emu.account().uploads.record.visible()
    rows = {i: image_row(images[i], emu.account_id) for i in ids}
    return {i: r for i, r in rows.items() if r["uploaded"] >= cutoff}


def ids(burst: Sequence[dict[str, Any]]) -> list[str]:
    return [str(image["id"]) for image in burst]


async def test_batches_take_ordinary_tied_and_late_uploads_exactly_once(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """Three batches: uploads, ties on D's newest instant and late ones, each exactly once;
    nothing new publishes nothing; DuckDB's images_latest is the emulator's catalog, and the
    next night's snapshot supersedes the batches."""
    async with emulator_factory(images=300, seed=21) as emu:
        out = Output(emu, tmp_path)
        await out.snapshot(D)
        assert await out.batch() == {}
        assert not (out.out / "new_uploads").exists()

        uploads = emu.account().uploads
        first = uploads.add(23, late=5, ties=3, lateness_s=120)
        lag = dt.timedelta(seconds=600)
        cutoff = out.watermark() - lag
        rows = await out.batch()
        assert rows == expected(emu, ids(first["added"]), cutoff)
        assert len(rows) == 26  # the late ones are not listable yet

        second = uploads.add(15, late=4, lateness_s=120)
        cutoff = out.watermark() - lag
        rows = await out.batch()
        assert second["released"] == ids(first["late"])
        assert rows == expected(emu, [*ids(second["added"]), *second["released"]], cutoff)
        assert len(rows) == 20

        third = uploads.add(0)
        cutoff = out.watermark() - lag
        assert await out.batch() == expected(emu, third["released"], cutoff)
        assert await out.batch() == {}  # nothing new again

        assert len(out.batches()) == 3
        assert out.latest() == catalog(emu)  # D plus its batches: every image once
        inspect = await anyio.to_thread.run_sync(lambda: run_cli(["inspect", str(out.out)]))
        assert inspect.returncode == 0, inspect.stderr
        assert inspect.stdout.count("new uploads in") == 3
        one = await anyio.to_thread.run_sync(lambda: run_cli(["inspect", str(out.batches()[0])]))
        assert one.returncode == 0 and one.stdout.count("sha256 verified") == 1, one.stderr

        await out.snapshot(NEXT)
        assert out.latest() == snapshot_rows(out.out, NEXT) == catalog(emu)
        assert manifest_kinds_round_trip(out.out) == {None, "changes", "new_uploads"}


def manifest_kinds_round_trip(out: Path) -> set[str | None]:
    """Read every `_manifest.json` under OUT as a Manifest, check that writing it back gives
    the same bytes, and return the kinds seen."""
    kinds: set[str | None] = set()
    for path in sorted(out.rglob("_manifest.json")):
        raw = path.read_bytes()
        manifest = decode_manifest(raw)
        assert encode_manifest(manifest) == raw, path
        kinds.add(manifest.kind)
    return kinds


async def test_a_rerun_of_the_snapshot_retires_the_batches_of_its_earlier_run(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """Re-exporting date D takes in what D's batches had added: those batches are removed, so
    no id stands in D and in a batch of D (found by a new user), and so are their rows in
    DuckDB's `new_uploads` table; batches of the new run of D follow it as before."""
    database = str(tmp_path / "out" / "images.duckdb")

    def table_batches() -> dict[str, int]:
        sql = "SELECT batch, count(*) AS n FROM new_uploads GROUP BY ALL"
        return {row["batch"]: row["n"] for row in query_rows(sql, database)}

    async with emulator_factory(images=200, seed=24) as emu:
        out = Output(emu, tmp_path)
        await out.snapshot(D)
        uploads = emu.account().uploads
        uploads.add(12)
        assert len(await out.batch()) == 12
        (retired,) = [b.name.removeprefix("batch=") for b in out.batches()]
        assert table_batches() == {retired: 12}
        await out.snapshot(D)  # the same date again: the snapshot now holds the 12
        assert out.batches() == []
        assert table_batches() == {}
        assert snapshot_rows(out.out, D) == catalog(emu)
        later = uploads.add(5)
        rows = await out.batch()
        assert set(rows) == set(ids(later["added"]))
        batched = [i for b in out.batches() for i in out.rows(b)]
        assert not set(batched) & set(snapshot_rows(out.out, D))
        assert list(table_batches().values()) == [5]
        assert out.latest() == catalog(emu)


async def test_a_lag_shorter_than_the_lateness_misses_late_uploads_until_the_next_snapshot(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """With --lag 30, uploads listed late by more than 30 s before the watermark are missed by
    every batch; the next night's snapshot has them (as the README says)."""
    async with emulator_factory(images=200, seed=22) as emu:
        out = Output(emu, tmp_path)
        await out.snapshot(D)
        uploads = emu.account().uploads
        first = uploads.add(10, late=8, lateness_s=300)
        await out.batch("--lag", "30")
        cutoff = out.watermark() - dt.timedelta(seconds=30)
        second = uploads.add(0)
        rows = await out.batch("--lag", "30")
        assert rows == expected(emu, second["released"], cutoff)
        missed = set(ids(first["late"])) - set(rows)
        assert missed, "the seeded burst has uploads later than the lag"
        assert not missed & set(out.latest())
        await out.snapshot(NEXT)
        assert missed <= set(out.latest())


async def test_resume_after_sigkill_publishes_the_batch_once(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """A batch killed after sealing is published by --resume without walking again."""
    async with emulator_factory(images=200, seed=23) as emu:
        out = Output(emu, tmp_path)
        await out.snapshot(D)
        burst = emu.account().uploads.add(12, ties=2)
        cutoff = out.watermark() - dt.timedelta(seconds=600)
        for point in ("sealed", "files-published"):
            before = set(out.batches())
            killed = await out.cli(
                "--new-uploads", "--snapshot-date", NEXT, env={**out.env, CRASH_AT_ENV: point}
            )
            assert killed.returncode == -signal.SIGKILL
            resumed = await out.cli("--new-uploads", "--snapshot-date", NEXT, "--resume")
            assert resumed.returncode == 0, resumed.stderr
            (published,) = set(out.batches()) - before
            assert out.rows(published) == expected(emu, ids(burst["added"]), cutoff)
            assert out.latest() == catalog(emu)
            assert not list((out.out / ".staging").glob("*/new_uploads"))
            burst = emu.account().uploads.add(5)  # the next kill is of a new batch
            cutoff = out.watermark() - dt.timedelta(seconds=600)
        assert len(out.batches()) == 2


async def test_resume_after_sigkill_mid_walk_continues_from_the_checkpoint(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """A batch killed mid-walk (parts committed, checkpoint written) is finished by --resume:
    every new upload once, the pages before the checkpoint not asked again."""
    async with emulator_factory(images=200, seed=27) as emu:
        out = Output(emu, tmp_path)
        await out.snapshot(D)
        burst = emu.account().uploads.add(60)
        cutoff = out.watermark() - dt.timedelta(seconds=600)
        config = tmp_path / "slow.toml"
        config.write_text(
            "[walk]\nquota = 3\nwindow_s = 3600\nmargin = 1.0\n[parquet]\npart_rows = 10\n"
        )
        argv = [PYTHON, "-m", "exporter", "export", *out.common, "--new-uploads"]
        slow = await anyio.open_process(
            [*argv, "--config", str(config)],
            env=out.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                found = list((out.out / ".staging").glob("*/_checkpoint.json"))
                state = orjson.loads(found[0].read_bytes()) if found else {}
                if len((state.get("walker_state") or {}).get("taken", [])) >= 20:
                    break
                assert time.monotonic() < deadline and slow.returncode is None
                await anyio.sleep(0.05)
        finally:
            slow.kill()
            await slow.wait()
        pages = emu.account().pages
        resumed = await out.cli("--new-uploads", "--resume")
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming run" in resumed.stderr
        assert emu.account().pages - pages <= 5  # 60 images, 10 a page: 7 pages in all
        (published,) = out.batches()
        assert out.rows(published) == expected(emu, ids(burst["added"]), cutoff)
        assert out.latest() == catalog(emu)


async def test_a_nightly_export_running_makes_a_batch_exit_8(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """While tonight's snapshot of the same request runs (holding its lock), a batch exits 8
    with one line; without a snapshot at all, a batch exits 2 with one line."""
    async with emulator_factory(images=2000, seed=24) as emu:
        out = Output(emu, tmp_path)
        first = await out.cli("--new-uploads")
        assert first.returncode == 2, first.stderr
        assert "run export first" in first.stderr
        assert len(first.stderr.strip().splitlines()) == 1
        await out.snapshot(D)
        config = tmp_path / "slow.toml"
        config.write_text("[walk]\nquota = 3\nwindow_s = 3600\nmargin = 1.0\n")
        argv = [PYTHON, "-m", "exporter", "export", *out.common, "--config", str(config)]
        nightly = await anyio.open_process(
            [*argv, "--snapshot-date", NEXT],
            env=out.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not list((out.out / ".staging").glob(f"{NEXT}-*.lock")):
                assert time.monotonic() < deadline and nightly.returncode is None
                await anyio.sleep(0.05)
            # the batch's own date (today) differs: the lock of the staged later date is held
            result = await out.cli("--new-uploads")
            assert result.returncode == 8, result.stderr
            assert len(result.stderr.strip().splitlines()) == 1
        finally:
            nightly.kill()
            await nightly.wait()
        assert not (out.out / "new_uploads").exists()


async def test_metrics_and_dry_run_say_what_a_batch_does(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """--dry-run shows the base snapshot, watermark and lag; the metrics count new images."""
    async with emulator_factory(images=100, seed=25) as emu:
        out = Output(emu, tmp_path)
        await out.snapshot(D)
        plan = await out.cli("--new-uploads", "--dry-run", "--lag", "120")
        assert plan.returncode == 0, plan.stderr
        described = orjson.loads(plan.stdout)["new_uploads"]
        newest = max(r["uploaded"] for r in snapshot_rows(out.out, D).values())
        assert described["base_snapshot"] == D and described["lag_s"] == 120
        assert parse_time(described["watermark"]) == newest
        metrics = tmp_path / "cf.prom"
        emu.account().uploads.add(7)
        result = await out.cli("--new-uploads", "--metrics-textfile", str(metrics))
        assert result.returncode == 0, result.stderr
        text = metrics.read_text()
        assert f'cf_images_export_new_images{{account_id="{emu.account_id}"}} 7.0' in text
        assert "cf_images_export_last_new_uploads_timestamp_seconds{" in text
        result = await out.cli("--new-uploads", "--metrics-textfile", str(metrics))
        assert f'cf_images_export_new_images{{account_id="{emu.account_id}"}} 0.0' in (
            metrics.read_text()
        )
        assert "0 new uploads since the watermark 20" in result.stderr  # as fleet's row says


@pytest.mark.parametrize("fmt", ["ndjson", "delta", "duckdb"])
async def test_batches_of_other_formats_deduplicate_against_their_own_files(
    emulator_factory: EmulatorFactory, tmp_path: Path, fmt: str
) -> None:
    """An NDJSON-, Delta- or DuckDB-only output reads D and its batches from what they wrote."""
    async with emulator_factory(images=100, seed=26) as emu:
        out = Output(emu, tmp_path)
        out.common = ["--output", str(out.out), "--per-page", "10", "--format", fmt]
        await out.snapshot(D)
        emu.account().uploads.add(6, ties=2)
        for _ in range(2):
            result = await out.cli("--new-uploads")
            assert result.returncode == 0, result.stderr
        manifests = [orjson.loads((b / "_manifest.json").read_bytes()) for b in out.batches()]
        assert [m["counts"]["rows"] for m in manifests] == [8]


async def test_fleet_publishes_a_batch_per_account(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """`fleet --new-uploads`: each account's batch holds its own uploads, and its metrics
    count them; an account with nothing new publishes nothing, and its row says so in the
    words of `export --new-uploads` (not "published")."""
    other = "ab" * 16
    extra = AccountSettings(account_id=other, token="token-other", images=80, seed=31)
    async with emulator_factory(images=60, seed=30, accounts=(extra,)) as emu:
        env = clean_env()
        env.update(CLOUDFLARE_BASE_URL=emu.base_url, TOKEN_A=emu.token, TOKEN_B="token-other")
        accounts = tmp_path / "accounts.toml"
        accounts.write_text(
            f'[[account]]\nid = "{emu.account_id}"\ntoken_env = "TOKEN_A"\n\n'
            f'[[account]]\nid = "{other}"\ntoken_env = "TOKEN_B"\n'
        )
        out, metrics = tmp_path / "out", tmp_path / "fleet.prom"
        argv = ["fleet", "--accounts", str(accounts), "--output", str(out), "--per-page", "10"]
        argv += ["--metrics-textfile", str(metrics)]

        async def fleet(*args: str) -> Any:
            result = await anyio.to_thread.run_sync(lambda: run_cli([*argv, *args], env))
            assert result.returncode == 0, result.stderr
            return result

        await fleet("--snapshot-date", D)
        burst = emu.account(other).uploads.add(9, ties=1)
        result = await fleet("--new-uploads")
        rows = {
            ident: line
            for line in result.stderr.splitlines()
            for ident in (emu.account_id, other)
            if f"account {ident}: images" in line  # the fleet's table, one row per account
        }
        assert rows[emu.account_id].endswith(": nothing published")
        assert "exit 0, 0 new uploads since the watermark 20" in rows[emu.account_id]
        assert rows[other].endswith("exit 0, published")
        (batch,) = out.glob(f"account_id={other}/new_uploads/snapshot_date={D}/batch=*")
        glob = batch / "*.parquet"
        rows = exported_rows(query_rows(f"SELECT * FROM read_parquet('{glob}')"))
        assert rows == {i["id"]: image_row(i, other) for i in burst["added"]}
        assert not list(out.glob(f"account_id={emu.account_id}/new_uploads"))
        text = metrics.read_text()
        assert f'cf_images_export_new_images{{account_id="{other}"}} 10.0' in text
        assert f'cf_images_export_new_images{{account_id="{emu.account_id}"}} 0.0' in text
