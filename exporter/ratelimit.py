"""Client-side request budget: never reach the API's rate limit, yet use nearly all of it.

Cloudflare allows 1200 requests per 5 minutes per user and locks the user out for 5 minutes
past that (DESIGN.md, "The API as the exporter uses it"), so one `Pacer` is shared by every
walker of the process. The arithmetic is pure and takes clocks; only `acquire()` sleeps.

* Server headers win when present: `Ratelimit: "default";r=<remaining>;t=<reset s>` and
  `Ratelimit-Policy: "burst";q=<quota>;w=<window s>` (IETF httpapi-ratelimit-headers), and the
  older `X-RateLimit-Limit/Remaining/Reset`. The pacer never sends more than the server says
  remains (minus what is in flight), and waits for the reset. An integer `t` is rounded, so
  each reply narrows the interval the reset must lie in (as does the policy's window `w`);
  the pacer waits for its upper end.
* A server that never sent headers gets a local sliding window of `quota * margin` per
  `window_s`. Once headers were seen, a reset window is probed with one request whose reply
  tells the new remaining count.
* A 429 blocks everyone for `Retry-After` (else a window) and halves the rate for a while.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio

from exporter.stats import RunStats

# Safety allowance for clock granularity when sleeping until a reset instant.
_EPSILON_S = 0.02
# `X-RateLimit-Reset` above this is a Unix time, below it a number of seconds.
_EPOCH_THRESHOLD = 1_000_000_000


@dataclass(frozen=True)
class RateInfo:
    """What one reply's headers say; None where a header is absent."""

    remaining: int | None = None
    reset_s: float | None = None
    reset_exact: bool = False  # a fractional `t`: no rounding to allow for
    quota: int | None = None
    window_s: float | None = None


def _params(value: str) -> list[dict[str, str]]:
    """Return the `;k=v` parameters of each comma-separated item of a header."""
    items = []
    for item in value.split(","):
        params = {}
        for part in item.split(";"):
            key, sep, val = part.partition("=")
            if sep:
                params[key.strip().lower()] = val.strip().strip('"')
        items.append(params)
    return items


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_rate_headers(headers: Mapping[str, str], wall_now: float) -> RateInfo:
    """Return the rate limit state a reply's headers carry (the most restrictive policy)."""
    lower = {k.lower(): v for k, v in headers.items()}
    remaining: float | None = None
    reset: float | None = None
    reset_text: str | None = None
    quota: float | None = None
    window: float | None = None
    items = _params(lower.get("ratelimit", ""))
    if any("remaining" in params for params in items):
        # The older draft: `limit=100, remaining=50, reset=30`, one field per item.
        items = [{k: v for params in items for k, v in params.items()}]
    for params in items:
        r = _number(params.get("r", params.get("remaining")))
        t_text = params.get("t", params.get("reset"))
        if r is not None and (remaining is None or r < remaining):
            remaining, reset, reset_text = r, _number(t_text), t_text
        q = _number(params.get("limit"))
        if q is not None and (quota is None or q < quota):
            quota = q
    for params in _params(lower.get("ratelimit-policy", "")):
        q, w = _number(params.get("q")), _number(params.get("w"))
        if q is not None and (quota is None or q < quota):
            quota, window = q, w
    if remaining is None:
        remaining = _number(lower.get("x-ratelimit-remaining"))
        reset_text = lower.get("x-ratelimit-reset")
        reset = _number(reset_text)
        if reset is not None and reset > _EPOCH_THRESHOLD:
            reset = max(0.0, reset - wall_now)
            reset_text = None  # an absolute time: exact to the second, treat as rounded
    if quota is None:
        quota = _number(lower.get("x-ratelimit-limit"))
    exact = reset_text is not None and "." in reset_text
    return RateInfo(
        remaining=None if remaining is None else int(remaining),
        reset_s=reset,
        reset_exact=exact,
        quota=None if quota is None or quota < 1 else int(quota),
        window_s=window if window else None,
    )


@dataclass(frozen=True)
class Ticket:
    """One granted request; hand it back to `Pacer.release` with the reply."""

    sent_at: float


