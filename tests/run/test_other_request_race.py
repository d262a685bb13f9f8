"""A run of another request publishing date D while this run walks is never replaced."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from exporter.emulator import RunningEmulator
from exporter.errors import ConfigError
from exporter.run import pipeline, writer
from tests.helpers import emulator_config

DATE = dt.date(2026, 11, 27)
SNAPSHOT = "snapshot_date=2026-11-27"


async def test_a_snapshot_published_meanwhile_is_rechecked_before_the_swap(
    emulator: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The full request's snapshot of D appears after a filtered run's first check (their
    locks differ): the filtered run refuses at publication, leaving D byte-identical and its
    own staged parts in place."""
    out = tmp_path / "out"
    keys: dict[str, Any] = {"request.per_page": 25, "parquet.part_rows": 50}
    await pipeline.export(emulator_config(emulator, out, today=DATE, **keys))
    aside = tmp_path / "aside"
    (out / SNAPSHOT).rename(aside)  # published again by "the other run" mid-walk, below
    manifest = (aside / "_manifest.json").read_bytes()
    real = writer._commit

    async def commit(run: Any, state: Any) -> None:
        await real(run, state)
        if aside.exists():
            aside.rename(out / SNAPSHOT)

    monkeypatch.setattr(writer, "_commit", commit)
    filtered = {**keys, "request.filters": ["meta.status[eq]=active"]}
    with pytest.raises(ConfigError, match="holds a snapshot of another request"):
        await pipeline.export(emulator_config(emulator, out, today=DATE, **filtered))
    assert (out / SNAPSHOT / "_manifest.json").read_bytes() == manifest
    staged = [p for p in (out / ".staging").iterdir() if p.is_dir()]
    assert staged and any(staged[0].rglob("part-*")), staged
