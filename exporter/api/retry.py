"""Which failures retry and how long to wait: a pure policy, plus the tenacity glue.

The one place that says what retries: connection errors, timeouts, HTML or truncated/invalid
JSON bodies (no status), and the statuses of `RetryPolicy.retry_status` (429, 500-504,
Cloudflare's 520-530); anything else fails at once (400/401/403/404 carry the API's own
message). The client asks `RetryPolicy.retries` about every reply. Waits are full-jitter
exponential ("Exponential Backoff And Jitter", AWS Architecture Blog, 2015) with `Retry-After`
honoured in either RFC 9110 form (delta-seconds or HTTP-date), bounded by attempts and by a
total deadline per request.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from exporter.errors import ConfigError

RETRY_STATUS = frozenset({429, *range(500, 505), *range(520, 531)})


def parse_retry_after(value: str | None, clock: Callable[[], float] = time.time) -> float | None:
    """Return the seconds a `Retry-After` asks for (delta-seconds or HTTP-date), else None."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive parse means "-0000".
            return None
        return max(0.0, when.timestamp() - clock())
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Attempts, backoff and deadline of one request; `clock` is wall time for HTTP-dates."""

    max_attempts: int = 8
    base_s: float = 0.5
    cap_s: float = 30.0
    deadline_s: float = 600.0
    retry_status: frozenset[int] = RETRY_STATUS
    clock: Callable[[], float] = field(default=time.time, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_s < 0 or self.cap_s < 0 or self.deadline_s <= 0:
            raise ConfigError(
                "retry", "max_attempts >= 1, base_s and cap_s >= 0, deadline_s > 0 are required"
            )

    def retries(self, status: int | None) -> bool:
        """Return True for a status worth another attempt; None means "no status" (I/O failure,
        unreadable body)."""
        return status is None or status in self.retry_status

    def delay(
        self, attempt: int, status: int | None, retry_after: str | None, rng: random.Random
    ) -> float | None:
        """Return the wait before attempt `attempt + 1`, or None to give up.

        `attempt` counts the attempts made so far (1 after the first failure); `status` is
        None for connection errors, timeouts and unreadable bodies.
        """
        if attempt >= self.max_attempts or not self.retries(status):
            return None
        backoff = rng.uniform(0.0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))
        asked = parse_retry_after(retry_after, self.clock)
        return backoff if asked is None else max(asked, backoff)


class TransientError(Exception):
    """A failure worth retrying; raised inside the client's retry loop only."""

    def __init__(self, reason: str, status: int | None = None, retry_after: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


def build_retrying(
    policy: RetryPolicy,
    *,
    rng: random.Random,
    sleep: Callable[[float], Awaitable[Any]],
    before_sleep: Callable[[TransientError, int, float], None],
    monotonic: Callable[[], float] = time.monotonic,
) -> AsyncRetrying:
    """Return a tenacity loop (build one per request) retrying TransientError per `policy`.

    Gives up (tenacity.RetryError) when the policy says None, the attempts run out, or the
    next wait would end past the deadline.
    """

    start = monotonic()  # one loop per request: the deadline counts from here

    def wait(state: RetryCallState) -> float:
        exc = _transient(state)
        delay = policy.delay(state.attempt_number, exc.status, exc.retry_after, rng)
        return math.inf if delay is None else delay

    def stop(state: RetryCallState) -> bool:
        upcoming = state.upcoming_sleep
        if not math.isfinite(upcoming) or state.attempt_number >= policy.max_attempts:
            return True
        return (monotonic() - start) + upcoming > policy.deadline_s

    def log(state: RetryCallState) -> None:
        before_sleep(_transient(state), state.attempt_number, state.upcoming_sleep)

    return AsyncRetrying(
        retry=retry_if_exception_type(TransientError),
        wait=wait,
        stop=stop,
        before_sleep=log,
        sleep=sleep,
    )


def _transient(state: RetryCallState) -> TransientError:
    assert state.outcome is not None
    exc = state.outcome.exception()
    assert isinstance(exc, TransientError)
    return exc
