"""The change diff's cost at scale: two nights into one output, then the diff alone.

Night 1 exports a catalog of n images; night 2 the catalog of n + n/100 (the emulator's
catalog of n images is a prefix of the bigger one: 1% uploads). Both nights run as users run
them (`python -m exporter export`), so night 2's wall and peak RSS include its change set.
The diff's own wall is its manifest's started_at -> finished_at; its own peak RSS comes from
recomputing night 2's change set in a fresh process (`diff_process`), which is what night 2
did after its walk. The issue's bound: diff wall <= 0.3x the export's, diff peak RSS within
the export's.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from tests.bench.harness import (
    PYTHON,
    ROOT,
    Emulator,
    ExportRun,
    check,
    emulator,
    median,
    toml_config,
)
from tests.bench.scenarios import Row, export_config
from tests.helpers import clean_env

DATES = ("2026-01-01", "2026-01-02")

# Recompute the change set of night 2 of OUT (argv[1]) exactly as the export did.
DIFF_SCRIPT = """
import sys
from exporter.changes.change_set import ChangeOptions, publish_changes
from exporter.snapshot.manifest import read_manifest
from exporter.store import LocalStore
from exporter.store.layout import ROOT
store = LocalStore(sys.argv[1])
night = read_manifest(store, ROOT.snapshot(sys.argv[2]))
publish_changes(store, ROOT, night, staged=".staging/bench-diff", options=ChangeOptions())
"""


def run_night(emu: Emulator, out: Path, date: str, config: Mapping[str, Any]) -> ExportRun:
    """Export one night into `out` through the launcher; return its cost and manifest."""
    tables = {k: dict(v) for k, v in config.items()}
    tables.setdefault("export", {})["output"] = str(out)
    path = out.parent / "bench.toml"
    path.write_text(toml_config(tables))
    command = [PYTHON, "-m", "exporter", "export", "--config", str(path)]
    command += ["--snapshot-date", date, "--log-format", "json", "-q"]
    return _launch(command, emu.env(), _manifest(out / f"snapshot_date={date}"))


def _launch(command: list[str], env: dict[str, str], manifest: Path) -> ExportRun:
    start = time.perf_counter()
    result = subprocess.run(
        [PYTHON, "-m", "tests.bench.launch", *command],
        capture_output=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    wall = time.perf_counter() - start
    usage = orjson.loads(result.stdout) if result.stdout.strip() else {}
    return ExportRun(
        exit_code=int(usage.get("exit_code", -1)),
        wall_s=wall,
        cpu_s=float(usage.get("cpu_s", 0.0)),
        peak_rss_mb=int(usage.get("maxrss_kb", 0)) / 1024,
        emulator_cpu_s=0.0,
        manifest=orjson.loads(manifest.read_bytes()) if manifest.exists() else {},
        stderr=result.stderr.decode(errors="replace")[-4000:],
    )


def _manifest(directory: Path) -> Path:
    return directory / "_manifest.json"


def _seconds(manifest: Mapping[str, Any]) -> float:
    parse = datetime.fromisoformat
    return (parse(manifest["finished_at"]) - parse(manifest["started_at"])).total_seconds()


def measure(images: int, repeat: int) -> Row:
    """Return the row of one catalog size: medians over `repeat` pairs of nights."""
    growth = max(1, images // 100)
    diff_walls, export_walls, export_rss, diff_rss, rows = [], [], [], [], 0
    config = export_config()
    for _ in range(repeat):
        work = Path(tempfile.mkdtemp(prefix="cf-bench-changes-"))
        out = work / "out"
        try:
            with emulator(images) as emu:
                check(run_night(emu, out, DATES[0], config), images)
            with emulator(images + growth) as emu:
                night = run_night(emu, out, DATES[1], config)
                check(night, images + growth)
            changes = orjson.loads(
                _manifest(out / f"changes/snapshot_date={DATES[1]}").read_bytes()
            )
            assert changes["counts"]["added"] == growth, changes["counts"]
            export_walls.append(_seconds(night.manifest))
            diff_walls.append(_seconds(changes))
            export_rss.append(night.peak_rss_mb)
            command = [PYTHON, "-c", DIFF_SCRIPT, str(out), DATES[1]]
            alone = _launch(
                command, clean_env(), _manifest(out / f"changes/snapshot_date={DATES[1]}")
            )
            if alone.exit_code != 0:
                raise RuntimeError(f"the diff alone failed: {alone.stderr[-1500:]}")
            diff_rss.append(alone.peak_rss_mb)
            rows = changes["counts"]["rows"]
        finally:
            shutil.rmtree(work, ignore_errors=True)
    diff_wall, export_wall = median(diff_walls), median(export_walls)
    return Row(
        scenario="changes",
        variant=f"{images:,} images, +{growth:,}",
        images=images,
        runs=repeat,
        wall_s=diff_wall,
        images_per_s=images / diff_wall if diff_wall else 0.0,
        peak_rss_mb=median(diff_rss),
        extra={
            "export_wall_s": round(export_wall, 2),
            "diff_vs_export_wall": round(diff_wall / export_wall, 3) if export_wall else None,
            "export_peak_rss_mb": round(median(export_rss), 1),
            "change_rows": rows,
        },
    )
