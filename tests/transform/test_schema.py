"""Column plan: naming, collisions, the type lattice, cap, contract and drift, with plain data."""

from __future__ import annotations

import orjson
import pyarrow as pa
import pytest

from exporter.errors import ConfigError, SchemaContractError
from exporter.sinks.ndjson import encode_lines
from exporter.sinks.parquet import dictionary_columns
from exporter.transform.normalize import NormalizeOptions, Normalizer
from exporter.transform.schema import (
    CORE,
    CORE_COLUMNS,
    MAX_BASE_NAME,
    PATH_METADATA_KEY,
    ColumnPlan,
    ColumnSpec,
    arrow_type,
    base_name,
    join_types,
    segment,
)


class TestSegment:
    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            pytest.param("status", "status", id="plain"),
            pytest.param("Status", "status", id="upper"),
            pytest.param("with space", "with_space", id="space"),
            pytest.param("a.b", "a_b", id="dot"),
            pytest.param("a__b", "a_b", id="double-underscore-collapsed"),
            pytest.param("__x__", "x", id="stripped"),
            pytest.param("a--..b", "a_b", id="runs-collapse"),
            pytest.param("café", "cafe", id="accent-folded"),
            pytest.param("日本", "_", id="nothing-usable"),
            pytest.param("", "_", id="empty"),
            pytest.param("emoji🔑", "emoji", id="emoji"),
            pytest.param("ÀB9", "ab9", id="digits"),
        ],
    )
    def test_reduces_to_safe_characters(self, key: str, expected: str) -> None:
        """A segment keeps only [a-z0-9_], never starts, ends or repeats '_'."""
        assert segment(key) == expected


class TestBaseName:
    def test_joins_segments_with_double_underscore(self) -> None:
        """Path segments join with '__' after the meta__ prefix."""
        assert base_name(("Region", "Name")) == "meta__region__name"

    def test_long_paths_are_cut_with_a_hash(self) -> None:
        """Names over the limit are cut and end in a hash, so distinct long paths stay apart."""
        one = base_name(("x" * 300, "a"))
        two = base_name(("x" * 300, "b"))
        assert len(one) == MAX_BASE_NAME == len(two)
        assert one != two
        assert one == base_name(("x" * 300, "a"))  # deterministic, not Python's salted hash()


class TestJoinTypes:
    @pytest.mark.parametrize(
        ("a", "b", "big", "expected"),
        [
            pytest.param("int64", "int64", False, "int64", id="same"),
            pytest.param("int64", "float64", False, "float64", id="int-float"),
            pytest.param("float64", "int64", False, "float64", id="float-int"),
            pytest.param("int64", "float64", True, "string", id="big-int-float"),
            pytest.param("bool", "int64", False, "string", id="bool-int"),
            pytest.param("bool", "float64", False, "string", id="bool-float"),
            pytest.param("json", "int64", False, "string", id="json-scalar"),
            pytest.param("json", "json", False, "json", id="json-json"),
            pytest.param("string", "bool", False, "string", id="string-wins"),
            pytest.param("int64", "int64", True, "int64", id="big-ints-alone-stay-int"),
        ],
    )
    def test_lattice(self, a: str, b: str, big: bool, expected: str) -> None:
        """Joins widen without loss; a bool never becomes a number."""
        assert join_types(a, b, big) == expected
        assert join_types(b, a, big) == expected


