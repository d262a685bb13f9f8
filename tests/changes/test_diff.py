"""The change diff: each field's comparison rule, JSON-value meta, and every source format."""

from __future__ import annotations

import datetime as dt
import functools
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from exporter.changes import diff
from exporter.changes.diff import (
    CHANGE_KINDS,
    CHANGES_SCHEMA,
    DiffSettings,
    canonical_json,
    iter_changes,
)
from exporter.changes.smalldiff import iter_night_changes
from exporter.errors import SinkError
from exporter.sinks import NightSource

CORE = pa.schema(
    [
        ("account_id", pa.string()),
        ("id", pa.string()),
        ("filename", pa.string()),
        ("creator", pa.string()),
        ("require_signed_urls", pa.bool_()),
        ("uploaded", pa.timestamp("us", tz="UTC")),
        ("variants", pa.list_(pa.string())),
        ("meta_json", pa.string()),
        ("extra_json", pa.string()),
    ]
)
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
# The fields the API reference lists; any other is kept in extra_json.
LISTED_FIELDS = {"id", "filename", "creator", "meta", "requireSignedURLs", "uploaded", "variants"}


def image(image_id: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "account_id": "acc",
        "id": image_id,
        "filename": f"{image_id}.jpg",
        "creator": None,
        "require_signed_urls": False,
        "uploaded": T0,
        "variants": ["public"],
        "meta_json": None,
        "extra_json": None,
    }
    row.update(fields)
    return row


def write_parquet(path: Path, rows: list[dict[str, Any]], schema: pa.Schema = CORE) -> NightSource:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return NightSource("parquet", path.stem, (str(path),))


def write_ndjson(path: Path, rows: list[dict[str, Any]]) -> NightSource:
    """Write rows as the NDJSON sink does: `meta` spliced in as raw JSON, RFC 3339 times,
    then the members of `extra_json` as top-level keys."""
    with open(path, "wb") as out:
        for row in rows:
            head = {k: v for k, v in row.items() if k not in ("meta_json", "extra_json")}
            text = orjson.dumps(head, option=orjson.OPT_UTC_Z)[:-1]
            extra = row["extra_json"]
            tail = b"," + extra.encode()[1:-1] if extra else b""
            out.write(text + b',"meta":' + (row["meta_json"] or "null").encode() + tail + b"}\n")
    return NightSource("ndjson", path.stem, (str(path),))


