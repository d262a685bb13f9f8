"""The retry policy: what retries, how long it waits, when it gives up."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from exporter.api.retry import RetryPolicy, parse_retry_after
from exporter.errors import ConfigError

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC).timestamp()


def clock() -> float:
    return NOW


class TestClassification:
    @pytest.mark.parametrize("status", [None, 429, 500, 501, 502, 503, 504, 520, 524, 530])
    def test_transient(self, status: int | None) -> None:
        """Connection errors (None), 429, 500-504 and 520-530 retry."""
        assert RetryPolicy().retries(status)

    @pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 505, 519, 531])
    def test_fail_fast(self, status: int) -> None:
        """Client errors and other statuses fail at once."""
        assert not RetryPolicy().retries(status)
        assert RetryPolicy().delay(1, status, None, random.Random(0)) is None


class TestRetryAfter:
    def test_seconds(self) -> None:
        assert parse_retry_after("3", clock) == 3.0
        assert parse_retry_after(" 1.5 ", clock) == 1.5

    def test_http_date(self) -> None:
        """An HTTP-date means "wait until then" (RFC 9110 §10.2.3)."""
        later = format_datetime(datetime.fromtimestamp(NOW + 42, UTC), usegmt=True)
        assert parse_retry_after(later, clock) == pytest.approx(42.0)

    def test_past_date_is_zero(self) -> None:
        earlier = format_datetime(datetime.fromtimestamp(NOW - 42, UTC), usegmt=True)
        assert parse_retry_after(earlier, clock) == 0.0

    @pytest.mark.parametrize("text", [None, "", "soon", "nan", "-5x"])
    def test_garbage_is_ignored(self, text: str | None) -> None:
        assert parse_retry_after(text, clock) is None


class TestDelay:
    def test_full_jitter_within_exponential_bounds(self) -> None:
        """Waits are uniform in [0, min(cap, base * 2**(attempt-1))]."""
        policy = RetryPolicy(base_s=0.5, cap_s=4.0, max_attempts=100)
        rng = random.Random(1)
        for attempt, bound in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
            waits = [policy.delay(attempt, 503, None, rng) for _ in range(300)]
            assert all(w is not None and 0 <= w <= bound for w in waits)
            assert max(w for w in waits if w is not None) > bound * 0.9  # jitter spans the range

    def test_retry_after_seconds_honoured(self) -> None:
        """A 429 with Retry-After: 3 waits at least 3 s."""
        delay = RetryPolicy(clock=clock).delay(1, 429, "3", random.Random(0))
        assert delay is not None and delay >= 3.0
        assert delay < 3.5

    def test_retry_after_date_honoured(self) -> None:
        """A Retry-After HTTP-date 20 s ahead waits 20 s, even above the backoff cap."""
        later = format_datetime(datetime.fromtimestamp(NOW + 20, UTC), usegmt=True)
        delay = RetryPolicy(cap_s=1.0, clock=clock).delay(2, 503, later, random.Random(0))
        assert delay == pytest.approx(20.0)

    def test_gives_up_after_max_attempts(self) -> None:
        policy = RetryPolicy(max_attempts=3)
        assert policy.delay(2, 500, None, random.Random(0)) is not None
        assert policy.delay(3, 500, None, random.Random(0)) is None

    def test_same_seed_same_waits(self) -> None:
        policy = RetryPolicy()
        first = [policy.delay(a, 500, None, random.Random(7)) for a in range(1, 6)]
        again = [policy.delay(a, 500, None, random.Random(7)) for a in range(1, 6)]
        assert first == again


@pytest.mark.parametrize(
    "kwargs", [{"max_attempts": 0}, {"base_s": -1}, {"deadline_s": 0}], ids=str
)
def test_impossible_policy_is_a_config_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
