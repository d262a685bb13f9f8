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


def test_the_fleet_table_prints_account_ids_whole_at_80_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 32-character account id is what users grep for: at 80 columns the other columns give
    way (the result folds, a URL in it kept across lines) rather than the id being cut."""
    from types import SimpleNamespace

    from exporter.observe.progress import print_fleet_table

    monkeypatch.setenv("COLUMNS", "80")
    url = "s3://bucket/some/long/path/part-00000.parquet"
    failed = SimpleNamespace(
        account_id="0123456789abcdef0123456789abcdef",
        images=123456,
        duration_s=12.3,
        exit_code=5,
        message=f"sink error: parquet: could not write {url}: access denied",
    )
    published = SimpleNamespace(
        account_id="fedcba9876543210fedcba9876543210",
        images=None,
        duration_s=1.0,
        exit_code=0,
        message="",
    )
    print_fleet_table([failed, published], log_format="plain", interactive=True)
    lines = capsys.readouterr().err.splitlines()
    assert max(len(line) for line in lines) <= 80
    text = "".join(lines)
    for account in (failed.account_id, published.account_id):
        assert f"│ {account} │" in text
    assert "…" not in text
    # the result column folds: its cells, read down the column, hold the whole message
    result = "".join(line.rsplit("│", 2)[1].strip() for line in lines if line.count("│") == 6)
    assert url in result and "published" in result
