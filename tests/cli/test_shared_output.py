"""Two requests sharing one output: a snapshot of another request is never replaced."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import EmulatorProcess, emulator_process, run_cli

DATE = "2026-12-02"
FILTER = "meta.status[eq]=active"


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorProcess]:
    with emulator_process(images=300, seed=5) as emulator:
        yield emulator


def sealed_files(out: Path, date: str) -> dict[str, bytes]:
    """Return the manifests and `_SUCCESS` of D's snapshot and change set, by path."""
    found: dict[str, bytes] = {}
    for directory in (out / f"snapshot_date={date}", out / "changes" / f"snapshot_date={date}"):
        for name in ("_manifest.json", "_SUCCESS"):
            found[str(directory / name)] = (directory / name).read_bytes()
    return found


def test_another_request_never_replaces_a_snapshot(emu: EmulatorProcess, tmp_path: Path) -> None:
    """Full, then filtered on the same date: the second is refused (exit 2, one line) and the
    first snapshot and its change set stay byte-identical; the same request with another
    format, and the other request on another date, still publish."""
    out = tmp_path / "out"
    base = ["export", "--output", str(out), "--per-page", "50"]
    first = run_cli([*base, "--snapshot-date", DATE], emu.env())
    assert first.returncode == 0, first.stderr
    before = sealed_files(out, DATE)

    refused = run_cli([*base, "--snapshot-date", DATE, "--filter", FILTER], emu.env())
    assert refused.returncode == 2, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, refused.stderr
    assert f"snapshot_date={DATE} holds a snapshot of another request" in lines[0]
    assert FILTER in lines[0]
    assert "Traceback" not in refused.stderr
    assert sealed_files(out, DATE) == before

    same = run_cli([*base, "--snapshot-date", DATE, "--format", "ndjson"], emu.env())
    assert same.returncode == 0, same.stderr
    other_date = run_cli([*base, "--snapshot-date", "2026-12-03", "--filter", FILTER], emu.env())
    assert other_date.returncode == 0, other_date.stderr
