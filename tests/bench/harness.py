"""Processes and measurements: the emulator and the exporter each in their own process.

The exporter's CPU seconds and peak RSS come from `os.wait4` in a small launcher process
(`launch.py`: the rusage is the exporter's own, not inherited from this process), the
emulator's CPU from `/proc/<pid>/stat` read before and after each export, so a reader sees
which side was the bottleneck. Nothing here imports the exporter's pipeline: the exporter
runs exactly as a user runs it, `python -m exporter export`.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.helpers import clean_env

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parents[2]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# No rate limit in throughput scenarios: the pacer's default (1200/300 s) would dominate.
UNPACED = {"quota": 10_000_000, "window_s": 300.0}


def process_cpu_seconds(pid: int) -> float:
    """Return utime + stime of a live process, from /proc (0.0 where /proc is missing)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of stat


@dataclass
class Emulator:
    """An emulator served by `python -m exporter emulator` in its own process."""

    process: subprocess.Popen[bytes]
    base_url: str
    account_id: str
    token: str
    images: int

    def env(self) -> dict[str, str]:
        env = clean_env()
        env.update(
            CLOUDFLARE_API_TOKEN=self.token,
            CLOUDFLARE_ACCOUNT_ID=self.account_id,
            CLOUDFLARE_BASE_URL=self.base_url,
        )
        return env

    @property
    def batch_base_url(self) -> str:
        return self.base_url.removesuffix("/client/v4") + "/batch"

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)


def emulator_args(
    *,
    latency_s: float = 0.0,
    rate_quota: int | None = None,
    rate_window_s: float | None = None,
    lockout_s: float | None = None,
) -> list[str]:
    """Return the emulator flags of one scenario."""
    args = ["--latency", str(latency_s)] if latency_s else []
    if rate_quota is not None:
        args += ["--rate-quota", str(rate_quota)]
    if rate_window_s is not None:
        args += ["--rate-window", str(rate_window_s)]
    if lockout_s is not None:
        args += ["--lockout", str(lockout_s)]
    return args


@contextmanager
def emulator(images: int, seed: int = 1, args: Sequence[str] = ()) -> Iterator[Emulator]:
    """Run the emulator on a free loopback port until the block exits."""
    command = [PYTHON, "-m", "exporter", "emulator", "--port", "0"]
    command += ["--images", str(images), "--seed", str(seed), *args]
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=errors, env=clean_env(), cwd=ROOT
        )
        try:
            banner: dict[str, str] = {}
            assert process.stdout is not None
            for raw in process.stdout:
                key, sep, value = raw.decode().strip().partition("=")
                if sep:
                    banner[key] = value
                if "CLOUDFLARE_API_TOKEN" in banner:
                    break
            if "CLOUDFLARE_API_TOKEN" not in banner:
                errors.seek(0)
                raise RuntimeError(f"emulator did not start: {errors.read().decode()[-2000:]}")
            yield Emulator(
                process=process,
                base_url=banner["CLOUDFLARE_BASE_URL"],
                account_id=banner["CLOUDFLARE_ACCOUNT_ID"],
                token=banner["CLOUDFLARE_API_TOKEN"],
                images=images,
            )
        finally:
            process.terminate()
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()


