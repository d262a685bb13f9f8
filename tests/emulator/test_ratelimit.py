"""The quota/window/lockout arithmetic, driven by a hand-stepped clock."""

from __future__ import annotations

from exporter.emulator.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_quota_then_lockout_then_fresh_window() -> None:
    """Quota requests pass, the next locks out for lockout_s, then a new window opens."""
    clock = Clock()
    limiter = RateLimiter(quota=3, window_s=10, lockout_s=30, clock=clock)
    remaining = [limiter.hit("u").remaining for _ in range(3)]
    assert remaining == [2, 1, 0]
    refused = limiter.hit("u")
    assert not refused.allowed and refused.retry_after == 30
    clock.now += 12  # past the window, still locked out: the lockout is not shortened
    assert limiter.hit("u").retry_after == 18
    clock.now += 18
    again = limiter.hit("u")
    assert again.allowed and again.remaining == 2


def test_lockout_not_extended_by_retries() -> None:
    """Requests during a lockout are refused without pushing its end."""
    clock = Clock()
    limiter = RateLimiter(quota=1, window_s=10, lockout_s=5, clock=clock)
    limiter.hit("u")
    limiter.hit("u")
    for _ in range(3):
        clock.now += 1
        limiter.hit("u")
    clock.now += 2
    assert limiter.hit("u").allowed


def test_window_resets_count() -> None:
    """Under the quota, a new window restores the full quota."""
    clock = Clock()
    limiter = RateLimiter(quota=2, window_s=10, lockout_s=5, clock=clock)
    limiter.hit("u")
    decision = limiter.hit("u")
    assert decision.remaining == 0 and decision.reset_s == 10
    clock.now += 10
    assert limiter.hit("u").remaining == 1


def test_callers_are_independent() -> None:
    """One caller's lockout does not touch another's budget."""
    limiter = RateLimiter(quota=1, window_s=10, lockout_s=5, clock=Clock())
    limiter.hit("a")
    assert not limiter.hit("a").allowed
    assert limiter.hit("b").allowed


def test_headers() -> None:
    """Headers follow Cloudflare's Ratelimit / Ratelimit-Policy format; Retry-After on refusal."""
    clock = Clock()
    limiter = RateLimiter(quota=2, window_s=4.5, lockout_s=2.2, clock=clock)
    clock.now += 0
    ok = limiter.hit("u").headers()
    assert ok == {"Ratelimit": '"default";r=1;t=5', "Ratelimit-Policy": '"burst";q=2;w=5'}
    limiter.hit("u")
    assert limiter.hit("u").headers() == {
        "Ratelimit": '"default";r=0;t=3',
        "Ratelimit-Policy": '"burst";q=2;w=5',
        "Retry-After": "3",
    }


def test_peak_is_the_most_one_window_admitted() -> None:
    """`peak` records the fullest window of any caller: tests compare it with an allowance."""
    clock = Clock()
    limiter = RateLimiter(quota=5, window_s=10, lockout_s=30, clock=clock)
    for _ in range(3):
        limiter.hit("u")
    clock.now += 10
    for _ in range(2):
        limiter.hit("u")
        limiter.hit("v")
    assert limiter.peak == 3
