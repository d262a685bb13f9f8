"""Pacer arithmetic on a virtual clock: headers, whose quota, budgets, resets, 429s; and the
pacer against a simulated server (window quota, lockout) over long runs."""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from exporter.api.pacing import Pacer, RateInfo, Share, parse_rate_headers

DEFAULT = (1200, 300.0, 0.95)  # the configured share the options declare by default


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
        pacer = Pacer(1200, 300.0, 1.0, clock=clock)
        pacer.release(pacer.grant(), 200, rl(2, 3.5, 1200, 300))
        assert pacer.delay() == 0
        pacer.grant()
        assert pacer.delay() == 0
        pacer.grant()
        assert pacer.delay() == pytest.approx(3.5, abs=0.05)

    def test_in_flight_requests_are_subtracted(self) -> None:
        """Requests in flight when a reply says r=1 may still be counted: none are left."""
        clock = Clock()
        pacer = Pacer(1200, 300.0, 1.0, clock=clock)
        first, _second = pacer.grant(), pacer.grant()
        pacer.release(first, 200, rl(1, 2.5))
        assert pacer.delay() > 0

    def test_whole_second_reset_is_narrowed_by_successive_replies(self) -> None:
        """t rounds up, so each reply bounds the reset; the pacer waits for the tightest bound."""
        clock = Clock(100.0)
        pacer = Pacer(*DEFAULT, clock=clock)
        ticket = pacer.grant()
        pacer.release(ticket, 200, rl(5, 4))  # reset in (103, 104]
        clock.now = 100.6
        ticket = pacer.grant()
        pacer.release(ticket, 200, rl(0, 3))  # reset in (102.6, 103.6]
        assert pacer.delay() == pytest.approx(3.0, abs=0.05)  # waits until 103.6, not 104.6

    def test_after_reset_one_probe_then_headers(self) -> None:
        """After the window resets, one probe goes out and the next waits for its reply."""
        clock = Clock()
        pacer = Pacer(*DEFAULT, clock=clock)
        pacer.release(pacer.grant(), 200, rl(0, 1))
        clock.now += 1.1
        assert pacer.delay() == 0
        probe = pacer.grant()
        assert pacer.delay() > 0
        pacer.release(probe, 200, rl(39, 4))
        assert pacer.delay() == 0

    def test_out_of_order_replies_keep_the_lower_remaining(self) -> None:
        clock = Clock()
        pacer = Pacer(*DEFAULT, clock=clock)
        a, b = pacer.grant(), pacer.grant()
        pacer.release(b, 200, rl(0, 4))
        pacer.release(a, 200, rl(1, 4))  # older reply, arriving late
        assert pacer.delay() > 0

    def test_429_blocks_for_retry_after_and_slows_down(self) -> None:
        """A 429 blocks every caller for Retry-After, then the local rate is halved."""
        clock = Clock()
        pacer = Pacer(10, 10.0, 1.0, clock=clock)
        pacer.release(pacer.grant(), 429, None, retry_after_s=5.0)
        assert pacer.delay() == pytest.approx(5.0)
        clock.now += 5.0
        for _ in range(4):  # the refused request counts too: 5 of 10, half speed
            assert pacer.delay() == 0
            pacer.release(pacer.grant(), 200, None)
        assert pacer.delay() > 0

    def test_bad_settings(self) -> None:
        with pytest.raises(ValueError):
            Pacer(0, 10.0, 0.9)
        with pytest.raises(ValueError):
            Pacer(10, 10.0, 1.5)
        with pytest.raises(ValueError):
            Pacer(10, 0.0, 0.9)


