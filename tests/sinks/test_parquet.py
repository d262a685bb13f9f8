"""ParquetSink: exact round trips, rotation, schema growth, finish rewrite, resume, failures."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sink_data import conformer, full_disk_open, make_batch, make_images, schema_of

from exporter.errors import SinkError
from exporter.sinks import PartFile, SinkOptions, schema_fingerprint
from exporter.sinks.parquet import ParquetSink
from exporter.store import LocalStore

DIR = "snap/snapshot_date=2026-11-27"
EARLY = {"meta__status": pa.string()}
FINAL = {"meta__status": pa.string(), "meta__size": pa.int64()}
WIDE = {"meta__status": pa.string(), "meta__size": pa.string()}  # size widened to text


async def write_all(
    sink: ParquetSink, batches: list[pa.RecordBatch], rotate: bool = True
) -> list[list[PartFile]]:
    """Feed batches like the pipeline: commit at a batch (page) boundary when the part is full."""
    commits = []
    for batch in batches:
        await sink.write(batch)
        if rotate and sink.should_rotate():
            commits.append(await sink.commit_part())
    return commits


def read_parts(root: Path, parts: list[PartFile]) -> pa.Table:
    return pa.concat_tables(pq.read_table(root / DIR / p.path) for p in parts)


def expected(batches: list[pa.RecordBatch], plan: dict[str, pa.DataType]) -> pa.Table:
    final = schema_of(plan)
    conform = conformer(final)
    return pa.Table.from_batches([conform(b) for b in batches], schema=final)


class TestRoundTrip:
    async def test_growing_schema_reads_back_exactly_with_one_schema(self, tmp_path: Path) -> None:
        """Parts written under an early, narrower schema are rewritten: every file, one schema."""
        sink = ParquetSink(SinkOptions(part_rows=100, row_group_rows=40))
        await sink.open(LocalStore(tmp_path), DIR, schema_of(EARLY))
        batches = [make_batch(make_images(i * 30, 30), EARLY) for i in range(5)]
        batches += [make_batch(make_images(i * 30, 30), FINAL) for i in range(5, 10)]
        await write_all(sink, batches)
        parts = await sink.finish(schema_of(FINAL), conformer(schema_of(FINAL)))

        assert sum(p.rows for p in parts) == 300
        schemas = {str(pq.read_schema(tmp_path / DIR / p.path)) for p in parts}
        assert len(schemas) == 1
        assert read_parts(tmp_path, parts).equals(expected(batches, FINAL))
        fingerprint = schema_fingerprint(schema_of(FINAL))
        assert {p.schema_fingerprint for p in parts} == {fingerprint}

    async def test_duckdb_reads_the_glob_without_union_by_name(self, tmp_path: Path) -> None:
        """DuckDB reads `snapshot_date=*/*.parquet` as is and gets the exact rows back."""
        sink = ParquetSink(SinkOptions(part_rows=50))
        await sink.open(LocalStore(tmp_path), DIR, schema_of(EARLY))
        batches = [make_batch(make_images(0, 40), EARLY), make_batch(make_images(40, 40), WIDE)]
        await write_all(sink, batches)
        await sink.finish(schema_of(WIDE), conformer(schema_of(WIDE)))

        glob = str(tmp_path / "snap" / "snapshot_date=*" / "*.parquet")
        query = f"SELECT * FROM read_parquet('{glob}', hive_partitioning=false) ORDER BY id"
        with duckdb.connect() as con:
            relation = con.sql(query)
            assert relation is not None
            got = relation.to_arrow_table()
        want = expected(batches, WIDE).sort_by("id")
        assert got.num_rows == 80
        assert got.column("id").equals(want.column("id"))
        assert got.column("meta__size").to_pylist() == want.column("meta__size").to_pylist()
        assert (
            got.column("uploaded")
            .cast(pa.timestamp("us", tz="UTC"))
            .equals(want.column("uploaded"))
        )
        assert got.column("meta_json").equals(want.column("meta_json"))

    async def test_sha256_and_bytes_describe_the_file(self, tmp_path: Path) -> None:
        """The checksum computed while writing equals the file's own sha256."""
        import hashlib

        sink = ParquetSink()
        await sink.open(LocalStore(tmp_path), DIR, schema_of(FINAL))
        await sink.write(make_batch(make_images(0, 10), FINAL))
        [part] = await sink.finish(schema_of(FINAL), conformer(schema_of(FINAL)))
        data = (tmp_path / DIR / part.path).read_bytes()
        assert (part.bytes, part.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        assert part.rows == 10


class TestLayout:
    async def test_rotates_by_rows_at_batch_boundaries(self, tmp_path: Path) -> None:
        """With part_rows=100 and pages of 30, parts close after 120 rows; groups hold <= 50."""
        sink = ParquetSink(SinkOptions(part_rows=100, row_group_rows=50))
        await sink.open(LocalStore(tmp_path), DIR, schema_of(FINAL))
        await write_all(sink, [make_batch(make_images(i * 30, 30), FINAL) for i in range(10)])
        parts = await sink.finish(schema_of(FINAL), conformer(schema_of(FINAL)))
        assert [p.rows for p in parts] == [120, 120, 60]
        assert [p.path for p in parts] == [f"part-0000{i}.parquet" for i in range(3)]
        meta = pq.ParquetFile(tmp_path / DIR / parts[0].path).metadata
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [50, 50, 20]

    async def test_row_groups_close_by_bytes_before_rows(self, tmp_path: Path) -> None:
        """Large rows: a row group closes once its buffered batches reach row_group_bytes,
        long before row_group_rows, so the one buffered group stays bounded in bytes."""
        batches = [make_batch(make_images(i * 20, 20), FINAL) for i in range(10)]
        limit = 3 * batches[0].get_total_buffer_size()  # three pages fill a group
        sink = ParquetSink(SinkOptions(row_group_rows=10**6, row_group_bytes=limit))
        await sink.open(LocalStore(tmp_path), DIR, schema_of(FINAL))
        await write_all(sink, batches)
        [part] = await sink.finish(schema_of(FINAL), conformer(schema_of(FINAL)))
        meta = pq.ParquetFile(tmp_path / DIR / part.path).metadata
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [60, 60, 60, 20]

    async def test_rotates_by_bytes(self, tmp_path: Path) -> None:
        """A small part_bytes closes parts long before part_rows is reached."""
        sink = ParquetSink(SinkOptions(part_rows=10**9, part_bytes=8_000, row_group_rows=20))
        await sink.open(LocalStore(tmp_path), DIR, schema_of(FINAL))
        await write_all(sink, [make_batch(make_images(i * 20, 20), FINAL) for i in range(20)])
        parts = await sink.finish(schema_of(FINAL), conformer(schema_of(FINAL)))
        assert len(parts) > 2
        assert all(p.bytes >= 8_000 for p in parts[:-1])
        assert sum(p.rows for p in parts) == 400

    async def test_zstd_statistics_and_selective_dictionary(self, tmp_path: Path) -> None:
        """zstd by default, min/max statistics, dictionary for creator but not for id."""
        sink = ParquetSink()
        await sink.open(LocalStore(tmp_path), DIR, schema_of(FINAL))
        await sink.write(make_batch(make_images(0, 200), FINAL))
        [part] = await sink.finish(schema_of(FINAL), conformer(schema_of(FINAL)))
        group = pq.ParquetFile(tmp_path / DIR / part.path).metadata.row_group(0)
        columns = {
            group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)
        }
        assert {c.compression for c in columns.values()} == {"ZSTD"}
        assert columns["uploaded"].statistics.has_min_max
        assert "RLE_DICTIONARY" in columns["creator"].encodings
        assert "RLE_DICTIONARY" not in columns["id"].encodings

    async def test_codec_is_configurable(self, tmp_path: Path) -> None:
        sink = ParquetSink(SinkOptions(parquet_codec="snappy"))
        await sink.open(LocalStore(tmp_path), DIR, schema_of(FINAL))
        await sink.write(make_batch(make_images(0, 5), FINAL))
        [part] = await sink.finish(schema_of(FINAL), conformer(schema_of(FINAL)))
        group = pq.ParquetFile(tmp_path / DIR / part.path).metadata.row_group(0)
        assert group.column(0).compression == "SNAPPY"

    async def test_schema_change_inside_a_part_closes_a_file(self, tmp_path: Path) -> None:
        """A wider batch cannot join the open file: one commit then yields two files."""
        sink = ParquetSink()
        await sink.open(LocalStore(tmp_path), DIR, schema_of(EARLY))
        await sink.write(make_batch(make_images(0, 10), EARLY))
        await sink.write(make_batch(make_images(10, 10), FINAL))
        committed = await sink.commit_part()
        assert [p.rows for p in committed] == [10, 10]
        assert sink.parts == committed
        assert await sink.commit_part() == []

    async def test_finish_streams_one_row_group_at_a_time(self, tmp_path: Path) -> None:
        """conform() never sees more than one row group: memory stays flat while rewriting."""
        sink = ParquetSink(SinkOptions(row_group_rows=25))
        await sink.open(LocalStore(tmp_path), DIR, schema_of(EARLY))
        await write_all(sink, [make_batch(make_images(i * 25, 25), EARLY) for i in range(8)])
        final = schema_of(FINAL)
        seen: list[int] = []

        def conform(batch: pa.RecordBatch) -> pa.RecordBatch:
            seen.append(batch.num_rows)
            return conformer(final)(batch)

        parts = await sink.finish(final, conform)
        assert sum(seen) == 200 and max(seen) <= 25
        assert not list((tmp_path / DIR).glob("*.tmp"))
        assert sum(p.rows for p in parts) == 200


