"""A later night's change step in a fresh process, so the diff never stands on the walk's heap.

After a walk the process keeps what no trim gives back (the HTTP stack's modules, the heap's
holes under live objects), and a night with a previous snapshot then loads DuckDB and diffs
on top of it. Once the snapshot and its sinks are published (checkpoint "committing"), the
export process replaces itself with the same command line (`os.execv`: same pid, stdout and
stderr, one process at a time, so the night's peak RSS is the larger of the two, never their
sum). The new process finds `ENV` in its environment and finishes as a resumed run does: it
loads the checkpoint, skips the sinks' steps (done), publishes the change set, drops the
staging and prints the summary. The run's lock goes across: its descriptor is inherited and
adopted (`LocalStore.lock`), so no other run can take it in between.

Only the CLI's own process hands off (`allow`, from `exporter.cli.run`): a library caller, a
fleet, a test calling `main`, a run under a profiler or tracer keep their process. A kill in
the new process leaves the checkpoint "committing", which `--resume` completes as before.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass

ENV = "CF_IMAGES_EXPORT_CHANGE_STEP"

log = logging.getLogger("exporter.handoff")


@dataclass(frozen=True)
class Handoff:
    """What the walk's process passes to the process that publishes the change set."""

    run_key: str
    lock_path: str | None  # the local lock file whose descriptor is inherited
    lock_fd: int | None
    began: float  # time.monotonic() when the export began (the metrics' duration)


# This process's CLI start (time.monotonic()) once `allow` ran, and the handoff it received.
_allowed: list[float] = []
_received: list[Handoff] = []


def allow() -> None:
    """Let this process hand off its change step, and take a handoff it was started with."""
    _allowed.append(time.monotonic())
    text = os.environ.pop(ENV, None)
    if text is None:
        return
    try:
        data = json.loads(text)
        handed = Handoff(str(data["run_key"]), data["lock_path"], data["lock_fd"], data["began"])
    except (ValueError, KeyError, TypeError):  # not ours: run as an ordinary export
        return
    _received.append(handed)


def received() -> Handoff | None:
    """Return the handoff this process was started with (None for an ordinary run)."""
    return _received[0] if _received else None


def allowed() -> bool:
    """Return whether this process may hand off (the CLI's, not under a profiler or tracer)."""
    return bool(_allowed) and sys.getprofile() is None and sys.gettrace() is None


def adopt_lock(path: str) -> int | None:
    """Return the inherited descriptor of lock file `path`, once (None when none was handed)."""
    handed = received()
    if handed is None or handed.lock_path != path or handed.lock_fd is None:
        return None
    _received[0] = Handoff(handed.run_key, None, None, handed.began)
    return handed.lock_fd


def began(default: float) -> float:
    """Return when the export began: in the walk's process when this one was handed off."""
    handed = received()
    return handed.began if handed is not None else default


def hand_off(run_key: str, lock_path: str, lock_fd: int) -> None:
    """Replace this process with a fresh one running the same command to finish the run.

    Returns only when the interpreter cannot be started again (the run then goes on here).
    """
    os.set_inheritable(lock_fd, True)
    start = began(_allowed[0] if _allowed else time.monotonic())
    os.environ[ENV] = json.dumps(asdict(Handoff(run_key, lock_path, lock_fd, start)))
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError as exc:
        os.environ.pop(ENV, None)
        os.set_inheritable(lock_fd, False)
        log.warning("publishing the change set in this process: %s", exc)