class TestColumnSpec:
    def test_round_trips_through_dict(self) -> None:
        """to_dict/from_dict keep name, type and path (a key with a dot is one segment)."""
        spec = ColumnSpec("meta__a_b", "int64", ("a.b",))
        data = orjson.loads(orjson.dumps(spec.to_dict()))
        assert data == {"name": "meta__a_b", "type": "int64", "path": ["a.b"]}
        assert ColumnSpec.from_dict(data) == spec
        assert ColumnSpec.from_dict(CORE_COLUMNS[5].to_dict()) == CORE_COLUMNS[5]

    @pytest.mark.parametrize(
        "data",
        [
            pytest.param({"type": "int64", "path": ["a"]}, id="no-name"),
            pytest.param({"name": "m", "type": "decimal", "path": ["a"]}, id="bad-type"),
            pytest.param({"name": "m", "type": "int64", "path": []}, id="empty-path"),
            pytest.param({"name": "m", "type": "int64", "path": [1]}, id="non-string-key"),
            pytest.param({"name": "m", "type": "json", "path": None}, id="bad-core-type"),
        ],
    )
    def test_rejects_malformed_entries(self, data: dict[str, object]) -> None:
        """A malformed seed entry is a ConfigError naming schema.seed."""
        with pytest.raises(ConfigError) as info:
            ColumnSpec.from_dict(data)
        assert info.value.key == "schema.seed"

    def test_arrow_field_records_path(self) -> None:
        """Meta fields carry their original path as field metadata; id is non-nullable."""
        field = ColumnSpec("meta__x", "json", ("X",)).arrow_field()
        assert field.type == pa.string()
        assert orjson.loads(field.metadata[PATH_METADATA_KEY]) == ["X"]
        assert not ColumnSpec("id", "string").arrow_field().nullable


def _plan(seed: list[ColumnSpec] | None = None, cap: int = 200, freeze: bool = False) -> ColumnPlan:
    return ColumnPlan(column_cap=cap, freeze=freeze, seed=seed)