class TestWhoseQuota:
    @pytest.mark.parametrize(
        ("configured", "announced", "share"),
        [
            pytest.param(DEFAULT, None, Share(1200, 300.0, 1140, 60), id="no-headers"),
            pytest.param(DEFAULT, (60, 10), Share(60, 10.0, 57, 3), id="announced-lower"),
            pytest.param((30, 10.0, 0.95), (60, 10), Share(30, 10.0, 28, 2), id="configured-lower"),
            pytest.param((30, 10.0, 0.5), (30, 10), Share(30, 10.0, 15, 15), id="equal"),
            pytest.param(DEFAULT, (1, 1), Share(1, 1.0, 1, 0), id="quota-of-one"),
            pytest.param((20, 1.5, 0.95), (20, 2), Share(20, 1.5, 19, 1), id="rounded-w"),
        ],
    )
    def test_the_lower_quota_rules_and_the_reserve_is_its_share(
        self,
        configured: tuple[int, float, float],
        announced: tuple[int, int] | None,
        share: Share,
    ) -> None:
        """min(configured, announced) with its own window; the reserve is a share of it."""
        pacer = Pacer(*configured, clock=Clock())
        if announced is not None:
            q, w = announced
            pacer.release(pacer.grant(), 200, rl(q - 1, w, q, w))
        assert pacer.share() == share

    def test_a_small_announced_quota_is_not_swallowed_by_the_configured_reserve(self) -> None:
        """Issue 12: 60/10 announced under the default config allows 57 a window, not 1."""
        clock = Clock()
        pacer = Pacer(*DEFAULT, clock=clock)
        sent = 0
        while pacer.delay() == 0:
            ticket = pacer.grant()
            sent += 1
            pacer.release(ticket, 200, rl(60 - sent, 10, 60, 10))
        assert sent == 57

    def test_a_configured_share_below_the_announced_quota_is_honoured(self) -> None:
        """Issue 12: walk.quota = 30 per 10 s against a server announcing 60/10 s sends 28."""
        clock = Clock()
        pacer = Pacer(30, 10.0, 0.95, clock=clock)
        sent = 0
        while pacer.delay() == 0:
            ticket = pacer.grant()
            sent += 1
            pacer.release(ticket, 200, rl(60 - sent, 10, 60, 10))
        assert sent == 28


class FakeWaitPacer(Pacer):
    """A pacer whose waits advance its virtual clock instead of sleeping."""

    def __init__(self, quota: int, window_s: float, margin: float) -> None:
        self.clock = Clock()
        super().__init__(quota, window_s, margin, clock=self.clock)

    async def _wait(self, delay: float) -> None:
        self.clock.now += delay


async def test_acquire_waits_and_says_how_long() -> None:
    """acquire() waits until the budget allows; the ticket carries the wait (the client counts
    it: the pacer writes no run counter)."""
    pacer = FakeWaitPacer(2, 0.2, 1.0)
    waited = []
    for _ in range(3):
        ticket = await pacer.acquire()
        waited.append(ticket.waited)
        pacer.release(ticket, 200, None)
    assert waited[:2] == [0.0, 0.0]
    assert waited[2] == pytest.approx(0.2, abs=0.05)


async def test_a_reply_wakes_a_waiting_acquire() -> None:
    """A caller waiting for the probe's reply is woken by it, not by its 300 s delay."""
    clock = Clock()
    pacer = Pacer(*DEFAULT, clock=clock)
    pacer.release(pacer.grant(), 200, rl(0, 1, 1200, 300))
    clock.now += 2  # the server window is over: one probe, the rest wait for its reply
    probe = pacer.grant()
    assert pacer.delay() >= 300
    granted: list[object] = []

    async def waiter() -> None:
        granted.append(await pacer.acquire())

    with anyio.fail_after(30):  # far below the 300 s the waiter would otherwise sleep
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert not granted
            pacer.release(probe, 200, rl(1000, 200, 1200, 300))
    assert len(granted) == 1


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


# -- the pacer against a simulated server, over long runs in virtual time ----------------------


@dataclass
class Window:
    start: float
    quota: int
    used: Counter[str] = field(default_factory=Counter)


class SimServer:
    """Cloudflare's model, pure: a quota per window per user, and a lockout past it.

    Windows open with the first request after the last one ended (the emulator's model), or
    on multiples of the window (`aligned`). A new `quota` takes effect as the next window
    opens. `other_per_window` requests of the user's other traffic are counted as each window
    opens, so the remaining count falls faster than the client's own spending; `hit(t, "other")`
    adds other traffic at any instant.
    """

    def __init__(
        self,
        quota: int,
        window_s: float,
        *,
        aligned: bool = False,
        headers: bool = True,
        other_per_window: int = 0,
    ) -> None:
        self.quota, self.window_s, self.lockout_s = quota, window_s, 300.0
        self.aligned, self.headers, self.other_per_window = aligned, headers, other_per_window
        self.windows: list[Window] = []
        self.locked_until = -math.inf
        self.throttled: Counter[str] = Counter()
        self.admitted: list[float] = []  # the client's requests, when the server counted them

    def hit(self, now: float, who: str = "us") -> tuple[int, dict[str, str]]:
        """Count one request; return its status and headers."""
        window = self._window(now)
        if now < self.locked_until or sum(window.used.values()) >= window.quota:
            self.locked_until = max(self.locked_until, now + self.lockout_s)
            self.throttled[who] += 1
            return 429, {"Retry-After": str(math.ceil(self.locked_until - now))}
        window.used[who] += 1
        if who == "us":
            self.admitted.append(now)
        if not self.headers:
            return 200, {}
        remaining = window.quota - sum(window.used.values())
        reset = max(1, math.ceil(window.start + self.window_s - now - 1e-9))
        return 200, {
            "Ratelimit": f'"default";r={remaining};t={reset}',
            "Ratelimit-Policy": f'"burst";q={window.quota};w={math.ceil(self.window_s)}',
        }

    def _window(self, now: float) -> Window:
        if self.windows and now < self.windows[-1].start + self.window_s:
            return self.windows[-1]
        start = math.floor(now / self.window_s) * self.window_s if self.aligned else now
        window = Window(start, self.quota)
        window.used["other"] = self.other_per_window
        self.windows.append(window)
        return window


