"""Test helpers: the emulator as its own process, the CLI as a subprocess, catalog comparison."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import orjson

from exporter.config import ExportConfig, parse_config
from exporter.emulator import RunningEmulator, build_catalog

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class EmulatorProcess:
    """An emulator served by `cf-images-export emulator` in a child process."""

    base_url: str
    batch_base_url: str
    account_id: str
    token: str
    images: int
    seed: int
    process: subprocess.Popen[str]

    def env(self, **extra: str) -> dict[str, str]:
        """Return an environment that points the exporter at this emulator."""
        return emulator_env(self, **extra)


def emulator_env(emu: RunningEmulator | EmulatorProcess, **extra: str) -> dict[str, str]:
    """Return os.environ pointing the exporter at `emu`: its base URL, account and token."""
    env = clean_env()
    env.update(
        CLOUDFLARE_API_TOKEN=emu.token,
        CLOUDFLARE_ACCOUNT_ID=emu.account_id,
        CLOUDFLARE_BASE_URL=emu.base_url,
    )
    env.update(extra)
    return env


def clean_env() -> dict[str, str]:
    """Return os.environ without any CLOUDFLARE_* variable (tests set their own)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFLARE_")}


def emulator_config(
    emu: RunningEmulator, out: Path, *, today: dt.date, **keys: Any
) -> ExportConfig:
    """Return the config of an export of `emu` into `out` on `today`, as the CLI would build it.

    `keys` are dotted option keys (`"request.per_page": 25`), and `resume` or
    `accept_removals` for the flags of the same names.
    """
    overrides = {
        "export.account_id": emu.account_id,
        "export.base_url": emu.base_url,
        "export.output": str(out),
        **keys,
    }
    resume = bool(overrides.pop("resume", False))
    accept = bool(overrides.pop("accept_removals", False))
    env = {"CLOUDFLARE_API_TOKEN": emu.token}
    return parse_config({}, env, overrides, today=today, resume=resume, accept_removals=accept)


@contextmanager
def emulator_process(images: int = 500, seed: int = 7, *args: str) -> Iterator[EmulatorProcess]:
    """Run the emulator CLI on a free loopback port until the block exits."""
    command = [PYTHON, "-m", "exporter", "emulator", "--port", "0"]
    command += ["--images", str(images), "--seed", str(seed), *args]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    )
    try:
        banner: dict[str, str] = {}
        assert process.stdout is not None
        for line in process.stdout:
            if "=" in line:
                key, _, value = line.strip().partition("=")
                banner[key] = value
            elif line.strip().startswith("batch host:"):
                banner["batch"] = line.split()[-1]  # as --batch-base-url takes it
            if "batch" in banner:
                break
        if "CLOUDFLARE_API_TOKEN" not in banner:
            raise RuntimeError(
                f"emulator did not start: {process.stderr and process.stderr.read()}"
            )
        yield EmulatorProcess(
            base_url=banner["CLOUDFLARE_BASE_URL"],
            batch_base_url=banner["batch"],
            account_id=banner["CLOUDFLARE_ACCOUNT_ID"],
            token=banner["CLOUDFLARE_API_TOKEN"],
            images=images,
            seed=seed,
            process=process,
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def run_cli(
    args: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m exporter ARGS` and return its result (text stdout/stderr)."""
    return subprocess.run(
        [PYTHON, "-m", "exporter", *args],
        env=dict(env) if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def catalog_rows(images: int, seed: int, account_id: str) -> dict[str, dict[str, Any]]:
    """Return the emulator's catalog as the exporter must write it, keyed by id."""
    return {
        image["id"]: image_row(image, account_id)
        for image in build_catalog(images, seed).iter_images()
    }


def image_row(image: Mapping[str, Any], account_id: str) -> dict[str, Any]:
    """Return one API image as the exporter must write it (the shape of `exported_rows`)."""
    return {
        "account_id": account_id,
        "id": image["id"],
        "filename": image.get("filename"),
        "creator": image.get("creator"),
        "require_signed_urls": image.get("requireSignedURLs"),
        "uploaded": parse_time(image["uploaded"]),
        "variants": image.get("variants"),
        "meta": image.get("meta"),
    }


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def exported_rows(table_rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return exported rows (dicts from pyarrow/duckdb) keyed by id in the catalog's shape."""
    rows: dict[str, dict[str, Any]] = {}
    for row in table_rows:
        assert row["id"] not in rows, f"duplicate id {row['id']!r}"
        uploaded = row["uploaded"]
        if isinstance(uploaded, str):
            uploaded = parse_time(uploaded)
        meta_json = row.get("meta_json")
        rows[row["id"]] = {
            "account_id": row["account_id"],
            "id": row["id"],
            "filename": row["filename"],
            "creator": row["creator"],
            "require_signed_urls": row["require_signed_urls"],
            "uploaded": uploaded.astimezone(dt.UTC) if uploaded is not None else None,
            "variants": list(row["variants"]) if row["variants"] is not None else None,
            "meta": row["meta"]
            if "meta" in row
            else (orjson.loads(meta_json) if meta_json is not None else None),
        }
    return rows


def query_rows(sql: str, database: str = ":memory:") -> list[dict[str, Any]]:
    """Return the rows of a DuckDB query as dicts."""
    with duckdb.connect(database, read_only=database != ":memory:") as con:
        result = con.execute(sql)
        names = [d[0] for d in result.description]
        return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def snapshot_rows(out: Path, date: str) -> dict[str, dict[str, Any]]:
    """Return a published Parquet snapshot, read by DuckDB with a plain glob, keyed by id."""
    glob = out / f"snapshot_date={date}" / "*.parquet"
    return exported_rows(query_rows(f"SELECT * FROM read_parquet('{glob}')"))


def bucket_snapshot_rows(fs: Any, base: str) -> dict[str, dict[str, Any]]:
    """Read a published snapshot `base` (`bucket/prefix/snapshot_date=D`) on a pyarrow file
    system as a manifest-honouring reader does: `_SUCCESS` exists, the Parquet files listed
    are exactly those a listing finds, every checksum matches; return its rows by id."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    with fs.open_input_stream(f"{base}/_SUCCESS"):
        pass
    with fs.open_input_stream(f"{base}/_manifest.json") as raw:
        manifest = orjson.loads(raw.read())
    listed = sorted(f["path"] for f in manifest["files"] if f["format"] == "parquet")
    globbed = fs.get_file_info(pafs.FileSelector(base))
    assert sorted(i.base_name for i in globbed if i.base_name.endswith(".parquet")) == listed
    for entry in manifest["files"]:
        with fs.open_input_stream(f"{base}/{entry['path']}") as raw:
            assert hashlib.sha256(raw.read()).hexdigest() == entry["sha256"]
    table = pq.ParquetDataset([f"{base}/{p}" for p in listed], filesystem=fs).read()
    return exported_rows(table.to_pylist())
