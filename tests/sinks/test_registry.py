"""open_sink: built-ins by name, third-party sinks through entry points; the memory sink."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyarrow as pa
import pytest
from sink_data import conformer, make_batch, make_images, schema_of

from exporter.errors import ConfigError
from exporter.sinks import (
    ENTRY_POINT_GROUP,
    NightSource,
    PublishedNight,
    Sink,
    SinkOptions,
    available_sinks,
    night_sinks,
    open_sink,
    read_night,
)
from exporter.sinks.duckdb import DuckdbSink
from exporter.sinks.memory import MemorySink
from exporter.sinks.ndjson import NdjsonSink
from exporter.sinks.parquet import ParquetSink
from exporter.store import LocalStore
from exporter.store.layout import ROOT

PLUGIN = """
from exporter.sinks.memory import MemorySink


class CountingSink(MemorySink):
    name = "counting"
    made = []

    def __init__(self, options=None):
        super().__init__(options)
        CountingSink.made.append(options)
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install a tiny distribution with a `counting` sink entry point on sys.path."""
    (tmp_path / "cf_counting_sink.py").write_text(PLUGIN)
    info = tmp_path / "cf_counting_sink-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cf-counting-sink\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\ncounting = cf_counting_sink:CountingSink\n"
        "broken = cf_counting_sink:DoesNotExist\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


class TestOpenSink:
    @pytest.mark.parametrize(
        ("name", "kind"),
        [("parquet", ParquetSink), ("ndjson", NdjsonSink), ("duckdb", DuckdbSink)],
    )
    def test_builtins_by_name(self, name: str, kind: type) -> None:
        options = SinkOptions(part_rows=7)
        sink = open_sink(name, options)
        assert isinstance(sink, kind) and isinstance(sink, Sink)
        assert sink.name == name

    def test_third_party_sink_is_chosen_by_name(self, plugin: Path) -> None:
        """An entry point in `cf_images_exporter.sinks` is used like a built-in."""
        options = SinkOptions(part_rows=3)
        sink = open_sink("counting", options)
        assert type(sink).__name__ == "CountingSink" and isinstance(sink, Sink)
        assert type(sink).made == [options]  # type: ignore[attr-defined]
        assert {"counting", "parquet", "ndjson", "duckdb", "memory"} <= set(available_sinks())

    def test_unknown_name_lists_the_choices(self, plugin: Path) -> None:
        """The error names the key a user sets (`export.formats`, `--format`)."""
        with pytest.raises(ConfigError, match=r"unknown sink 'nope'; available: .*counting") as e:
            open_sink("nope")
        assert e.value.key == "export.formats"

    def test_broken_plugin_is_a_config_error(self, plugin: Path) -> None:
        with pytest.raises(ConfigError, match="sink 'broken' failed to load") as e:
            open_sink("broken")
        assert e.value.key == "export.formats"


class TestMemorySink:
    async def test_keeps_batches_and_conforms_them_at_finish(self, tmp_path: Path) -> None:
        early, final = {"meta__status": pa.string()}, {"meta__size": pa.int64()}
        sink = MemorySink(SinkOptions(part_rows=20))
        await sink.open(LocalStore(tmp_path), "x", schema_of(early))
        for start in range(0, 50, 10):
            await sink.write(make_batch(make_images(start, 10), early if start < 20 else final))
            if sink.should_rotate():
                await sink.commit_part()
        assert await sink.finish(schema_of(final), conformer(schema_of(final))) == []
        table = sink.table()
        assert sink.commits == [20, 20, 10]
        assert table.schema.equals(schema_of(final)) and table.num_rows == 50
        assert not any(tmp_path.iterdir())  # noqa: ASYNC240 - a test's own tmp dir


def test_a_night_is_read_through_the_cheapest_sink_that_wrote_it(tmp_path: Path) -> None:
    """Where the diff reads a night follows the kinds its sinks declare (Parquet parts, then
    NDJSON's, then the DuckDB table), not the order of `formats`; each sink is configured as
    the night's request recorded it, and one no longer installed is left out."""
    date, store = "2026-11-27", LocalStore(tmp_path)
    database = tmp_path / "elsewhere.duckdb"
    database.touch()
    request = {
        "formats": ["duckdb", "nonesuch", "ndjson", "parquet"],
        "duckdb_path": str(database),
        "ndjson_gzip": True,
    }
    sinks = night_sinks(request)
    assert [sink.name for sink in sinks] == ["duckdb", "ndjson", "parquet"]
    assert isinstance(sinks[1], NdjsonSink) and sinks[1].file_format.name == "ndjson.gz"
    files = [("part-00000.ndjson.gz", "ndjson.gz"), ("part-00000.parquet", "parquet")]
    night = PublishedNight(
        store=store, layout=ROOT, snapshot_date=date, directory=ROOT.snapshot(date), files=files
    )
    parquet = str(tmp_path / ROOT.snapshot(date) / "part-00000.parquet")
    assert read_night(sinks, night, tmp_path) == NightSource("parquet", date, (parquet,))
    ndjson_only = dataclasses.replace(night, files=files[:1])
    assert read_night(sinks, ndjson_only, tmp_path).kind == "ndjson"  # type: ignore[union-attr]
    no_files = dataclasses.replace(night, files=[])
    assert read_night(sinks, no_files, tmp_path) == NightSource("duckdb", date, (str(database),))
    assert read_night(night_sinks({"formats": ["parquet"]}), no_files, tmp_path) is None
