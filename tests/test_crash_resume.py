"""Kill the exporter with SIGKILL at many instants, resume, and never let a reader see a partial
snapshot: the test behind "impossible to corrupt" (issue 5)."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.helpers import (
    PYTHON,
    EmulatorProcess,
    catalog_rows,
    emulator_process,
    run_cli,
    snapshot_rows,
)

DATE = "2026-11-27"
IMAGES = 2000
KILLS = 22
CONFIG = """
[request]
per_page = 40
[parquet]
part_rows = 160
"""


@pytest.fixture(scope="module")
def slow_emulator() -> Iterator[EmulatorProcess]:
    """An emulator slow enough (30 ms a page) that kills land in every phase of a run."""
    with emulator_process(IMAGES, 5, "--latency", "0.03") as emu:
        yield emu


class GlobReader(threading.Thread):
    """Reads `OUT/snapshot_date=*/*.parquet` with DuckDB in a loop, recording what it saw."""

    def __init__(self, out: Path) -> None:
        super().__init__(daemon=True)
        self.glob = str(out / "snapshot_date=*" / "*.parquet")
        self.out = out
        self.stop = threading.Event()
        self.seen: list[tuple[int, int]] = []  # (rows, distinct ids) of each successful read
        self.errors: list[str] = []

    def run(self) -> None:
        with duckdb.connect() as con:
            while not self.stop.is_set():
                if not any(self.out.glob("snapshot_date=*/*.parquet")):
                    self.seen.append((0, 0))
                    time.sleep(0.005)
                    continue
                try:
                    row = con.execute(
                        f"SELECT count(*), count(DISTINCT id) FROM read_parquet('{self.glob}')"
                    ).fetchone()
                except duckdb.Error as exc:  # a file listed just before a swap: never data
                    self.errors.append(str(exc).splitlines()[0])
                    continue
                assert row is not None
                self.seen.append((int(row[0]), int(row[1])))


def export_args(out: Path, config: Path, *extra: str) -> list[str]:
    """Return the CLI arguments of this file's export of DATE."""
    return [
        "export",
        "--config",
        str(config),
        "--output",
        str(out),
        "--snapshot-date",
        DATE,
        *extra,
    ]


def start_export(
    emu: EmulatorProcess, out: Path, config: Path, log: Path
) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [PYTHON, "-m", "exporter", *export_args(out, config, "--resume")],
            env=emu.env(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


@pytest.mark.parametrize("republish", [False, True], ids=["first-publish", "re-run-same-date"])
def test_sigkill_at_random_instants_then_resume(
    slow_emulator: EmulatorProcess, tmp_path: Path, republish: bool
) -> None:
    """After 22 SIGKILLs and a final --resume, the snapshot holds every image exactly once, and
    a concurrent reader only ever saw no snapshot or a complete one."""
    out, config = tmp_path / "out", tmp_path / "kill.toml"
    config.write_text(CONFIG)
    expected = catalog_rows(IMAGES, 5, slow_emulator.account_id)
    if republish:  # a complete snapshot of the same date is already published
        first = run_cli(export_args(out, config), slow_emulator.env())
        assert first.returncode == 0, first.stderr
    reader = GlobReader(out)
    reader.start()
    rng = random.Random(20261127 + republish)
    kills = 0
    try:
        for _ in range(KILLS):
            process = start_export(slow_emulator, out, config, tmp_path / "runs.log")
            time.sleep(rng.uniform(0.3, 1.8))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait()
        final = run_cli(export_args(out, config, "--resume"), slow_emulator.env())
        assert final.returncode == 0, final.stderr
    finally:
        reader.stop.set()
        reader.join()
    assert kills >= 15, f"only {kills} runs were still running when killed"
    resumed = (tmp_path / "runs.log").read_text().count("resuming run")
    assert resumed >= 5, f"only {resumed} runs resumed from a checkpoint"
    assert snapshot_rows(out, DATE) == expected
    assert reader.seen, "the reader never ran"
    allowed = {IMAGES} if republish else {0, IMAGES}
    assert {rows for rows, _ in reader.seen} <= allowed
    assert all(rows == distinct for rows, distinct in reader.seen)
    assert len(reader.errors) <= len(reader.seen) // 20, reader.errors[:3]
    assert not list(out.glob("snapshot_date=*/*.tmp"))
    verify = run_cli(["inspect", str(out)])
    assert verify.returncode == 0, verify.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_with_exit_130_then_resume(
    slow_emulator: EmulatorProcess, tmp_path: Path, signum: signal.Signals
) -> None:
    """SIGTERM/SIGINT mid-walk: exit 130 with one line, checkpoint kept; --resume finishes."""
    out, config = tmp_path / "out", tmp_path / "kill.toml"
    config.write_text(CONFIG)
    process = subprocess.Popen(
        [PYTHON, "-m", "exporter", *export_args(out, config)],
        env=slow_emulator.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while not list(out.glob(".staging/*/_checkpoint.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "--resume" in next(line for line in stderr.splitlines() if "error:" in line)
    assert list(out.glob(".staging/*/_checkpoint.json"))
    assert not (out / f"snapshot_date={DATE}").exists()
    final = run_cli(export_args(out, config, "--resume"), slow_emulator.env())
    assert final.returncode == 0, final.stderr
    assert "resuming run" in final.stderr
    assert snapshot_rows(out, DATE) == catalog_rows(IMAGES, 5, slow_emulator.account_id)
