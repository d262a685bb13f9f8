"""The scenarios of issue 7 (and the numbers issues 3, 4 and 5 ask for), as plain functions.

Each scenario starts its own emulator process with the flags it needs, runs the exporter
`repeat` times and returns table rows with medians. `Plan` holds the sizes: the full suite
(`make bench`), `--quick` (a smoke run of a couple of minutes) or `tiny` (the pytest smoke).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.bench.harness import (
    UNPACED,
    Emulator,
    ExportRun,
    check,
    emulator,
    emulator_args,
    median,
    run_export,
)


@dataclass(frozen=True)
class Plan:
    """Sizes of one bench run."""

    repeat: int = 3
    throughput_images: int = 1_000_000
    memory_images: tuple[int, ...] = (100_000, 1_000_000, 3_000_000)
    nasty_images: tuple[int, ...] = (50_000, 300_000, 3_000_000)
    latency_images: int = 200_000
    latency_s: float = 0.1
    paced_images: int = 150_000
    paced_quota: int = 20
    paced_window_s: float = 2.0
    stage_images: int = 100_000
    checkpoint_part_rows: int = 10_000
    changes_images: tuple[int, ...] = (1_000_000, 3_000_000)
    fleet_accounts: int = 100
    fleet_images: int = 2_000
    # A round trip to the API, added to every emulator reply in the fleet scenarios beside
    # zero latency: see docs/PERFORMANCE.md ("Fleets under latency") for why this figure.
    fleet_latency_s: float = 0.05
    report_images: tuple[int, ...] = (1_000_000, 3_000_000)
    new_uploads_images: int = 1_000_000
    new_uploads: int = 500
    night_images: tuple[int, ...] = (50_000, 1_000_000, 3_000_000)  # second nights, ~1% changed
    # Runs of each second night and of the big-accounts fleet, at most `repeat`: each builds
    # its first night too (minutes at 3,000,000 images), and their measure, the peak RSS,
    # moved by a few MB between runs where wall times moved by 2x.
    night_repeat: int = 1
    night_more: tuple[tuple[int, str], ...] = ((1_000_000, "10%"), (300_000, "mass"))
    small_accounts: int = 24  # second nights of a fleet of small accounts vs one account
    small_images: int = 1_000
    # a fleet's second nights with large accounts (compared with DuckDB) among small ones
    big_accounts: tuple[int, int] = (4, 300_000)
    big_fleet_small: tuple[int, int] = (20, 1_000)

    @classmethod
    def quick(cls, repeat: int = 1) -> Plan:
        """About two minutes: every scenario, smaller."""
        return cls(
            repeat=repeat,
            throughput_images=100_000,
            memory_images=(20_000, 100_000),
            nasty_images=(20_000, 100_000),
            latency_images=20_000,
            paced_images=30_000,
            paced_quota=10,
            paced_window_s=1.0,
            stage_images=20_000,
            checkpoint_part_rows=5_000,
            changes_images=(100_000,),
            fleet_accounts=20,
            fleet_images=1_000,
            report_images=(100_000,),
            new_uploads_images=100_000,
            night_images=(20_000, 100_000),
            night_more=((100_000, "10%"), (20_000, "mass")),
            small_accounts=8,
            small_images=500,
            big_accounts=(2, 30_000),
            big_fleet_small=(4, 500),
        )

    @classmethod
    def tiny(cls) -> Plan:
        """Seconds, for the smoke test: every scenario's machinery on a tiny catalog."""
        return cls(
            repeat=1,
            throughput_images=2_000,
            memory_images=(500, 2_000),
            nasty_images=(500, 2_000),
            latency_images=300,
            latency_s=0.01,
            paced_images=300,
            paced_quota=20,
            paced_window_s=0.5,
            stage_images=300,
            checkpoint_part_rows=1_000,
            changes_images=(500,),
            fleet_accounts=3,
            fleet_images=50,
            fleet_latency_s=0.01,
            report_images=(500,),
            new_uploads_images=2_000,
            new_uploads=50,
            night_images=(500,),
            night_more=((500, "mass"),),
            small_accounts=2,
            small_images=50,
            big_accounts=(1, 500),
            big_fleet_small=(1, 50),
        )


