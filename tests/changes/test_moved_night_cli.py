"""A night moved or damaged by hand, then the next nights, through the CLI against the emulator.

A snapshot directory renamed by hand (`mv OUT/snapshot_date=D OUT/snapshot_date=C`) keeps a
manifest naming D: the next night publishes with no change set and one warning (never a
traceback), `inspect` flags the directory (exit 7), and moving it back restores both. A part
file of the previous night missing or damaged ends the change step with one line, exit 5,
and `--resume` publishes the change set once the file is whole again. Parquet nights are
compared in memory (`smalldiff`), NDJSON ones by DuckDB (`diff`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from exporter.errors import IntegrityError, SinkError
from tests.helpers import EmulatorProcess, catalog_rows, emulator_process, run_cli

IMAGES, SEED = 300, 5
MOVED, FIRST, NEXT = "2026-12-04", "2026-12-05", "2026-12-06"


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorProcess]:
    with emulator_process(IMAGES, SEED) as running:
        yield running


def export(emu: EmulatorProcess, out: Path, fmt: str, date: str, *flags: str) -> tuple[int, str]:
    args = ["export", "--output", str(out), "--format", fmt, "--snapshot-date", date, "-q"]
    result = run_cli([*args, *flags], env=emu.env())
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stderr


def snapshot_ids(out: Path, date: str) -> set[str]:
    """Return the ids of a published snapshot, read from its files as its manifest lists."""
    directory = out / f"snapshot_date={date}"
    assert (directory / "_SUCCESS").exists()
    manifest = orjson.loads((directory / "_manifest.json").read_bytes())
    ids: set[str] = set()
    for entry in manifest["files"]:
        path = directory / entry["path"]
        if entry["format"] == "parquet":
            ids |= set(pq.read_table(path, columns=["id"]).column("id").to_pylist())
        else:
            ids |= {orjson.loads(line)["id"] for line in path.read_bytes().splitlines() if line}
    return ids


def change_rows(out: Path, date: str) -> list[dict[str, object]]:
    directory = out / "changes" / f"snapshot_date={date}"
    assert (directory / "_SUCCESS").exists()
    rows: list[dict[str, object]] = []
    for part in sorted(directory.glob("part-*.parquet")):
        rows += pq.read_table(part).to_pylist()
    return rows


@pytest.mark.parametrize("fmt", ["parquet", "ndjson"])
def test_a_night_moved_by_hand_then_moved_back(
    emu: EmulatorProcess, tmp_path: Path, fmt: str
) -> None:
    out = tmp_path / "out"
    catalog = set(catalog_rows(IMAGES, SEED, emu.account_id))
    assert export(emu, out, fmt, FIRST)[0] == 0
    (out / f"snapshot_date={FIRST}").rename(out / f"snapshot_date={MOVED}")

    code, stderr = export(emu, out, fmt, NEXT)
    assert code == 0, stderr
    assert snapshot_ids(out, NEXT) == catalog  # the night itself is published
    assert not (out / "changes" / f"snapshot_date={NEXT}").exists()
    warned = [line for line in stderr.splitlines() if "has no change set" in line]
    assert len(warned) == 1, stderr
    assert f"snapshot_date={MOVED}: its manifest is of {FIRST}" in warned[0]
    assert f"move it back to snapshot_date={FIRST}, then export {NEXT} again" in warned[0]

    result = run_cli(["inspect", str(out)])
    assert result.returncode == IntegrityError.exit_code, result.stderr
    lines = result.stdout.splitlines()
    assert (
        f"snapshot_date={MOVED}: DAMAGED: its manifest is of {FIRST} (moved by hand?): "
        in (lines[0])
    )
    assert len(lines) == 3 and all(": ok, " in line for line in lines[1:]), result.stdout
    one = run_cli(["inspect", str(out / f"snapshot_date={MOVED}")])
    assert one.returncode == IntegrityError.exit_code
    assert one.stderr.count("\n") == 1 and f"its manifest is of {FIRST}" in one.stderr

    (out / f"snapshot_date={MOVED}").rename(out / f"snapshot_date={FIRST}")
    code, stderr = export(emu, out, fmt, NEXT)
    assert code == 0, stderr
    rows = change_rows(out, NEXT)
    assert rows == []  # the catalog did not change between the two nights
    manifest = orjson.loads((out / "changes" / f"snapshot_date={NEXT}/_manifest.json").read_bytes())
    assert manifest["previous_snapshot_date"] == FIRST
    assert run_cli(["inspect", str(out)]).returncode == 0


def test_a_date_exported_again_after_its_night_was_moved(
    emu: EmulatorProcess, tmp_path: Path
) -> None:
    """The moved directory, dated before D, is D's previous night: D gets no change set
    (compared with nothing, every image would be `added` a second time in the change log)."""
    out = tmp_path / "out"
    assert export(emu, out, "parquet", FIRST)[0] == 0
    assert len(change_rows(out, FIRST)) == IMAGES  # the first night: every image added
    (out / f"snapshot_date={FIRST}").rename(out / f"snapshot_date={MOVED}")
    code, stderr = export(emu, out, "parquet", FIRST)
    assert code == 0, stderr
    assert "has no change set: the previous night snapshot_date=" + MOVED in stderr
    assert not (out / "changes" / f"snapshot_date={FIRST}").exists()  # the earlier one withdrawn


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_damaged_previous_night_is_one_line_and_resumable(
    emu: EmulatorProcess, tmp_path: Path, damage: str
) -> None:
    out = tmp_path / "out"
    assert export(emu, out, "parquet", FIRST)[0] == 0
    (part,) = (out / f"snapshot_date={FIRST}").glob("part-*.parquet")
    kept = tmp_path / part.name
    shutil.copyfile(part, kept)
    if damage == "missing":
        part.unlink()
    else:
        part.write_bytes(part.read_bytes()[:100])

    code, stderr = export(emu, out, "parquet", NEXT)
    assert code == SinkError.exit_code, stderr
    (line,) = stderr.strip().splitlines()
    assert f"changes: the change set of {NEXT} against {FIRST} could not be computed" in line
    assert part.name in line or "Parquet" in line
    assert snapshot_ids(out, NEXT) == set(catalog_rows(IMAGES, SEED, emu.account_id))
    assert not (out / "changes" / f"snapshot_date={NEXT}").exists()

    shutil.copyfile(kept, part)
    code, stderr = export(emu, out, "parquet", NEXT, "--resume")
    assert code == 0, stderr
    assert change_rows(out, NEXT) == []
