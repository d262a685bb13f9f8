"""RunStats: the counters a checkpoint saves are the counters a resumed run restores."""

from __future__ import annotations

from dataclasses import fields

from exporter.stats import NOT_COUNTS, RunStats


def test_restore_is_the_inverse_of_as_dict_for_every_counter() -> None:
    """Each counter (a new one too) survives a checkpoint: none is listed by hand."""
    counters = [f.name for f in fields(RunStats) if f.name not in NOT_COUNTS]
    stats = RunStats(**{name: index + 1 for index, name in enumerate(counters)})
    stats.wait_seconds = 2.5
    stats.extra["api_count"] = 9
    resumed = RunStats(current_wait="rate limit")
    resumed.restore(stats.as_dict())
    assert [getattr(resumed, n) for n in counters] == [getattr(stats, n) for n in counters]
    assert type(resumed.wait_seconds) is float and type(resumed.images) is int
    resumed.restore({})  # an older checkpoint without counts: all zero
    assert resumed.as_dict() == RunStats().as_dict()
