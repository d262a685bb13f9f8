"""The fleet scenarios (issues 14, 22): many small accounts in one `fleet` run, --workers 1
vs 8, with the emulator answering at once or after a round trip's latency.

One emulator serves every account (each its own token and seed); the fleet process runs under
the rusage launcher, so its peak RSS is its own. Every account must publish its whole catalog.
At zero latency in-process workers share one interpreter and have nothing to overlap; against
the API each request costs a round trip, which is what `--workers` overlaps. `tree` runs
another revision's exporter (`baseline.py`) against the same emulator.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from tests.bench.harness import PYTHON, ROOT, UNPACED, emulator, median, toml_config

DATE = "2026-01-01"
NEXT_DATE = "2026-01-02"


class Cost(NamedTuple):
    """What one fleet run cost: wall and CPU seconds, peak RSS MB, API requests in all."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    requests: int


def _latency_args(latency_s: float) -> list[str]:
    """Return the emulator's flags of `latency_s` a request, and as much again for a new
    connection's first (its TCP and TLS handshakes: two round trips of half the figure)."""
    return ["--latency", str(latency_s), "--connect-latency", str(latency_s)] if latency_s else []


def _setting(latency_s: float, suffix: str) -> str:
    """Return the words a variant carries for its latency and revision."""
    return f", latency {latency_s * 1000:.0f} ms" + (f" {suffix}" if suffix else "")


def _launcher_env(env: dict[str, str], tree: Path | None) -> dict[str, str]:
    return env if tree is None else {**env, "PYTHONPATH": str(tree)}


def _account_id(index: int) -> str:
    return f"{index:032x}"


def fleet_rows(
    accounts: int,
    images: int,
    repeat: int,
    workers: tuple[int, ...],
    *,
    latency_s: float = 0.0,
    tree: Path | None = None,
    suffix: str = "",
) -> list[Any]:
    """Return one row per `--workers` value: medians over `repeat` runs of the whole fleet
    (first nights), the emulator adding `latency_s` to every reply."""

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
        args = ["--accounts-file", str(served), *_latency_args(latency_s)]
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
            rows = []
            for count in workers:
                runs = [_run(work, env, count, accounts * images, tree=tree) for _ in range(repeat)]
                variant = f"{accounts} accounts x {images:,}{_setting(latency_s, suffix)}"
                variant += f", --workers {count}"
                rows.append(_median_row("fleet", variant, accounts * images, runs, accounts))
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
    tree: Path | None = None,
) -> Cost:
    """Run the fleet once (into a fresh output unless `fresh` is false); return its cost.
    `expected` images in all, or None: any count, every account ok. `tree`: the exporter
    found there (`-P` keeps this checkout off `sys.path`)."""
    out = work / "out"
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    python = [PYTHON] if tree is None else [PYTHON, "-P"]
    command = [*python, "-m", "exporter", "fleet", "--accounts", str(work / "accounts.toml")]
    command += ["--config", str(work / "bench.toml"), "--output", str(out)]
    command += ["--snapshot-date", date, "--workers", str(workers), "--log-format", "json", "-q"]
    start = time.perf_counter()
    launched = subprocess.run(
        [PYTHON, "-m", "tests.bench.launch", *command],
        capture_output=True,
        env=_launcher_env(env, tree),
        cwd=ROOT,
        timeout=3600,
        check=False,
    )
    wall = time.perf_counter() - start
    usage = orjson.loads(launched.stdout)
    counts = [
        orjson.loads(path.read_bytes())["counts"]
        for path in out.glob(f"account_id=*/snapshot_date={date}/_manifest.json")
    ]
    rows = sum(int(c["rows"]) for c in counts)
    if usage["exit_code"] != 0 or (expected is not None and rows != expected):
        raise RuntimeError(
            f"fleet exit {usage['exit_code']}, {rows} of {expected} images: "
            f"{launched.stderr.decode(errors='replace')[-1500:]}"
        )
    requests = sum(int(c.get("requests", 0)) for c in counts)
    return Cost(wall, float(usage["cpu_s"]), int(usage["maxrss_kb"]) / 1024, requests)