Event = tuple[float, Callable[[], None]]


def simulate(
    server: SimServer,
    pacer: Pacer,
    clock: Clock,
    seconds: float,
    *,
    workers: int = 3,
    rtt_s: float = 0.05,
    events: Sequence[Event] = (),
) -> None:
    """Run `workers` request loops through `pacer` against `server` for `seconds` (virtual).

    Like the walker's cursors: each worker waits for the pacer, sends, and sends again when
    the reply is in; a reply wakes every waiting worker, as `Pacer.acquire` is woken.
    """
    queue: list[tuple[float, int, Callable[[], None]]] = []
    order = itertools.count()
    waiting: dict[int, int] = {}  # worker -> the generation of its pending wake-up

    def at(when: float, action: Callable[[], None]) -> None:
        heapq.heappush(queue, (when, next(order), action))

    def wake(worker: int, generation: int) -> None:
        if waiting.get(worker) == generation:
            del waiting[worker]
            attempt(worker)

    def attempt(worker: int) -> None:
        delay = pacer.delay()
        if delay > 0:
            generation = waiting[worker] = next(order)
            at(clock.now + delay, lambda: wake(worker, generation))
            return
        ticket = pacer.grant()
        reply: list[tuple[int, dict[str, str]]] = []
        at(clock.now + rtt_s / 2, lambda: reply.append(server.hit(clock.now)))

        def receive() -> None:
            status, headers = reply[0]
            retry_after = headers.get("Retry-After")
            pacer.release(ticket, status, headers, float(retry_after) if retry_after else None)
            for other in list(waiting):
                wake(other, waiting[other])
            attempt(worker)

        at(clock.now + rtt_s, receive)

    for worker in range(workers):
        attempt(worker)
    for when, action in events:
        at(when, action)
    end = clock.now + seconds
    while queue and queue[0][0] <= end:
        clock.now, _, action = heapq.heappop(queue)
        action()


def other_request(server: SimServer, clock: Clock) -> None:
    """Send one request of the user's other traffic (it ignores every header)."""
    server.hit(clock.now, "other")


def most_in_any_window(times: Sequence[float], window_s: float) -> int:
    """Return the most of `times` (sorted) inside any half-open span of `window_s`."""
    most, first = 0, 0
    for last, now in enumerate(times):
        while times[first] <= now - window_s:
            first += 1
        most = max(most, last - first + 1)
    return most


def used_share(
    times: Sequence[float], start: float, end: float, per_window: float, window_s: float
) -> float:
    """Return the requests in [start, end) over what `per_window` a window allows there."""
    count = sum(1 for t in times if start <= t < end)
    return count / (per_window * (end - start) / window_s)


@dataclass(frozen=True)
class Case:
    configured: tuple[int, float, float]
    server: dict[str, Any]
    allowance: int  # per window, what the run may spend
    window_s: float
    usable: int  # per window, what is left for the run (other traffic takes the rest)
    seconds: float
    trickle_per_window: int = 0  # other traffic spread evenly over every window


