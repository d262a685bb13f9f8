"""A night's change step in a fresh process, so it never stands on the walk's heap.

After a walk the process keeps what no trim gives back (the HTTP stack's modules, the heap's
holes under live objects, a bulk import's tie ids), and the change step then reads the night
back (a first night whole, to write it again as `added` rows; a later night through DuckDB's
diff) on top of it. Once the snapshot and its sinks are published (checkpoint "committing"), the
export process replaces itself with the same command line (`os.execv`: same pid, stdout and
stderr, one process at a time, so the night's peak RSS is the larger of the two, never their
sum). The new process finds `ENV` in its environment and finishes as a resumed run does: it
loads the checkpoint, skips the sinks' steps (done), publishes the change set, drops the
staging and prints the summary. The run's lock goes across: its descriptor is inherited and
adopted (`LocalStore.lock`), so no other run can take it in between.

Only the CLI's own process hands off (`allow`, from `exporter.cli.run`): a library caller, a
fleet, a test calling `main`, a run under a profiler or tracer keep their process. A kill in
the new process leaves the checkpoint "committing", which `--resume` completes as before.

SIGINT and SIGTERM go across blocked (a signal mask survives `execve`): the new interpreter's
start (imports, before the CLI installs its handlers) would otherwise meet them with the default
dispositions and die without a line. The CLI unblocks them (`unblock_stops`) once its handlers
are set, so one that arrived meanwhile stops the run as any stop during publication does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

ENV = "CF_IMAGES_EXPORT_CHANGE_STEP"
STOPS = frozenset({signal.SIGINT, signal.SIGTERM})

log = logging.getLogger("exporter.handoff")


@dataclass(frozen=True)
class Handoff:
    """What the walk's process passes to the process that publishes the change set."""

    run_key: str
    lock_path: str | None  # the local lock file whose descriptor is inherited
    lock_fd: int | None
    began: float  # time.monotonic() when the export began (the metrics' duration)
    publishing: str  # the snapshot being published (`RunStats.publishing`: a stop's line)


# This process's CLI start (time.monotonic()) once `allow` ran, and the handoff it received.
_allowed: list[float] = []
_received: list[Handoff] = []
# What must be undone on the terminal before the process is replaced (the progress bar's
# hidden cursor): `before_exec`.
_before_exec: list[Callable[[], None]] = []


def allow() -> None:
    """Let this process hand off its change step, and take a handoff it was started with."""
    _allowed.append(time.monotonic())
    text = os.environ.pop(ENV, None)
    if text is None:
        return
    try:
        data = json.loads(text)
        handed = Handoff(
            str(data["run_key"]),
            data["lock_path"],
            data["lock_fd"],
            data["began"],
            str(data["publishing"]),
        )
    except (ValueError, KeyError, TypeError):  # not ours: run as an ordinary export
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)  # as `hand_off` may have left them
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
    _received[0] = Handoff(handed.run_key, None, None, handed.began, handed.publishing)
    return handed.lock_fd


def began(default: float) -> float:
    """Return when the export began: in the walk's process when this one was handed off."""
    handed = received()
    return handed.began if handed is not None else default


def unblock_stops() -> None:
    """Let SIGINT/SIGTERM in again in a process started by a handoff (its handlers are set)."""
    if received() is not None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)


@contextlib.contextmanager
def before_exec(undo: Callable[[], None]) -> Iterator[None]:
    """Run `undo` before this process is replaced, while in this block."""
    _before_exec.append(undo)
    try:
        yield
    finally:
        _before_exec.remove(undo)


def hand_off(run_key: str, lock_path: str, lock_fd: int, publishing: str) -> None:
    """Replace this process with a fresh one running the same command to finish the run.

    Returns only when the interpreter cannot be started again (the run then goes on here).
    """
    for undo in list(_before_exec):
        undo()
    os.set_inheritable(lock_fd, True)
    start = began(_allowed[0] if _allowed else time.monotonic())
    os.environ[ENV] = json.dumps(asdict(Handoff(run_key, lock_path, lock_fd, start, publishing)))
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    # A stop another thread takes once this one blocks them runs this handler here (Python
    # handlers run in the main thread): it is made pending on this thread, for the next
    # process; if the exec fails, the event loop gets it as before (the wakeup fd).
    caught: list[int] = []
    handlers = {s: signal.signal(s, lambda signum, _: caught.append(signum)) for s in STOPS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    try:
        for signum in caught:
            signal.pthread_kill(threading.get_ident(), signum)
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    except OSError as exc:
        for signum, previous in handlers.items():
            signal.signal(signum, previous)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # the loop has `caught` (wakeup fd)
        os.environ.pop(ENV, None)
        os.set_inheritable(lock_fd, False)
        log.warning("publishing the change set in this process: %s", exc)