@dataclass
class Row:
    """One line of the results table: medians over `runs` runs."""

    scenario: str
    variant: str
    images: int
    runs: int
    wall_s: float
    images_per_s: float
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    emulator_cpu_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "variant": self.variant,
            "images": self.images,
            "runs": self.runs,
            "wall_s": round(self.wall_s, 3),
            "images_per_s": round(self.images_per_s),
            "cpu_s": _round(self.cpu_s),
            "peak_rss_mb": _round(self.peak_rss_mb, 1),
            "emulator_cpu_s": _round(self.emulator_cpu_s),
            **self.extra,
        }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def summarize(
    scenario: str,
    variant: str,
    runs: Sequence[ExportRun],
    extra: Mapping[str, Any] | None = None,
) -> Row:
    """Return the row of medians over `runs` (all of the same export)."""
    wall = median([r.wall_s for r in runs])
    images = runs[0].images
    return Row(
        scenario=scenario,
        variant=variant,
        images=images,
        runs=len(runs),
        wall_s=wall,
        images_per_s=images / wall if wall else 0.0,
        cpu_s=median([r.cpu_s for r in runs]),
        peak_rss_mb=median([r.peak_rss_mb for r in runs]),
        emulator_cpu_s=median([r.emulator_cpu_s for r in runs]),
        extra=dict(extra or {}),
    )


def repeat(emu: Emulator, plan: Plan, config: Mapping[str, Mapping[str, Any]]) -> list[ExportRun]:
    """Run the same export `plan.repeat` times; every run must export the whole catalog."""
    runs = []
    for _ in range(plan.repeat):
        run = run_export(emu, config=config)
        check(run, emu.images)
        runs.append(run)
    return runs


