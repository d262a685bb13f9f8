"""Cloudflare's rate-limit model: a quota per window; going over locks the caller out.

Cloudflare allows 1200 requests per 5 minutes per user and blocks a user who exceeds it for
5 minutes, answering 429 with `Retry-After`. Here the window opens with a caller's first
request; the request after the quota starts a lockout of `lockout_s`, during which every
request is refused without extending it; after it, a fresh window opens. Pure: the clock is
injected, so tests step time by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateDecision:
    """The verdict on one request and what the rate-limit headers should say."""

    allowed: bool
    quota: int
    window_s: float
    remaining: int
    reset_s: int  # whole seconds until the window resets (or the lockout ends)
    retry_after: int | None = None  # set on refusals

    def headers(self) -> dict[str, str]:
        """Return the `Ratelimit`/`Ratelimit-Policy` headers, plus `Retry-After` on a 429."""
        headers = {
            "Ratelimit": f'"default";r={self.remaining};t={self.reset_s}',
            "Ratelimit-Policy": f'"burst";q={self.quota};w={_whole(self.window_s)}',
        }
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


@dataclass
class _Caller:
    window_start: float
    used: int = 0
    locked_until: float = 0.0


class RateLimiter:
    """Per-caller fixed windows with a lockout, the arithmetic only."""

    def __init__(
        self, quota: int, window_s: float, lockout_s: float, clock: Callable[[], float]
    ) -> None:
        self.quota = quota
        self.window_s = window_s
        self.lockout_s = lockout_s
        self._clock = clock
        self._callers: dict[str, _Caller] = {}
        self.peak = 0  # the most requests one window of one caller admitted (tests read it)

    def hit(self, caller: str) -> RateDecision:
        """Count one request of `caller` and return whether it may proceed."""
        now = self._clock()
        state = self._callers.get(caller)
        if state is not None and now < state.locked_until:
            return self._refuse(state.locked_until - now)
        if state is None or now >= state.window_start + self.window_s:
            state = self._callers[caller] = _Caller(window_start=now)
        if state.used >= self.quota:
            state.locked_until = now + self.lockout_s
            state.window_start = state.locked_until  # the next window opens after the lockout
            state.used = 0
            return self._refuse(self.lockout_s)
        state.used += 1
        self.peak = max(self.peak, state.used)
        return RateDecision(
            allowed=True,
            quota=self.quota,
            window_s=self.window_s,
            remaining=self.quota - state.used,
            reset_s=_whole(state.window_start + self.window_s - now),
        )

    def _refuse(self, wait_s: float) -> RateDecision:
        wait = _whole(wait_s)
        return RateDecision(False, self.quota, self.window_s, 0, wait, retry_after=wait)


def _whole(seconds: float) -> int:
    """Round a wait up to whole seconds, at least 1: a client must never come back early."""
    return max(1, math.ceil(seconds - 1e-9))
