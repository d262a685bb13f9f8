"""`export --new-uploads` after a snapshot: requests and wall time of one batch (issue 23).

One emulator process serves the catalog; the snapshot of D is exported once, then each run
uploads `uploads` images to the emulator (its test aid) and times `export --new-uploads`
through the launcher: a few requests (uploads / per_page + 1) and about a second, whatever
the catalog's size, not a walk of the catalog.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from tests.bench.changes import _launch, run_night
from tests.bench.harness import PYTHON, Emulator, ExportRun, check, emulator, median, toml_config
from tests.bench.scenarios import Row, export_config

DATE = "2026-01-01"


def add_uploads(emu: Emulator, count: int) -> None:
    """Upload `count` images to the emulator now."""
    root = emu.base_url.removesuffix("/client/v4")
    url = f"{root}/_emulator/accounts/{emu.account_id}/uploads?count={count}"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST")) as reply:
        reply.read()


def run_batch(emu: Emulator, out: Path, config: dict[str, Any]) -> ExportRun:
    """Run one `export --new-uploads` into `out`; return its cost and its batch's manifest."""
    tables = {k: dict(v) for k, v in config.items()}
    tables.setdefault("export", {})["output"] = str(out)
    path = out.parent / "batch.toml"
    path.write_text(toml_config(tables))
    command = [PYTHON, "-m", "exporter", "export", "--config", str(path), "--new-uploads"]
    before = set(out.glob(f"new_uploads/snapshot_date={DATE}/batch=*"))
    run = _launch([*command, "--log-format", "json", "-q"], emu.env(), out / "none")
    (batch,) = set(out.glob(f"new_uploads/snapshot_date={DATE}/batch=*")) - before
    run.manifest = orjson.loads((batch / "_manifest.json").read_bytes())
    return run


def measure(images: int, uploads: int, repeat: int) -> Row:
    """Return the row of one batch of `uploads` after a snapshot of `images`: medians."""
    config = export_config()
    work = Path(tempfile.mkdtemp(prefix="cf-bench-new-"))
    try:
        with emulator(images) as emu:
            out = work / "out"
            check(run_night(emu, out, DATE, config), images)
            runs = []
            for _ in range(repeat):
                add_uploads(emu, uploads)
                began = time.perf_counter()
                run = run_batch(emu, out, config)
                run.wall_s = time.perf_counter() - began
                check(run, uploads)
                runs.append(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    requests = [int(r.counts.get("requests", 0)) for r in runs]
    wall = median([r.wall_s for r in runs])
    return Row(
        scenario="new_uploads",
        variant=f"{uploads} new after {images:,} (per_page 1000)",
        images=uploads,
        runs=len(runs),
        wall_s=wall,
        images_per_s=uploads / wall if wall else 0.0,
        cpu_s=median([r.cpu_s for r in runs]),
        peak_rss_mb=median([r.peak_rss_mb for r in runs]),
        extra={
            "requests": max(requests),
            "export_s": round(median([r.export_seconds() for r in runs]), 3),
        },
    )
