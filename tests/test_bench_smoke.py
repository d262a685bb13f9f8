"""The benchmark machinery on a tiny catalog, so `make bench` cannot rot between runs.

Structure only: no timing is asserted (benchmarks print and record; tests stay deterministic).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.bench.__main__ import main
from tests.bench.baseline import revision_tree
from tests.bench.fleet import fleet_rows
from tests.bench.harness import ExportRun, check, emulator, run_export, toml_config
from tests.bench.report import render_table
from tests.bench.scenarios import SCENARIOS, Plan, export_config, quota_used, summarize
from tests.bench.stages import measure_stages


def test_one_export_is_measured_from_its_own_process() -> None:
    with emulator(300, args=["--latency", "0.001"]) as emu:
        run = run_export(emu, config=export_config(per_page=100))
    assert run.exit_code == 0, run.stderr
    assert run.images == 300
    assert run.cpu_s > 0 and run.peak_rss_mb > 10  # rusage of the child, not of pytest
    assert run.emulator_cpu_s >= 0
    assert run.bytes_by_format()["parquet"] > 0
    assert 0 < run.export_seconds() <= run.wall_s
    row = summarize("throughput", "parquet", [run, run])
    assert row.runs == 2 and row.images == 300
    assert row.images_per_s == 300 / run.wall_s


def test_the_fleet_scenario_measures_every_worker_count() -> None:
    """A tiny fleet through the real `fleet` command: one row per --workers, every image."""
    tiny = Plan.tiny()
    rows = fleet_rows(tiny.fleet_accounts, tiny.fleet_images, 1, (1, 2))
    assert [row.variant.rsplit(" ", 1)[1] for row in rows] == ["1", "2"]
    assert all(row.images == tiny.fleet_accounts * tiny.fleet_images for row in rows)
    assert all(row.peak_rss_mb and row.peak_rss_mb > 10 for row in rows)
    assert rows[0].extra["rss_vs_one_worker"] == 1.0
    assert all(row.extra["requests_per_account"] >= 1 for row in rows)


def test_the_fleet_scenario_runs_under_latency_beside_a_revision() -> None:
    """The emulator's latency and another revision's exporter: one target line per row."""
    from tests.bench.targets import target_lines

    tiny = Plan.tiny()
    size = (tiny.fleet_accounts, tiny.fleet_images, 1, (1,))
    with revision_tree("HEAD") as old:
        assert old is not None
        rows = fleet_rows(*size, latency_s=tiny.fleet_latency_s)
        rows += fleet_rows(*size, latency_s=tiny.fleet_latency_s, tree=old, suffix="@HEAD")
    assert [r.variant.split(", ")[1] for r in rows] == ["latency 10 ms", "latency 10 ms @HEAD"]
    lines = target_lines(rows)
    assert len(lines) == 2 and "x HEAD's" in lines[0]


def test_the_big_accounts_scenario_runs_a_mixed_fleet_s_second_night() -> None:
    """Large (nasty) and small accounts in one fleet, night 0 then night 1: one row, one line."""
    from tests.bench.fleet import big_account_rows
    from tests.bench.targets import target_lines

    tiny = Plan.tiny()
    (row,) = big_account_rows(tiny.big_accounts, tiny.big_fleet_small, 1, 2)
    assert row.scenario == "fleet-big" and row.variant == "1 x 500 nasty + 1 x 50, --workers 2"
    assert row.images == 550 and row.peak_rss_mb and row.peak_rss_mb > 10
    (line,) = target_lines([row])
    assert line.startswith("second nights, fleet of 1 x 500 nasty + 1 x 50, --workers 2: peak ")


def test_stages_report_every_stage() -> None:
    rows = measure_stages(300, runs=1)
    assert [row.variant.split(" (")[0] for row in rows] == [
        "decode",
        "normalize",
        "decode + normalize",
        "write parquet",
        "write ndjson",
    ]
    assert all(row.images == 300 and row.images_per_s > 0 for row in rows)
    table = render_table(rows)
    assert table.count("\n") == len(rows) + 1  # header, rule, one line per row


def test_quota_used_is_the_fastest_legal_schedule_over_the_duration() -> None:
    run = ExportRun(
        exit_code=0,
        wall_s=10.0,
        cpu_s=1.0,
        peak_rss_mb=100.0,
        emulator_cpu_s=0.1,
        manifest={
            "counts": {"requests": 41, "rows": 10},
            "started_at": "2026-01-01T00:00:00Z",
            "finished_at": "2026-01-01T00:00:08Z",
        },
    )
    rate, share = quota_used(run, quota=10, window=2.0)
    assert rate == 41 / 8
    assert share == (4 * 2.0) / 8  # 40 requests past the first window need 4 windows


def test_toml_config_round_trips() -> None:
    import tomllib

    config = export_config(per_page=100, walk={"margin": 1.0, "batch_api": True})
    assert tomllib.loads(toml_config(config)) == config


def test_cli_runs_a_scenario_and_saves_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tests.bench.scenarios.Plan.quick", classmethod(lambda cls: Plan.tiny()))
    assert main(["--quick", "--only", "stages", "--out", str(tmp_path)]) == 0
    (saved,) = tmp_path.glob("bench-*.json")
    document = orjson.loads(saved.read_bytes())
    assert set(document) == {"created_at", "machine", "plan", "seconds", "results"}
    assert {"cpu", "cores", "memory_gb", "python", "packages", "git_revision"} <= set(
        document["machine"]
    )
    assert document["plan"]["stage_images"] == Plan.tiny().stage_images
    assert {r["scenario"] for r in document["results"]} == {"stages"}
    assert set(SCENARIOS) == {
        "stages",
        "throughput",
        "memory",
        "nasty",
        "latency",
        "paced",
        "changes",
        "fleet",
        "report",
        "new_uploads",
        "second-nights",
        "fleet-nights",
        "fleet-big",
    }


def test_report_scenario_measures_the_page_beside_the_export() -> None:
    """One tiny nasty night, then `report` alone: its wall, peak RSS and the export's."""
    from tests.bench.page import measure

    row = measure(Plan.tiny().report_images[0], repeat=1)
    assert row.scenario == "report" and row.images == 500
    assert row.peak_rss_mb and row.peak_rss_mb > 10 and row.extra["export_peak_rss_mb"] > 10
    assert row.extra["page_kb"] > 10