CASES = [
    pytest.param(
        Case(DEFAULT, {"quota": 60, "window_s": 10}, 57, 10, 57, 900), id="announced-60/10s"
    ),
    pytest.param(
        Case(DEFAULT, {"quota": 60, "window_s": 10, "aligned": True}, 57, 10, 57, 900),
        id="announced-60/10s-aligned-windows",
    ),
    pytest.param(
        Case((30, 10.0, 0.95), {"quota": 60, "window_s": 10}, 28, 10, 28, 900),
        id="configured-30/10s-under-announced-60/10s",
    ),
    pytest.param(
        Case(DEFAULT, {"quota": 1200, "window_s": 300}, 1140, 300, 1140, 6000),
        id="announced-1200/300s",
    ),
    pytest.param(
        Case(DEFAULT, {"quota": 1200, "window_s": 300, "aligned": True}, 1140, 300, 1140, 6000),
        id="announced-1200/300s-aligned-windows",
    ),
    pytest.param(
        Case(DEFAULT, {"quota": 60, "window_s": 10, "other_per_window": 20}, 57, 10, 37, 900),
        id="other-traffic-takes-20-of-each-window",
    ),
    pytest.param(
        Case((40, 10.0, 0.95), {"quota": 60, "window_s": 10, "aligned": True}, 38, 10, 38, 900, 20),
        id="other-traffic-in-the-room-the-config-leaves",
    ),
    pytest.param(
        Case((60, 10.0, 0.95), {"quota": 60, "window_s": 10, "headers": False}, 57, 10, 57, 900),
        id="no-headers",
    ),
    pytest.param(
        Case(DEFAULT, {"quota": 1200, "window_s": 300, "headers": False}, 1140, 300, 1140, 6000),
        id="no-headers-cloudflare-default",
    ),
]


@pytest.mark.parametrize("case", CASES)
def test_long_run_spends_its_allowance_without_a_429(case: Case) -> None:
    """No 429; never above the allowance in any span of its window (so in no server window
    either); and >= 90% of what is left for the run used over a long run."""
    clock = Clock(0.0)
    server = SimServer(**case.server)
    pacer = Pacer(*case.configured, clock=clock)
    events: list[Event] = []
    if case.trickle_per_window:
        step = case.window_s / case.trickle_per_window
        trickle = int(case.seconds / step)
        events = [
            (i * step + step / 2, lambda: other_request(server, clock)) for i in range(trickle)
        ]
    simulate(server, pacer, clock, case.seconds, events=events)
    assert not server.throttled
    assert most_in_any_window(server.admitted, case.window_s) <= case.allowance
    assert max(w.used["us"] for w in server.windows) <= case.allowance
    # the first window learns the server's policy: measure from the second one on
    share = used_share(server.admitted, case.window_s, case.seconds, case.usable, case.window_s)
    assert 0.9 <= share <= 1.0 + case.window_s / case.seconds, share


@pytest.mark.parametrize("aligned", [False, True], ids=["windows-from-first-request", "aligned"])
def test_a_quota_that_changes_mid_run_is_followed(aligned: bool) -> None:
    """60/10 s, then 30/10 s, then 90/10 s announced: each allowance kept and >= 90% used."""
    clock = Clock(0.0)
    server = SimServer(60, 10, aligned=aligned)
    pacer = Pacer(*DEFAULT, clock=clock)

    def announce(quota: int) -> Callable[[], None]:
        return lambda: setattr(server, "quota", quota)

    phases = [(0, 57), (300, 28), (600, 85)]  # (start, allowance of floor(q * 0.95))
    events = [(start, announce(q)) for (start, _), q in zip(phases, (60, 30, 90), strict=True)]
    simulate(server, pacer, clock, 900, events=events)
    assert not server.throttled
    for (start, allowance), end in zip(phases, (300, 600, 900), strict=True):
        # a new quota applies from the server's next window: judge each phase after it
        times = [t for t in server.admitted if start + 10 <= t < end]
        assert most_in_any_window(times, 10) <= allowance
        assert used_share(times, start + 20, end, allowance, 10) >= 0.9


def test_an_announced_quota_without_a_window_is_paced_by_remaining_alone() -> None:
    """`X-RateLimit-Limit: 60` names no window: the configured 300 s is not imposed on it;
    each server window gives floor(60 * 0.95) = 57, the remaining count less the reserve."""
    clock = Clock()
    pacer = Pacer(*DEFAULT, clock=clock)
    for _window in range(3):
        sent = 0
        while pacer.delay() == 0:
            ticket = pacer.grant()
            sent += 1
            headers = {
                "X-RateLimit-Limit": "60",
                "X-RateLimit-Remaining": str(60 - sent),
                "X-RateLimit-Reset": "10",
            }
            pacer.release(ticket, 200, headers)
        assert sent == 57
        clock.now += 11