def export_config(
    *, per_page: int = 1000, formats: Sequence[str] = ("parquet",), **tables: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Return the config tables of one export (unpaced unless `walk` says otherwise)."""
    config: dict[str, dict[str, Any]] = {
        "export": {"formats": list(formats)},
        "request": {"per_page": per_page},
        "walk": dict(UNPACED),
    }
    for name, values in tables.items():
        config.setdefault(name, {}).update(values)
    return config


# -- scenarios ------------------------------------------------------------------------------


def throughput(plan: Plan) -> list[Row]:
    """Per_page 1000 and 10000, Parquet and NDJSON, with snapshot bytes per format; then the
    checkpoint overhead: the default (a part per 100,000 rows or 60 s) against one part per
    run, and parts of `checkpoint_part_rows` rows (one checkpoint per part)."""
    rows = []
    with emulator(plan.throughput_images) as emu:
        for fmt in ("parquet", "ndjson"):
            for per_page in (1000, 10_000):
                runs = repeat(emu, plan, export_config(per_page=per_page, formats=[fmt]))
                sizes = runs[0].bytes_by_format()
                extra = {
                    "snapshot_mb": round(sizes.get(fmt, 0) / 2**20, 1),
                    "parts": len(runs[0].manifest.get("files", [])),
                }
                rows.append(summarize("throughput", f"{fmt} per_page={per_page}", runs, extra))
        one_part = {"part_rows": 10**9, "part_s": 10.0**6}
        single = summarize(
            "checkpoint", "one part", repeat(emu, plan, export_config(parquet=one_part))
        )
        rows.append(single)
        rows[0].extra["wall_vs_one_part"] = round(rows[0].wall_s / single.wall_s, 3)
        config = export_config(parquet={"part_rows": plan.checkpoint_part_rows})
        runs = repeat(emu, plan, config)
        parts = len(runs[0].manifest.get("files", []))
        variant = f"parquet per_page=1000 part_rows={plan.checkpoint_part_rows}"
        row = summarize("checkpoint", variant, runs, {"parts": parts})
        row.extra["wall_vs_one_part"] = round(row.wall_s / single.wall_s, 3)
        rows.append(row)
    return rows


def memory(plan: Plan) -> list[Row]:
    """Peak RSS of the exporter by catalog size (Parquet, per_page 1000)."""
    rows = []
    for images in plan.memory_images:
        with emulator(images) as emu:
            runs = repeat(emu, plan, export_config())
            rows.append(summarize("memory", f"{images:,} images", runs))
    _rss_vs_smallest(rows)
    return rows


def nasty(plan: Plan) -> list[Row]:
    """Issue 12's catalog (`emulator --profile nasty`), per_page 1000: peak RSS from the
    smallest to the largest size, and this checkout beside `NASTY_BASELINES`: the revision
    before issue 22's work (NIGHTS_BASELINE, also before the walker's tie fix and the fields
    the reference does not list) and the one just before its first merge (ISSUE22_START).

    The exporters run alternately, each against its emulator of the same catalog (a revision
    before the tie fix gets ties in id order: `BEFORE_TIE_FIX`), so a change in the machine's
    load during the scenario falls on all alike.
    """
    from contextlib import ExitStack

    from tests.bench.baseline import NASTY_BASELINES, revision_tree

    rows: list[Row] = []
    baselines: dict[str, list[Row]] = {revision: [] for revision, _ in NASTY_BASELINES}
    nasty = ["--profile", "nasty"]
    with ExitStack() as trees:
        olds = [
            (revision, trees.enter_context(revision_tree(revision)), args)
            for revision, args in NASTY_BASELINES
        ]
        for images in plan.nasty_images:
            with ExitStack() as emulators:
                emu = emulators.enter_context(emulator(images, args=nasty))
                serving = {
                    revision: emulators.enter_context(emulator(images, args=[*nasty, *args]))
                    for revision, tree, args in olds
                    if tree is not None
                }
                now: list[ExportRun] = []
                then: dict[str, list[ExportRun]] = {revision: [] for revision in serving}
                for _ in range(plan.repeat):
                    now.append(checked(run_export(emu, config=export_config()), images))
                    for revision, tree, _args in olds:
                        if tree is None:
                            continue
                        run = run_export(serving[revision], config=export_config(), tree=tree)
                        check(run, images, baseline=True)
                        then[revision].append(run)
            rows.append(summarize("nasty", f"{images:,} images", now))
            for revision, runs in then.items():
                variant = f"{images:,} images @{revision}"
                baselines[revision].append(summarize("nasty", variant, runs))
    _rss_vs_smallest(rows)
    for revision, old_rows in baselines.items():
        _rss_vs_smallest(old_rows)
        for row, old_row in zip(rows, old_rows, strict=False):
            row.extra[f"speedup_vs_{revision}"] = round(row.images_per_s / old_row.images_per_s, 2)
            if row.cpu_s and old_row.cpu_s:  # the same ratio in CPU time, which load moves less
                row.extra[f"cpu_speedup_vs_{revision}"] = round(old_row.cpu_s / row.cpu_s, 2)
            if row.peak_rss_mb and old_row.peak_rss_mb:
                row.extra[f"rss_vs_{revision}"] = round(row.peak_rss_mb / old_row.peak_rss_mb, 2)
    return [*rows, *(row for old_rows in baselines.values() for row in old_rows)]


def checked(run: ExportRun, images: int) -> ExportRun:
    """Return `run` once it is known to have exported the whole catalog."""
    check(run, images)
    return run


def _rss_vs_smallest(rows: Sequence[Row]) -> None:
    """Note each row's peak RSS against the first (smallest catalog) row's."""
    base = rows[0].peak_rss_mb if rows else None
    for row in rows:
        if base and row.peak_rss_mb is not None:
            row.extra["rss_vs_smallest"] = round(row.peak_rss_mb / base, 2)


def latency(plan: Plan) -> list[Row]:
    """Latency-bound: each page takes `latency_s`; single cursor vs both ends vs batch API."""
    rows = []
    args = emulator_args(latency_s=plan.latency_s)
    with emulator(plan.latency_images, args=args) as emu:
        variants: list[tuple[str, dict[str, Any]]] = [
            ("single cursor", {"mode": "single"}),
            ("both ends", {"mode": "both"}),
            ("batch API, single cursor", {"mode": "single", "batch_api": True}),
            ("batch API, both ends", {"mode": "both", "batch_api": True}),
        ]
        configs = [
            export_config(walk={**walk, "batch_base_url": emu.batch_base_url})
            if walk.get("batch_api")
            else export_config(walk=walk)
            for _, walk in variants
        ]
        # Round-robin, not variant after variant: a change in the machine's load during the
        # scenario then falls on every variant alike, and the ratios stay comparable.
        runs: list[list[ExportRun]] = [[] for _ in variants]
        for _ in range(plan.repeat):
            for done, config in zip(runs, configs, strict=True):
                done.append(checked(run_export(emu, config=config), emu.images))
        for (name, _), done in zip(variants, runs, strict=True):
            requests = int(done[0].counts.get("requests", 0))
            rows.append(summarize("latency", name, done, {"requests": requests}))
    single = rows[0].wall_s
    for row in rows:
        row.extra["wall_vs_single"] = round(row.wall_s / single, 3)
    return rows


def paced(plan: Plan) -> list[Row]:
    """A server announcing N requests per window, with lockout: the share of the run's
    allowance it used (floor(min(configured, announced) * margin) a window), and 429s.

    With the config matching the server, and with the default config (1200 per 300 s, margin
    0.95), which must follow the lower quota the server announces (issue 12)."""
    rows = []
    quota, window = plan.paced_quota, plan.paced_window_s
    lockout = max(10.0, 5 * window)  # a single 429 shows as a long stall
    args = emulator_args(rate_quota=quota, rate_window_s=window, lockout_s=lockout)
    matching = {"quota": quota, "window_s": window}
    variants: list[tuple[str, dict[str, Any], int]] = [
        ("config = server, margin=0.9", {**matching, "margin": 0.9}, math.floor(quota * 0.9)),
        ("config = server, margin=1.0", {**matching, "margin": 1.0}, quota),
        ("default config", {}, math.floor(min(1200, quota) * 0.95)),
    ]
    with emulator(plan.paced_images, args=args) as emu:
        for label, walk, allowance in variants:
            config = export_config()
            config["walk"] = walk  # empty: the options' defaults
            runs = []
            for _ in range(plan.repeat):
                # Each run starts in a fresh server window: a run before it that spent the
                # whole quota (margin 1.0) would otherwise leave this one's first request a 429.
                time.sleep(window + 0.2)
                runs.append(run_export(emu, config=config))
                check(runs[-1], emu.images)
            used = [quota_used(r, allowance, window) for r in runs]
            extra = {
                "announced": f"{quota}/{window:g}s",
                "allowance_per_s": round(allowance / window, 2),
                "requests": int(runs[0].counts.get("requests", 0)),
                "requests_per_s": round(median([u[0] for u in used]), 2),
                "allowance_used": round(median([u[1] for u in used]), 3),
                "throttled_429": max(int(r.counts.get("throttled", 0)) for r in runs),
            }
            variant = f"server {quota}/{window:g}s, {label}"
            rows.append(summarize("paced", variant, runs, extra))
    return rows


def quota_used(run: ExportRun, quota: int, window: float) -> tuple[float, float]:
    """Return requests/s over the export and the share of `quota` (an allowance) it used.

    The share is the fastest legal schedule of the run's requests (a full quota per window,
    the first window free) over the export's duration.
    """
    seconds = run.export_seconds()
    requests = int(run.counts.get("requests", 0))
    if seconds <= 0 or requests == 0:
        return 0.0, 0.0
    least = ((requests - 1) // quota) * window
    return requests / seconds, least / seconds


def changes(plan: Plan) -> list[Row]:
    """The change diff's wall and peak RSS against the export's (1% uploads a night)."""
    from tests.bench.changes import measure

    return [measure(images, plan.repeat) for images in plan.changes_images]


def stages(plan: Plan) -> list[Row]:
    """Decode, normalize and write each alone, in this process, on one core."""
    from tests.bench.stages import measure_stages

    return measure_stages(plan.stage_images, plan.repeat)


def fleet(plan: Plan) -> list[Row]:
    """A fleet of small accounts in one run: images/s overall, peak RSS at 1 and 8 workers,
    at zero latency and at `fleet_latency_s`, this checkout beside FLEET_BASELINE."""
    from tests.bench.baseline import FLEET_BASELINE, revision_tree
    from tests.bench.fleet import fleet_rows

    size = (plan.fleet_accounts, plan.fleet_images, plan.repeat, (1, 8))
    rows: list[Row] = []
    with revision_tree(FLEET_BASELINE) as old:
        for latency in (0.0, plan.fleet_latency_s):
            rows += fleet_rows(*size, latency_s=latency)
            if old is not None:
                rows += fleet_rows(*size, latency_s=latency, tree=old, suffix=f"@{FLEET_BASELINE}")
    return rows


def report(plan: Plan) -> list[Row]:
    """`report` of one nasty night: its wall and peak RSS against the export's."""
    from tests.bench.page import measure

    return [measure(images, plan.repeat) for images in plan.report_images]


