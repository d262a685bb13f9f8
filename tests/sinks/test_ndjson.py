"""NdjsonSink: one image per line, raw meta spliced, RFC 3339 times, gzip, DuckDB read_json."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import orjson
import pyarrow as pa
import pytest
from sink_data import CORE, conformer, make_batch, make_images, schema_of

from exporter.sinks import SinkOptions
from exporter.sinks.ndjson import NdjsonSink, encode_lines
from exporter.transform.normalize import NormalizeOptions, Normalizer

DIR = "snapshot_date=2026-11-27"
PLAN = {"meta__status": pa.string()}
WIDER = {"meta__status": pa.string(), "meta__size": pa.int64()}


def rfc3339(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds").replace(
        "+00:00", "Z"
    )


class TestEncodeLines:
    def test_lines_carry_core_fields_and_the_original_meta(self) -> None:
        """Each line: core names in order, uploaded RFC 3339 Z, meta as the original object."""
        images = make_images(0, 40)
        lines = encode_lines(make_batch(images, PLAN)).splitlines()
        assert len(lines) == 40
        for line, image in zip(lines, images, strict=True):
            row = orjson.loads(line)
            assert list(row) == [
                "account_id", "id", "filename", "creator",
                "require_signed_urls", "uploaded", "variants", "meta",
            ]  # fmt: skip
            assert row["id"] == image["id"]
            assert row["creator"] == image["creator"]
            assert row["require_signed_urls"] == image["requireSignedURLs"]
            assert row["uploaded"] == rfc3339(image["uploaded"])
            assert row["meta"] == image["meta"]
            assert not any(key.startswith("meta__") for key in row)

    def test_meta_bytes_are_spliced_not_reencoded(self) -> None:
        """Key order, spacing and number spelling of meta_json survive byte for byte."""
        raw = '{"b": 1.50, "a": {"z": "\\u00e9", "y": [1e2]}}'
        batch = make_batch(make_images(1, 1), {})
        batch = batch.set_column(7, CORE.field("meta_json"), pa.array([raw], pa.string()))
        line = encode_lines(batch)
        assert line.endswith(b',"meta":' + raw.encode() + b"}\n")

    def test_absent_meta_is_null(self) -> None:
        [image] = make_images(5, 1)  # n % 5 == 0: no meta
        assert orjson.loads(encode_lines(make_batch([image], {})))["meta"] is None

    def test_extra_fields_are_top_level_keys_as_sent(self) -> None:
        """Fields the reference does not list follow `meta` as the line's own keys, values
        as sent (an int beyond 2**31, a bool, an object, a null); lines without add nothing."""
        extra = {"sizeBytes": 900007655956, "draft": False, "labels": {"t": "a"}, "x": None}
        images: list[dict[str, object]] = [
            {"id": "a", "uploaded": "2026-01-02T03:04:05Z", "meta": {"k": 1}, **extra},
            {"id": "b", "uploaded": "2026-01-02T03:04:05Z"},
        ]
        batch = Normalizer("acc", NormalizeOptions()).normalize(images)
        first, second = (orjson.loads(line) for line in encode_lines(batch).splitlines())
        assert list(first)[-5:] == ["meta", *extra]
        assert {key: first[key] for key in extra} == extra
        assert list(second)[-1] == "meta" and "extra_json" not in first

    def test_pretty_printed_meta_stays_on_one_line(self) -> None:
        batch = make_batch(make_images(1, 1), {})
        batch = batch.set_column(7, CORE.field("meta_json"), pa.array(['{\n "a": 1\n}']))
        lines = encode_lines(batch).splitlines()
        assert len(lines) == 1 and orjson.loads(lines[0])["meta"] == {"a": 1}


class TestNdjsonSink:
    @pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "gzip"])
    async def test_duckdb_read_json_equals_input(self, tmp_path: Path, gzipped: bool) -> None:
        """DuckDB's read_json over the parts returns exactly the images written."""
        from exporter.store import LocalStore

        sink = NdjsonSink(SinkOptions(ndjson_gzip=gzipped, part_rows=50))
        await sink.open(LocalStore(tmp_path), DIR, schema_of(PLAN))
        images = make_images(0, 120)
        for start in range(0, 120, 30):
            await sink.write(make_batch(images[start : start + 30], PLAN))
            if sink.should_rotate():
                await sink.commit_part()
        parts = await sink.finish(schema_of(WIDER), conformer(schema_of(WIDER)))
        suffix = ".ndjson.gz" if gzipped else ".ndjson"
        assert [p.rows for p in parts] == [60, 60]
        assert all(p.path.endswith(suffix) for p in parts)

        glob = str(tmp_path / DIR / f"*{suffix}")
        columns = (
            "{account_id: 'VARCHAR', id: 'VARCHAR', filename: 'VARCHAR', creator: 'VARCHAR', "
            "require_signed_urls: 'BOOLEAN', uploaded: 'TIMESTAMPTZ', variants: 'VARCHAR[]', "
            "meta: 'JSON'}"
        )
        with duckdb.connect() as con:
            got = con.execute(
                "SELECT id, creator, require_signed_urls, uploaded, variants, meta "
                f"FROM read_json('{glob}', format='newline_delimited', columns={columns}) "
                "ORDER BY id"
            ).fetchall()
        want = sorted(images, key=lambda i: i["id"])
        assert [r[0] for r in got] == [i["id"] for i in want]
        assert [r[1] for r in got] == [i["creator"] for i in want]
        assert [r[2] for r in got] == [i["requireSignedURLs"] for i in want]
        assert [r[3].astimezone(UTC) for r in got] == [i["uploaded"] for i in want]
        assert [r[4] for r in got] == [i["variants"] for i in want]
        assert [None if r[5] is None else orjson.loads(r[5]) for r in got] == [
            i["meta"] for i in want
        ]

    async def test_gzip_is_deterministic_and_checksummed(self, tmp_path: Path) -> None:
        """Same rows, same bytes: gzip carries no timestamp, so re-runs have equal sha256."""
        from exporter.store import LocalStore

        digests = []
        for run in ("a", "b"):
            sink = NdjsonSink(SinkOptions(ndjson_gzip=True))
            await sink.open(LocalStore(tmp_path / run), DIR, schema_of(PLAN))
            await sink.write(make_batch(make_images(0, 30), PLAN))
            [part] = await sink.finish(schema_of(PLAN), conformer(schema_of(PLAN)))
            data = (tmp_path / run / DIR / part.path).read_bytes()
            assert len(gzip.decompress(data).splitlines()) == 30 == part.rows
            digests.append(part.sha256)
        assert digests[0] == digests[1]

    async def test_growing_schema_neither_splits_nor_rewrites(self, tmp_path: Path) -> None:
        from exporter.store import LocalStore

        sink = NdjsonSink()
        await sink.open(LocalStore(tmp_path), DIR, schema_of(PLAN))
        await sink.write(make_batch(make_images(0, 10), PLAN))
        await sink.write(make_batch(make_images(10, 10), WIDER))
        [part] = await sink.finish(schema_of(WIDER), conformer(schema_of(WIDER)))
        before = (tmp_path / DIR / part.path).read_bytes()
        assert part.rows == 20 and len(before.splitlines()) == 20

    async def test_disk_full_under_gzip_is_a_sink_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from sink_data import full_disk_open

        from exporter.errors import SinkError
        from exporter.store import LocalStore

        sink = NdjsonSink(SinkOptions(ndjson_gzip=True))
        await sink.open(LocalStore(tmp_path), DIR, schema_of(PLAN))
        monkeypatch.setattr("exporter.store.local.open", full_disk_open(room=64), raising=False)
        with pytest.raises(SinkError, match="no space left on device"):
            await sink.write(make_batch(make_images(0, 200), PLAN))
            await sink.commit_part()
        monkeypatch.undo()
        await sink.abort()
        assert [p.name for p in (tmp_path / DIR).iterdir()] == []
