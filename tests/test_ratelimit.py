"""Pacer arithmetic with a hand-driven clock: headers, budgets, resets, 429s."""

from __future__ import annotations

import pytest

from exporter.ratelimit import Pacer, RateInfo, parse_rate_headers
from exporter.stats import RunStats


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rl(r: int, t: float | str, q: int = 40, w: int = 4) -> dict[str, str]:
    return {"Ratelimit": f'"default";r={r};t={t}', "Ratelimit-Policy": f'"burst";q={q};w={w}'}


class TestParseHeaders:
    def test_ietf_fields(self) -> None:
        """`Ratelimit` gives remaining/reset, `Ratelimit-Policy` quota/window."""
        info = parse_rate_headers(rl(17, 30, 1200, 300), 0)
        assert info == RateInfo(remaining=17, reset_s=30, quota=1200, window_s=300)

    def test_case_insensitive_and_fractional_reset(self) -> None:
        info = parse_rate_headers({"ratelimit": '"default";r=3;t=1.25'}, 0)
        assert (info.remaining, info.reset_s, info.reset_exact) == (3, 1.25, True)

    def test_most_restrictive_policy_wins(self) -> None:
        info = parse_rate_headers({"RateLimit": '"a";r=50;t=10, "b";r=5;t=60'}, 0)
        assert (info.remaining, info.reset_s) == (5, 60)

    def test_older_draft_form(self) -> None:
        info = parse_rate_headers({"RateLimit": "limit=100, remaining=7, reset=12"}, 0)
        assert (info.remaining, info.reset_s, info.quota) == (7, 12, 100)

    def test_x_ratelimit_delta_and_epoch(self) -> None:
        """X-RateLimit-Reset is seconds, or a Unix time when it looks like one."""
        delta = {
            "X-RateLimit-Limit": "1200",
            "X-RateLimit-Remaining": "9",
            "X-RateLimit-Reset": "8",
        }
        assert parse_rate_headers(delta, 0) == RateInfo(9, 8, False, 1200, None)
        epoch = dict(delta, **{"X-RateLimit-Reset": "1700000100"})
        assert parse_rate_headers(epoch, 1_700_000_000).reset_s == 100

    def test_absent_or_garbage(self) -> None:
        assert parse_rate_headers({}, 0) == RateInfo()
        assert parse_rate_headers({"Ratelimit": "r=abc;t=-1"}, 0).remaining is None


class TestPacer:
    def test_local_window_without_headers(self) -> None:
        """With no headers, at most quota*margin requests go out per window."""
        clock = Clock()
        pacer = Pacer(10, 10.0, 0.9, clock=clock)
        for _ in range(9):
            assert pacer.delay() == 0
            pacer.release(pacer.grant(), 200, None)
        assert pacer.delay() == pytest.approx(10.0, abs=0.05)
        clock.now += 10.01
        assert pacer.delay() == 0

    def test_never_spends_past_server_remaining(self) -> None:
        """r=2 allows exactly two more requests until the reset, whatever the local model says."""
        clock = Clock()
        pacer = Pacer(1200, 300.0, 0.9, clock=clock)
        pacer.release(pacer.grant(), 200, rl(2, 3.5))
        assert pacer.delay() == 0
        pacer.grant()
        assert pacer.delay() == 0
        pacer.grant()
        assert pacer.delay() == pytest.approx(3.5, abs=0.05)

    def test_in_flight_requests_are_subtracted(self) -> None:
        """Requests in flight when a reply says r=1 may still be counted: none are left."""
        clock = Clock()
        pacer = Pacer(clock=clock)
        first, _second = pacer.grant(), pacer.grant()
        pacer.release(first, 200, rl(1, 2.5))
        assert pacer.delay() > 0

    def test_whole_second_reset_is_narrowed_by_successive_replies(self) -> None:
        """t rounds up, so each reply bounds the reset; the pacer waits for the tightest bound."""
        clock = Clock(100.0)
        pacer = Pacer(clock=clock)
        ticket = pacer.grant()
        pacer.release(ticket, 200, rl(5, 4))  # reset in (103, 104]
        clock.now = 100.6
        ticket = pacer.grant()
        pacer.release(ticket, 200, rl(0, 3))  # reset in (102.6, 103.6]
        assert pacer.delay() == pytest.approx(3.0, abs=0.05)  # waits until 103.6, not 104.6

    def test_after_reset_one_probe_then_headers(self) -> None:
        """After the window resets, one probe goes out and the next waits for its reply."""
        clock = Clock()
        pacer = Pacer(clock=clock)
        pacer.release(pacer.grant(), 200, rl(0, 1))
        clock.now += 1.1
        assert pacer.delay() == 0
        probe = pacer.grant()
        assert pacer.delay() > 0
        pacer.release(probe, 200, rl(39, 4))
        assert pacer.delay() == 0

    def test_out_of_order_replies_keep_the_lower_remaining(self) -> None:
        clock = Clock()
        pacer = Pacer(clock=clock)
        a, b = pacer.grant(), pacer.grant()
        pacer.release(b, 200, rl(0, 4))
        pacer.release(a, 200, rl(1, 4))  # older reply, arriving late
        assert pacer.delay() > 0

    def test_429_blocks_for_retry_after_and_slows_down(self) -> None:
        """A 429 blocks every caller for Retry-After, then the local rate is halved."""
        clock = Clock()
        pacer = Pacer(10, 10.0, 1.0, clock=clock)
        pacer.release(pacer.grant(), 429, None, retry_after_s=5.0)
        assert pacer.throttled == 1
        assert pacer.delay() == pytest.approx(5.0)
        clock.now += 5.0
        for _ in range(4):  # the refused request counts too: 5 of 10, half speed
            assert pacer.delay() == 0
            pacer.release(pacer.grant(), 200, None)
        assert pacer.delay() > 0

    def test_bad_settings(self) -> None:
        with pytest.raises(ValueError):
            Pacer(0)
        with pytest.raises(ValueError):
            Pacer(margin=1.5)


async def test_acquire_waits_and_counts() -> None:
    """acquire() sleeps until the budget allows and records the wait in RunStats."""
    pacer = Pacer(2, 0.2, 1.0)
    stats = RunStats()
    for _ in range(3):
        pacer.release(await pacer.acquire(stats), 200, None)
    assert stats.waits == 1
    assert 0.1 < stats.wait_seconds < 0.5
    assert stats.current_wait == ""


def test_replies_without_headers_bring_back_the_local_window() -> None:
    """Once replies stop carrying headers, the local quota*margin window applies again."""
    clock = Clock()
    pacer = Pacer(10, 10.0, 0.5, clock=clock)
    pacer.release(pacer.grant(), 200, {"Ratelimit": '"default";r=0;t=1'})
    clock.now += 1.5
    for _ in range(4):
        assert pacer.delay() == 0
        pacer.release(pacer.grant(), 200, None)
    assert pacer.delay() > 0  # 5 sent within the window: the local limit of 5