def new_uploads(plan: Plan) -> list[Row]:
    """`export --new-uploads` after a snapshot: requests and wall time of one batch."""
    from tests.bench.new_uploads import measure

    return [measure(plan.new_uploads_images, plan.new_uploads, plan.repeat)]


def second_nights(plan: Plan) -> list[Row]:
    """Issue 22: the peak RSS of nights with their change set (nasty catalog), this checkout
    beside NIGHTS_BASELINE (the revision before that issue's work), run alternately."""
    from tests.bench.baseline import BEFORE_TIE_FIX, NIGHTS_BASELINE, revision_tree
    from tests.bench.nights import rows_for

    sizes = [(images, "1%") for images in plan.night_images] + list(plan.night_more)
    runs = min(plan.repeat, plan.night_repeat)
    rows: list[Row] = []
    with revision_tree(NIGHTS_BASELINE) as old:
        for size in sizes:
            rows += rows_for([size], runs, None, "")
            if old is not None:
                label = f" @{NIGHTS_BASELINE}"
                rows += rows_for([size], runs, old, label, BEFORE_TIE_FIX)
    return rows


def fleet_nights(plan: Plan) -> list[Row]:
    """Issue 22: second nights of many small accounts against one account of as many
    images, at --workers 1 and 8, at zero latency and at `fleet_latency_s`, this checkout
    beside FLEET_BASELINE."""
    from tests.bench.baseline import FLEET_BASELINE, revision_tree
    from tests.bench.fleet import second_night_rows

    size = (plan.small_accounts, plan.small_images, plan.repeat)
    rows: list[Row] = []
    with revision_tree(FLEET_BASELINE) as old:
        for latency in (0.0, plan.fleet_latency_s):
            for workers in (1, 8):
                rows += second_night_rows(*size, workers, latency_s=latency)
                if old is not None:
                    suffix = f"@{FLEET_BASELINE}"
                    rows += second_night_rows(
                        *size, workers, latency_s=latency, tree=old, suffix=suffix
                    )
    return rows


def fleet_big(plan: Plan) -> list[Row]:
    """Issue 22: second nights of a fleet with a few large accounts among small ones at
    --workers 8: the peak RSS of their change steps in one process, beside FLEET_BASELINE."""
    from tests.bench.baseline import FLEET_BASELINE, revision_tree
    from tests.bench.fleet import big_account_rows

    size = (plan.big_accounts, plan.big_fleet_small, min(plan.repeat, plan.night_repeat), 8)
    rows: list[Row] = big_account_rows(*size)
    with revision_tree(FLEET_BASELINE) as old:
        if old is not None:
            rows += big_account_rows(*size, tree=old, suffix=f"@{FLEET_BASELINE}")
    return rows


SCENARIOS: dict[str, Callable[[Plan], list[Row]]] = {
    "stages": stages,
    "throughput": throughput,
    "memory": memory,
    "nasty": nasty,
    "latency": latency,
    "paced": paced,
    "changes": changes,
    "fleet": fleet,
    "report": report,
    "new_uploads": new_uploads,
    "second-nights": second_nights,
    "fleet-nights": fleet_nights,
    "fleet-big": fleet_big,
}
