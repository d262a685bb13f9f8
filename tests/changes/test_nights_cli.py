"""Six nights of an evolving catalog through the CLI, compared with the emulator's own record.

Night 0 is the built catalog; nights 1, 2 and 4 upload, delete, edit every field (some edits
change nothing a warehouse sees), delete and re-upload ids; night 3 changes nothing; night 5
deletes 30% (over the 20% guard: exit 9, then `--resume --accept-removals`). Each night is
exported as Parquet, DuckDB and Delta into one output, and every change set, the current
table and the history are checked against `NightChanges`, the emulator's truth.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.emulator.catalog import build_catalog
from exporter.emulator.nights import NightChanges, NightPlan, catalog_at_night
from exporter.errors import ChangesWithheldError
from tests.helpers import emulator_process, query_rows, run_cli

IMAGES, SEED, CHURN, NIGHTS = 300, 11, 0.05, 6
PLAN = NightPlan(churn=CHURN)
CORE = ("account_id", "filename", "creator", "require_signed_urls", "uploaded", "variants")


def date(night: int) -> str:
    return f"2026-02-{night + 1:02d}"


def truth(night: int) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Return the emulator's record of a night: id -> (change, changed fields)."""
    if night == 0:
        catalog, _ = catalog_at_night(build_catalog(IMAGES, SEED), 0, PLAN)
        return {image["id"]: ("added", ()) for image in catalog.iter_images()}
    _, changes = catalog_at_night(build_catalog(IMAGES, SEED), night, PLAN)
    return expected_rows(changes)


def expected_rows(changes: NightChanges) -> dict[str, tuple[str, tuple[str, ...]]]:
    rows: dict[str, tuple[str, tuple[str, ...]]] = {i: ("added", ()) for i in changes.added}
    rows.update({i: ("removed", ()) for i in changes.removed})
    rows.update({i: ("changed", tuple(sorted(f))) for i, f in changes.changed.items()})
    return rows


def published(out: Path, night: int) -> dict[str, tuple[str, tuple[str, ...]]]:
    rows = query_rows(
        f"SELECT id, change, changed_fields FROM read_parquet("
        f"'{out}/changes/snapshot_date={date(night)}/*.parquet', hive_partitioning = false)"
    )
    found = {r["id"]: (r["change"], tuple(sorted(r["changed_fields"]))) for r in rows}
    assert len(found) == len(rows), "an id twice in one change set"
    return found


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Export nights 0..5 into one output as Parquet, DuckDB and Delta."""
    root = tmp_path_factory.mktemp("nights") / "out"
    for night in range(NIGHTS):
        flags = ("--night", str(night), "--churn", str(CHURN))
        with emulator_process(IMAGES, SEED, *flags) as emu:
            args = ["export", "--output", str(root), "--snapshot-date", date(night), "-q"]
            for fmt in ("parquet", "duckdb", "delta"):
                args += ["--format", fmt]
            result = run_cli(args, env=emu.env())
            if night == 5:
                assert result.returncode == ChangesWithheldError.exit_code, result.stderr
                assert not (root / f"changes/snapshot_date={date(night)}").exists()
                result = run_cli([*args, "--resume", "--accept-removals"], env=emu.env())
            assert result.returncode == 0, result.stderr
    yield root


@pytest.mark.parametrize("night", range(NIGHTS))
def test_change_sets_equal_the_emulators_record(out: Path, night: int) -> None:
    assert published(out, night) == truth(night)


def test_the_nights_cover_every_kind_of_change(out: Path) -> None:
    """The scenario is what it claims: each field edited, a no-change night, re-uploads."""
    fields = {f for n in range(1, NIGHTS) for c, fs in truth(n).values() for f in fs}
    assert fields == {"filename", "creator", "require_signed_urls", "uploaded", "variants", "meta"}
    assert truth(3) == {}
    removed_then_added = {i for i, (c, _) in truth(1).items() if c == "removed"} & {
        i for i, (c, _) in truth(2).items() if c == "added"
    }
    assert removed_then_added


def test_duckdb_tables_follow_the_change_log(out: Path) -> None:
    database = str(out / "images.duckdb")
    log = query_rows("SELECT id, snapshot_date, change FROM image_changes", database)
    assert len(log) == sum(len(truth(n)) for n in range(NIGHTS))
    columns = ", ".join(("id", *CORE, "meta_json"))
    current = query_rows(f"SELECT {columns} FROM images_current ORDER BY id", database)
    latest = query_rows(
        f"SELECT {columns} FROM read_parquet('{out}/snapshot_date={date(NIGHTS - 1)}/*.parquet') "
        "ORDER BY id"
    )
    assert current == latest
    history = query_rows("SELECT * FROM images_history", database)
    versions = sum(1 for n in range(NIGHTS) for c, _ in truth(n).values() if c != "removed")
    assert len(history) == versions
    ended = [h for h in history if h["is_deleted"]]
    removals = sum(1 for n in range(NIGHTS) for c, _ in truth(n).values() if c == "removed")
    assert len(ended) == removals


def read_delta(uri: Path) -> list[dict[str, Any]]:
    from deltalake import DeltaTable

    table = DeltaTable(str(uri))
    rows = table.to_pyarrow_table().to_pylist()
    del table
    gc.collect()
    return rows


def test_delta_tables_equal_the_duckdb_ones(out: Path) -> None:
    """Delta's image_changes, images_current and images_history hold exactly DuckDB's rows."""
    database = str(out / "images.duckdb")
    key = ("id", "snapshot_date", "change", "changed_fields", *CORE, "meta_json")
    pairs = [
        ("image_changes", "SELECT * FROM image_changes", key),
        ("images_current", "SELECT * FROM images_current", ("id", *CORE, "meta_json")),
        (
            "images_history",
            "SELECT * FROM images_history",
            ("id", "valid_from", "valid_to", "is_current", "is_deleted", *CORE, "meta_json"),
        ),
    ]
    for table, sql, columns in pairs:
        mine = sorted(tuple(str(r[c]) for c in columns) for r in read_delta(out / "delta" / table))
        theirs = sorted(tuple(str(r[c]) for c in columns) for r in query_rows(sql, database))
        assert mine == theirs, table
