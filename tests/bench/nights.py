"""Second nights (issue 22): a night with its change set, the steady state pods are sized for.

Night 1 exports the nasty catalog (`emulator --profile nasty`) of n images; night 2 exports
the same catalog evolved one night (`emulator --night 1 --churn c`, see
`exporter.emulator.nights`) into the same output, so night 2 walks, publishes and diffs as a
user's second night does. Its peak RSS is the exporter process's (and any process it waits
for: `launch.py`). `tree` runs another revision's exporter (`baseline.py`) on the same
emulators, alternately with this checkout's, so both see the same load.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.bench.harness import PYTHON, Emulator, ExportRun, check, emulator, median, toml_config

DATES = ("2026-01-01", "2026-01-02")
NASTY = ("--profile", "nasty")
# Emulator churn giving ~1% and ~10% of the images as change rows (uploads c, deletions c/2,
# edits c/4 per field, re-uploads c/10); 1.0 gives more change rows than images.
CHURN = {"1%": 0.004, "10%": 0.04, "mass": 1.0}


@dataclass
class Night:
    """One second night: its export run and its change counts."""

    run: ExportRun
    changes: dict[str, int]
    images_lost: int = 0  # by a baseline revision's first night (`harness.check`)


def second_night(
    images: int,
    churn: float,
    config: Mapping[str, Mapping[str, Any]],
    tree: Path | None = None,
    emulator_args: Sequence[str] = (),
) -> Night:
    """Export night 1 then night 2 into a fresh output; return night 2's cost and changes.

    `emulator_args` go to both nights' emulators (a baseline's `BEFORE_TIE_FIX`)."""
    from tests.bench.changes import _launch

    work = Path(tempfile.mkdtemp(prefix="cf-bench-nights-"))
    out = work / "out"
    try:
        with emulator(images, args=[*NASTY, *emulator_args]) as emu:
            first = _night(emu, out, DATES[0], config, tree, _launch)
            lost = check(first, images, baseline=tree is not None)
        args = [*NASTY, *emulator_args, "--night", "1", "--churn", str(churn)]
        with emulator(images, args=args) as emu:
            run = _night(emu, out, DATES[1], config, tree, _launch)
            check(run, None)
        manifest = out / f"changes/snapshot_date={DATES[1]}/_manifest.json"
        counts = dict(orjson.loads(manifest.read_bytes())["counts"])
        return Night(run, counts, lost)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _night(
    emu: Emulator,
    out: Path,
    date: str,
    config: Mapping[str, Mapping[str, Any]],
    tree: Path | None,
    launch: Any,
) -> ExportRun:
    tables = {k: dict(v) for k, v in config.items()}
    tables.setdefault("export", {})["output"] = str(out)
    path = out.parent / "bench.toml"
    path.write_text(toml_config(tables))
    python = [PYTHON] if tree is None else [PYTHON, "-P"]
    command = [*python, "-m", "exporter", "export", "--config", str(path)]
    command += ["--snapshot-date", date, "--log-format", "json", "-q"]
    env = emu.env() if tree is None else {**emu.env(), "PYTHONPATH": str(tree)}
    return launch(command, env, out / f"snapshot_date={date}" / "_manifest.json")


def rows_for(
    sizes: Sequence[tuple[int, str]],
    repeat: int,
    tree: Path | None,
    label: str,
    emulator_args: Sequence[str] = (),
) -> list[Any]:
    """Return one row per (images, churn name): medians of night 2 over `repeat` runs."""
    from tests.bench.scenarios import Row, export_config

    config = export_config(changes={"max_removed_share": 1.0})
    rows = []
    for images, name in sizes:
        nights = [
            second_night(images, CHURN[name], config, tree, emulator_args) for _ in range(repeat)
        ]
        wall = median([n.run.wall_s for n in nights])
        counts = nights[0].changes
        extra: dict[str, int] = {"change_rows": counts.get("rows", 0)}
        lost = max(n.images_lost for n in nights)
        if lost:
            extra["images_lost"] = lost
        rows.append(
            Row(
                scenario="second-night",
                variant=f"{images:,} nasty, {name} changed{label}",
                images=nights[0].run.images,
                runs=repeat,
                wall_s=wall,
                images_per_s=nights[0].run.images / wall if wall else 0.0,
                cpu_s=median([n.run.cpu_s for n in nights]),
                peak_rss_mb=median([n.run.peak_rss_mb for n in nights]),
                extra=extra,
            )
        )
    return rows
