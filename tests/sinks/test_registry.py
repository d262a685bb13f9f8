"""open_sink: built-ins by name, third-party sinks through entry points; the memory sink."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from sink_data import conformer, make_batch, make_images, schema_of

from exporter.errors import ConfigError
from exporter.sinks import ENTRY_POINT_GROUP, Sink, SinkOptions, available_sinks, open_sink
from exporter.sinks.duckdb import DuckdbSink
from exporter.sinks.memory import MemorySink
from exporter.sinks.ndjson import NdjsonSink
from exporter.sinks.parquet import ParquetSink
from exporter.store import LocalStore

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