def toml_config(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """Return TOML text for flat tables of scalars and string lists (all the bench needs)."""
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


@dataclass
class ExportRun:
    """What one exporter process did and cost."""

    exit_code: int
    wall_s: float
    cpu_s: float  # user + system of the exporter process
    peak_rss_mb: float
    emulator_cpu_s: float
    manifest: dict[str, Any] = field(default_factory=dict)
    stderr: str = ""

    @property
    def images(self) -> int:
        return int(self.manifest.get("counts", {}).get("rows") or 0)

    @property
    def counts(self) -> dict[str, Any]:
        return dict(self.manifest.get("counts", {}))

    def bytes_by_format(self) -> dict[str, int]:
        """Return the snapshot's bytes per output format (by file suffix)."""
        sizes: dict[str, int] = {}
        for entry in self.manifest.get("files", []):
            kind = str(entry.get("format") or entry.get("path", "?"))
            sizes[kind] = sizes.get(kind, 0) + int(entry.get("bytes", 0))
        return sizes

    def export_seconds(self) -> float:
        """Return the manifest's started_at -> finished_at (no interpreter start-up)."""
        from datetime import datetime

        started = self.manifest.get("started_at")
        finished = self.manifest.get("finished_at")
        if not started or not finished:
            return self.wall_s
        parse = datetime.fromisoformat
        return (parse(finished) - parse(started)).total_seconds()


def run_export(
    emu: Emulator,
    *,
    config: Mapping[str, Mapping[str, Any]],
    args: Sequence[str] = (),
    timeout_s: float = 1800.0,
    tree: Path | None = None,
) -> ExportRun:
    """Run `python -m exporter export` once into a fresh directory; measure it.

    `tree` runs the `exporter` package found there (another revision, see `baseline.py`)
    instead of this checkout's: `-P` keeps the working directory off `sys.path`, so the
    PYTHONPATH entry comes before the installed (editable) package.
    """
    work = Path(tempfile.mkdtemp(prefix="cf-bench-"))
    try:
        tables = {k: dict(v) for k, v in config.items()}
        tables.setdefault("export", {})["output"] = str(work / "out")
        (work / "bench.toml").write_text(toml_config(tables))
        python = [PYTHON] if tree is None else [PYTHON, "-P"]
        command = [*python, "-m", "exporter", "export", "--config", str(work / "bench.toml")]
        command += ["--snapshot-date", "2026-01-01", "--log-format", "json", "-q", *args]
        with open(work / "stderr", "wb") as errors:
            before = emu.cpu_seconds()
            start = time.perf_counter()
            launcher = subprocess.Popen(
                [PYTHON, "-m", "tests.bench.launch", *command],
                stdout=subprocess.PIPE,
                stderr=errors,
                env=emu.env() if tree is None else {**emu.env(), "PYTHONPATH": str(tree)},
                cwd=ROOT,
                start_new_session=True,  # a timeout ends the launcher and the exporter
            )
            try:
                out, _ = launcher.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(launcher.pid, signal.SIGKILL)
                out, _ = launcher.communicate()
            wall = time.perf_counter() - start
            emulator_cpu = emu.cpu_seconds() - before
        usage = orjson.loads(out) if out.strip() else {"exit_code": -9, "cpu_s": 0, "maxrss_kb": 0}
        manifest_path = work / "out" / "snapshot_date=2026-01-01" / "_manifest.json"
        manifest = orjson.loads(manifest_path.read_bytes()) if manifest_path.exists() else {}
        return ExportRun(
            exit_code=int(usage["exit_code"]),
            wall_s=wall,
            cpu_s=float(usage["cpu_s"]),
            peak_rss_mb=int(usage["maxrss_kb"]) / 1024,
            emulator_cpu_s=emulator_cpu,
            manifest=manifest,
            stderr=(work / "stderr").read_text(errors="replace")[-4000:],
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def check(run: ExportRun, expected_images: int | None, *, baseline: bool = False) -> int:
    """Raise when an export failed or lost images: a fast wrong answer is no benchmark.

    A `baseline` revision's export may lose images (revisions before the walker's tie fix
    do under the nasty catalog's tie order): that is returned, the images lost, not raised,
    so the side-by-side figures still come out, with the loss beside them.
    """
    if run.exit_code != 0:
        raise RuntimeError(f"export failed (exit {run.exit_code}): {run.stderr[-1500:]}")
    if expected_images is None or run.images == expected_images:
        return 0
    if not baseline:
        raise RuntimeError(f"export wrote {run.images} images, expected {expected_images}")
    return expected_images - run.images