def test_the_new_uploads_scenario_counts_the_requests_of_one_batch() -> None:
    """A tiny catalog: the batch holds exactly the uploads, in a request or two."""
    from tests.bench.new_uploads import measure

    tiny = Plan.tiny()
    row = measure(tiny.new_uploads_images, tiny.new_uploads, 1)
    assert row.images == tiny.new_uploads and row.runs == 1
    assert 1 <= row.extra["requests"] <= 2


def test_launcher_reports_the_child_rusage_not_the_parents() -> None:
    """vfork + exec would charge this process's RSS to the child: the launcher avoids it."""
    import subprocess
    import sys

    ballast = b"x" * (300 * 2**20)  # touched pages: this process holds > 300 MB
    out = subprocess.run(
        [sys.executable, "-m", "tests.bench.launch", sys.executable, "-c", "pass"],
        capture_output=True,
        check=True,
    ).stdout
    report = orjson.loads(out)
    assert report["exit_code"] == 0
    assert report["maxrss_kb"] < 100 * 1024 < len(ballast) // 1024


def test_an_export_can_run_another_revisions_exporter() -> None:
    """The side-by-side scenario runs the extracted tree's package, not this checkout's."""
    with revision_tree("HEAD") as tree:
        assert tree is not None and (tree / "exporter" / "__init__.py").is_file()
        (tree / "exporter" / "__main__.py").write_text("raise SystemExit(42)\n")
        with emulator(50) as emu:
            run = run_export(emu, config=export_config(per_page=10), tree=tree)
    assert run.exit_code == 42
    assert not tree.exists()  # removed afterwards


def test_an_unknown_revision_gives_no_tree() -> None:
    with revision_tree("0" * 40) as tree:
        assert tree is None


def test_changes_scenario_measures_the_diff_beside_the_export() -> None:
    """Two nights into one output; the row holds the diff's and the export's numbers."""
    from tests.bench.changes import measure

    row = measure(500, repeat=1)
    assert row.scenario == "changes" and row.images == 500
    assert row.extra["change_rows"] == 5  # 1% uploads
    assert row.wall_s > 0 and row.extra["export_wall_s"] > 0
    assert row.peak_rss_mb and row.extra["export_peak_rss_mb"]


def test_second_nights_and_fleet_nights_print_their_target_lines() -> None:
    """Each scenario of issue 22 runs on a tiny catalog and gives its target line."""
    from tests.bench.fleet import second_night_rows
    from tests.bench.nights import rows_for
    from tests.bench.targets import target_lines

    nights = rows_for([(300, "1%"), (300, "mass")], 1, None, "")
    assert [r.scenario for r in nights] == ["second-night", "second-night"]
    assert nights[1].extra["change_rows"] > nights[1].images  # more changes than images
    fleet = second_night_rows(2, 50, 1, 1)
    assert fleet[0].extra["wall_vs_one_account"] > 0
    lines = target_lines([*nights, *fleet])
    assert len(lines) == 3
    assert lines[0].startswith("second nights, ~1% changed, peak RSS: 300 ")
    assert "mass changed" in lines[1] and "x 50, latency 0 ms, --workers 1" in lines[2]


def test_a_short_export_fails_the_bench_but_a_baselines_loss_is_reported() -> None:
    short = ExportRun(0, 1.0, 1.0, 100.0, 0.1, manifest={"counts": {"rows": 49_999}})
    with pytest.raises(RuntimeError, match="49999 images, expected 50000"):
        check(short, 50_000)
    assert check(short, 50_000, baseline=True) == 1
    assert check(short, 49_999) == 0
    with pytest.raises(RuntimeError, match="exit 5"):
        check(ExportRun(5, 1.0, 1.0, 100.0, 0.1), 50_000, baseline=True)