class TestResume:
    async def test_resume_keeps_committed_and_drops_later_files(self, tmp_path: Path) -> None:
        """Parts named by the checkpoint are kept; files written after it are deleted."""
        store = LocalStore(tmp_path)
        first = ParquetSink(SinkOptions(part_rows=30))
        await first.open(store, DIR, schema_of(FINAL))
        batches = [make_batch(make_images(i * 30, 30), FINAL) for i in range(4)]
        await write_all(first, batches[:2])
        committed = first.parts
        await first.write(batches[2])  # then the process dies: part 2 is open and stale
        await first.commit_part()
        assert (tmp_path / DIR / "part-00002.parquet").exists()

        second = ParquetSink(SinkOptions(part_rows=30))
        await second.open(store, DIR, schema_of(FINAL), committed=committed)
        assert not (tmp_path / DIR / "part-00002.parquet").exists()
        await write_all(second, batches[2:])
        parts = await second.finish(schema_of(FINAL), conformer(schema_of(FINAL)))
        assert [p.path for p in parts] == [f"part-0000{i}.parquet" for i in range(4)]
        assert read_parts(tmp_path, parts).equals(expected(batches, FINAL))

    async def test_changed_committed_part_refuses_to_resume(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        sink = ParquetSink()
        await sink.open(store, DIR, schema_of(FINAL))
        await sink.write(make_batch(make_images(0, 10), FINAL))
        committed = await sink.commit_part()
        damaged = tmp_path / DIR / committed[0].path
        damaged.write_bytes(damaged.read_bytes() + b"junk")
        with pytest.raises(SinkError, match="was changed"):
            await ParquetSink().open(store, DIR, schema_of(FINAL), committed=committed)
        damaged.unlink()
        with pytest.raises(SinkError, match="is missing"):
            await ParquetSink().open(store, DIR, schema_of(FINAL), committed=committed)

    async def test_finish_after_a_crash_mid_finish_describes_rewritten_parts(
        self, tmp_path: Path
    ) -> None:
        """A part rewritten by a finish that died before its checkpoint gets its new sha256."""
        store = LocalStore(tmp_path)
        sink = ParquetSink()
        await sink.open(store, DIR, schema_of(EARLY))
        await sink.write(make_batch(make_images(0, 20), EARLY))
        stale = await sink.commit_part()  # the checkpoint's view: early schema, old sha
        rewritten = await sink.finish(schema_of(FINAL), conformer(schema_of(FINAL)))
        assert rewritten[0].sha256 != stale[0].sha256

        again = ParquetSink()
        await again.open(store, DIR, schema_of(EARLY), committed=stale)  # the older checkpoint
        parts = await again.finish(schema_of(FINAL), conformer(schema_of(FINAL)))
        assert parts == rewritten


class TestFailures:
    async def test_abort_drops_uncommitted_files_only(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        sink = ParquetSink()
        await sink.open(store, DIR, schema_of(FINAL))
        await sink.write(make_batch(make_images(0, 10), FINAL))
        [kept] = await sink.commit_part()
        await sink.write(make_batch(make_images(10, 10), FINAL))
        await sink.abort()
        assert sorted(p.name for p in (tmp_path / DIR).iterdir()) == [kept.path]

    async def test_abort_before_open_does_nothing(self) -> None:
        await ParquetSink().abort()

    async def test_disk_full_while_writing_is_a_sink_error(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """ENOSPC from the file system surfaces as one clear SinkError line."""
        sink = ParquetSink(SinkOptions(row_group_rows=10))
        await sink.open(LocalStore(tmp_path), DIR, schema_of(FINAL))
        monkeypatch.setattr("exporter.store.local.open", full_disk_open(room=100), raising=False)
        with pytest.raises(SinkError, match="no space left on device") as caught:
            await sink.write(make_batch(make_images(0, 50), FINAL))
            await sink.commit_part()
        assert "\n" not in str(caught.value)
        monkeypatch.undo()
        await sink.abort()
        assert list((tmp_path / DIR).iterdir()) == []

    async def test_disk_full_during_finish_keeps_the_original_part(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A rewrite that fails leaves the committed part as the checkpoint recorded it."""
        import hashlib

        sink = ParquetSink()
        await sink.open(LocalStore(tmp_path), DIR, schema_of(EARLY))
        await sink.write(make_batch(make_images(0, 30), EARLY))
        [part] = await sink.commit_part()
        monkeypatch.setattr("exporter.store.local.open", full_disk_open(room=50), raising=False)
        with pytest.raises(SinkError, match="no space left on device"):
            await sink.finish(schema_of(FINAL), conformer(schema_of(FINAL)))
        monkeypatch.undo()
        data = (tmp_path / DIR / part.path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == part.sha256
        assert sorted(p.name for p in (tmp_path / DIR).iterdir()) == [part.path]


class TestSchemaFingerprint:
    def test_field_metadata_counts(self) -> None:
        """The normalizer's per-column path metadata (bytes) is part of the fingerprint."""
        plain = schema_of(FINAL)
        field = plain.field("meta__size").with_metadata({b"cf_meta_path": b'["size"]'})
        tagged = plain.set(plain.get_field_index("meta__size"), field)
        other = plain.set(
            plain.get_field_index("meta__size"),
            field.with_metadata({b"cf_meta_path": b'["Size"]'}),
        )
        prints = {schema_fingerprint(s) for s in (plain, tagged, other)}
        assert len(prints) == 3
        assert schema_fingerprint(tagged) == schema_fingerprint(pa.schema(list(tagged)))
