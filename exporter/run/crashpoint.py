"""A test-only fault point: kill this process at a named step of publication.

Tests set `CF_IMAGES_EXPORT_TEST_CRASH_AT` to a step's name to prove what a kill there leaves
and that `--resume` completes it; `CF_IMAGES_EXPORT_TEST_CRASH_SIGNAL` (default SIGKILL) names
the signal, so a SIGTERM or SIGINT there shows what a stopped run says. Unset in real runs,
where `crash_point` does nothing.
"""

from __future__ import annotations

import os
import signal
import threading
import time

CRASH_AT_ENV = "CF_IMAGES_EXPORT_TEST_CRASH_AT"
CRASH_SIGNAL_ENV = "CF_IMAGES_EXPORT_TEST_CRASH_SIGNAL"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_AT_ENV) == name:
        os.kill(os.getpid(), signal.Signals[os.environ.get(CRASH_SIGNAL_ENV, "SIGKILL")])
        if threading.current_thread() is not threading.main_thread():
            time.sleep(0.5)  # the main thread's event loop handles it while this step waits


__all__ = ["CRASH_AT_ENV", "CRASH_SIGNAL_ENV", "crash_point"]
