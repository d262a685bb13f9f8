"""gs:// outputs end to end: the CLI exports the emulator's catalog into a GCS emulator
(`gcp-storage-emulator` on loopback, found through `STORAGE_EMULATOR_HOST`), re-runs and
resumes there; and a machine without Google credentials fails in seconds, not minutes."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.store.bucket import gcs_emulator
from exporter.store.layout import snapshot_name
from tests.gcs_fixture import BUCKET, GcsServer, closed_port, gcs_server, without_google_credentials
from tests.helpers import (
    PYTHON,
    EmulatorProcess,
    bucket_snapshot_rows,
    catalog_rows,
    emulator_process,
    run_cli,
)
from tests.store.test_bucket import CONFIG, DATE, export_args, one_error_line

IMAGES = 600
SEED = 17


@pytest.fixture(scope="module")
def gcs() -> Iterator[GcsServer]:
    with gcs_server() as server:
        yield server


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorProcess]:
    with emulator_process(IMAGES, SEED) as process:
        yield process


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "gcs.toml"
    path.write_text(CONFIG)
    return path


def published(gcs: GcsServer, prefix: str) -> dict[str, object]:
    return bucket_snapshot_rows(gcs.filesystem(), f"{BUCKET}/{prefix}/{snapshot_name(DATE)}")


def staged(gcs: GcsServer, prefix: str) -> list[str]:
    return [k for k in gcs.objects(f"{BUCKET}/{prefix}") if "/.staging/" in k]


def test_export_rerun_and_inspect(gcs: GcsServer, emu: EmulatorProcess, config: Path) -> None:
    """The export equals the catalog; a re-run of the date replaces every part; inspect
    verifies the snapshot in the bucket."""
    uri = f"gs://{BUCKET}/nightly"
    first = run_cli(export_args(uri, config), emu.env(**gcs.env()))
    assert first.returncode == 0, first.stderr
    assert f"{uri}/{snapshot_name(DATE)}" in first.stderr
    expected = catalog_rows(IMAGES, SEED, emu.account_id)
    assert published(gcs, "nightly") == expected
    assert not staged(gcs, "nightly"), "staging was not cleaned up"
    before = {k for k in gcs.objects(f"{BUCKET}/nightly") if k.endswith(".parquet")}

    second = run_cli(export_args(uri, config), emu.env(**gcs.env()))
    assert second.returncode == 0, second.stderr
    after = {k for k in gcs.objects(f"{BUCKET}/nightly") if k.endswith(".parquet")}
    assert after and not after & before, "the previous run's parts were not all replaced"
    assert published(gcs, "nightly") == expected

    inspect = run_cli(["inspect", uri], emu.env(**gcs.env()))
    assert inspect.returncode == 0, inspect.stderr
    assert f"{IMAGES:,} images" in inspect.stdout and "sha256 verified" in inspect.stdout


def checkpoint(gcs: GcsServer, prefix: str) -> bytes | None:
    found = [
        v for k, v in gcs.objects(f"{BUCKET}/{prefix}").items() if k.endswith("_checkpoint.json")
    ]
    return found[0] if found else None


def test_resume_after_sigkill(gcs: GcsServer, emu: EmulatorProcess, config: Path) -> None:
    """A run killed after a committed part (blocked mid-walk by its quota) leaves its
    checkpoint in the bucket; `--resume` publishes every image exactly once."""
    uri = f"gs://{BUCKET}/resumed"
    base = CONFIG.replace("part_rows = 200", "part_rows = 100")
    config.write_text(base)
    gated = config.with_name("gated.toml")  # walk.quota is not part of the request's identity
    gated.write_text(base + "[walk]\nquota = 6\nwindow_s = 3600\nmargin = 1.0\n")
    for _ in range(2):
        before = checkpoint(gcs, "resumed")
        process = subprocess.Popen(
            [PYTHON, "-m", "exporter", *export_args(uri, gated, "--resume")],
            env=emu.env(**gcs.env()),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60  # a hang guard only: a part comes in seconds
        while checkpoint(gcs, "resumed") == before:
            assert process.poll() is None, "the run exited before committing a part"
            assert time.monotonic() < deadline, "no part committed in 60 s"
            time.sleep(0.05)
        assert process.poll() is None, "a blocked run cannot finish"
        process.send_signal(signal.SIGKILL)
        process.wait()
    final = run_cli(export_args(uri, config, "--resume", "-v"), emu.env(**gcs.env()))
    assert final.returncode == 0, final.stderr
    assert "resuming run" in final.stderr
    assert published(gcs, "resumed") == catalog_rows(IMAGES, SEED, emu.account_id)
    assert not staged(gcs, "resumed")


def test_missing_credentials_fail_in_seconds_with_exit_5(
    emu: EmulatorProcess, config: Path, tmp_path: Path
) -> None:
    """No key file, no gcloud default, no metadata server (a refusing loopback port): one
    line and exit 5 at open time, where the SDK's retries once took 7 minutes."""
    with closed_port() as port:
        env = without_google_credentials(emu.env(), port, str(tmp_path))
        result = run_cli(export_args(f"gs://{BUCKET}/x", config), env, timeout=60)
    assert result.returncode == 5, result.stderr
    assert "no usable Google credentials" in one_error_line(result.stderr)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("127.0.0.1:9023", ("http", "127.0.0.1:9023")), ("https://gcs.local", ("https", "gcs.local"))],
)
def test_emulator_host_is_host_port_or_url(value: str, expected: tuple[str, str]) -> None:
    assert gcs_emulator({"STORAGE_EMULATOR_HOST": value}) == expected
    assert gcs_emulator({}) is None
