"""The fleet scenario (issue 14): many small accounts in one `fleet` run, --workers 1 vs 8.

One emulator serves every account (each its own token and seed); the fleet process runs under
the rusage launcher, so its peak RSS is its own. Every account must publish its whole catalog.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from tests.bench.harness import PYTHON, ROOT, UNPACED, emulator, median, toml_config

DATE = "2026-01-01"
NEXT_DATE = "2026-01-02"


def _account_id(index: int) -> str:
    return f"{index:032x}"


def fleet_rows(accounts: int, images: int, repeat: int, workers: tuple[int, ...]) -> list[Any]:
    """Return one row per `--workers` value: medians over `repeat` runs of the whole fleet."""

    work = Path(tempfile.mkdtemp(prefix="cf-bench-fleet-"))
    try:
        served = work / "emulator-accounts.toml"
        served.write_text(
            "".join(
                f'[[account]]\naccount_id = "{_account_id(i)}"\ntoken = "bench-{i}"\n'
                f"images = {images}\nseed = {i}\n\n"
                for i in range(1, accounts)
            )
        )
        with emulator(images, 1, ["--accounts-file", str(served)]) as emu:
            tokens = {emu.account_id: emu.token}
            tokens |= {_account_id(i): f"bench-{i}" for i in range(1, accounts)}
            (work / "accounts.toml").write_text(
                "".join(
                    f'[[account]]\nid = "{ident}"\ntoken_env = "BENCH_TOKEN_{n}"\n\n'
                    for n, ident in enumerate(tokens)
                )
            )
            (work / "bench.toml").write_text(toml_config({"walk": dict(UNPACED)}))
            env = {k: v for k, v in emu.env().items() if not k.startswith("CLOUDFLARE_API")}
            env |= {f"BENCH_TOKEN_{n}": token for n, token in enumerate(tokens.values())}
            rows = []
            for count in workers:
                runs = [_run(work, env, count, accounts * images) for _ in range(repeat)]
                variant = f"{accounts} accounts x {images:,}, --workers {count}"
                rows.append(_median_row("fleet", variant, accounts * images, runs))
            base = rows[0].peak_rss_mb or 1.0
            for row in rows:
                row.extra["rss_vs_one_worker"] = round((row.peak_rss_mb or 0.0) / base, 2)
            return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(
    work: Path,
    env: dict[str, str],
    workers: int,
    expected: int | None,
    *,
    date: str = DATE,
    fresh: bool = True,
) -> tuple[float, float, float]:
    """Run the fleet once (into a fresh output unless `fresh` is false); return (wall s,
    cpu s, peak RSS MB). `expected` images in all, or None: any count, every account ok."""
    out = work / "out"
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    command = [PYTHON, "-m", "exporter", "fleet", "--accounts", str(work / "accounts.toml")]
    command += ["--config", str(work / "bench.toml"), "--output", str(out)]
    command += ["--snapshot-date", date, "--workers", str(workers), "--log-format", "json", "-q"]
    start = time.perf_counter()
    launched = subprocess.run(
        [PYTHON, "-m", "tests.bench.launch", *command],
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=3600,
        check=False,
    )
    wall = time.perf_counter() - start
    usage = orjson.loads(launched.stdout)
    rows = sum(
        int(orjson.loads(path.read_bytes())["counts"]["rows"])
        for path in out.glob(f"account_id=*/snapshot_date={date}/_manifest.json")
    )
    if usage["exit_code"] != 0 or (expected is not None and rows != expected):
        raise RuntimeError(
            f"fleet exit {usage['exit_code']}, {rows} of {expected} images: "
            f"{launched.stderr.decode(errors='replace')[-1500:]}"
        )
    return wall, float(usage["cpu_s"]), int(usage["maxrss_kb"]) / 1024


def second_night_rows(accounts: int, images: int, repeat: int, workers: int) -> list[Any]:
    """Return two rows of second nights at `--workers`: `accounts` accounts of `images` each,
    and one account of `accounts * images`, run alternately (issue 22: a fleet's cost is its
    images, so its wall must stay within 2x the single account's)."""

    shapes = {"fleet": (accounts, images), "one account": (1, accounts * images)}
    walls: dict[str, list[tuple[float, float, float]]] = {name: [] for name in shapes}
    for _ in range(repeat):
        for name, (count, size) in shapes.items():
            walls[name].append(_second_night(count, size, workers))
    rows = []
    for name, (count, size) in shapes.items():
        variant = f"{name}: {count} x {size:,}, --workers {workers}"
        rows.append(_median_row("fleet-night-2", variant, count * size, walls[name]))
    rows[0].extra["wall_vs_one_account"] = round(rows[0].wall_s / rows[1].wall_s, 2)
    return rows


def _second_night(accounts: int, images: int, workers: int) -> tuple[float, float, float]:
    """Export night 0 then night 1 of every account (fleet runs); return night 1's cost."""
    work = Path(tempfile.mkdtemp(prefix="cf-bench-fleet2-"))
    try:
        served = work / "emulator-accounts.toml"
        served.write_text(
            "".join(
                f'[[account]]\naccount_id = "{_account_id(i)}"\ntoken = "bench-{i}"\n'
                f"images = {images}\nseed = {i}\n\n"
                for i in range(1, accounts)
            )
        )
        cost = (0.0, 0.0, 0.0)
        for night, date in ((0, DATE), (1, NEXT_DATE)):
            args = ["--night", str(night), "--churn", "0.004"]
            if accounts > 1:
                args += ["--accounts-file", str(served)]
            with emulator(images, 1, args) as emu:
                tokens = {emu.account_id: emu.token}
                tokens |= {_account_id(i): f"bench-{i}" for i in range(1, accounts)}
                (work / "accounts.toml").write_text(
                    "".join(
                        f'[[account]]\nid = "{ident}"\ntoken_env = "BENCH_TOKEN_{n}"\n\n'
                        for n, ident in enumerate(tokens)
                    )
                )
                (work / "bench.toml").write_text(toml_config({"walk": dict(UNPACED)}))
                env = {k: v for k, v in emu.env().items() if not k.startswith("CLOUDFLARE_API")}
                env |= {f"BENCH_TOKEN_{n}": token for n, token in enumerate(tokens.values())}
                cost = _run(work, env, workers, None, date=date, fresh=night == 0)
        return cost
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _median_row(
    scenario: str, variant: str, images: int, runs: list[tuple[float, float, float]]
) -> Any:
    """Return the row of `runs` (wall, CPU, peak RSS each): the median of each figure."""
    from tests.bench.scenarios import Row  # scenarios imports this module

    wall = median([r[0] for r in runs])
    return Row(
        scenario=scenario,
        variant=variant,
        images=images,
        runs=len(runs),
        wall_s=wall,
        images_per_s=images / wall,
        cpu_s=median([r[1] for r in runs]),
        peak_rss_mb=median([r[2] for r in runs]),
    )