class Pacer:
    """A request budget shared by every walker of the process (pure; clocks injected)."""

    def __init__(
        self,
        quota: int = 1200,
        window_s: float = 300.0,
        margin: float = 0.9,
        *,
        keep: int = 0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if quota < 1 or window_s <= 0 or not 0 < margin <= 1:
            raise ValueError("quota >= 1, window_s > 0 and 0 < margin <= 1 are required")
        self.quota = quota
        self.window_s = window_s
        self._configured_window = window_s
        self.margin = margin
        self.keep = keep  # requests left unspent from what the server says remains
        self._clock = clock
        self._wall = wall
        self._sent: deque[float] = deque()  # send times within the local window
        self._inflight = 0
        self._budget: int | None = None  # sends left until the reset, from the headers
        self._reset_lo = -math.inf
        self._reset_hi = -math.inf  # the server window resets in [lo, hi]
        self._seen_headers = False
        self._blocked_until = -math.inf
        self._factor = 1.0  # < 1 for a while after a 429
        self.throttled = 0
        self._wakeup: anyio.Event | None = None  # set by release(), for acquire()

    @property
    def inflight(self) -> int:
        """Return the number of granted requests not yet released."""
        return self._inflight

    def _local_limit(self) -> int:
        return max(1, math.floor(self.quota * self.margin * self._factor))

    def delay(self) -> float:
        """Return 0 when a request may be sent now, else the seconds worth waiting first."""
        now = self._clock()
        if now < self._blocked_until:
            return self._blocked_until - now
        window_start = now - self.window_s
        while self._sent and self._sent[0] <= window_start:
            self._sent.popleft()
        if now < self._reset_hi and self._budget is not None:
            keep = self.keep + math.ceil((1 - self._factor) * self.quota)
            if self._budget - keep >= 1:
                return 0.0
            return self._reset_hi - now + _EPSILON_S
        if self._seen_headers:
            # The server window has reset: probe with one request and learn the new
            # remaining count from its reply before spending more.
            return 0.0 if self._inflight == 0 else self.window_s  # woken early by the reply
        if len(self._sent) >= self._local_limit():
            return self._sent[0] + self.window_s - now + _EPSILON_S
        return 0.0

    def grant(self) -> Ticket:
        """Record a request being sent now (call after `delay()` returned 0)."""
        now = self._clock()
        self._sent.append(now)
        self._inflight += 1
        if self._budget is not None and now < self._reset_hi:
            self._budget -= 1
        return Ticket(sent_at=now)

    def release(
        self,
        ticket: Ticket,
        status: int | None,
        headers: Mapping[str, str] | None,
        retry_after_s: float | None = None,
    ) -> None:
        """Take in one reply (status None: no reply): its headers, and a 429's Retry-After."""
        now = self._clock()
        self._inflight = max(0, self._inflight - 1)
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None
        info = parse_rate_headers(headers, self._wall()) if headers else RateInfo()
        if info.quota is not None and info.window_s is not None:
            self.quota, self.window_s = info.quota, info.window_s
        if status == 429:
            self.throttled += 1
            wait = retry_after_s if retry_after_s is not None else self.window_s
            self._blocked_until = max(self._blocked_until, now + wait)
            self._factor = max(0.125, self._factor / 2)
            self._budget = 0
            self._reset_lo = self._reset_hi = self._blocked_until
            return
        if info.remaining is None or info.reset_s is None:
            if status is not None:
                self._seen_headers = False  # replies stopped telling: the local window rules
            return
        self._seen_headers = True
        slack = 0.0 if info.reset_exact else 1.0  # `t` is rounded up to whole seconds
        lo, hi = ticket.sent_at + info.reset_s - slack, now + info.reset_s
        if info.window_s is not None:
            # No window ends later than one window after the request: a bound that beats a
            # `t` rounded up to whole seconds. A configured window that `w` rounds up to
            # (1.5 s for w=2) refines it.
            window = info.window_s
            if self._configured_window <= window < self._configured_window + 1:
                window = self._configured_window
            hi = min(hi, now + window)
            lo = min(lo, hi)
        # Requests still in flight may be counted after this reply: assume they will be.
        budget = info.remaining - self._inflight
        same_window = now < self._reset_hi and max(lo, self._reset_lo) <= min(hi, self._reset_hi)
        if same_window and self._budget is not None:
            # Replies may arrive out of order; within one window the truth only decreases.
            self._budget = min(self._budget, budget)
            self._reset_lo, self._reset_hi = max(lo, self._reset_lo), min(hi, self._reset_hi)
            return
        if self._factor < 1 and now >= self._blocked_until:
            self._factor = min(1.0, self._factor * 1.5)  # a new window: speed back up
        self._budget = budget
        self._reset_lo, self._reset_hi = lo, hi

    async def acquire(self, stats: RunStats | None = None) -> Ticket:
        """Wait until the budget allows one more request, then grant it."""
        waited = 0.0
        while (delay := self.delay()) > 0:
            if stats is not None:
                stats.current_wait = "rate limit"
            start = self._clock()
            await self._wait(delay)
            waited += self._clock() - start
        if stats is not None and waited > 0:
            stats.waits += 1
            stats.wait_seconds += waited
            stats.current_wait = ""
        return self.grant()

    async def _wait(self, delay: float) -> None:
        # Sleep until the delay is over or a reply arrives (it may free budget).
        if self._wakeup is None:
            self._wakeup = anyio.Event()
        wakeup = self._wakeup
        with anyio.move_on_after(delay):
            await wakeup.wait()