def changes(
    tmp_path: Path, before: list[dict[str, Any]] | None, after: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    current = write_parquet(tmp_path / "2024-01-02.parquet", after)
    previous = write_parquet(tmp_path / "2024-01-01.parquet", before) if before else None
    batches = list(iter_night_changes(current, previous, temp_directory=tmp_path))
    assert all(b.schema == CHANGES_SCHEMA for b in batches)
    rows = pa.Table.from_batches(batches, CHANGES_SCHEMA).to_pylist()
    return {row["id"]: row for row in rows}


class TestCanonicalJson:
    @pytest.mark.parametrize(
        ("a", "b"),
        [
            pytest.param('{"a":1,"b":2}', '{"b":2,"a":1}', id="key-order"),
            pytest.param(
                '{"x":{"q":[1,{"z":1,"y":2}]}}', '{"x":{"q":[1,{"y":2,"z":1}]}}', id="nested"
            ),
            pytest.param('{"k": "é"}', '{"k":"\\u00e9"}', id="unicode-escape"),
            pytest.param('{"n":1.0}', '{"n":1.00}', id="same-float"),
            pytest.param(
                '{"n":123456789012345678901234567890}',
                '{"n":123456789012345678901234567890}',
                id="big-int",
            ),
        ],
    )
    def test_same_value_same_text(self, a: str, b: str) -> None:
        """Texts of one JSON value canonicalise alike."""
        assert canonical_json(a) == canonical_json(b)

    @pytest.mark.parametrize(
        ("a", "b"),
        [
            pytest.param('{"n":1}', '{"n":1.0}', id="int-vs-float"),
            pytest.param('{"n":1}', '{"n":true}', id="int-vs-bool"),
            pytest.param('{"n":1}', '{"n":"1"}', id="int-vs-string"),
            pytest.param(
                '{"n":123456789012345678901}', '{"n":123456789012345678902}', id="big-ints"
            ),
            pytest.param("[1,2]", "[2,1]", id="list-order"),
            pytest.param("{}", "null", id="empty-vs-null"),
        ],
    )
    def test_different_values_differ(self, a: str, b: str) -> None:
        """Types and list order are part of the value."""
        assert canonical_json(a) != canonical_json(b)


class TestIterChanges:
    @pytest.fixture(autouse=True, params=["in-memory", "duckdb", "duckdb-buckets"])
    def comparison(self, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every rule holds for small nights compared in memory and for DuckDB's passes, with
        pass 2 in one query or in a bucket per changed image."""
        if request.param != "in-memory":
            bucket_rows = 1 if request.param == "duckdb-buckets" else 50_000
            settings = functools.partial(DiffSettings, small_rows=0, bucket_rows=bucket_rows)
            monkeypatch.setattr("exporter.changes.diff.DiffSettings", settings)

    def test_first_snapshot_is_all_added(self, tmp_path: Path) -> None:
        """Without a previous night every image is added, with no previous date."""
        rows = changes(tmp_path, None, [image("a"), image("b")])
        assert {r["change"] for r in rows.values()} == {"added"}
        assert all(r["previous_snapshot_date"] is None for r in rows.values())
        assert rows["a"]["snapshot_date"] == dt.date(2024, 1, 2)

    @pytest.mark.parametrize(
        ("field", "before", "after"),
        [
            pytest.param("filename", "a.jpg", "b.jpg", id="filename"),
            pytest.param("creator", None, "", id="creator-null-to-empty"),
            pytest.param("creator", "u1", "u2", id="creator"),
            pytest.param("require_signed_urls", False, True, id="signed"),
            pytest.param("uploaded", T0, T0 + dt.timedelta(microseconds=1), id="uploaded"),
            pytest.param("variants", ["public"], ["public", "thumb"], id="variants"),
            # DuckDB hashes a null list, [] and [null] alike, and lists them as "[a,b]".
            pytest.param("variants", None, [], id="variants-null-to-empty"),
            pytest.param("variants", [], [None], id="variants-empty-to-null-item"),
            pytest.param("variants", ["a,b"], ["a", "b"], id="variants-comma"),
            pytest.param("meta_json", None, "{}", id="meta-null-to-empty"),
            pytest.param("meta_json", '{"n":1}', '{"n":1.0}', id="meta-int-float"),
            pytest.param("meta_json", '{"n":true}', '{"n":"true"}', id="meta-bool-string"),
            pytest.param("meta_json", '{"a":{"b":[1]}}', '{"a":{"b":[1,2]}}', id="meta-nested"),
            pytest.param("extra_json", None, '{"draft":false}', id="extra-appears"),
            pytest.param("extra_json", '{"n":1}', '{"n":1.0}', id="extra-int-float"),
            pytest.param("extra_json", '{"draft":true}', None, id="extra-goes"),
        ],
    )
    def test_each_field_change_is_named(
        self, tmp_path: Path, field: str, before: Any, after: Any
    ) -> None:
        """A difference in one field is one `changed` row naming exactly that field."""
        rows = changes(tmp_path, [image("x", **{field: before})], [image("x", **{field: after})])
        name = {"meta_json": "meta", "extra_json": "extra"}.get(field, field)
        assert rows["x"]["change"] == "changed"
        assert rows["x"]["changed_fields"] == [name]
        assert rows["x"][field] == after
        assert rows["x"]["previous_snapshot_date"] == dt.date(2024, 1, 1)

    def test_equal_values_are_no_change(self, tmp_path: Path) -> None:
        """Key order, unicode escapes and float spelling alone are no change."""
        before = [
            image("k", meta_json='{"a":1,"b":{"c":"é","d":2.50}}'),
            image("same", creator="", meta_json="{}"),
        ]
        after = [
            image("k", meta_json='{"b":{"d":2.5,"c":"\\u00e9"},"a":1}'),
            image("same", creator="", meta_json="{}"),
        ]
        assert changes(tmp_path, before, after) == {}
        before = [image("e", extra_json='{"a":1,"l":{"x":true,"y":2.50}}')]
        after = [image("e", extra_json='{"l":{"y":2.5,"x":true},"a":1}')]
        assert changes(tmp_path, before, after) == {}

    def test_meta_and_extra_together(self, tmp_path: Path) -> None:
        """Meta and extra settle apart: one equal as JSON, the other different, names one."""
        before = [image("m", meta_json='{"a":1,"b":2}', extra_json='{"n":1}')]
        after = [image("m", meta_json='{"b":2,"a":1}', extra_json='{"n":2}')]
        assert changes(tmp_path, before, after)["m"]["changed_fields"] == ["extra"]

    def test_previous_night_without_extra_json(self, tmp_path: Path) -> None:
        """A night written before `extra_json` existed reads as null there: images that now
        carry extra fields change by `extra` (as a warehouse sees it; so the current and
        history tables built from the change log take them), the others do not change."""
        old = pa.schema([f for f in CORE if f.name != "extra_json"])
        rows = [image("a"), image("b")]
        previous = write_parquet(tmp_path / "2024-01-01.parquet", rows[:1] + rows[1:], old)
        current = write_parquet(
            tmp_path / "2024-01-02.parquet", [rows[0], image("b", extra_json='{"draft":true}')]
        )
        found = pa.Table.from_batches(iter_changes(current, previous, temp_directory=tmp_path))
        assert found.column("id").to_pylist() == ["b"]
        assert found.column("changed_fields").to_pylist() == [["extra"]]

    def test_added_removed_and_several_fields(self, tmp_path: Path) -> None:
        """Removed rows carry P's values; several differing fields are all listed, in order."""
        before = [image("gone", filename="old.png"), image("both", creator="u")]
        after = [image("new"), image("both", creator=None, meta_json='{"k":1}')]
        rows = changes(tmp_path, before, after)
        assert rows["gone"]["change"] == "removed" and rows["gone"]["filename"] == "old.png"
        assert rows["new"]["change"] == "added" and rows["new"]["changed_fields"] == []
        assert rows["both"]["changed_fields"] == ["creator", "meta"]

    def test_previous_night_as_ndjson(self, tmp_path: Path) -> None:
        """A night written only as NDJSON compares equal to the same images in Parquet."""
        rows = [
            image("a", creator="", meta_json='{"big":123456789012345678901,"f":1.5,"u":"写真"}'),
            image("b", uploaded=T0 + dt.timedelta(milliseconds=7), meta_json="{}"),
            image("c", extra_json='{"sizeBytes":900007655956,"gone":null,"l":{"t":"a"}}'),
        ]
        previous = write_ndjson(tmp_path / "2024-01-01.ndjson", rows)
        current = write_parquet(tmp_path / "2024-01-02.parquet", rows)
        assert list(iter_changes(current, previous, temp_directory=tmp_path)) == []
        edited = [rows[0], {**rows[1], "meta_json": '{"k":1}'}, {**rows[2], "extra_json": None}]
        current = write_parquet(tmp_path / "2024-01-02.parquet", edited)
        found = pa.Table.from_batches(iter_changes(current, previous, temp_directory=tmp_path))
        assert found.column("id").to_pylist() == ["b", "c"]
        assert found.column("changed_fields").to_pylist() == [["meta"], ["extra"]]


class TestMemoryCaps:
    """A statement that runs out of memory runs again with one thread, then under the next
    cap, and the statements after it stay there; nothing has been yielded by then, so the
    rows are the same as under a cap that fits at once."""

    def nights(self, tmp_path: Path) -> tuple[NightSource, NightSource]:
        before = [image(f"id{i:05d}", meta_json=f'{{"k":"{"x" * 1000}"}}') for i in range(3000)]
        after = [{**row, "filename": "new"} for row in before[1:]] + [image("added")]
        previous = write_parquet(tmp_path / "2024-01-01.parquet", before)
        return write_parquet(tmp_path / "2024-01-02.parquet", after), previous

    def rows(self, batches: Any) -> list[dict[str, Any]]:
        return sorted(pa.Table.from_batches(batches, CHANGES_SCHEMA).to_pylist(), key=str)

    def test_out_of_memory_starts_over_under_the_next_cap(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        current, previous = self.nights(tmp_path)
        duckdb_only = DiffSettings(small_rows=0)
        fits = self.rows(
            iter_changes(current, previous, settings=duckdb_only, temp_directory=tmp_path)
        )
        assert len(fits) == 3000 + 1  # 2,999 changed, one added, one removed
        small = iter_night_changes(current, previous, temp_directory=tmp_path)
        assert self.rows(small) == fits
        settings = DiffSettings(memory_limits=("1MB", "64MB"), small_rows=0)
        with caplog.at_level("INFO", logger="exporter.diff"):
            batches = list(
                iter_changes(current, previous, settings=settings, temp_directory=tmp_path)
            )
        assert "ran out of memory under 1MB with 1 thread(s); going on under 64MB" in caplog.text
        assert self.rows(batches) == fits

    def test_out_of_memory_under_the_last_cap_is_one_line(self, tmp_path: Path) -> None:
        current, previous = self.nights(tmp_path)
        settings = DiffSettings(memory_limits=("1MB",), small_rows=0)
        with pytest.raises(SinkError) as failed:
            list(iter_changes(current, previous, settings=settings, temp_directory=tmp_path))
        assert str(failed.value).startswith("changes: the diff of 2024-01-02 failed: Out of Mem")
        assert "\n" not in str(failed.value)
        assert isinstance(failed.value.__cause__, duckdb.OutOfMemoryException)


def test_pass_two_in_buckets_gives_the_same_rows(tmp_path: Path) -> None:
    """A mass-change night (more change rows than images: added, removed, each field edited,
    meta and extra rewritten in another key order) gives the same rows, texts included,
    whether pass 2 runs in one query, in buckets, or the nights are compared in memory."""
    before = varied_night(120)
    after = []
    for i, row in enumerate(before[40:]):
        if i % 4 == 0:
            row = {**row, "filename": f"renamed-{i}", "variants": ["public"]}
        elif i % 4 == 1 and row["meta_json"] and row["meta_json"] != "{}":
            reordered = dict(reversed(orjson.loads(row["meta_json"]).items()))
            row = {**row, "meta_json": orjson.dumps(reordered).decode()}
        elif i % 4 == 2:
            row = {**row, "meta_json": '{"n":1.0}', "extra_json": None}
        else:
            row = {**row, "creator": "someone else", "uploaded": T0}
        after.append(row)
    after += [image(f"new{i:03d}", meta_json=f'{{"i":{i}}}') for i in range(150)]
    previous = write_parquet(tmp_path / "2024-01-01.parquet", before)
    current = write_parquet(tmp_path / "2024-01-02.parquet", after)

    def rows(settings: DiffSettings) -> list[dict[str, Any]]:
        batches = iter_night_changes(current, previous, settings=settings, temp_directory=tmp_path)
        found = pa.Table.from_batches(batches, CHANGES_SCHEMA).to_pylist()
        return sorted(found, key=lambda r: (r["change"], r["id"]))

    one_query = rows(DiffSettings(small_rows=0))
    counts = {kind: sum(r["change"] == kind for r in one_query) for kind in CHANGE_KINDS}
    assert counts["added"] == 150 and counts["removed"] == 40 and counts["changed"] >= 60
    assert len(one_query) > len(after)
    for bucket_rows in (1, 16, 1_000):
        settings = DiffSettings(small_rows=0, bucket_rows=bucket_rows)
        assert rows(settings) == one_query, f"bucket_rows={bucket_rows}"
    assert rows(DiffSettings()) == one_query  # in memory


def test_a_first_night_never_loads_duckdb(tmp_path: Path) -> None:
    """A first night's change set is Arrow alone: DuckDB's ~25 MB stay out of its peak."""
    night = write_parquet(tmp_path / "2024-01-02.parquet", varied_night(20))
    script = (
        "import sys; from pathlib import Path\n"
        "import exporter.cli.commands, exporter.run.pipeline\n"
        "from exporter.changes.diff import iter_changes\n"
        "from exporter.sinks import NightSource\n"
        f"night = NightSource('parquet', '2024-01-02', ({str(night.paths[0])!r},))\n"
        f"batches = iter_changes(night, None, temp_directory=Path({str(tmp_path)!r}))\n"
        "rows = sum(b.num_rows for b in batches)\n"
        "print(rows, 'duckdb' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["20", "False"]


@pytest.mark.skipif(sys.platform != "linux", reason="MADV_PAGEOUT and /proc are Linux's")
def test_duckdb_s_pages_are_handed_back_after_the_joins(tmp_path: Path) -> None:
    """Once the joins ran and DuckDB is closed, its library's pages leave the process's RSS
    (the read-back's peak stood on ~40 MB of them), and a later diff still runs."""
    previous = write_parquet(tmp_path / "2024-01-01.parquet", varied_night(300))
    current = write_parquet(tmp_path / "2024-01-02.parquet", varied_night(330)[20:])
    script = (
        "import os, sys; from pathlib import Path\n"
        "from exporter.changes import diff\n"
        "from exporter.sinks import NightSource\n"
        "if sys.argv[1] == 'kept': diff.release_duckdb_pages = lambda: None\n"
        f"cur = NightSource('parquet', '2024-01-02', ({str(current.paths[0])!r},))\n"
        f"prev = NightSource('parquet', '2024-01-01', ({str(previous.paths[0])!r},))\n"
        "settings = diff.DiffSettings(small_rows=0)\n"
        f"tmp = Path({str(tmp_path)!r})\n"
        "def rows(): return sum(b.num_rows for b in diff.iter_changes("
        "cur, prev, settings=settings, temp_directory=tmp))\n"
        "first = rows()\n"
        "lib = os.path.realpath(sys.modules['_duckdb'].__file__)\n"
        "kb, inside = 0, False\n"
        "for line in open('/proc/self/smaps'):\n"
        "    head = line.split()\n"
        "    if '-' in head[0] and len(head) >= 5: inside = line.rstrip().endswith(lib)\n"
        "    elif inside and head[0] == 'Rss:': kb += int(head[1])\n"
        "print(first, rows(), kb)\n"
    )

    def run(mode: str) -> list[int]:
        done = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return [int(word) for word in done.stdout.split()]

    first, again, released_kb = run("released")
    _, _, kept_kb = run("kept")
    assert first == again > 20
    assert kept_kb > 10_000, kept_kb  # the joins ran DuckDB's code
    assert released_kb < kept_kb / 2, (released_kb, kept_kb)


def varied_night(count: int) -> list[dict[str, Any]]:
    """Return `count` images whose fields take every shape a night holds (nulls, "", lists)."""
    rows = []
    for i in range(count):
        rows.append(
            image(
                f"id{i:03d}",
                account_id=None if i % 11 == 0 else "acc",
                filename=None if i % 13 == 0 else f"写真-{i}.jpg",
                creator=(None, "", f"u{i}")[i % 3],
                require_signed_urls=(None, False, True)[i % 3],
                uploaded=None if i % 17 == 0 else T0 + dt.timedelta(microseconds=7 * i),
                variants=(None, [], ["public", f"v{i}"])[i % 3],
                meta_json=(None, "{}", f'{{"n":{i},"f":1.5,"s":"é{i}","l":[true,null]}}')[i % 3],
                extra_json=(None, f'{{"sizeBytes":{2**40 + i},"draft":false,"l":{{"t":"a"}}}}')[
                    i % 2
                ],
            )
        )
    return rows


def added_rows(rows: list[dict[str, Any]], date: dt.date) -> dict[str, dict[str, Any]]:
    """Return the change set a first night of `rows` must be: each image as it is, added."""
    extra = {"change": "added", "snapshot_date": date, "previous_snapshot_date": None}
    return {row["id"]: {**row, **extra, "changed_fields": []} for row in rows}


def write_parquet_parts(directory: Path, rows: list[dict[str, Any]], group: int) -> NightSource:
    """Write rows as two Parquet parts of `group`-row row groups (a night of several parts)."""
    half = len(rows) // 2
    paths = []
    for index, chunk in enumerate((rows[:half], rows[half:])):
        path = directory / f"part-{index:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(chunk, schema=CORE), path, row_group_size=group)
        paths.append(str(path))
    return NightSource("parquet", "2024-01-02", tuple(paths))


def write_duckdb(path: Path, rows: list[dict[str, Any]]) -> NightSource:
    """Write rows into the DuckDB sink's `images` table, beside another date's row."""
    table = pa.Table.from_pylist(rows, schema=CORE)
    with duckdb.connect(str(path)) as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("night", table)
        con.execute(
            "CREATE TABLE images AS SELECT DATE '2024-01-02' AS snapshot_date, * FROM night"
        )
        con.execute(
            "INSERT INTO images SELECT DATE '2024-01-01' AS snapshot_date, * "
            "FROM night WHERE id = 'id001'"
        )
    return NightSource("duckdb", "2024-01-02", (str(path),))


class TestFirstNight:
    """A first night's change set is every image of the night, `added`, in every format."""

    ROWS = 37

    def source(self, kind: str, tmp_path: Path, rows: list[dict[str, Any]]) -> NightSource:
        table = pa.Table.from_pylist(rows, schema=CORE)
        if kind in ("parquet", "parquet-large-groups"):
            return write_parquet_parts(tmp_path, rows, group=5)
        if kind == "arrow-table":
            return NightSource("arrow", "2024-01-02", table=table)
        if kind == "arrow-dataset":
            pq.write_table(table, tmp_path / "night.parquet", row_group_size=6)
            dataset = pads.dataset(str(tmp_path / "night.parquet"), format="parquet")
            return NightSource("arrow", "2024-01-02", table=dataset)
        if kind == "ndjson":
            source = write_ndjson(tmp_path / "night.ndjson", rows)
            return NightSource("ndjson", "2024-01-02", source.paths)
        return write_duckdb(tmp_path / "night.duckdb", rows)

    @pytest.mark.parametrize(
        "kind",
        ["parquet", "parquet-large-groups", "arrow-table", "arrow-dataset", "ndjson", "duckdb"],
    )
    def test_every_image_is_added_as_it_is(
        self, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Ids, values and schema of the change set are the night's, whatever it was written in."""
        if kind == "parquet-large-groups":  # every row group streamed, none read whole
            monkeypatch.setattr(diff, "ROW_GROUP_READ_BYTES", 0)
        rows = varied_night(self.ROWS)
        source = self.source(kind, tmp_path, rows)
        settings = DiffSettings(batch_rows=4)
        batches = list(iter_changes(source, None, settings=settings, temp_directory=tmp_path))
        assert all(b.schema == CHANGES_SCHEMA for b in batches)
        found = pa.Table.from_batches(batches, CHANGES_SCHEMA).to_pylist()
        assert len(found) == self.ROWS
        assert {row["id"]: row for row in found} == added_rows(rows, dt.date(2024, 1, 2))

    @pytest.mark.parametrize("kind", ["parquet", "arrow-table", "arrow-dataset"])
    def test_batches_are_batch_rows_whatever_the_row_groups(
        self, kind: str, tmp_path: Path
    ) -> None:
        """Row groups of 5 or 6 rows across two parts give batches of exactly 4, then the rest:
        a change part's row groups do not inherit the night's."""
        source = self.source(kind, tmp_path, varied_night(self.ROWS))
        settings = DiffSettings(batch_rows=4)
        sizes = [
            b.num_rows
            for b in iter_changes(source, None, settings=settings, temp_directory=tmp_path)
        ]
        assert sizes == [4] * (self.ROWS // 4) + [self.ROWS % 4]

    def test_empty_night_has_no_changes(self, tmp_path: Path) -> None:
        """A night of no images yields no batch (the part written is empty)."""
        source = write_parquet(tmp_path / "2024-01-02.parquet", [])
        assert list(iter_changes(source, None, temp_directory=tmp_path)) == []

    def test_same_rows_as_a_diff_against_an_empty_night(self, tmp_path: Path) -> None:
        """The first night's rows equal what the full diff gives against a night of nothing
        but an image of another id (which is `removed`, the rest `added`)."""
        rows = varied_night(self.ROWS)
        current = write_parquet_parts(tmp_path, rows, group=5)
        other = write_parquet(tmp_path / "2024-01-01.parquet", [image("zz-other")])
        first = pa.Table.from_batches(iter_changes(current, None, temp_directory=tmp_path))
        against = pa.Table.from_batches(iter_changes(current, other, temp_directory=tmp_path))
        added = [r for r in against.to_pylist() if r["change"] == "added"]
        for row in added:
            row["previous_snapshot_date"] = None
        assert sorted(first.to_pylist(), key=lambda r: r["id"]) == sorted(
            added, key=lambda r: r["id"]
        )


@pytest.mark.parametrize("profile", ["classic", "nasty"])
def test_both_comparisons_give_the_emulators_record(tmp_path: Path, profile: str) -> None:
    """A night of the emulator (uploads, deletions, re-uploads, edits of every field, edits
    that change nothing a warehouse sees) compared in memory and by DuckDB's passes: both
    give exactly what the emulator recorded."""
    import json

    from exporter.emulator.catalog import build_catalog
    from exporter.emulator.nights import NightPlan, catalog_at_night
    from tests.helpers import image_row

    base = build_catalog(800, 17, profile=profile)
    plan = NightPlan(churn=0.1)
    nights = [catalog_at_night(base, night, plan) for night in (0, 1)]

    def rows(catalog: Any) -> list[dict[str, Any]]:
        found = []
        for served in catalog.iter_images():
            row = image_row(served, "acc")
            meta = row.pop("meta")
            row["meta_json"] = None if meta is None else json.dumps(meta, ensure_ascii=False)
            extra = {k: v for k, v in served.items() if k not in LISTED_FIELDS}
            row["extra_json"] = json.dumps(extra, ensure_ascii=False) if extra else None
            found.append(row)
        return found

    previous = write_parquet(tmp_path / "2024-01-01.parquet", rows(nights[0][0]))
    current = write_parquet(tmp_path / "2024-01-02.parquet", rows(nights[1][0]))
    record = nights[1][1]
    assert record is not None
    truth = {i: ("added", ()) for i in record.added}
    truth |= {i: ("removed", ()) for i in record.removed}
    truth |= {i: ("changed", tuple(sorted(f))) for i, f in record.changed.items()}
    for small_rows, bucket_rows in ((20_000, 50_000), (0, 50_000), (0, 7)):
        settings = DiffSettings(small_rows=small_rows, bucket_rows=bucket_rows)
        batches = iter_night_changes(current, previous, settings=settings, temp_directory=tmp_path)
        found = {
            r["id"]: (r["change"], tuple(sorted(r["changed_fields"])))
            for r in pa.Table.from_batches(batches, CHANGES_SCHEMA).to_pylist()
        }
        assert found == truth, f"small_rows={small_rows}, bucket_rows={bucket_rows}"