def second_night_rows(
    accounts: int,
    images: int,
    repeat: int,
    workers: int,
    *,
    latency_s: float = 0.0,
    tree: Path | None = None,
    suffix: str = "",
) -> list[Any]:
    """Return two rows of second nights at `--workers`: `accounts` accounts of `images` each,
    and one account of `accounts * images`, run alternately (issue 22: a fleet's cost is its
    images, so its wall must stay within 2x the single account's)."""

    shapes = {"fleet": (accounts, images), "one account": (1, accounts * images)}
    walls: dict[str, list[Cost]] = {name: [] for name in shapes}
    for _ in range(repeat):
        for name, (count, size) in shapes.items():
            walls[name].append(_second_night(count, size, workers, latency_s, tree))
    rows = []
    for name, (count, size) in shapes.items():
        variant = f"{name}: {count} x {size:,}{_setting(latency_s, suffix)}, --workers {workers}"
        rows.append(_median_row("fleet-night-2", variant, count * size, walls[name], count))
    rows[0].extra["wall_vs_one_account"] = round(rows[0].wall_s / rows[1].wall_s, 2)
    return rows


def _second_night(
    accounts: int | Sequence[tuple[int, str]],
    images: int,
    workers: int,
    latency_s: float,
    tree: Path | None,
) -> Cost:
    """Export night 0 then night 1 of every account (fleet runs); return night 1's cost.

    `accounts`: how many accounts of `images` classic images, or each account's (images,
    profile)."""
    shapes = [(images, "classic")] * accounts if isinstance(accounts, int) else list(accounts)
    work = Path(tempfile.mkdtemp(prefix="cf-bench-fleet2-"))
    try:
        served = work / "emulator-accounts.toml"
        served.write_text(
            "".join(
                f'[[account]]\naccount_id = "{_account_id(i)}"\ntoken = "bench-{i}"\n'
                f'images = {size}\nseed = {i}\nprofile = "{profile}"\n\n'
                for i, (size, profile) in enumerate(shapes[1:], 1)
            )
        )
        cost = Cost(0.0, 0.0, 0.0, 0)
        for night, date in ((0, DATE), (1, NEXT_DATE)):
            args = ["--night", str(night), "--churn", "0.004", *_latency_args(latency_s)]
            args += ["--profile", shapes[0][1]]
            if len(shapes) > 1:
                args += ["--accounts-file", str(served)]
            with emulator(shapes[0][0], 1, args) as emu:
                tokens = {emu.account_id: emu.token}
                tokens |= {_account_id(i): f"bench-{i}" for i in range(1, len(shapes))}
                (work / "accounts.toml").write_text(
                    "".join(
                        f'[[account]]\nid = "{ident}"\ntoken_env = "BENCH_TOKEN_{n}"\n\n'
                        for n, ident in enumerate(tokens)
                    )
                )
                (work / "bench.toml").write_text(toml_config({"walk": dict(UNPACED)}))
                env = {k: v for k, v in emu.env().items() if not k.startswith("CLOUDFLARE_API")}
                env |= {f"BENCH_TOKEN_{n}": token for n, token in enumerate(tokens.values())}
                cost = _run(work, env, workers, None, date=date, fresh=night == 0, tree=tree)
        return cost
    finally:
        shutil.rmtree(work, ignore_errors=True)


def big_account_rows(
    big: tuple[int, int],
    small: tuple[int, int],
    repeat: int,
    workers: int,
    *,
    tree: Path | None = None,
    suffix: str = "",
) -> list[Any]:
    """Return the row of second nights of a fleet mixing `big[0]` nasty accounts of `big[1]`
    images (each compared with DuckDB, over the in-memory threshold) with `small[0]` classic
    ones of `small[1]`: its peak RSS is what several large change steps at once cost."""
    shapes = [(big[1], "nasty")] * big[0] + [(small[1], "classic")] * small[0]
    runs = [_second_night(shapes, 0, workers, 0.0, tree) for _ in range(repeat)]
    variant = f"{big[0]} x {big[1]:,} nasty + {small[0]} x {small[1]:,}{suffix and ' ' + suffix}"
    images = big[0] * big[1] + small[0] * small[1]
    return [_median_row("fleet-big", f"{variant}, --workers {workers}", images, runs, len(shapes))]


def _median_row(scenario: str, variant: str, images: int, runs: list[Cost], accounts: int) -> Any:
    """Return the row of `runs`: the median of each figure, and the requests per account."""
    from tests.bench.scenarios import Row  # scenarios imports this module

    wall = median([r.wall_s for r in runs])
    return Row(
        scenario=scenario,
        variant=variant,
        images=images,
        runs=len(runs),
        wall_s=wall,
        images_per_s=images / wall,
        cpu_s=median([r.cpu_s for r in runs]),
        peak_rss_mb=median([r.peak_rss_mb for r in runs]),
        extra={"requests_per_account": round(median([r.requests for r in runs]) / accounts, 2)},
    )
