"""What the API leaves unsaid, through the CLI: fields the reference does not list, and a batch
host that refuses List V2. Real subprocesses against an emulator process over loopback, each
compared with the emulator's own catalog and record.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from exporter.api.client import PERMISSION_HINT
from exporter.emulator.catalog import build_catalog
from exporter.emulator.extras import LISTED
from exporter.emulator.nights import NightPlan, catalog_at_night
from exporter.errors import AuthError, SchemaContractError
from tests.helpers import catalog_rows, emulator_process, query_rows, run_cli, snapshot_rows

IMAGES, SEED, CHURN = 300, 11, 0.05
PLAN = NightPlan(churn=CHURN)
NDJSON_KEYS = {"account_id", "id", "filename", "creator", "require_signed_urls", "uploaded"}
NDJSON_KEYS |= {"variants", "meta"}


def date(night: int) -> str:
    return f"2026-03-{night + 1:02d}"


def truth(night: int) -> dict[str, dict[str, Any] | None]:
    """Return each image's fields the reference does not list, as the emulator serves them."""
    catalog, _ = catalog_at_night(build_catalog(IMAGES, SEED, extras=True), night, PLAN)
    return {
        image["id"]: {k: v for k, v in image.items() if k not in LISTED} or None
        for image in catalog.iter_images()
    }


def export(out: Path, night: int, *flags: str) -> Any:
    with emulator_process(IMAGES, SEED, "--extra-fields", "--night", str(night), "--churn",
                          str(CHURN)) as emu:  # fmt: skip
        args = ["export", "--output", str(out), "--snapshot-date", date(night), *flags]
        return run_cli(args, env=emu.env())


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Nights 0 and 1 exported as Parquet, NDJSON and DuckDB into one output."""
    root = tmp_path_factory.mktemp("extra") / "out"
    for night in (0, 1):
        formats = ["--format", "parquet", "--format", "ndjson", "--format", "duckdb", "-q"]
        result = export(root, night, *formats)
        assert result.returncode == 0, result.stderr
    yield root


def json_or_none(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


@pytest.mark.parametrize("night", [0, 1])
def test_parquet_keeps_every_field_exactly(out: Path, night: int) -> None:
    """extra_json is each image's unknown top-level fields, exactly (JSON compare); the
    typed extra__ columns hold their leaves; the core columns still match the catalog."""
    glob = f"{out}/snapshot_date={date(night)}/*.parquet"
    rows = query_rows(f"SELECT * FROM read_parquet('{glob}')")
    expected = truth(night)
    assert {r["id"]: json_or_none(r["extra_json"]) for r in rows} == expected
    assert any(expected.values()) and not all(expected.values())
    for row in rows:
        extra = expected[row["id"]] or {}
        assert row["extra__sizebytes"] == extra.get("sizeBytes")
        assert row["extra__draft"] == extra.get("draft")
        assert row["extra__labels__score"] == extra.get("labels", {}).get("score")
    assert max(r["extra__sizebytes"] or 0 for r in rows) > 2**31
    assert "extra__deprecated" not in rows[0]  # only ever null: extra_json alone keeps it
    if night == 0:
        expected_rows = catalog_rows(IMAGES, SEED, rows[0]["account_id"])
        assert snapshot_rows(out, date(0)) == expected_rows


def test_duckdb_table_keeps_them_too(out: Path) -> None:
    rows = query_rows(
        "SELECT id, extra_json, extra__labels__team FROM images "
        f"WHERE snapshot_date = DATE '{date(1)}'",
        str(out / "images.duckdb"),
    )
    expected = truth(1)
    assert {r["id"]: json_or_none(r["extra_json"]) for r in rows} == expected
    assert {r["id"]: r["extra__labels__team"] for r in rows} == {
        i: (e or {}).get("labels", {}).get("team") for i, e in expected.items()
    }


def test_ndjson_lines_carry_them_as_sent(out: Path) -> None:
    """Each line: the fields after `meta`, in the order and with the values the API sent."""
    (part,) = (out / f"snapshot_date={date(1)}").glob("*.ndjson")
    expected = truth(1)
    lines = [orjson.loads(line) for line in part.read_bytes().splitlines()]
    assert len(lines) == len(expected)
    for line in lines:
        extra = {k: v for k, v in line.items() if k not in NDJSON_KEYS}
        sent = expected[line["id"]] or {}
        assert list(extra.items()) == list(sent.items())


def test_drift_names_the_new_field_the_night_it_appears(out: Path) -> None:
    """`reviewed` first appears on night 1: that night's drift names its columns, added."""
    manifests = [
        orjson.loads((out / f"snapshot_date={date(n)}" / "_manifest.json").read_bytes())
        for n in (0, 1)
    ]
    added = [
        (c["column"], c["path"]) for c in manifests[1]["drift"]["changes"] if c["change"] == "added"
    ]
    assert added == [("extra__reviewed__by", ["reviewed", "by"]),
                     ("extra__reviewed__round", ["reviewed", "round"])]  # fmt: skip
    columns = {c["name"] for c in manifests[0]["schema"]}
    assert {"extra_json", "extra__sizebytes", "extra__labels__score"} <= columns
    assert not any(name.startswith("extra__reviewed") for name in columns)


