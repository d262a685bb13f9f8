"""Any two runs of one request and date exclude each other (exit 8), whatever their options.

The request is what it exports (account, creator, filters); page size, order and formats are
how. Each test overlaps a slow run (a quota of 3 requests an hour: it holds its lock, waiting)
with another of the same request through the CLI against the emulator.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import orjson

from exporter.emulator import RunningEmulator
from exporter.run.crashpoint import CRASH_AT_ENV
from tests.conftest import EmulatorFactory
from tests.helpers import PYTHON, emulator_env, image_row, run_cli, snapshot_rows

D, NEXT = "2026-03-01", "2026-03-02"
BUSY = "another export of this request and date is running"
SLOW = "[walk]\nquota = 3\nwindow_s = 3600\nmargin = 1.0\n"


class Output:
    """One output directory exported from one in-process emulator through the CLI."""

    def __init__(self, emu: RunningEmulator, tmp_path: Path) -> None:
        self.emu, self.out, self.slow = emu, tmp_path / "out", tmp_path / "slow.toml"
        self.slow.write_text(SLOW)
        self.env = emulator_env(emu)

    async def cli(self, *args: str, env: dict[str, str] | None = None) -> Any:
        argv = ["export", "--output", str(self.out), "--format", "parquet", *args]
        return await anyio.to_thread.run_sync(lambda: run_cli(argv, env or self.env))

    @asynccontextmanager
    async def walking(self, date: str, *args: str) -> AsyncIterator[anyio.abc.Process]:
        """Run a slow export of `date` until the block ends, once its lock is held."""
        argv = [PYTHON, "-m", "exporter", "export", "--output", str(self.out)]
        argv += ["--format", "parquet", "--snapshot-date", date, "--config", str(self.slow)]
        process = await anyio.open_process(
            [*argv, *args], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 60
            while not list((self.out / ".staging").glob(f"{date}-*.lock")):
                assert time.monotonic() < deadline and process.returncode is None
                await anyio.sleep(0.05)
            yield process
        finally:
            process.kill()
            await process.wait()

    def catalog(self) -> dict[str, dict[str, Any]]:
        return {i["id"]: image_row(i, self.emu.account_id) for i in self.emu.catalog.iter_images()}

    def request(self, date: str) -> dict[str, Any]:
        path = self.out / f"snapshot_date={date}" / "_manifest.json"
        manifest = orjson.loads(path.read_bytes())
        request: dict[str, Any] = manifest["request"]
        return request


def refused(result: Any) -> bool:
    """Return whether a run exited 8 with the one line of a busy request and date."""
    lines = result.stderr.strip().splitlines()
    return bool(result.returncode == 8 and len(lines) == 1 and BUSY in lines[0])


async def test_a_run_with_other_options_of_the_same_date_exits_8(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """While a `--per-page 100 --sort-order asc` run of D walks, a default run of D exits 8
    and publishes nothing; once the first is gone, the default run publishes D."""
    async with emulator_factory(images=300, seed=41) as emu:
        out = Output(emu, tmp_path)
        async with out.walking(D, "--per-page", "100", "--sort-order", "asc"):
            other = await out.cli("--snapshot-date", D)
            assert refused(other), other.stderr
            assert not (out.out / f"snapshot_date={D}").exists()
        after = await out.cli("--snapshot-date", D)
        assert after.returncode == 0, after.stderr
        assert snapshot_rows(out.out, D) == out.catalog()


async def test_a_batch_with_other_options_than_a_walking_nightly_exits_8(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """A default batch meets a `--per-page 100` nightly of a later date mid-walk: exit 8 both
    when the batch's own date is that night and when it is today; no batch is published."""
    async with emulator_factory(images=300, seed=42) as emu:
        out = Output(emu, tmp_path)
        first = await out.cli("--snapshot-date", D)
        assert first.returncode == 0, first.stderr
        emu.account().uploads.add(20)
        async with out.walking(NEXT, "--per-page", "100"):
            for args in (("--snapshot-date", NEXT), ()):
                batch = await out.cli("--new-uploads", *args)
                assert refused(batch), (args, batch.stderr)
        assert not (out.out / "new_uploads").exists()


async def test_resume_with_other_options_says_so_and_starts_afresh(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """A run of D killed after sealing with `--per-page 100`; `--resume` with the default page
    size says in one line that the staged run has other options, discards it and publishes D
    afresh with its own; nothing of the killed run is left to be resumed over it later."""
    async with emulator_factory(images=300, seed=43) as emu:
        out = Output(emu, tmp_path)
        killed = await out.cli(
            "--snapshot-date", D, "--per-page", "100", env={**out.env, CRASH_AT_ENV: "sealed"}
        )
        assert killed.returncode == -signal.SIGKILL
        assert [p for p in (out.out / ".staging").iterdir() if p.is_dir()]
        resumed = await out.cli("--snapshot-date", D, "--resume", "--per-page", "50")
        assert resumed.returncode == 0, resumed.stderr
        said = [line for line in resumed.stderr.splitlines() if "--resume:" in line]
        assert len(said) == 1 and "other options" in said[0] and D in said[0], resumed.stderr
        assert "nothing to resume" not in resumed.stderr
        assert snapshot_rows(out.out, D) == out.catalog()
        assert out.request(D)["per_page"] == 50
        assert not (out.out / ".staging").exists() or not list((out.out / ".staging").iterdir())
        again = await out.cli("--snapshot-date", D, "--resume", "--per-page", "100")
        assert again.returncode == 0, again.stderr
        assert "--resume:" not in again.stderr and "nothing to resume" in again.stderr


async def test_a_fresh_run_discards_the_staged_run_of_other_options(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """A run of D killed after sealing with `--per-page 100`; a run without --resume with the
    default page size publishes D and discards that staged run, so a later `--resume` with its
    options finds nothing to put back over the newer D."""
    async with emulator_factory(images=300, seed=44) as emu:
        out = Output(emu, tmp_path)
        killed = await out.cli(
            "--snapshot-date", D, "--per-page", "100", env={**out.env, CRASH_AT_ENV: "sealed"}
        )
        assert killed.returncode == -signal.SIGKILL
        fresh = await out.cli("--snapshot-date", D)
        assert fresh.returncode == 0, fresh.stderr
        assert "discarding the staged files of an earlier, unfinished run" in fresh.stderr
        again = await out.cli("--snapshot-date", D, "--resume", "--per-page", "100")
        assert again.returncode == 0, again.stderr
        assert "nothing to resume" in again.stderr and "sealed" not in again.stderr
        assert snapshot_rows(out.out, D) == out.catalog()
