"""Normalizer: core columns, flattening, collisions, type reconciliation, seed, conform, state."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from exporter.errors import ConfigError, PageFormatError, SchemaContractError
from exporter.transform.normalize import NormalizeOptions, Normalizer
from exporter.transform.schema import CORE, CORE_NAMES, ColumnSpec

UTC = dt.UTC


def image(index: int = 0, **fields: Any) -> dict[str, Any]:
    """Return one List V2 image; `fields` override or (with value ...) remove keys."""
    base: dict[str, Any] = {
        "id": f"img-{index}",
        "filename": f"f{index}.png",
        "creator": "user-1",
        "meta": {},
        "requireSignedURLs": False,
        "uploaded": "2024-01-02T03:04:05.678Z",
        "variants": [f"https://imagedelivery.net/h/img-{index}/public"],
    }
    base.update(fields)
    return {key: value for key, value in base.items() if value is not ...}


def metas(*values: Any) -> list[dict[str, Any]]:
    """Return images carrying the given meta values, in order."""
    return [image(index, meta=value) for index, value in enumerate(values)]


def normalizer(**options: Any) -> Normalizer:
    return Normalizer("acc-1", NormalizeOptions(**options))


def column(batch: pa.RecordBatch, name: str) -> list[Any]:
    return batch.column(name).to_pylist()  # type: ignore[no-any-return]


def meta_names(batch: pa.RecordBatch) -> list[str]:
    return [name for name in batch.schema.names if name.startswith("meta__")]


class TestOptions:
    @pytest.mark.parametrize(
        ("options", "key"),
        [
            pytest.param({"depth": 0}, "normalize.depth", id="depth-zero"),
            pytest.param({"depth": True}, "normalize.depth", id="depth-bool"),
            pytest.param({"column_cap": -1}, "normalize.column_cap", id="cap-negative"),
            pytest.param({"column_cap": 10**6}, "normalize.column_cap", id="cap-huge"),
            pytest.param({"schema_contract": "strict"}, "normalize.schema_contract", id="contract"),
            pytest.param({"include": "a.b"}, "normalize.include", id="include-bare-string"),
            pytest.param({"exclude": ("",)}, "normalize.exclude", id="exclude-empty-path"),
        ],
    )
    def test_rejects_bad_values(self, options: dict[str, Any], key: str) -> None:
        """A bad option is a ConfigError naming its key."""
        with pytest.raises(ConfigError) as info:
            NormalizeOptions(**options)
        assert info.value.key == key

    def test_lists_become_tuples(self) -> None:
        """include/exclude given as lists (from TOML) are stored as tuples."""
        assert NormalizeOptions(include=["a"]).include == ("a",)  # type: ignore[arg-type]


class TestCoreColumns:
    def test_schema_and_values(self) -> None:
        """Core columns come first, typed as the output contract says."""
        batch = normalizer().normalize([image(1, meta={"k": 1})])
        assert batch.schema.names[: len(CORE_NAMES)] == list(CORE_NAMES)
        assert batch.schema.field("uploaded").type == pa.timestamp("us", tz="UTC")
        assert batch.schema.field("variants").type == pa.list_(pa.string())
        assert not batch.schema.field("id").nullable
        row = batch.to_pylist()[0]
        assert row["account_id"] == "acc-1"
        assert row["id"] == "img-1"
        assert row["filename"] == "f1.png"
        assert row["require_signed_urls"] is False
        assert row["uploaded"] == dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
        assert row["variants"] == ["https://imagedelivery.net/h/img-1/public"]
        assert row["meta_json"] == '{"k":1}'

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            pytest.param("user-1", "user-1", id="set"),
            pytest.param(None, None, id="null"),
            pytest.param(..., None, id="missing"),
            pytest.param("", "", id="empty-kept"),
        ],
    )
    def test_creator(self, value: Any, expected: str | None) -> None:
        """creator is null when null or missing; an empty string is kept, not invented away."""
        norm = normalizer()
        assert column(norm.normalize([image(creator=value)]), "creator") == [expected]
        assert norm.anomalies == 0

    @pytest.mark.parametrize("bad_id", [pytest.param(..., id="missing"), None, "", 42], ids=str)
    def test_image_without_usable_id_is_a_page_error(self, bad_id: Any) -> None:
        """id is never null: an image without a usable id rejects the page."""
        with pytest.raises(PageFormatError, match="image #1 has no usable id"):
            normalizer().normalize([image(0), image(1, id=bad_id)])

    def test_non_object_image_is_a_page_error(self) -> None:
        """A page entry that is not an object rejects the page."""
        with pytest.raises(PageFormatError, match="image #0 is not an object"):
            normalizer().normalize(["img-1"])  # type: ignore[list-item]

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            pytest.param("2024-01-02T03:04:05Z", (2024, 1, 2, 3, 4, 5, 0), id="z"),
            pytest.param("2024-01-02T03:04:05.1Z", (2024, 1, 2, 3, 4, 5, 100000), id="fraction1"),
            pytest.param("2024-01-02T03:04:05.123456Z", (2024, 1, 2, 3, 4, 5, 123456), id="us"),
            pytest.param("2024-01-02T03:04:05+02:00", (2024, 1, 2, 1, 4, 5, 0), id="plus-offset"),
            pytest.param("2024-01-02T23:30:00-01:30", (2024, 1, 3, 1, 0, 0, 0), id="minus-offset"),
            pytest.param(
                "2024-01-02T03:04:05.123456789Z", (2024, 1, 2, 3, 4, 5, 123456), id="ns-truncated"
            ),
            pytest.param(
                "2024-01-02T03:04:05.1234567+05:30",
                (2024, 1, 1, 21, 34, 5, 123456),
                id="7-digits-offset",
            ),
        ],
    )
    def test_uploaded_parses_offsets_and_fractions(
        self, text: str, expected: tuple[int, int, int, int, int, int, int]
    ) -> None:
        """uploaded becomes the UTC instant, alone or beside an unparsable neighbour."""
        want = dt.datetime(*expected, tzinfo=UTC)
        norm = normalizer()
        alone = column(norm.normalize([image(uploaded=text)]), "uploaded")
        mixed = column(norm.normalize([image(uploaded=text), image(1, uploaded="x")]), "uploaded")
        assert alone == [want]
        assert mixed == [want, None]
        assert norm.anomalies == 1

    @pytest.mark.parametrize(
        "value",
        [
            "garbage",
            "2024-01-02T03:04:05",  # no offset: not an instant
            "2024-01-02",
            "2024-13-02T03:04:05Z",
            "2024-01-02T03:04:60Z",
            1704164645,
        ],
        ids=str,
    )
    def test_unparsable_uploaded_is_null_and_counted(self, value: Any) -> None:
        """A bad uploaded value never crashes: null plus one anomaly."""
        norm = normalizer()
        batch = norm.normalize([image(0), image(1, uploaded=value)])
        assert column(batch, "uploaded")[1] is None
        assert column(batch, "uploaded")[0] is not None
        assert norm.anomalies == 1

    def test_missing_uploaded_is_null_without_anomaly(self) -> None:
        """An absent uploaded is null, not an anomaly."""
        norm = normalizer()
        assert column(norm.normalize([image(uploaded=...)]), "uploaded") == [None]
        assert norm.anomalies == 0

    def test_wrongly_typed_core_values_are_counted(self) -> None:
        """Wrong types in core fields become null (or JSON text for strings) and are counted."""
        norm = normalizer()
        batch = norm.normalize(
            [
                image(0, requireSignedURLs=1, variants="public", filename=7),
                image(1, requireSignedURLs=None, variants=["a", 3]),
                image(2, requireSignedURLs=True, variants=...),
            ]
        )
        assert column(batch, "require_signed_urls") == [None, None, True]
        assert column(batch, "variants") == [None, None, None]
        assert column(batch, "filename") == ["7", "f1.png", "f2.png"]
        assert norm.anomalies == 4


class TestMetaJson:
    def test_exact_object_or_null(self) -> None:
        """meta_json is the meta object as JSON (key order kept); null when absent or null."""
        meta = {"Z": 1, "a": {"b": [1, 2.5, None, "é"]}, "": {}, "x.y": True}
        batch = normalizer().normalize([*metas(meta, None), image(9, meta=...)])
        texts = column(batch, "meta_json")
        assert orjson.loads(texts[0]) == meta
        assert list(orjson.loads(texts[0])) == ["Z", "a", "", "x.y"]
        assert texts[1:] == [None, None]

    def test_non_object_meta_is_kept_and_counted(self) -> None:
        """A meta that is not an object stays in meta_json, gets no columns, and is counted."""
        norm = normalizer()
        batch = norm.normalize(metas(["a", 1], "text"))
        assert column(batch, "meta_json") == ['["a",1]', '"text"']
        assert meta_names(batch) == []
        assert norm.anomalies == 2

    def test_ints_beyond_64_bits_survive(self) -> None:
        """Ints orjson cannot write fall back to the stdlib, still exact."""
        batch = normalizer().normalize(metas({"n": 2**70}))
        assert column(batch, "meta_json") == ['{"n":1180591620717411303424}']
        assert column(batch, "meta__n") == ["1180591620717411303424"]


class TestFlattening:
    def test_nested_objects_become_columns(self) -> None:
        """Nested objects flatten to meta__<seg>__<seg>, keeping each original path."""
        norm = normalizer()
        batch = norm.normalize(metas({"Region": {"Name": "eu", "zone": 3}, "ok": True}))
        assert meta_names(batch) == ["meta__region__name", "meta__region__zone", "meta__ok"]
        assert [spec.path for spec in norm.columns()[len(CORE) :]] == [
            ("Region", "Name"),
            ("Region", "zone"),
            ("ok",),
        ]
        assert batch.to_pylist()[0]["meta__region__zone"] == 3

    def test_lists_are_json_text(self) -> None:
        """Lists become JSON text columns, exact."""
        batch = normalizer().normalize(metas({"tags": ["a", 1, {"b": None}]}, {"tags": []}))
        assert column(batch, "meta__tags") == ['["a",1,{"b":null}]', "[]"]
        assert batch.schema.field("meta__tags").type == pa.string()

    def test_objects_at_depth_are_json_text(self) -> None:
        """An object at the flatten depth is kept whole as JSON text."""
        meta = {"l1": {"l2": {"l3": {"v": 1}}, "s": 2}}
        norm = normalizer(depth=2)
        batch = norm.normalize(metas(meta))
        assert meta_names(batch) == ["meta__l1__l2", "meta__l1__s"]
        assert column(batch, "meta__l1__l2") == ['{"l3":{"v":1}}']
        assert [spec.type for spec in norm.columns()[len(CORE) :]] == ["json", "int64"]

    def test_depth_one_keeps_top_level_only(self) -> None:
        """depth=1: every top-level object is JSON text."""
        batch = normalizer(depth=1).normalize(metas({"a": {"b": 1}, "c": 2}))
        assert column(batch, "meta__a") == ['{"b":1}']
        assert column(batch, "meta__c") == [2]

    def test_null_and_empty_objects_make_no_column(self) -> None:
        """Null values and empty objects above the depth give no column (meta_json keeps them)."""
        batch = normalizer().normalize(metas({"n": None, "e": {}, "k": 1}))
        assert meta_names(batch) == ["meta__k"]

    def test_path_both_leaf_and_object(self) -> None:
        """A path that is a scalar in one image and an object in another gets both columns."""
        batch = normalizer().normalize(metas({"a": 5}, {"a": {"b": 6}}))
        assert column(batch, "meta__a") == [5, None]
        assert column(batch, "meta__a__b") == [None, 6]

    def test_include_and_exclude(self) -> None:
        """include/exclude select dotted prefixes; a dotted key matches too; exclude wins."""
        norm = normalizer(include=("a", "x.y"), exclude=("a.secret",))
        batch = norm.normalize(
            metas({"a": {"b": 1, "secret": 2}, "x": {"y": 3, "z": 4}, "x.y": 5, "other": 6})
        )
        assert meta_names(batch) == ["meta__a__b", "meta__x__y", "meta__x_y"]
        assert orjson.loads(column(batch, "meta_json")[0])["other"] == 6
        assert norm.capped_values == 0


class TestCollisions:
    def test_dotted_key_beside_nested_object(self) -> None:
        """{"a.b":1} and {"a":{"b":2}}: a dot is part of the key, so the paths differ."""
        norm = normalizer()
        batch = norm.normalize(metas({"a.b": 1}, {"a": {"b": 2}}))
        assert column(batch, "meta__a_b") == [1, None]
        assert column(batch, "meta__a__b") == [None, 2]

    def test_double_underscore_key_beside_nested_object(self) -> None:
        """{"a__b"} reduces to a_b, colliding with {"a.b"}: the second one gets __2."""
        norm = normalizer()
        batch = norm.normalize(metas({"a.b": 1}, {"a__b": 2}, {"a": {"b": 3}}))
        assert meta_names(batch) == ["meta__a_b", "meta__a_b__2", "meta__a__b"]
        assert column(batch, "meta__a_b__2") == [None, 2, None]

    def test_case_variants(self) -> None:
        """Status vs status: the first seen keeps the name, the next gets __2."""
        norm = normalizer()
        batch = norm.normalize(metas({"Status": "A"}, {"status": "b", "STATUS": "c"}))
        assert meta_names(batch) == ["meta__status", "meta__status__2", "meta__status__3"]
        assert [spec.path for spec in norm.columns()[len(CORE) :]] == [
            ("Status",),
            ("status",),
            ("STATUS",),
        ]
        assert column(batch, "meta__status__3") == [None, "c"]

    def test_unicode_keys(self) -> None:
        """Keys with nothing ASCII reduce to '_' and stay distinct; accents fold."""
        norm = normalizer()
        batch = norm.normalize(metas({"ключ": 1, "日本": 2, "café": 3, "cafe": 4}))
        assert meta_names(batch) == ["meta___", "meta_____2", "meta__cafe", "meta__cafe__2"]
        assert [spec.path for spec in norm.columns()[len(CORE) :]] == [
            ("ключ",),
            ("日本",),
            ("café",),
            ("cafe",),
        ]

    def test_names_stable_across_batches(self) -> None:
        """A name, once given, stays with its path in later batches whatever their order."""
        norm = normalizer()
        norm.normalize(metas({"Status": 1}))
        batch = norm.normalize(metas({"status": 2}, {"Status": 3}))
        assert column(batch, "meta__status") == [None, 3]
        assert column(batch, "meta__status__2") == [2, None]

    def test_collision_with_suffix_like_key(self) -> None:
        """A real key "2" under a path whose name was taken by a suffix moves on to __2__2."""
        batch = normalizer().normalize(metas({"A": 1, "a": 2}, {"a": {"2": 3}}))
        assert meta_names(batch) == ["meta__a", "meta__a__2", "meta__a__2__2"]

    def test_huge_keys_stay_under_identifier_limits(self) -> None:
        """Huge keys give short, distinct, hashed names (Redshift allows 127 bytes)."""
        keys = ["k" * 500 + "1", "k" * 500 + "2"]
        batch = normalizer().normalize(metas({keys[0]: 1, keys[1]: 2}))
        names = meta_names(batch)
        assert len(set(names)) == 2
        assert all(len(name.encode()) <= 127 for name in names)


class TestTypes:
    @pytest.mark.parametrize(
        ("values", "type_", "expected"),
        [
            pytest.param([1, 2], pa.int64(), [1, 2], id="int"),
            pytest.param([1, 2.5], pa.float64(), [1.0, 2.5], id="int-float"),
            pytest.param([2**53, 0.5], pa.float64(), [2.0**53, 0.5], id="int-at-2^53-float"),
            pytest.param(
                [2**53 + 1, 0.5], pa.string(), ["9007199254740993", "0.5"], id="int-past-2^53-float"
            ),
            pytest.param(
                [-(2**53) - 2, 1.0], pa.string(), ["-9007199254740994", "1.0"], id="neg-big-float"
            ),
            pytest.param([2**53 + 1, 2], pa.int64(), [2**53 + 1, 2], id="big-ints-stay-int"),
            pytest.param([True, 1], pa.string(), ["true", "1"], id="bool-int"),
            pytest.param([1.5, False], pa.string(), ["1.5", "false"], id="float-bool"),
            pytest.param([True, False], pa.bool_(), [True, False], id="bool"),
            pytest.param(["x", 1.5, True], pa.string(), ["x", "1.5", "true"], id="string-wins"),
            pytest.param([[1], "x"], pa.string(), ["[1]", "x"], id="json-string"),
            pytest.param([{"k": 1}, 2], pa.string(), ['{"k":1}', "2"], id="json-int"),
            pytest.param([[1], {"k": 1}], pa.string(), ["[1]", '{"k":1}'], id="json-json"),
            pytest.param([2**63, 1], pa.string(), ["9223372036854775808", "1"], id="beyond-int64"),
            pytest.param([1, None], pa.int64(), [1, None], id="null-keeps-type"),
        ],
    )
    def test_conflicts_widen_without_loss(
        self, values: list[Any], type_: pa.DataType, expected: list[Any]
    ) -> None:
        """Within one batch and across two, a conflict widens the same way."""
        one = normalizer(depth=1)
        batch = one.normalize(metas(*({"v": value} for value in values)))
        assert batch.schema.field("meta__v").type == type_
        assert column(batch, "meta__v") == expected
        split = normalizer(depth=1)
        parts = [split.normalize(metas({"v": value})) for value in values]
        assert split.final_schema() == batch.schema
        assert [column(split.conform(part), "meta__v")[0] for part in parts] == expected

    def test_conflict_reaches_drift(self) -> None:
        """Every widening is listed in drift with its reason."""
        norm = normalizer()
        norm.normalize(metas({"v": 1}))
        norm.normalize(metas({"v": True}))
        assert norm.drift() == [
            {
                "change": "widened",
                "column": "meta__v",
                "path": ["v"],
                "from": "int64",
                "to": "string",
                "reason": "int64 + bool",
            }
        ]

    def test_string_rendering_of_floats_matches_meta_json(self) -> None:
        """Numbers in a string column are written as in meta_json (orjson's shortest form)."""
        batch = normalizer().normalize(metas({"v": "s"}, {"v": 1e16}, {"v": 1e-7}, {"v": -0.0}))
        assert column(batch, "meta__v") == ["s", "1e+16", "1e-7", "-0.0"]
        assert column(batch, "meta_json")[1] == '{"v":1e+16}'


class TestColumnCap:
    def test_keys_past_the_cap_live_in_meta_json(self) -> None:
        """Past column_cap, new keys get no column; they are counted and listed."""
        norm = normalizer(column_cap=2)
        batch = norm.normalize(metas({"a": 1, "b": 2, "c": 3}, {"c": 4, "d": {"e": 5}}))
        assert meta_names(batch) == ["meta__a", "meta__b"]
        assert norm.capped_values == 3
        assert norm.capped_keys == [("c",), ("d", "e")]
        assert orjson.loads(column(batch, "meta_json")[1]) == {"c": 4, "d": {"e": 5}}
        assert norm.report()["capped_keys"] == [["c"], ["d", "e"]]

    def test_cap_zero_means_meta_json_only(self) -> None:
        """column_cap=0 gives no meta columns at all."""
        batch = normalizer(column_cap=0).normalize(metas({"a": 1}))
        assert meta_names(batch) == []


class TestSeed:
    SEED = (
        ColumnSpec("meta__status", "string", ("status",)),
        ColumnSpec("meta__n", "float64", ("n",)),
        ColumnSpec("meta__old", "bool", ("old",)),
    )

    def test_seed_keeps_names_types_and_order(self) -> None:
        """Seeded columns keep name, type and place; unseen ones stay as nulls; new ones append."""
        norm = Normalizer("acc-1", NormalizeOptions(), seed=[*self.SEED])
        batch = norm.normalize(metas({"Status": "x", "n": 3, "status": "ok", "new": 1}))
        assert meta_names(batch) == [
            "meta__status",
            "meta__n",
            "meta__old",
            "meta__status__2",
            "meta__new",
        ]
        assert column(batch, "meta__n") == [3.0]
        assert column(batch, "meta__old") == [None]
        assert column(batch, "meta__status") == ["ok"]
        assert {(entry["change"], entry["column"]) for entry in norm.drift()} == {
            ("absent", "meta__old"),
            ("added", "meta__status__2"),
            ("added", "meta__new"),
        }

    def test_seed_ignores_core_columns(self) -> None:
        """A manifest schema with core columns can be fed back as is."""
        first = normalizer()
        first.normalize(metas({"a": 1}))
        norm = Normalizer("acc-1", NormalizeOptions(), seed=first.columns())
        assert norm.columns() == first.columns()

    def test_freeze_fails_on_new_column(self) -> None:
        """freeze + seed: a new meta key fails the run with SchemaContractError."""
        options = NormalizeOptions(schema_contract="freeze")
        norm = Normalizer("acc-1", options, seed=[*self.SEED])
        norm.normalize(metas({"status": "ok", "n": 1}))
        with pytest.raises(SchemaContractError, match="new meta column meta__brand_new"):
            norm.normalize(metas({"brand new": 1}))

    def test_freeze_failure_leaves_the_normalizer_clean(self) -> None:
        """After a contract failure mid-page no cells of that page leak into the next one."""
        options = NormalizeOptions(schema_contract="freeze")
        norm = Normalizer("acc-1", options, seed=[*self.SEED])
        with pytest.raises(SchemaContractError):
            norm.normalize(metas({"status": "leak", "n": 2}, {"brand new": 1}))
        assert column(norm.normalize(metas({"n": 1})), "meta__status") == [None]

    def test_freeze_fails_on_widening(self) -> None:
        """freeze + seed: a value needing a wider type fails the run."""
        options = NormalizeOptions(schema_contract="freeze")
        norm = Normalizer("acc-1", options, seed=[*self.SEED])
        with pytest.raises(SchemaContractError, match=r"meta__n .* from float64 to string"):
            norm.normalize(metas({"n": True}))

    def test_freeze_ignores_capped_keys(self) -> None:
        """freeze: a new key past the cap changes no schema, so it does not fail."""
        options = NormalizeOptions(schema_contract="freeze", column_cap=3)
        norm = Normalizer("acc-1", options, seed=[*self.SEED])
        norm.normalize(metas({"brand new": 1}))
        assert norm.capped_values == 1


class TestConform:
    PAGES = (
        metas({"a": 1}, {"b": {"c": "x"}}),
        metas({"a": 2.5, "d": [1]}, None),
        metas({"b": {"c": 7}, "A": True}, {"d": "s"}),
    )

    def test_every_part_gets_the_final_schema_and_fresh_values(self) -> None:
        """conform(early batch) == the same images normalized under the final plan."""
        norm = normalizer()
        batches = [norm.normalize(page) for page in self.PAGES]
        assert batches[0].schema != norm.final_schema()
        fresh = Normalizer("acc-1", NormalizeOptions(), seed=norm.columns())
        for page, batch in zip(self.PAGES, batches, strict=True):
            conformed = norm.conform(batch)
            assert conformed.schema.equals(norm.final_schema(), check_metadata=True)
            assert conformed.equals(fresh.normalize(page))
        assert fresh.drift() == []

    def test_final_batch_is_returned_as_is(self) -> None:
        """A batch already under the final plan is not rebuilt."""
        norm = normalizer()
        batch = norm.normalize(self.PAGES[0])
        assert norm.conform(batch) is batch

    def test_conform_counts_nothing_twice(self) -> None:
        """Re-deriving a batch does not count its anomalies or capped keys again."""
        norm = normalizer(column_cap=1)
        first = norm.normalize(metas("bad", {"a": 1, "b": 2}))
        norm.normalize(metas({"a": 1.5}))
        counts = (norm.anomalies, norm.capped_values)
        assert column(norm.conform(first), "meta__a") == [None, 1.0]
        assert (norm.anomalies, norm.capped_values) == counts == (1, 1)

    def test_parquet_parts_read_with_a_plain_glob(self, tmp_path: Path) -> None:
        """DuckDB reads conformed parts with one glob, no union_by_name, values intact."""
        norm = normalizer()
        batches = [norm.normalize(page) for page in self.PAGES]
        for index, batch in enumerate(batches):
            pq.write_table(
                pa.Table.from_batches([norm.conform(batch)]), tmp_path / f"p{index}.parquet"
            )
        query = (
            f"SELECT id, meta__a, meta__b__c, meta__d FROM read_parquet('{tmp_path}/*.parquet')"
            " ORDER BY id, meta_json"
        )
        with duckdb.connect() as connection:
            rows = connection.execute(query).fetchall()
        assert rows == [
            ("img-0", 1.0, None, None),
            ("img-0", 2.5, None, "[1]"),
            ("img-0", None, "7", None),
            ("img-1", None, "x", None),
            ("img-1", None, None, "s"),
            ("img-1", None, None, None),
        ]

    def test_batches_read_back_from_parquet_conform(self, tmp_path: Path) -> None:
        """A part read back from Parquet (list child named "element") conforms exactly."""
        norm = normalizer()
        batches = [norm.normalize(page) for page in self.PAGES]
        path = tmp_path / "part.parquet"
        pq.write_table(pa.Table.from_batches([batches[0]]), path)
        [back] = pq.read_table(path).to_batches()
        conformed = norm.conform(back)
        assert conformed.schema.equals(norm.final_schema(), check_metadata=True)
        assert conformed.equals(norm.conform(batches[0]))


class TestEmulatorCatalog:
    def test_duckdb_glob_matches_the_catalog(self, tmp_path: Path) -> None:
        """The emulator's nasty catalog, written as conformed parts, reads back through one
        DuckDB glob with every core value, meta_json and flattened cell as in the catalog."""
        from exporter.emulator.catalog import build_catalog

        images = list(build_catalog(2000, seed=11).iter_images())
        norm = normalizer()
        batches = [norm.normalize(images[start : start + 300]) for start in range(0, 2000, 300)]
        for index, batch in enumerate(batches):
            table = pa.Table.from_batches([norm.conform(batch)])
            pq.write_table(table, tmp_path / f"part-{index:05d}.parquet")
        specs = norm.columns()[len(CORE) :]
        names = ", ".join(spec.name for spec in specs)
        query = (
            "SELECT id, filename, creator, require_signed_urls, epoch_us(uploaded), variants,"
            f" meta_json, {names} FROM read_parquet('{tmp_path}/*.parquet')"
        )
        with duckdb.connect() as connection:
            rows = {row[0]: row for row in connection.execute(query).fetchall()}
        assert len(rows) == len(images) == 2000
        kinds = {spec.type for spec in specs}
        assert {"bool", "int64", "float64", "string", "json"} <= kinds  # the catalog is nasty
        for image in images:
            row = rows[image["id"]]
            uploaded = dt.datetime.fromisoformat(image["uploaded"])
            assert row[1:6] == (
                image["filename"],
                image.get("creator"),
                image["requireSignedURLs"],
                int(uploaded.timestamp()) * 10**6 + uploaded.microsecond,
                image["variants"],
            )
            assert (None if row[6] is None else orjson.loads(row[6])) == image.get("meta")
            for spec, cell in zip(specs, row[7:], strict=True):
                assert spec.path is not None
                want = _expected_cell(image.get("meta"), spec.path, spec.type)
                assert (type(cell), cell) == (type(want), want), spec.name


def _expected_cell(meta: Any, path: tuple[str, ...], type_: str) -> Any:
    """Return what a meta column should hold for one image (depth 5, the default)."""
    value = meta
    for key in path:
        if type(value) is not dict or key not in value:
            return None
        value = value[key]
    if value is None or (type(value) is dict and len(path) < 5):
        return None
    if type_ == "float64":
        return float(value)
    if type_ == "string" and type(value) is str:
        return value
    if type_ in ("string", "json"):
        return orjson.dumps(value).decode()
    return value


class TestState:
    def test_resume_continues_with_the_same_plan(self) -> None:
        """from_state(state()) gives the same columns, names, counters and drift."""
        norm = normalizer(column_cap=3)
        norm.normalize(metas({"Status": 1, "x": True}, "bad", {"big": 2**60}))
        norm.normalize(metas({"z": 1}))
        state = orjson.loads(orjson.dumps(norm.state()))
        resumed = Normalizer.from_state("acc-1", NormalizeOptions(column_cap=3), state)
        assert resumed.columns() == norm.columns()
        assert (resumed.anomalies, resumed.capped_values) == (1, 1)
        after = metas({"status": 2, "big": 0.5})
        assert resumed.normalize(after).equals(norm.normalize(after))
        assert resumed.drift() == norm.drift()
        assert [entry["to"] for entry in resumed.drift()] == ["string"]

    def test_unknown_version_is_rejected(self) -> None:
        """A state from another format version is refused, not misread."""
        with pytest.raises(ConfigError):
            Normalizer.from_state("acc-1", NormalizeOptions(), {"version": 99})


def extras(*fields: dict[str, Any]) -> list[dict[str, Any]]:
    """Return images carrying the given top-level fields the reference does not list."""
    return [image(index, **extra) for index, extra in enumerate(fields)]


def extra_names(batch: pa.RecordBatch) -> list[str]:
    return [name for name in batch.schema.names if name.startswith("extra__")]


class TestExtraFields:
    FIELDS: ClassVar[dict[str, Any]] = {
        "sizeBytes": 900007655956,
        "draft": False,
        "labels": {"team": "a", "score": 1.5},
    }

    def test_kept_as_one_object_and_typed_columns(self) -> None:
        """Unknown top-level fields go to extra_json exactly and to extra__ columns."""
        batch = normalizer().normalize(extras(self.FIELDS, {}))
        assert [orjson.loads(t) if t else t for t in column(batch, "extra_json")] == [
            self.FIELDS,
            None,
        ]
        assert extra_names(batch) == [
            "extra__sizebytes",
            "extra__draft",
            "extra__labels__team",
            "extra__labels__score",
        ]
        assert column(batch, "extra__sizebytes") == [900007655956, None]
        assert batch.schema.field("extra__sizebytes").type == pa.int64()
        assert column(batch, "extra__draft") == [False, None]
        assert column(batch, "extra__labels__score") == [1.5, None]
        assert batch.schema.field("extra__labels__team").metadata == {
            b"cf_extra_path": b'["labels","team"]'
        }
        assert meta_names(batch) == []

    def test_known_fields_only_give_a_null_column(self) -> None:
        """An image with the seven listed fields (or fewer) has extra_json null and no column."""
        batch = normalizer().normalize([image(1), image(2, meta=..., creator=...)])
        assert column(batch, "extra_json") == [None, None]
        assert extra_names(batch) == []

    def test_a_null_field_is_kept_in_extra_json(self) -> None:
        """A field sent as null is kept (nothing dropped) but types no column."""
        batch = normalizer().normalize(extras({"gone": None}))
        assert column(batch, "extra_json") == ['{"gone":null}']
        assert extra_names(batch) == []

    def test_widens_like_meta(self) -> None:
        """An extra field's column widens under the same lattice as a meta column's."""
        norm = normalizer()
        norm.normalize(extras({"n": 1}))
        batch = norm.normalize(extras({"n": 2.5}))
        assert norm.final_schema().field("extra__n").type == pa.float64()
        assert norm.conform(batch).column("extra__n").to_pylist() == [2.5]
        assert [(e["change"], e["column"]) for e in norm.drift()] == [("widened", "extra__n")]

    def test_include_does_not_select_extra_fields(self) -> None:
        """include/exclude select meta paths; an extra field always gets its column."""
        batch = normalizer(include=["a"]).normalize(extras({"draft": True}))
        assert extra_names(batch) == ["extra__draft"]

    def test_own_cap(self) -> None:
        """The extra fields have a cap of their own: a full meta plan leaves them their columns."""
        norm = normalizer(column_cap=1)
        batch = norm.normalize([image(1, meta={"a": 1, "b": 2}, x=1, y=2)])
        assert meta_names(batch) == ["meta__a"] and extra_names(batch) == ["extra__x"]
        assert norm.report()["capped_extra_keys"] == [["y"]]
        assert norm.report()["capped_keys"] == [["b"]]

    def test_seed_drift_and_freeze(self) -> None:
        """Seeded from a night without it, a new field is drift "added"; freeze refuses it."""
        first = normalizer()
        first.normalize(extras({"draft": False}))
        seed = first.columns()
        norm = Normalizer("acc-1", NormalizeOptions(), seed=seed)
        norm.normalize(extras({"draft": True, "sizeBytes": 5}))
        assert [(e["change"], e["column"], e["path"]) for e in norm.drift()] == [
            ("added", "extra__sizebytes", ["sizeBytes"])
        ]
        frozen = Normalizer("acc-1", NormalizeOptions(schema_contract="freeze"), seed=seed)
        frozen.normalize(extras({"draft": True}))
        with pytest.raises(SchemaContractError, match="new column of a new API field"):
            frozen.normalize(extras({"sizeBytes": 5}))

    def test_seed_without_extras_still_reports_the_first_one(self) -> None:
        """A previous night without extra fields is a baseline: the first field is drift."""
        first = normalizer()
        first.normalize(metas({"a": 1}))
        norm = Normalizer("acc-1", NormalizeOptions(), seed=first.columns())
        norm.normalize([image(1, meta={"a": 2}, draft=True)])
        assert [(e["change"], e["column"]) for e in norm.drift()] == [("added", "extra__draft")]

    def test_conform_rederives_extra_columns(self) -> None:
        """An early batch conformed under the final plan equals normalizing its images now."""
        norm = normalizer()
        early = norm.normalize(extras({"a": 1}))
        norm.normalize(extras({"b": {"c": "x"}}))
        images = extras({"a": 1})
        again = Normalizer("acc-1", NormalizeOptions())
        again.normalize(images)
        again.normalize(extras({"b": {"c": "x"}}))
        assert norm.conform(early).equals(again.conform(again.normalize(images)))
        assert extra_names(norm.conform(early)) == ["extra__a", "extra__b__c"]

    def test_state_keeps_the_extra_plan(self) -> None:
        """from_state(state()) continues with the same extra columns."""
        norm = normalizer()
        norm.normalize(extras({"draft": True}))
        state = orjson.loads(orjson.dumps(norm.state()))
        resumed = Normalizer.from_state("acc-1", NormalizeOptions(), state)
        assert resumed.columns() == norm.columns()
        after = extras({"draft": False, "n": 1})
        assert resumed.normalize(after).equals(norm.normalize(after))
