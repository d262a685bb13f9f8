"""DuckdbSink: table `images` per snapshot date, replaced in one transaction."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from sink_data import conformer, make_batch, make_images, schema_of

from exporter.errors import SinkError
from exporter.sinks import Publication, PublishedNight, SinkOptions
from exporter.sinks.duckdb import DuckdbSink, replace_snapshot, wider_type
from exporter.store import LocalStore
from exporter.store.layout import ROOT

EARLY = {"meta__status": pa.string()}
FINAL = {"meta__status": pa.string(), "meta__size": pa.int64()}


async def finished(
    root: Path,
    date: str,
    batches: list[pa.RecordBatch],
    plan: dict[str, pa.DataType],
    key: str = "k",
) -> tuple[DuckdbSink, Publication]:
    """Write and finish a sink as the pipeline does; return it and its publication."""
    store, directory = LocalStore(root), ROOT.sink_work(f"{date}-{key}", date, "duckdb")
    sink = DuckdbSink(SinkOptions(part_rows=40))
    await sink.open(store, directory, schema_of(EARLY))
    for batch in batches:
        await sink.write(batch)
        if sink.should_rotate():
            await sink.commit_part()
    assert await sink.finish(schema_of(plan), conformer(schema_of(plan))) == []
    publication = Publication(
        store=store,
        layout=ROOT,
        snapshot_date=date,
        schema=schema_of(plan),
        directory=directory,
        parts=sink.parts,
    )
    return sink, publication


async def export(
    root: Path, date: str, batches: list[pa.RecordBatch], plan: dict[str, pa.DataType]
) -> DuckdbSink:
    sink, publication = await finished(root, date, batches, plan)
    await sink.publish(publication)
    return sink


class TestDuckdbSink:
    async def test_table_holds_exactly_the_rows_written(self, tmp_path: Path) -> None:
        """A DuckDB connection reads back the conformed rows, tagged with the snapshot date."""
        batches = [make_batch(make_images(0, 30), EARLY), make_batch(make_images(30, 30), FINAL)]
        await export(tmp_path, "2026-11-27", batches, FINAL)
        with duckdb.connect(str(tmp_path / "images.duckdb"), read_only=True) as con:
            got = con.sql(
                "SELECT * EXCLUDE (snapshot_date) FROM images ORDER BY id"
            ).to_arrow_table()
            dates = con.sql("SELECT DISTINCT snapshot_date::VARCHAR FROM images").fetchall()
        final = schema_of(FINAL)
        want = pa.Table.from_batches([conformer(final)(b) for b in batches]).sort_by("id")
        assert dates == [("2026-11-27",)]
        assert got.num_rows == 60
        for name in final.names:
            column = got.column(name)
            if name == "uploaded":
                column = column.cast(pa.timestamp("us", tz="UTC"))
            assert column.to_pylist() == want.column(name).to_pylist(), name
        assert not (tmp_path / "snapshot_date=2026-11-27").exists()  # nothing published here

    async def test_rerun_replaces_its_date_only(self, tmp_path: Path) -> None:
        await export(tmp_path, "2026-11-26", [make_batch(make_images(0, 10), FINAL)], FINAL)
        await export(tmp_path, "2026-11-27", [make_batch(make_images(0, 20), FINAL)], FINAL)
        await export(tmp_path, "2026-11-27", [make_batch(make_images(100, 5), FINAL)], FINAL)
        with duckdb.connect(str(tmp_path / "images.duckdb"), read_only=True) as con:
            counts = con.sql(
                "SELECT snapshot_date::VARCHAR, count(*), min(id) FROM images GROUP BY 1 ORDER BY 1"
            ).fetchall()
        assert counts == [
            ("2026-11-26", 10, "folder/img-000000"),
            ("2026-11-27", 5, "folder/img-000100"),
        ]

    async def test_a_column_retyped_by_a_later_snapshot_widens(self, tmp_path: Path) -> None:
        """meta__size int64 yesterday, string today: the table keeps both as VARCHAR."""
        await export(tmp_path, "2026-11-26", [make_batch(make_images(1, 2), FINAL)], FINAL)
        wide = {"meta__status": pa.string(), "meta__size": pa.string(), "meta__new": pa.bool_()}
        await export(tmp_path, "2026-11-27", [make_batch(make_images(1, 2), wide)], wide)
        with duckdb.connect(str(tmp_path / "images.duckdb"), read_only=True) as con:
            types = dict(con.sql("SELECT column_name, data_type FROM duckdb_columns()").fetchall())
            sizes = con.sql("SELECT meta__size FROM images ORDER BY snapshot_date, id").fetchall()
        assert types["meta__size"] == "VARCHAR" and types["meta__new"] == "BOOLEAN"
        assert sizes == [("7",), ("14",), ("7",), ("14",)]

    async def test_the_table_changes_only_in_the_publish_step(self, tmp_path: Path) -> None:
        """`finish` adds no file and loads nothing; `publish` loads, and again is a no-op."""
        batches = [make_batch(make_images(0, 30), FINAL)]
        sink, publication = await finished(tmp_path, "2026-11-27", batches, FINAL)
        assert not (tmp_path / "images.duckdb").exists()
        for _ in range(2):  # a resumed run repeats the step: same rows, not twice
            await sink.publish(publication)
            with duckdb.connect(str(tmp_path / "images.duckdb"), read_only=True) as con:
                assert con.execute("SELECT count(*) FROM images").fetchall() == [(30,)]

    async def test_a_database_it_cannot_open_is_a_sink_error(self, tmp_path: Path) -> None:
        batches = [make_batch(make_images(0, 3), FINAL)]
        sink, publication = await finished(tmp_path, "2026-11-27", batches, FINAL)
        (tmp_path / "images.duckdb").write_bytes(b"not a database")
        with pytest.raises(SinkError, match=r"duckdb: cannot load .*images\.duckdb"):
            await sink.publish(publication)


class TestReplaceSnapshot:
    @pytest.mark.parametrize(
        ("old", "new", "wider"),
        [
            ("BIGINT", "DOUBLE", "DOUBLE"),
            ("DOUBLE", "BIGINT", "DOUBLE"),
            ("BOOLEAN", "VARCHAR", "VARCHAR"),
            pytest.param("BIGINT", "BOOLEAN", "VARCHAR", id="bool-never-a-number"),
            pytest.param("BOOLEAN", "DOUBLE", "VARCHAR", id="bool-never-a-float"),
            ("VARCHAR[]", "BIGINT", "VARCHAR"),
            ("BIGINT", "BIGINT", "BIGINT"),
        ],
    )
    def test_wider_type(self, old: str, new: str, wider: str) -> None:
        assert wider_type(old, new) == wider

    def test_reader_sees_old_or_new_rows_never_a_mix(self, tmp_path: Path) -> None:
        """Another connection polling during repeated replaces only sees whole generations."""
        database = tmp_path / "images.duckdb"
        schema = pa.schema([("id", pa.string()), ("generation", pa.int64())])
        files = []
        for generation in range(6):
            path = tmp_path / f"g{generation}.parquet"
            rows = 500 + 100 * generation
            table = pa.table(
                {"id": [f"i{n}" for n in range(rows)], "generation": [generation] * rows}
            )
            import pyarrow.parquet as pq

            pq.write_table(table, path)
            files.append((path, rows))
        replace_snapshot(database, "2026-11-27", [files[0][0]], schema)

        seen: list[tuple[int, int, int]] = []
        stop = threading.Event()

        def reader() -> None:
            with duckdb.connect(str(database)) as con:
                while not stop.is_set():
                    row = con.execute(
                        "SELECT count(*), min(generation), max(generation) FROM images "
                        "WHERE snapshot_date = DATE '2026-11-27'"
                    ).fetchone()
                    assert row is not None
                    seen.append((int(row[0]), int(row[1]), int(row[2])))

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for _ in range(3):
                for path, _rows in files:
                    replace_snapshot(database, "2026-11-27", [path], schema)
        finally:
            stop.set()
            thread.join()
        expected = {(rows, g, g) for g, (_, rows) in enumerate(files)}
        assert seen and set(seen) <= expected


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        pytest.param(pa.string(), "VARCHAR", id="string"),
        pytest.param(pa.int64(), "BIGINT", id="int64"),
        pytest.param(pa.float64(), "DOUBLE", id="float64"),
        pytest.param(pa.bool_(), "BOOLEAN", id="bool"),
        pytest.param(pa.timestamp("us", tz="UTC"), "TIMESTAMP WITH TIME ZONE", id="timestamp"),
        pytest.param(pa.list_(pa.string()), "VARCHAR[]", id="list"),
    ],
)
def test_duckdb_type_matches_describe(kind: pa.DataType, name: str) -> None:
    """The mapped type is what DESCRIBE prints, so an unchanged column is never retyped."""
    from exporter.sinks.duckdb import duckdb_type

    assert duckdb_type(kind) == name
    with duckdb.connect() as con:
        con.execute(f"CREATE TABLE t (c {name})")
        assert con.execute("DESCRIBE t").fetchall()[0][1] == name


def test_image_changes_from_before_extra_json_gain_it(tmp_path: Path) -> None:
    """A change log written before extra_json existed takes the column (null on its nights)
    and the current view shows it, instead of the INSERT failing."""
    import pyarrow.parquet as pq

    from exporter.changes.diff import CHANGES_SCHEMA
    from exporter.sinks.duckdb import replace_changes

    def night(date: str, extra: str | None, with_column: bool) -> Path:
        row = {f.name: None for f in CHANGES_SCHEMA}
        day = dt.date.fromisoformat(date)
        row.update(change="added", id="a", snapshot_date=day, changed_fields=[], extra_json=extra)
        schema = CHANGES_SCHEMA
        if not with_column:
            schema = pa.schema([f for f in CHANGES_SCHEMA if f.name != "extra_json"])
            del row["extra_json"]
        path = tmp_path / f"{date}.parquet"
        pq.write_table(pa.Table.from_pylist([row], schema=schema), path)
        return path

    database = tmp_path / "images.duckdb"
    replace_changes(database, "2026-01-01", [night("2026-01-01", None, with_column=False)])
    second = night("2026-01-02", '{"draft":true}', with_column=True)
    replace_changes(database, "2026-01-02", [second])
    with duckdb.connect(str(database)) as con:
        assert con.sql("SELECT extra_json FROM images_current").fetchall() == [('{"draft":true}',)]


async def test_batches_load_read_back_and_retire_by_name(tmp_path: Path) -> None:
    """`load_new_uploads` replaces a batch's rows in `new_uploads`, `night_source` reads one
    batch back, and `drop_new_uploads` removes the retired batches' rows only."""
    date, store = "2026-11-27", LocalStore(tmp_path)
    await export(tmp_path, date, [make_batch(make_images(0, 10), FINAL)], FINAL)
    ids = {}
    for name, start in (("b1", 100), ("b2", 200)):
        batch = make_batch(make_images(start, 5), FINAL)
        sink, publication = await finished(tmp_path, date, [batch], FINAL, key=name)
        for _ in range(2):  # a resumed run loads it again: the same rows
            sink.load_new_uploads(dataclasses.replace(publication, batch=name))
        ids[name] = sorted(batch.column("id").to_pylist())
    with pytest.raises(SinkError, match="load_new_uploads"):  # never as a snapshot
        await sink.publish(dataclasses.replace(publication, batch="b2"))

    def held() -> dict[str, list[str]]:
        with duckdb.connect(str(tmp_path / "images.duckdb"), read_only=True) as con:
            rows = con.sql("SELECT batch, id FROM new_uploads ORDER BY batch, id").fetchall()
        return {b: [i for n, i in rows if n == b] for b in dict.fromkeys(n for n, _ in rows)}

    assert held() == ids
    night = PublishedNight(
        store=store, layout=ROOT, snapshot_date=date, directory=ROOT.batch(date, "b2"), batch="b2"
    )
    source = sink.night_source(night, tmp_path)
    assert source is not None and sorted(source.table.column("id").to_pylist()) == ids["b2"]
    sink.drop_new_uploads(store, ROOT, date, ["b1"])
    assert held() == {"b2": ids["b2"]}
