"""The change diff: each field's comparison rule, JSON-value meta, and every source format."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exporter.diff import CHANGES_SCHEMA, NightSource, canonical_json, iter_changes

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
    ]
)
T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


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
    }
    row.update(fields)
    return row


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> NightSource:
    pq.write_table(pa.Table.from_pylist(rows, schema=CORE), path)
    return NightSource("parquet", path.stem, (str(path),))


def write_ndjson(path: Path, rows: list[dict[str, Any]]) -> NightSource:
    """Write rows as the NDJSON sink does: `meta` spliced in as raw JSON, RFC 3339 times."""
    with open(path, "wb") as out:
        for row in rows:
            head = {k: v for k, v in row.items() if k != "meta_json"}
            text = orjson.dumps(head, option=orjson.OPT_UTC_Z)[:-1]
            out.write(text + b',"meta":' + (row["meta_json"] or "null").encode() + b"}\n")
    return NightSource("ndjson", path.stem, (str(path),))


def changes(
    tmp_path: Path, before: list[dict[str, Any]] | None, after: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    current = write_parquet(tmp_path / "2024-01-02.parquet", after)
    previous = write_parquet(tmp_path / "2024-01-01.parquet", before) if before else None
    batches = list(iter_changes(current, previous, temp_directory=tmp_path))
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
            pytest.param("meta_json", None, "{}", id="meta-null-to-empty"),
            pytest.param("meta_json", '{"n":1}', '{"n":1.0}', id="meta-int-float"),
            pytest.param("meta_json", '{"n":true}', '{"n":"true"}', id="meta-bool-string"),
            pytest.param("meta_json", '{"a":{"b":[1]}}', '{"a":{"b":[1,2]}}', id="meta-nested"),
        ],
    )
    def test_each_field_change_is_named(
        self, tmp_path: Path, field: str, before: Any, after: Any
    ) -> None:
        """A difference in one field is one `changed` row naming exactly that field."""
        rows = changes(tmp_path, [image("x", **{field: before})], [image("x", **{field: after})])
        name = "meta" if field == "meta_json" else field
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
        ]
        previous = write_ndjson(tmp_path / "2024-01-01.ndjson", rows)
        current = write_parquet(tmp_path / "2024-01-02.parquet", rows)
        assert list(iter_changes(current, previous, temp_directory=tmp_path)) == []
        edited = [rows[0], {**rows[1], "meta_json": '{"k":1}'}]
        current = write_parquet(tmp_path / "2024-01-02.parquet", edited)
        found = pa.Table.from_batches(iter_changes(current, previous, temp_directory=tmp_path))
        assert found.column("id").to_pylist() == ["b"]
