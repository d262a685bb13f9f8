"""OUT's layout: the paths users glob and the ones only runs use, with and without a fleet level."""

from __future__ import annotations

import pytest

from exporter.store.layout import (
    ROOT,
    Layout,
    batch_name,
    run_key,
    run_key_date,
    split_snapshot_path,
)

DATE = "2026-11-27"
KEY = run_key("0123456789abcdef" * 4, DATE)


class TestLayout:
    def test_batches_of_new_uploads_live_beside_the_snapshots(self) -> None:
        """`new_uploads/snapshot_date=D/batch=<start>-<run8>`, names sorting by time."""
        import datetime as dt

        started = dt.datetime(2026, 11, 27, 10, 15, 0, tzinfo=dt.UTC)
        name = batch_name(started, "1a2b3c4d" + "0" * 24)
        assert name == "20261127T101500Z-1a2b3c4d"
        assert ROOT.batch(DATE, name) == f"new_uploads/snapshot_date={DATE}/batch={name}"
        assert Layout.for_account("acc").batch(DATE, name).startswith("account_id=acc/new_uploads/")
        assert ROOT.staged_batch(KEY, DATE, name) == (
            f".staging/{KEY}/new_uploads/snapshot_date={DATE}/batch={name}"
        )
        assert ROOT.batch_names(["batch=b", "x", "batch=a"]) == ["a", "b"]

    def test_a_single_export_writes_at_the_root(self) -> None:
        assert ROOT.snapshot(DATE) == "snapshot_date=2026-11-27"
        assert ROOT.changes(DATE) == "changes/snapshot_date=2026-11-27"
        assert ROOT.database() == "images.duckdb"
        assert KEY == "2026-11-27-0123456789abcdef"
        assert ROOT.checkpoint(KEY) == f".staging/{KEY}/_checkpoint.json"
        assert ROOT.lock(KEY) == f".staging/{KEY}.lock"
        assert ROOT.staged_snapshot(KEY, DATE) == f".staging/{KEY}/snapshot_date=2026-11-27"
        assert ROOT.staged_changes(KEY, DATE) == f".staging/{KEY}/changes/snapshot_date={DATE}"
        assert ROOT.sink_work(KEY, DATE, "duckdb") == f".staging/{KEY}/snapshot_date={DATE}.duckdb"

    def test_a_fleet_account_gets_one_level_of_its_own(self) -> None:
        """`OUT/account_id=<id>/...`: one Hive-partitioned glob reads every account."""
        layout = Layout.for_account("abc123")
        assert layout.snapshot(DATE) == "account_id=abc123/snapshot_date=2026-11-27"
        assert layout.changes(DATE) == "account_id=abc123/changes/snapshot_date=2026-11-27"
        assert layout.checkpoint(KEY) == f"account_id=abc123/.staging/{KEY}/_checkpoint.json"
        assert layout.lock(KEY) == f"account_id=abc123/.staging/{KEY}.lock"
        assert layout.database() == "account_id=abc123/images.duckdb"
        assert layout.snapshots == "account_id=abc123"

    @pytest.mark.parametrize("account", ["", "../x", "a/b", "a b", "x" * 65])
    def test_an_account_id_never_leaves_its_level(self, account: str) -> None:
        with pytest.raises(ValueError, match="path-safe"):
            Layout.for_account(account)

    def test_only_snapshot_directories_are_listed_as_dates(self) -> None:
        names = [
            ".staging",
            "changes",
            "images.duckdb",
            f"snapshot_date={DATE}",
            "snapshot_date=2026-11-26",
        ]
        assert ROOT.snapshot_dates(names) == ["2026-11-26", DATE]

    def test_staging_entries_are_dated_runs_or_not_ours(self) -> None:
        assert str(run_key_date(KEY)) == DATE
        assert run_key_date(KEY + ".lock") is None
        assert run_key_date("notes") is None

    @pytest.mark.parametrize(
        ("path", "split"),
        [
            ("out/snapshot_date=2026-11-27", ("out", "snapshot_date=2026-11-27")),
            ("s3://b/p/snapshot_date=2026-11-27/", ("s3://b/p", "snapshot_date=2026-11-27")),
            ("out", None),
            ("snapshot_date=2026-11-27", None),  # no root to open the store at
            (
                "out/new_uploads/snapshot_date=2026-11-27/batch=20261127T101500Z-1a2b3c4d",
                ("out", "new_uploads/snapshot_date=2026-11-27/batch=20261127T101500Z-1a2b3c4d"),
            ),
            ("out/other/snapshot_date=2026-11-27/batch=x", None),
        ],
    )
    def test_inspect_tells_one_snapshot_from_an_output_root(
        self, path: str, split: tuple[str, str] | None
    ) -> None:
        assert split_snapshot_path(path) == split
