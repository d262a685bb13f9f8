"""A kill between the snapshot's files and the DuckDB load: the real CLI is
killed at a named step of publication, and --resume or the next night's run leaves files and
table on the same night, each exactly the emulator's catalog."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from exporter.run.crashpoint import CRASH_AT_ENV
from tests.helpers import (
    catalog_rows,
    emulator_process,
    exported_rows,
    query_rows,
    run_cli,
    snapshot_rows,
)

DATE = "2026-11-27"


@pytest.mark.parametrize(
    ("point", "recovery"),
    [("sealed", "resume"), ("files-published", "resume"), ("files-published", "next-night")],
)
def test_kill_between_the_snapshot_and_duckdb_then_recover(
    tmp_path: Path, point: str, recovery: str
) -> None:
    """SIGKILL at a named step of publication: before the files are published ("sealed"), or
    after them and before the DuckDB load ("files-published"). --resume walks nothing, and the
    next night's run (no --resume) completes the load too: files and table end on the same
    night, each exactly the emulator's catalog."""
    out, images, seed = tmp_path / "out", 300, 11
    database = out / "images.duckdb"
    args = ["export", "--output", str(out), "--format", "parquet", "--format", "duckdb"]
    with emulator_process(images, seed) as emu:
        expected = catalog_rows(images, seed, emu.account_id)
        earlier = run_cli([*args, "--snapshot-date", "2026-11-26"], emu.env())
        assert earlier.returncode == 0, earlier.stderr
        crash = {CRASH_AT_ENV: point}
        killed = run_cli([*args, "--snapshot-date", DATE], emu.env(**crash))
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        published = (out / f"snapshot_date={DATE}").exists()
        assert published == (point == "files-published")
        assert duckdb_dates(database) == {"2026-11-26": images}  # untouched so far
        if recovery == "next-night":
            later = run_cli([*args, "--snapshot-date", "2026-11-28"], emu.env())
            assert later.returncode == 0, later.stderr
            assert f"completing the publication of {DATE}" in later.stderr
        env = emu.env()
    if recovery == "resume":  # the emulator is gone: a single request would fail the run
        resumed = run_cli([*args, "--snapshot-date", DATE, "--resume"], env)
        assert resumed.returncode == 0, resumed.stderr
        assert "finishing its publication" in resumed.stderr
    nights = {"2026-11-26": images, DATE: images}
    if recovery == "next-night":
        nights["2026-11-28"] = images
    assert duckdb_dates(database) == nights
    assert snapshot_rows(out, DATE) == expected
    table = query_rows(
        f"SELECT * FROM images WHERE snapshot_date = DATE '{DATE}'", database=str(database)
    )
    assert exported_rows(table) == expected
    assert not any((out / ".staging").iterdir())
    assert run_cli(["inspect", str(out)]).returncode == 0


def duckdb_dates(database: Path) -> dict[str, int]:
    """Return the row count per snapshot date of table `images`."""
    rows = query_rows(
        "SELECT snapshot_date::VARCHAR AS d, count(*) AS n FROM images GROUP BY 1",
        database=str(database),
    )
    return {str(row["d"]): int(row["n"]) for row in rows}


def test_a_run_whose_snapshot_another_request_replaced_is_not_completed(tmp_path: Path) -> None:
    """Killed after its files, a run's snapshot of D is then removed by hand and replaced by
    another request's (a filtered export of the same date, refused while D was the first
    request's). The next night of the first request cannot complete
    D: it says so and leaves DuckDB with the replacement's rows of D (it used to load the
    killed run's staged parts into the table first, and only then find out)."""
    out, images, seed = tmp_path / "out", 300, 11
    database = out / "images.duckdb"
    args = ["export", "--output", str(out), "--format", "parquet", "--format", "duckdb"]
    with emulator_process(images, seed) as emu:
        crash = {CRASH_AT_ENV: "files-published"}
        killed = run_cli([*args, "--snapshot-date", DATE], emu.env(**crash))
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        active = ["--filter", "meta.status[eq]=active"]
        refused = run_cli([*args, "--snapshot-date", DATE, *active], emu.env())
        assert refused.returncode == 2, refused.stderr
        shutil.rmtree(out / f"snapshot_date={DATE}")
        other = run_cli([*args, "--snapshot-date", DATE, *active], emu.env())
        assert other.returncode == 0, other.stderr
        replaced = snapshot_rows(out, DATE)
        assert 0 < len(replaced) < images
        later = run_cli([*args, "--snapshot-date", "2026-11-28"], emu.env())
    assert later.returncode == 0, later.stderr
    assert f"could not complete the publication of {DATE}" in later.stderr
    assert "the published snapshot is not this run's any more" in later.stderr
    assert duckdb_dates(database) == {DATE: len(replaced), "2026-11-28": images}
    assert snapshot_rows(out, DATE) == replaced
