"""The results table, the machine description and the saved JSON."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from tests.bench.scenarios import Plan, Row

PACKAGES = ("cf-images-exporter", "aiohttp", "anyio", "orjson", "pyarrow", "tenacity")
COLUMNS = (
    ("scenario", "scenario", "<"),
    ("variant", "variant", "<"),
    ("images", "images", ">"),
    ("wall_s", "wall s", ">"),
    ("images_per_s", "images/s", ">"),
    ("cpu_s", "cpu s", ">"),
    ("peak_rss_mb", "rss MB", ">"),
    ("emulator_cpu_s", "emu cpu s", ">"),
)
CORE_KEYS = {"runs", *(key for key, _, _ in COLUMNS)}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_table(rows: list[Row]) -> str:
    """Return the rows as an aligned text table; scenario extras go to a last column."""
    dicts = [row.to_dict() for row in rows]
    header = [title for _, title, _ in COLUMNS] + ["notes"]
    body = []
    for data in dicts:
        notes = ", ".join(f"{k}={_cell(v)}" for k, v in data.items() if k not in CORE_KEYS)
        body.append([_cell(data[key]) for key, _, _ in COLUMNS] + [notes])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    aligns = [align for _, _, align in COLUMNS] + ["<"]

    def fmt(line: list[str]) -> str:
        return "  ".join(f"{c:{a}{w}}" for c, a, w in zip(line, aligns, widths, strict=True))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(line) for line in body)]).rstrip()


def machine() -> dict[str, Any]:
    """Return what the numbers depend on: CPU, cores, memory, Python, packages, revision."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "git_revision": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    return round(pages * size / 2**30, 1)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def save(path: Path, rows: list[Row], plan: Plan, seconds: float) -> Path:
    """Write the results with the machine and the plan as JSON; return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "machine": machine(),
        "plan": dataclasses.asdict(plan),
        "seconds": round(seconds, 1),
        "results": [row.to_dict() for row in rows],
    }
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    return path
