"""What a user is told, and what is left, after a run that failed or was stopped: the real CLI
against the emulator in its own process."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from exporter.cli import commands
from exporter.run.crashpoint import CRASH_AT_ENV, CRASH_SIGNAL_ENV
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


@pytest.mark.parametrize("point", ["sealed", "files-published"])
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_stop_during_publication_says_resume_finishes_it(
    tmp_path: Path, point: str, signum: str
) -> None:
    """SIGTERM/SIGINT once the snapshot is sealed (or its files published, before the DuckDB
    load): exit 130 with one line naming the snapshot and `--resume`, which then finishes
    the publication without walking."""
    out = tmp_path / "out"
    args = ["export", "--output", str(out), "--format", "parquet", "--format", "duckdb"]
    args += ["--snapshot-date", DATE]
    with emulator_process(50, 3) as emu:
        stop = {CRASH_AT_ENV: point, CRASH_SIGNAL_ENV: signum}
        stopped = run_cli(args, emu.env(**stop))
        env = emu.env()
    assert stopped.returncode == 130, stopped.stderr
    errors = [line for line in stopped.stderr.splitlines() if "error:" in line]
    assert errors == [
        f"cf-images-export: error: stopped by {signum} while publishing snapshot_date={DATE}: "
        "run the same export with --resume to finish it (nothing is walked again)"
    ], stopped.stderr
    resumed = run_cli([*args, "--resume"], env)  # the emulator is gone: nothing is walked
    assert resumed.returncode == 0, resumed.stderr
    assert run_cli(["inspect", str(out)]).returncode == 0


def test_fleet_resume_of_a_run_with_nothing_to_resume_says_one_line(tmp_path: Path) -> None:
    """`fleet --resume` over an account whose staging holds no checkpoint (killed before its
    first one) says 'nothing to resume' once, not also 'discarding the staged files'."""
    out = tmp_path / "out"
    accounts = tmp_path / "accounts.toml"
    with emulator_process(50, 3) as emu:
        accounts.write_text(
            f'[[account]]\nid = "{emu.account_id}"\ntoken_env = "CLOUDFLARE_API_TOKEN"\n'
        )
        args = ["fleet", "--accounts", str(accounts), "--output", str(out)]
        args += ["--snapshot-date", DATE]
        killed = run_cli(args, emu.env(**{CRASH_AT_ENV: "sealed"}))
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        (checkpoint,) = out.glob("*/.staging/*/_checkpoint.json")
        checkpoint.unlink()
        resumed = run_cli([*args, "--resume"], emu.env())
    assert resumed.returncode == 0, resumed.stderr
    said = [line for line in resumed.stderr.splitlines() if "resum" in line or "discard" in line]
    assert len(said) == 1 and "nothing to resume" in said[0], said


def test_a_ctrl_c_the_run_does_not_catch_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Ctrl-C outside the run's own handler (before it is set up, a second one) is one line
    that says to re-run with --resume, exit 130."""

    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "run_export", interrupted)
    assert commands.main(["export", "--output", str(tmp_path / "out")]) == 130
    assert capsys.readouterr().err.splitlines() == [
        "cf-images-export: interrupted: run the same export with --resume to continue or finish it"
    ]


def test_inspect_tells_a_table_not_loaded_yet_from_a_damaged_one(tmp_path: Path) -> None:
    """Killed after its files were published, before the DuckDB load: `inspect` says in one
    line that the table is not loaded yet (exit 130, what a stopped run exits with), not
    that the snapshot is damaged (7). A damaged file then still exits 7, and after
    `--resume` everything verifies (0)."""
    out = tmp_path / "out"
    args = ["export", "--output", str(out), "--format", "parquet", "--format", "duckdb"]
    args += ["--snapshot-date", DATE]
    snapshot = out / f"snapshot_date={DATE}"
    with emulator_process(50, 3) as emu:
        killed = run_cli(args, emu.env(**{CRASH_AT_ENV: "files-published"}))
        env = emu.env()
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    inspected = run_cli(["inspect", str(out)])
    assert inspected.returncode == 130, inspected.stderr
    says = "duckdb table not loaded yet: run the same export with --resume to finish it"
    assert inspected.stdout.splitlines() == [f"snapshot_date={DATE}: UNFINISHED: {says}"]
    assert inspected.stderr.splitlines() == [
        f"cf-images-export: error: snapshot_date={DATE}: {says}"
    ]
    part = next(snapshot.glob("*.parquet"))
    intact = part.read_bytes()
    part.write_bytes(intact[:-1] + bytes([intact[-1] ^ 1]))
    damaged = run_cli(["inspect", str(out)])
    assert damaged.returncode == 7, damaged.stderr
    assert "DAMAGED" in damaged.stdout and "UNFINISHED" in damaged.stdout
    part.write_bytes(intact)
    resumed = run_cli([*args, "--resume"], env)  # the emulator is gone: nothing is walked
    assert resumed.returncode == 0, resumed.stderr
    verified = run_cli(["inspect", str(out)])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "UNFINISHED" not in verified.stdout
