"""`inspect` of snapshots whose rows live only in tables (DuckDB, Delta): counted there."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.helpers import EmulatorProcess, emulator_process, run_cli

FIRST, SECOND = "2026-12-01", "2026-12-02"


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorProcess]:
    with emulator_process(images=200, seed=3) as emulator:
        yield emulator


def export_two_nights(emu: EmulatorProcess, out: Path, fmt: str) -> None:
    for date in (FIRST, SECOND):
        args = ["export", "--output", str(out), "--format", fmt, "--snapshot-date", date]
        result = run_cli(args, emu.env())
        assert result.returncode == 0, result.stderr


def test_duckdb_only_snapshot_is_counted_in_its_table(emu: EmulatorProcess, tmp_path: Path) -> None:
    """Two DuckDB-only nights inspect ok by their table rows (no sha256 claimed); once the
    second night's rows are deleted from `images`, inspect exits 7 naming that table."""
    out = tmp_path / "out"
    export_two_nights(emu, out, "duckdb")
    intact = run_cli(["inspect", str(out)])
    assert intact.returncode == 0, intact.stderr
    ok = f"snapshot_date={SECOND}: ok, {emu.images:,} images in the duckdb table"
    assert ok in intact.stdout.splitlines(), intact.stdout
    assert f"snapshot_date={SECOND}: ok" in intact.stdout
    assert "sha256" not in "".join(
        line for line in intact.stdout.splitlines() if line.startswith("snapshot_date=")
    )

    con = duckdb.connect(str(out / "images.duckdb"))
    con.execute(f"DELETE FROM images WHERE snapshot_date = DATE '{SECOND}'")
    con.close()
    damaged = run_cli(["inspect", str(out)])
    assert damaged.returncode == 7, damaged.stdout + damaged.stderr
    problem = f"duckdb table holds 0 rows of {SECOND}, counts say {emu.images}"
    assert f"snapshot_date={SECOND}: DAMAGED: {problem}" in damaged.stdout.splitlines()
    errors = [line for line in damaged.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and problem in errors[0], damaged.stderr
    assert "Traceback" not in damaged.stderr


def test_delta_only_snapshot_is_counted_in_its_partition(
    emu: EmulatorProcess, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    export_two_nights(emu, out, "delta")
    intact = run_cli(["inspect", str(out)])
    assert intact.returncode == 0, intact.stderr
    ok = f"snapshot_date={SECOND}: ok, {emu.images:,} images in the delta table"
    assert ok in intact.stdout.splitlines(), intact.stdout
