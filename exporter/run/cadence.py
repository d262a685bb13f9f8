"""When the next checkpoint is due: a part committed at least every `every_s` of walking.

A checkpoint is a committed part, and the sinks commit one when it is full (`parquet.part_rows`,
`parquet.part_bytes`). Full alone is too rare for a small or slow walk: a catalog of 200,000
images under Cloudflare's quota takes minutes and would commit nothing, so a kill would lose
the whole walk. The pipeline also commits once `every_s` seconds have passed since the last
checkpoint with something new written, whether a page arrived just now or the walk is waiting
(the pacer, a retry): a kill then loses at most about `every_s` of walking.

Pure: the clock is injected; the pipeline drives it.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Cadence:
    """Time since the last checkpoint, and whether anything new waits to be committed."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._since = clock()
        self._pending = False

    def wrote(self) -> None:
        """Note progress (rows or walker state) that the next checkpoint would keep."""
        self._pending = True

    def remaining(self) -> float:
        """Return the seconds until a checkpoint is due (negative once overdue)."""
        return self._since + self.every_s - self._clock()

    def due(self) -> bool:
        """Return True when `every_s` has passed and progress waits to be committed."""
        return self._pending and self.remaining() <= 0

    def committed(self) -> None:
        """Start the next interval: everything so far is in a checkpoint."""
        self._since = self._clock()
        self._pending = False