def test_change_set_reports_extra(out: Path) -> None:
    """Night 1's change set equals the emulator's record, `extra` included."""
    _, changes = catalog_at_night(build_catalog(IMAGES, SEED, extras=True), 1, PLAN)
    rows = query_rows(
        "SELECT id, change, changed_fields FROM read_parquet("
        f"'{out}/changes/snapshot_date={date(1)}/*.parquet', hive_partitioning = false)"
    )
    changed = {r["id"]: tuple(r["changed_fields"]) for r in rows if r["change"] == "changed"}
    assert changed == dict(changes.changed)
    assert any("extra" in fields for fields in changed.values())


def test_freeze_refuses_the_new_field(tmp_path: Path) -> None:
    """--schema-contract freeze treats a new field like a new meta column: exit 6."""
    assert export(tmp_path, 0, "-q").returncode == 0
    result = export(tmp_path, 1, "--schema-contract", "freeze")
    assert result.returncode == SchemaContractError.exit_code, result.stderr
    assert "extra__reviewed" in result.stderr and "Traceback" not in result.stderr


class TestBatchHostRefusesList:
    @pytest.mark.parametrize("status", ["403", "404"])
    def test_falls_back_and_stays_exact(self, tmp_path: Path, status: str) -> None:
        """--batch-api against a batch host that refuses List V2: the account API serves the
        walk, the snapshot is exact, and the fallback is said once in the log, in the
        summary and in the manifest."""
        with emulator_process(IMAGES, SEED, "--refuse-batch-list", status) as emu:
            args = ["export", "--output", str(tmp_path), "--snapshot-date", date(0)]
            args += ["--batch-api", "--batch-base-url", emu.batch_base_url, "--per-page", "50"]
            result = run_cli(args, env=emu.env())
        assert result.returncode == 0, result.stderr
        assert snapshot_rows(tmp_path, date(0)) == catalog_rows(IMAGES, SEED, emu.account_id)
        logged = [line for line in result.stderr.splitlines() if "refused List V2" in line]
        assert len(logged) == 2, result.stderr  # the warning when it happened, the summary
        assert f"HTTP {status}" in logged[0] and "summary" in logged[1]
        if status == "403":
            assert "forbidden endpoint" in logged[0]
        assert PERMISSION_HINT not in result.stderr
        snapshot = tmp_path / f"snapshot_date={date(0)}"
        manifest = orjson.loads((snapshot / "_manifest.json").read_bytes())
        assert manifest["counts"]["batch_fallback"] == 1
        assert any("refused List V2" in w for w in manifest["normalize"]["warnings"])

    def test_a_real_permission_error_still_exits_3(self, tmp_path: Path) -> None:
        """Credentials the account refuses: exit 3 with the permission words, not a fallback."""
        with emulator_process(IMAGES, SEED, "--refuse-batch-list", "403") as emu:
            args = ["export", "--output", str(tmp_path), "--batch-api"]
            args += ["--batch-base-url", emu.batch_base_url]
            env = emu.env(CLOUDFLARE_ACCOUNT_ID="f" * 32)  # an account this token is not for
            result = run_cli(args, env=env)
        assert result.returncode == AuthError.exit_code, result.stderr
        assert PERMISSION_HINT in result.stderr and "refused List V2" not in result.stderr
