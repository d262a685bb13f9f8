"""Progress lines: none before the walk begins (a store or lock error stands alone), then one
per interval with the run's counters."""

from __future__ import annotations

import logging

import anyio
import pytest

from exporter.observe.progress import progress_line, report_progress
from exporter.stats import RunStats

INTERVAL_S = 0.01


async def lines_while(
    stats: RunStats, caplog: pytest.LogCaptureFixture, intervals: int
) -> list[str]:
    """Run the plain reporter for about `intervals` intervals; return its lines."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="exporter"):
        with anyio.move_on_after(INTERVAL_S * intervals):
            await report_progress(stats, interactive=False, interval_s=INTERVAL_S)
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]


async def test_no_progress_line_before_the_first_request(caplog: pytest.LogCaptureFixture) -> None:
    """Opening a store that retries for seconds printed "0 images" lines above its error."""
    assert await lines_while(RunStats(), caplog, 20) == []


@pytest.mark.parametrize(
    "stats",
    [RunStats(requests=1, images=1000, pages=1), RunStats(current_wait="rate limit, 3 s")],
    ids=["requests sent", "waiting for the quota"],
)
async def test_progress_lines_once_the_walk_begins(
    stats: RunStats, caplog: pytest.LogCaptureFixture
) -> None:
    lines: list[str] = []
    while not lines:  # the first line comes after one interval, however slow the machine
        lines = await lines_while(stats, caplog, 20)
    assert all(line.startswith(f"progress: {stats.images:,} images") for line in lines)
    if stats.current_wait:
        assert lines[0].endswith(f"waiting: {stats.current_wait}")


def test_progress_line_names_the_api_count_and_the_rate() -> None:
    stats = RunStats(images=1500, pages=2, retries=1, throttled=3)
    stats.extra["api_count"] = 3000
    assert progress_line(stats, 2.0) == (
        "1,500/3,000 images, 2 pages, 750 images/s, 1 retries, 3 429s"
    )
