"""Client-side request budget: spend this run's share of the API quota, never hit the wall.

Two limits meet (DESIGN.md, "Pacing: whose quota"): the server's, announced by its replies
(`Ratelimit-Policy: "burst";q=<quota>;w=<window s>` and `Ratelimit: "default";r=<remaining>;
t=<reset s>`, IETF httpapi-ratelimit-headers, or the older `X-RateLimit-*`), and the run's
configured share (`quota` per `window_s`, times `margin`). Cloudflare allows 1200 requests per
5 minutes per user and locks the whole user out for 5 minutes past that, so one `Pacer` is
shared by every walker of the process.

* The lower quota rules: Q = min(configured quota, announced q). An announced quota below the
  configured one is the server's truth (with its window w); a configured one below it is the
  user leaving room for other jobs (with the configured window).
* The allowance is A = floor(Q * margin) requests in any span of that window: a log of this
  run's own sends enforces it as a sliding window, which also bounds every fixed window of
  the server wherever it starts. (A server quota announced without a window is paced by
  its remaining count alone: spending down to the reserve is exactly A per server window.)
* The reserve is Q - A, a share of that same quota: the pacer never sends more than the
  server says remains (r, less what is in flight) minus the reserve, and then waits for the
  reset. So another consumer of the same budget only ever makes the run slower, and a quota
  the server lowers mid-run is followed from its next reply.
* An integer `t` is rounded, so each reply narrows the interval the reset must lie in (as does
  the window); the pacer waits for its upper end, then probes the new window with one request
  whose reply tells the new remaining count.
* A server that never sent headers gets the configured share alone.
* A 429 blocks everyone for `Retry-After` (else a window) and halves the allowance for a while.

The arithmetic is pure and takes clocks; only `acquire()` sleeps.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio

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
    waited: float = 0.0  # seconds `acquire` waited for budget before granting it


@dataclass(frozen=True)
class Share:
    """The quota a run follows now, and what the margin makes of it."""

    quota: int  # min(configured, announced)
    window_s: float  # the window of whichever quota that is
    allowance: int  # floor(quota * margin): the most this run sends in any window
    reserve: int  # quota - allowance: left of what the server says remains


class Pacer:
    """A request budget shared by every walker of the process (pure; clocks injected)."""

    def __init__(
        self,
        quota: int,
        window_s: float,
        margin: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if quota < 1 or window_s <= 0 or not 0 < margin <= 1:
            raise ValueError("quota >= 1, window_s > 0 and 0 < margin <= 1 are required")
        self.quota = quota
        self.window_s = window_s
        self.margin = margin
        self._clock = clock
        self._wall = wall
        self._announced_quota: int | None = None
        self._announced_window: float | None = None
        self._sent: list[float] = []  # this run's send times, oldest first
        self._horizon = window_s  # the longest window a send may still count in
        self._inflight = 0
        self._budget: int | None = None  # sends left until the reset, from the headers
        self._reset_lo = -math.inf
        self._reset_hi = -math.inf  # the server window resets in [lo, hi]
        self._seen_headers = False
        self._blocked_until = -math.inf
        self._factor = 1.0  # < 1 for a while after a 429
        self._wakeup: anyio.Event | None = None  # set by release(), for acquire()

    @property
    def inflight(self) -> int:
        """Return the number of granted requests not yet released."""
        return self._inflight

    def share(self) -> Share:
        """Return the quota followed now: the announced one where it is lower, else our own."""
        quota, window = self.quota, self.window_s
        announced = self._announced_quota
        if announced is not None and announced <= quota:
            quota = announced
            window = self._announced_window or window
        allowance = max(1, math.floor(quota * self.margin))
        return Share(quota, window, allowance, max(0, quota - allowance))

    def delay(self) -> float:
        """Return 0 when a request may be sent now, else the seconds worth waiting first."""
        now = self._clock()
        if now < self._blocked_until:
            return self._blocked_until - now
        share = self.share()
        if not self._window_unknown():
            own = self._own_wait(now, max(1, math.floor(share.allowance * self._factor)), share)
            if own > 0:
                return own
        if now < self._reset_hi and self._budget is not None:
            if self._budget - share.reserve >= 1:
                return 0.0
            return self._reset_hi - now + _EPSILON_S
        if self._seen_headers:
            # The server window has reset: probe with one request and learn the new
            # remaining count from its reply before spending more.
            return 0.0 if self._inflight == 0 else share.window_s  # woken early by the reply
        return 0.0

    def _window_unknown(self) -> bool:
        """True when the server's quota rules but it named no window (`X-RateLimit-Limit`,
        `RateLimit: limit=`): then r and t alone pace the run, and spending down to the
        reserve is exactly the allowance of each server window."""
        announced = self._announced_quota
        return announced is not None and announced <= self.quota and not self._announced_window

    def _own_wait(self, now: float, allowance: int, share: Share) -> float:
        """Return how long until fewer than `allowance` of our sends lie within the window."""
        del self._sent[: bisect.bisect_right(self._sent, now - self._horizon)]
        start = bisect.bisect_right(self._sent, now - share.window_s)
        excess = len(self._sent) - start - allowance
        if excess < 0:
            return 0.0
        return self._sent[start + excess] + share.window_s - now + _EPSILON_S

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
        window = self._refine(info.window_s)
        if info.quota is not None:
            self._announced_quota, self._announced_window = info.quota, window
            self._horizon = max(self._horizon, window or 0.0)
        if status == 429:
            wait = retry_after_s if retry_after_s is not None else self.share().window_s
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
        if window is not None:
            # No window ends later than one window after the request: a bound that beats a
            # `t` rounded up to whole seconds.
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

    def _refine(self, window: float | None) -> float | None:
        """Return an announced window, refined by a configured one it rounds up (1.5 s, w=2)."""
        if window is not None and self.window_s <= window < self.window_s + 1:
            return self.window_s
        return window

    async def acquire(self) -> Ticket:
        """Wait until the budget allows one more request, then grant it (saying how long)."""
        waited = 0.0
        while (delay := self.delay()) > 0:
            start = self._clock()
            await self._wait(delay)
            waited += self._clock() - start
        return dataclasses.replace(self.grant(), waited=waited)

    async def _wait(self, delay: float) -> None:
        # Sleep until the delay is over or a reply arrives (it may free budget).
        if self._wakeup is None:
            self._wakeup = anyio.Event()
        wakeup = self._wakeup
        with anyio.move_on_after(delay):
            await wakeup.wait()
