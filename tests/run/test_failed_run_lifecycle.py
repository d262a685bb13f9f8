"""What a user is told, and what is left, after a run that failed or was stopped: the real CLI
against the emulator in its own process."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import emulator_process, run_cli

DATE = "2026-11-27"


def staged_runs(out: Path) -> list[str]:
    """Return the run directories under OUT/.staging (lock files are not runs)."""
    staging = out / ".staging"
    return sorted(p.name for p in staging.iterdir() if p.is_dir()) if staging.exists() else []


def test_a_run_failing_at_its_first_request_leaves_nothing_to_resume(tmp_path: Path) -> None:
    """A wrong token fails the first request (exit 3): no staging is left, and the next
    `--resume` says in one line that there is nothing to resume, then exports everything."""
    out = tmp_path / "out"
    args = ["export", "--output", str(out), "--snapshot-date", DATE]
    with emulator_process(50, 3) as emu:
        failed = run_cli(args, emu.env(CLOUDFLARE_API_TOKEN="not-the-token"))
        assert failed.returncode == 3, failed.stderr
        assert staged_runs(out) == []
        resumed = run_cli([*args, "--resume"], emu.env())
    assert resumed.returncode == 0, resumed.stderr
    said = [line for line in resumed.stderr.splitlines() if "resum" in line or "discard" in line]
    assert len(said) == 1 and "nothing to resume" in said[0], said
    assert staged_runs(out) == []