class TestColumnPlan:
    def test_collisions_get_suffixes_in_order_of_appearance(self) -> None:
        """Paths landing on one name get __2, __3; a natural name taken by a suffix moves on."""
        plan = _plan()
        names = [plan.add(path).name for path in [("a.b",), ("a", "b"), ("A", "B"), ("a_b",)]]
        assert names == ["meta__a_b", "meta__a__b", "meta__a__b__2", "meta__a_b__2"]
        assert plan.add(("a", "b", "2")).name == "meta__a__b__2__2"
        assert plan.add(("Status",)).name == "meta__status"
        assert plan.add(("status",)).name == "meta__status__2"

    def test_seed_names_are_reserved(self) -> None:
        """A seeded column keeps its name; a new path wanting that name gets a suffix."""
        plan = _plan(seed=[ColumnSpec("meta__status", "string", ("status",))])
        assert plan.add(("Status",)).name == "meta__status__2"
        assert plan.by_path[("status",)].type == "string"

    def test_full_at_cap(self) -> None:
        """The plan reports full once column_cap meta columns exist (seeded ones count)."""
        plan = _plan(seed=[ColumnSpec("meta__a", "int64", ("a",))], cap=2)
        assert not plan.full
        plan.add(("b",))
        assert plan.full

    def test_observe_widens_and_records_reason(self) -> None:
        """An int column meeting a float widens to float64; then a bool forces string."""
        plan = _plan()
        column = plan.add(("n",))
        plan.observe(column, "int64", False)
        plan.observe(column, "float64", False)
        assert column.type == "float64"
        plan.observe(column, "bool", False)
        assert column.type == "string"
        [entry] = plan.drift()
        assert entry == {
            "change": "widened",
            "column": "meta__n",
            "path": ["n"],
            "from": "int64",
            "to": "string",
            "reason": "int64 + float64; float64 + bool",
        }

    def test_big_int_seen_earlier_blocks_float(self) -> None:
        """An int beyond 2^53 seen in an earlier batch makes a later float widen to string."""
        plan = _plan()
        column = plan.add(("n",))
        plan.observe(column, "int64", True)
        plan.observe(column, "float64", False)
        assert column.type == "string"
        assert "2^53" in plan.drift()[0]["reason"]

    def test_drift_against_seed(self) -> None:
        """With a seed: new columns are added, unseen seeded ones absent, excluded ones removed."""
        seed = [
            ColumnSpec("meta__kept", "int64", ("kept",)),
            ColumnSpec("meta__gone", "string", ("gone",)),
            ColumnSpec("meta__secret", "string", ("secret",)),
        ]
        plan = ColumnPlan(
            column_cap=10, freeze=False, seed=seed, keep=lambda path: path != ("secret",)
        )
        plan.observe(plan.by_path[("kept",)], "float64", False)
        plan.observe(plan.add(("new",)), "bool", False)
        changes = {(entry["change"], entry["column"]) for entry in plan.drift()}
        assert changes == {
            ("widened", "meta__kept"),
            ("absent", "meta__gone"),
            ("added", "meta__new"),
            ("removed", "meta__secret"),
        }
        assert [spec.name for spec in plan.specs()] == ["meta__kept", "meta__gone", "meta__new"]

    def test_first_snapshot_reports_no_additions(self) -> None:
        """Without a seed there is no baseline: new columns are not 'added'."""
        plan = _plan()
        plan.observe(plan.add(("a",)), "int64", False)
        assert plan.drift() == []

    def test_freeze_rejects_new_column(self) -> None:
        """freeze + seed: a new column fails with a one-line message naming it."""
        plan = _plan(seed=[ColumnSpec("meta__a", "int64", ("a",))], freeze=True)
        with pytest.raises(
            SchemaContractError, match=r"new meta column meta__b \(path \[\"b\"\]\)"
        ):
            plan.add(("b",))

    def test_freeze_rejects_widening(self) -> None:
        """freeze + seed: a seeded int64 column meeting a float fails and names both types."""
        plan = _plan(seed=[ColumnSpec("meta__a", "int64", ("a",))], freeze=True)
        plan.observe(plan.by_path[("a",)], "int64", False)
        with pytest.raises(SchemaContractError, match="from int64 to float64"):
            plan.observe(plan.by_path[("a",)], "float64", False)

    def test_freeze_allows_narrower_values(self) -> None:
        """freeze: ints in a seeded float64 column fit without widening."""
        plan = _plan(seed=[ColumnSpec("meta__a", "float64", ("a",))], freeze=True)
        plan.observe(plan.by_path[("a",)], "int64", False)
        assert plan.by_path[("a",)].type == "float64"

    def test_freeze_rejects_removal(self) -> None:
        """freeze: options that exclude a seeded column fail before anything runs."""
        with pytest.raises(SchemaContractError, match="meta__a"):
            ColumnPlan(
                column_cap=5,
                freeze=True,
                seed=[ColumnSpec("meta__a", "int64", ("a",))],
                keep=lambda path: False,
            )

    def test_freeze_without_seed_builds_freely(self) -> None:
        """freeze has no contract to hold on the first night."""
        plan = _plan(freeze=True)
        column = plan.add(("a",))
        plan.observe(column, "int64", False)
        plan.observe(column, "float64", False)
        assert column.type == "float64"

    def test_duplicate_seed_is_rejected(self) -> None:
        """A seed naming one column twice is a ConfigError."""
        seed = [ColumnSpec("meta__a", "int64", ("a",)), ColumnSpec("meta__a", "int64", ("b",))]
        with pytest.raises(ConfigError):
            _plan(seed=seed)

    def test_state_round_trip(self) -> None:
        """from_state(to_state()) rebuilds the same columns, flags and drift."""
        plan = _plan(seed=[ColumnSpec("meta__a", "int64", ("a",))])
        plan.observe(plan.by_path[("a",)], "int64", True)
        plan.observe(plan.add(("b", "c")), "json", False)
        state = orjson.loads(orjson.dumps(plan.to_state()))
        again = ColumnPlan.from_state(state, column_cap=200, freeze=False)
        assert again.specs() == plan.specs()
        assert again.drift() == plan.drift()
        assert again.by_path[("a",)].big_int
        assert again.add(("B", "C")).name == "meta__b__c__2"


def test_core_table_drives_the_schema_the_lines_and_the_encodings() -> None:
    """The normalizer's schema, the NDJSON keys and the Parquet dictionary all follow CORE."""
    image = {"id": "a", "uploaded": "2026-01-02T03:04:05Z", "meta": {"k": 1}}
    batch = Normalizer("acct", NormalizeOptions()).normalize([image])
    core = [batch.schema.field(name) for name in CORE]
    assert [(f.name, f.type, f.nullable) for f in core] == [
        (name, arrow_type(field.type), field.nullable) for name, field in CORE.items()
    ]
    assert batch.schema.names == [*CORE, "meta__k"]
    line = orjson.loads(encode_lines(batch))
    assert list(line) == [
        field.ndjson_key or name for name, field in CORE.items() if field.ndjson != "spread"
    ]
    assert line["meta"] == {"k": 1} and line["uploaded"] == "2026-01-02T03:04:05Z"
    unique = {name for name, field in CORE.items() if field.unique}
    assert set(dictionary_columns(batch.schema)) == {*batch.schema.names} - unique
