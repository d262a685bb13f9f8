"""Large accounts of a fleet finishing together: one DuckDB comparison at a time per process."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from exporter.changes.diff import CHANGES_SCHEMA, DiffSettings, NightSource, iter_changes
from exporter.changes.smalldiff import iter_night_changes
from tests.changes.test_diff import image, write_parquet


def test_duckdb_comparisons_run_one_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four threads (a fleet's large accounts) compare their nights at once: DuckDB runs one
    comparison at a time, each gives the rows it gives alone; first nights are not held."""
    active, most = 0, 0
    lock = threading.Lock()
    compare = iter_changes

    def counted(*args: Any, **kwargs: Any) -> Iterator[pa.RecordBatch]:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        try:
            time.sleep(0.05)  # room for another thread to come in
            yield from compare(*args, **kwargs)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr("exporter.changes.diff.iter_changes", counted)
    before = [image(f"id{i:03d}") for i in range(50)]
    after = [{**row, "filename": "new"} for row in before[:10]] + before[20:]
    previous = write_parquet(tmp_path / "2024-01-01.parquet", before)
    current = write_parquet(tmp_path / "2024-01-02.parquet", after)
    settings = DiffSettings(small_rows=0)  # the DuckDB comparison

    def kinds(previous: NightSource | None) -> Counter[str]:
        batches = iter_night_changes(current, previous, settings=settings, temp_directory=tmp_path)
        return Counter(pa.Table.from_batches(list(batches), CHANGES_SCHEMA)["change"].to_pylist())

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        compared = list(pool.map(kinds, [previous] * 4))
    assert compared == [Counter(changed=10, removed=10)] * 4
    assert most == 1
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        firsts = list(pool.map(kinds, [None] * 4))
    assert firsts == [Counter(added=40)] * 4
    assert most > 1  # nothing held first nights back
