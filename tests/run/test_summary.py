"""RunSummary: built from a run and its manifest, shown through `to_dict` exactly as the CLI
has always printed each kind of summary (keys, order, values)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from exporter.observe.progress import print_summary, setup_logging
from exporter.run.new_uploads import BatchPlan
from exporter.run.summary import RunSummary, summarize
from exporter.snapshot.manifest import Manifest
from exporter.stats import RunStats

SNAPSHOT_KEYS = [
    "snapshot",
    "images",
    "files",
    "bytes",
    "duration_s",
    "requests",
    "retries",
    "throttled",
    "drift",
    "warnings",
    "changes",
    "change_counts",
    "run_id",
]
BATCH_KEYS = [
    "batch",
    "images",
    "new_images",
    "base_snapshot",
    "watermark",
    "lag_s",
    "files",
    "bytes",
    "requests",
    "retries",
    "throttled",
    "run_id",
]
MANIFEST_JSON: dict[str, Any] = {
    "snapshot_date": "2026-11-27",
    "started_at": "2026-11-27T01:00:00Z",
    "finished_at": "2026-11-27T01:00:12.345678Z",
    "files": [
        {"path": "part-00001.parquet", "rows": 1, "bytes": 1000, "sha256": "x"},
        {"path": "b", "rows": 1, "bytes": 234, "sha256": "y"},
    ],
    "drift": {"previous_snapshot": "2026-11-26", "changes": [{"column": "a"}]},
    "normalize": {"warnings": ["one", "two"]},
}
MANIFEST = Manifest.from_json(MANIFEST_JSON)


def fake_run(plan: BatchPlan | None = None) -> Any:
    """Return what `summarize` reads of a run: config.output, published, stats, run id; a
    fresh run, whose process worked the manifest's whole wall clock (12.35 s)."""
    began = time.monotonic() - 12.35
    stats = RunStats(images=1234, requests=3, retries=1, throttled=2, began=began)
    return SimpleNamespace(
        config=SimpleNamespace(output="s3://bucket/out/"),
        published="snapshot_date=2026-11-27" if plan is None else "new_uploads/b",
        stats=stats,
        checkpoint=SimpleNamespace(run_id="run-1"),
        plan=plan,
    )


# What `summarize` reads of a published change set.
CHANGES = SimpleNamespace(
    published=True, counts={"added": 3, "removed": 1}, describe=lambda: "3 added, 1 removed"
)


class TestSummarize:
    def test_a_snapshot_has_the_snapshot_keys_in_their_printed_order(self) -> None:
        summary = summarize(fake_run(), MANIFEST, [CHANGES])
        assert summary.to_dict() == {
            "snapshot": "s3://bucket/out/snapshot_date=2026-11-27",
            "images": 1234,
            "files": 2,
            "bytes": 1234,
            "duration_s": pytest.approx(12.35, abs=0.05),
            "requests": 3,
            "retries": 1,
            "throttled": 2,
            "drift": "1 change(s)",
            "warnings": "one; two",
            "changes": "3 added, 1 removed",
            "change_counts": {"added": 3, "removed": 1},
            "run_id": "run-1",
        }
        assert list(summary.to_dict()) == SNAPSHOT_KEYS

    def test_a_first_snapshot_without_changes(self) -> None:
        first = {**MANIFEST_JSON, "drift": {"previous_snapshot": None, "changes": []}}
        first["normalize"] = {"warnings": []}
        shown = summarize(fake_run(), Manifest.from_json(first)).to_dict()
        assert (shown["drift"], shown["warnings"], shown["changes"]) == (
            "first snapshot",
            "none",
            "none",
        )
        assert shown["change_counts"] == {}

    def test_a_withheld_change_set_keeps_the_key_in_its_place(self) -> None:
        shown = summarize(fake_run(), MANIFEST).withheld().to_dict()
        assert list(shown) == SNAPSHOT_KEYS and shown["changes"] == "withheld (exit 9)"

    def test_a_batch_has_the_batch_keys_in_their_printed_order(self) -> None:
        plan = BatchPlan("2026-11-27", dt.datetime(2026, 11, 27, 1, tzinfo=dt.UTC), 120.0)
        shown = summarize(fake_run(plan), MANIFEST).to_dict()
        assert list(shown) == BATCH_KEYS
        assert shown["batch"] == "s3://bucket/out/new_uploads/b"
        assert (shown["new_images"], shown["watermark"], shown["lag_s"]) == (
            1234,
            "2026-11-27T01:00:00Z",
            120.0,
        )

    def test_an_empty_batch_publishes_nothing(self) -> None:
        plan = BatchPlan("2026-11-27", dt.datetime(2026, 11, 27, 1, tzinfo=dt.UTC), 120.0)
        shown = summarize(fake_run(plan), None).to_dict()
        assert (shown["batch"], shown["files"], shown["bytes"]) == ("none", 0, 0)

    def test_an_already_published_account_says_only_that(self) -> None:
        summary = RunSummary(snapshot="out/snapshot_date=D", images=5, already_published=True)
        assert summary.to_dict() == {
            "snapshot": "out/snapshot_date=D",
            "images": 5,
            "already_published": True,
        }


@pytest.fixture
def logs() -> Iterator[None]:
    """Leave the exporter's log handlers as they were (setup_logging replaces them)."""
    root = logging.getLogger("exporter")
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


class TestPrinted:
    SUMMARY = RunSummary(
        snapshot="out/snapshot_date=2026-11-27",
        images=1234,
        files=2,
        bytes=5678,
        duration_s=1.5,
        requests=3,
        retries=0,
        throttled=0,
        drift="none",
        warnings="none",
        changes="3 added",
        change_counts={"added": 3},
        run_id="r",
    )

    def test_the_json_record_is_to_dict(
        self, logs: None, capsys: pytest.CaptureFixture[str]
    ) -> None:
        setup_logging("json", 0)
        print_summary(self.SUMMARY, log_format="json", interactive=False)
        (record,) = [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert record["message"] == "summary"
        assert record["summary"] == self.SUMMARY.to_dict()
        assert list(record["summary"]) == SNAPSHOT_KEYS

    def test_the_plain_line_labels_each_field(
        self, logs: None, capsys: pytest.CaptureFixture[str]
    ) -> None:
        setup_logging("plain", 0)
        print_summary(self.SUMMARY, log_format="plain", interactive=False)
        assert (
            capsys.readouterr()
            .err.rstrip("\n")
            .endswith(
                "summary: snapshot: out/snapshot_date=2026-11-27; images: 1,234; files: 2; "
                "bytes: 5,678; duration (s): 1.5; requests: 3; retries: 0; 429s: 0; "
                "schema drift: none; changes: 3 added; warnings: none"
            )
        )
