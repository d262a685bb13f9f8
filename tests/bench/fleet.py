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


def _account_id(index: int) -> str:
    return f"{index:032x}"


def fleet_rows(accounts: int, images: int, repeat: int, workers: tuple[int, ...]) -> list[Any]:
    """Return one row per `--workers` value: medians over `repeat` runs of the whole fleet."""
    from tests.bench.scenarios import Row

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
                wall = median([r[0] for r in runs])
                rows.append(
                    Row(
                        scenario="fleet",
                        variant=f"{accounts} accounts x {images:,}, --workers {count}",
                        images=accounts * images,
                        runs=repeat,
                        wall_s=wall,
                        images_per_s=accounts * images / wall,
                        cpu_s=median([r[1] for r in runs]),
                        peak_rss_mb=median([r[2] for r in runs]),
                    )
                )
            base = rows[0].peak_rss_mb or 1.0
            for row in rows:
                row.extra["rss_vs_one_worker"] = round((row.peak_rss_mb or 0.0) / base, 2)
            return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(
    work: Path, env: dict[str, str], workers: int, expected: int
) -> tuple[float, float, float]:
    """Run the fleet once into a fresh output; return (wall s, cpu s, peak RSS MB)."""
    out = work / "out"
    shutil.rmtree(out, ignore_errors=True)
    command = [PYTHON, "-m", "exporter", "fleet", "--accounts", str(work / "accounts.toml")]
    command += ["--config", str(work / "bench.toml"), "--output", str(out)]
    command += ["--snapshot-date", DATE, "--workers", str(workers), "--log-format", "json", "-q"]
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
        for path in out.glob(f"account_id=*/snapshot_date={DATE}/_manifest.json")
    )
    if usage["exit_code"] != 0 or rows != expected:
        raise RuntimeError(
            f"fleet exit {usage['exit_code']}, {rows} of {expected} images: "
            f"{launched.stderr.decode(errors='replace')[-1500:]}"
        )
    return wall, float(usage["cpu_s"]), int(usage["maxrss_kb"]) / 1024
