"""Small pure pieces every catalog profile shares: order keys, instants, hashing, tie ranges."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

Image = dict[str, Any]
OrderKey = tuple[int, str]  # (uploaded in ms since the epoch, id): List V2's sort key

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY_MS = 86_400_000
_MASK = (1 << 64) - 1
_DAYS: dict[int, str] = {}


def mix(value: int) -> int:
    """Return a well-spread 64-bit hash of an int (splitmix64's finaliser): a cheap PRNG draw."""
    x = (value + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def format_uploaded(ms: int) -> str:
    """Return RFC 3339 with milliseconds and Z, as the API writes `uploaded`."""
    day, rest = divmod(ms, DAY_MS)
    date = _DAYS.get(day)
    if date is None:
        if len(_DAYS) > 4096:
            _DAYS.clear()
        date = _DAYS[day] = datetime.fromtimestamp(day * 86_400, UTC).strftime("%Y-%m-%d")
    seconds, millis = divmod(rest, 1000)
    minutes, second = divmod(seconds, 60)
    hour, minute = divmod(minutes, 60)
    return f"{date}T{hour:02d}:{minute:02d}:{second:02d}.{millis:03d}Z"


def bulk_range(n: int, size: int) -> range:
    """Return the generation numbers of a bulk import of `size` images on one instant.

    It sits two thirds of the way through the catalog (a walk from either end meets it in the
    middle of its run), clamped to the catalog.
    """
    size = max(0, min(size, n))
    start = max(0, min(n - size, (2 * n) // 3 - size // 2))
    return range(start, start + size)
