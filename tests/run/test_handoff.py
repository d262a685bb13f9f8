"""A second night's change step in a fresh process (issue 22), through the real CLI.

The walk's process replaces itself once the snapshot is published; the new process must
publish exactly the emulator's change set, print one summary with the walk's counts, keep
the run's lock until it is done, and leave a checkpoint that `--resume` completes when it is
killed. A first night hands off too: its change set reads the whole snapshot back.
"""

from __future__ import annotations

import functools
import json
import signal
from pathlib import Path
from typing import Any

import pytest

from exporter.emulator.catalog import build_catalog
from exporter.emulator.nights import NightPlan, catalog_at_night
from exporter.run.crashpoint import CRASH_AT_ENV, CRASH_SIGNAL_ENV
from tests.helpers import emulator_process, query_rows, run_cli

IMAGES, SEED, CHURN = 400, 13, 0.05
HANDED = "publishing the change set from a fresh process"
DATES = ("2026-03-01", "2026-03-02")


def _export(out: Path, date: str, env: dict[str, str], *extra: str) -> Any:
    args = ["export", "--output", str(out), "--snapshot-date", date, "--format", "parquet"]
    return run_cli([*args, "-v", "--log-format", "json", *extra], env)


def _records(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _truth() -> dict[str, str]:
    _, changes = catalog_at_night(build_catalog(IMAGES, SEED), 1, NightPlan(churn=CHURN))
    rows = dict.fromkeys(changes.added, "added")
    rows.update(dict.fromkeys(changes.removed, "removed"))
    rows.update(dict.fromkeys(changes.changed, "changed"))
    return rows


def _published(out: Path) -> dict[str, str]:
    rows = query_rows(
        f"SELECT id, change FROM read_parquet('{out}/changes/snapshot_date={DATES[1]}/"
        "*.parquet', hive_partitioning = false)"
    )
    return {r["id"]: r["change"] for r in rows}


def _first_night(out: Path) -> None:
    with emulator_process(IMAGES, SEED) as emu:
        first = _export(out, DATES[0], emu.env())
    assert first.returncode == 0, first.stderr
    assert first.stderr.count(HANDED) == 1  # its change set re-reads the whole night


def test_a_second_night_publishes_its_changes_from_a_fresh_process(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _first_night(out)
    night = ("--night", "1", "--churn", str(CHURN))
    with emulator_process(IMAGES, SEED, *night) as emu:
        second = _export(out, DATES[1], emu.env())
    assert second.returncode == 0, second.stderr
    records = _records(second.stderr)
    messages = [r.get("msg", r.get("message", "")) for r in records]
    assert messages.count(HANDED) == 1
    summaries = [r for r in records if r.get("msg", r.get("message")) == "summary"]
    assert len(summaries) == 1
    summary = summaries[0]["summary"]
    truth = _truth()
    assert summary["images"] == IMAGES + truth_count(truth, "added") - truth_count(truth, "removed")
    assert summary["requests"] > 0  # the walk's counts, carried by the checkpoint
    assert _published(out) == truth
    assert not [p for p in out.glob(".staging/**/*") if p.is_file()]  # nor the lock file


def truth_count(truth: dict[str, str], kind: str) -> int:
    return sum(1 for change in truth.values() if change == kind)


def test_a_kill_in_the_fresh_process_is_resumed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _first_night(out)
    night = ("--night", "1", "--churn", str(CHURN))
    with emulator_process(IMAGES, SEED, *night) as emu:
        killed = _export(out, DATES[1], {**emu.env(), CRASH_AT_ENV: "changes-handed-over"})
        assert killed.returncode == -9, killed.stderr
        assert HANDED in killed.stderr
        assert (out / f"snapshot_date={DATES[1]}" / "_SUCCESS").exists()
        assert not (out / f"changes/snapshot_date={DATES[1]}").exists()
        resumed = _export(out, DATES[1], emu.env(), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _published(out) == _truth()


def test_an_interpreter_that_cannot_start_leaves_the_run_here(
    tmp_path: Path, monkeypatch: Any, caplog: Any
) -> None:
    """execv failing (no interpreter at sys.executable) returns: the run goes on in-process,
    with nothing of the handoff left in its environment or on its lock."""
    import os

    from exporter import handoff

    def refuse(*_: Any) -> None:
        raise FileNotFoundError("no such interpreter")

    monkeypatch.setattr(os, "execv", refuse)
    with open(tmp_path / "lock", "a+b") as lock:
        handoff.hand_off("key", str(tmp_path / "lock"), lock.fileno(), "snapshot_date=D")
        assert not os.get_inheritable(lock.fileno())
    assert handoff.ENV not in os.environ
    assert not signal.pthread_sigmask(signal.SIG_BLOCK, []) & handoff.STOPS  # stops let in again
    assert "publishing the change set in this process: no such interpreter" in caplog.text


def _imported(stderr: str) -> list[set[str]]:
    """Return the modules each process imported, from `-X importtime`'s lines (a header
    starts each process: the walk's, then the change step's after a handoff)."""
    processes: list[set[str]] = []
    for line in stderr.splitlines():
        if line.startswith("import time: self"):
            processes.append(set())
        elif line.startswith("import time:") and processes:
            processes[-1].add(line.rpartition("|")[2].strip())
    return processes


def test_a_walk_never_loads_duckdb(tmp_path: Path) -> None:
    """DuckDB's library (~25 MB resident once imported) stays out of the walk's process, whose
    peak is the night's at millions of images: a Parquet export's first night loads it
    nowhere, a second night's walk neither (its change step may, in its own process)."""
    out = tmp_path / "out"
    night = ("--night", "1", "--churn", str(CHURN))
    processes = []
    for date, emulator_args in zip(DATES, ((), night), strict=True):
        with emulator_process(IMAGES, SEED, *emulator_args) as emu:
            done = _export(out, date, emu.env(PYTHONPROFILEIMPORTTIME="1"))
        assert done.returncode == 0, done.stderr
        processes.append(_imported(done.stderr))
    (first, first_changes), (walk, _change_step) = processes
    assert "exporter.run.pipeline" in first and "exporter.walk.walker" in walk
    assert "duckdb" not in first | first_changes
    assert "duckdb" not in walk


def _second_night(out: Path, env: dict[str, str]) -> Any:
    """Run the second night in plain logs, `-v` (the handoff's line), with `env` added."""
    args = ["export", "--output", str(out), "--snapshot-date", DATES[1], "--format", "parquet"]
    night = ("--night", "1", "--churn", str(CHURN))
    with emulator_process(IMAGES, SEED, *night) as emu:
        return run_cli([*args, "-v"], {**emu.env(), **env}), [*args, "--resume"], emu.env()


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_a_stop_while_the_fresh_process_starts_says_resume_finishes_it(
    tmp_path: Path, signum: str
) -> None:
    """A stop sent as the fresh interpreter starts (before the CLI's handlers exist) waits,
    blocked, for them: exit 130 and the line of a stop during publication, not a silent
    death by the default disposition (143) or a bare 'interrupted'."""
    out = tmp_path / "out"
    _first_night(out)
    stop = {CRASH_AT_ENV: "handed-over-start", CRASH_SIGNAL_ENV: signum}
    stopped, resume_args, env = _second_night(out, stop)
    assert stopped.returncode == 130, stopped.stderr
    assert HANDED in stopped.stderr
    errors = [line for line in stopped.stderr.splitlines() if "error:" in line]
    assert errors == [
        f"cf-images-export: error: stopped by {signum} while publishing "
        f"snapshot_date={DATES[1]}: run the same export with --resume to finish it "
        "(nothing is walked again)"
    ], stopped.stderr
    assert not (out / f"changes/snapshot_date={DATES[1]}").exists()
    resumed = run_cli(resume_args, env)  # the emulator is gone: nothing is walked
    assert resumed.returncode == 0, resumed.stderr
    assert _published(out) == _truth()


def test_a_stop_once_the_change_set_is_published_lets_the_run_finish(tmp_path: Path) -> None:
    """SIGTERM after the fresh process published the change set: the run is done, so it
    finishes (one warning, the summary, exit 0, no staging), not 'stopped ... --resume'."""
    out = tmp_path / "out"
    _first_night(out)
    stop = {CRASH_AT_ENV: "changes-published", CRASH_SIGNAL_ENV: "SIGTERM"}
    done, _, _ = _second_night(out, stop)
    assert done.returncode == 0, done.stderr
    assert "SIGTERM received while the change set is published: finishing the run" in done.stderr
    assert "error:" not in done.stderr
    assert "images" in done.stdout + done.stderr  # the summary
    assert _published(out) == _truth()
    assert not [p for p in out.glob(".staging/**/*") if p.is_file()]


def test_the_progress_bar_gives_the_cursor_back_before_the_process_is_replaced(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The walk's bar hides the terminal's cursor; the fresh process never draws that bar,
    so the bar is stopped (cursor shown again) before the exec."""
    import os

    import anyio

    from exporter import handoff
    from exporter.observe.progress import report_progress
    from exporter.stats import RunStats

    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    shown: list[str] = []

    def execv(*_: Any) -> None:
        shown.append(capfd.readouterr().err)
        raise FileNotFoundError("no interpreter")

    monkeypatch.setattr(os, "execv", execv)

    async def walk_then_hand_off(lock: int) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(functools.partial(report_progress, RunStats(), interactive=True))
            await anyio.sleep(0.3)
            handoff.hand_off("key", "lock", lock, "snapshot_date=D")
            group.cancel_scope.cancel()

    with open(os.devnull, "a+b") as lock:
        anyio.run(walk_then_hand_off, lock.fileno())
    assert "\x1b[?25l" in shown[0]  # hidden by the bar
    assert "\x1b[?25h" in shown[0][shown[0].rindex("\x1b[?25l") :]  # shown before exec


def test_the_fresh_process_draws_no_second_progress_bar(tmp_path: Path) -> None:
    """On a terminal the walk's bar is the only one: the handed-over process walks nothing,
    and its bar started at 0 images then jumped to the total at a nonsense rate."""
    import os
    import pty
    import subprocess
    import threading

    from tests.helpers import PYTHON

    out = tmp_path / "out"
    _first_night(out)
    args = ["export", "--output", str(out), "--snapshot-date", DATES[1], "--format", "parquet"]
    night = ("--night", "1", "--churn", str(CHURN))
    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    with emulator_process(IMAGES, SEED, *night) as emu:
        done = subprocess.run(
            [PYTHON, "-m", "exporter", *args, "-v"],
            env=emu.env(COLUMNS="200"),
            stdout=subprocess.PIPE,
            stderr=slave,
            timeout=120,
        )
    os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert done.returncode == 0, screen
    walk, stopped, fresh = screen.partition("\x1b[?25h")  # the walk's bar gives the cursor back
    assert HANDED in walk and "exporting" in walk, screen
    assert stopped and "exporting" not in fresh, fresh


def test_a_handed_off_night_s_duration_counts_from_its_walk(tmp_path: Path) -> None:
    """The summary's duration of a second night is the whole run's, walk included, as the
    duration metric says: the change step's fresh process counted only its own time."""
    out = tmp_path / "out"
    _first_night(out)
    prom = tmp_path / "night.prom"
    night = ("--night", "1", "--churn", str(CHURN), "--latency", "0.05")
    with emulator_process(IMAGES, SEED, *night) as emu:
        second = _export(out, DATES[1], emu.env(), "--metrics-textfile", str(prom))
    assert second.returncode == 0, second.stderr
    assert HANDED in second.stderr
    records = _records(second.stderr)
    (summary,) = [r["summary"] for r in records if r.get("msg", r.get("message")) == "summary"]
    metric = next(
        float(line.split()[-1])
        for line in prom.read_text().splitlines()
        if line.startswith("cf_images_export_duration_seconds")
    )
    assert summary["requests"] >= 2  # pages of 50 ms each before the handoff
    assert metric - 0.5 <= summary["duration_s"] <= metric + 0.05
