"""`report`'s cost at scale: one night of the nasty catalog, then the page alone.

The night is exported as users run it (Parquet); then `python -m exporter report OUT` runs in
its own process under the launcher, for its wall and peak RSS, beside the export's own. The
issue's bounds: seconds at 3,000,000 images, and a peak RSS under the export's.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tests.bench.changes import DATES, _launch, _manifest, run_night
from tests.bench.harness import PYTHON, check, emulator, median
from tests.bench.scenarios import Row, export_config
from tests.helpers import clean_env


def measure(images: int, repeat: int) -> Row:
    """Return the row of one catalog size: the report's medians over `repeat` runs."""
    work = Path(tempfile.mkdtemp(prefix="cf-bench-report-"))
    out = work / "out"
    try:
        with emulator(images, args=["--profile", "nasty"]) as emu:
            night = run_night(emu, out, DATES[0], export_config())
            check(night, images)
        manifest = _manifest(out / f"snapshot_date={DATES[0]}")
        runs = []
        for _ in range(repeat):
            run = _launch([PYTHON, "-m", "exporter", "report", str(out)], clean_env(), manifest)
            if run.exit_code != 0:
                raise RuntimeError(f"report failed: {run.stderr[-1500:]}")
            runs.append(run)
        page_kb = (out / "report.html").stat().st_size / 1024
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wall, rss = median([r.wall_s for r in runs]), median([r.peak_rss_mb for r in runs])
    return Row(
        scenario="report",
        variant=f"{images:,} nasty images",
        images=images,
        runs=repeat,
        wall_s=wall,
        images_per_s=images / wall if wall else 0.0,
        cpu_s=median([r.cpu_s for r in runs]),
        peak_rss_mb=rss,
        extra={
            "export_peak_rss_mb": round(night.peak_rss_mb, 1),
            "rss_vs_export": round(rss / night.peak_rss_mb, 2) if night.peak_rss_mb else None,
            "page_kb": round(page_kb, 1),
        },
    )
