"""Property tests: arbitrary JSON meta, split into arbitrary batches, against a plain oracle."""

from __future__ import annotations

import itertools
import json
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from exporter.transform.normalize import NormalizeOptions, Normalizer
from exporter.transform.schema import CORE, ColumnSpec

# Keep Hypothesis' cache out of the checkout: pytest's norecursedirs (pyproject) replaces the
# defaults, so a `.hypothesis` directory in the rootdir turns into a collection warning (an error).
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "cf-images-exporter-hypothesis")

# Few, colliding keys: ".", case, "_" runs, unicode and "" all land on shared names.
KEYS = st.one_of(
    st.sampled_from(["a", "A", "a.b", "a__b", "b", "", "é", "日"]),
    st.text(alphabet="aAb._ é日", max_size=3),
)
INTS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, 2**63, 2**64 - 1]),
    st.integers(-(2**63), 2**64 - 1),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    INTS,
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=10,
)
# A few kinds per example (drawn from a palette) so that each pair of kinds meets, in both
# orders and within one batch, without a third kind masking the outcome.
PALETTE = [
    True,
    False,
    0,
    -1,
    1.5,
    -0.0,
    2**53,
    2**53 + 1,
    -(2**63),
    2**63,
    "x",
    "1",
    [1],
    {"k": 1},
]
MIXED_BATCHES = st.lists(st.sampled_from(PALETTE), min_size=1, max_size=3).flatmap(
    lambda kinds: st.lists(
        st.lists(st.sampled_from([None, *kinds]), min_size=1, max_size=6),
        min_size=1,
        max_size=4,
    )
)
METAS = st.one_of(st.none(), st.dictionaries(KEYS, VALUES, max_size=4))
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MISSING = object()


def pages(draw: st.DrawFn) -> tuple[list[list[dict[str, Any]]], int]:
    metas = draw(st.lists(METAS, min_size=1, max_size=12))
    images = [{"id": f"img-{index}", "meta": meta} for index, meta in enumerate(metas)]
    cuts = sorted(draw(st.lists(st.integers(0, len(images)), max_size=3)))
    bounds = [0, *cuts, len(images)]
    split = [images[start:end] for start, end in itertools.pairwise(bounds)]
    return [page for page in split if page], draw(st.integers(1, 4))


snapshots = st.composite(pages)


def same(a: Any, b: Any) -> bool:
    """Return equality that also tells 1, 1.0 and True apart, at every depth."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def at_path(meta: Any, path: tuple[str, ...], depth: int) -> Any:
    """Return the leaf at `path`, or MISSING where the path holds no leaf."""
    node = meta
    for key in path:
        if type(node) is not dict or key not in node:
            return MISSING
        node = node[key]
    if node is None or (type(node) is dict and len(path) < depth):
        return MISSING
    return node


def leaves(meta: Any, depth: int, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Return every path that holds a non-null leaf."""
    found = []
    for key, value in meta.items():
        path = (*prefix, key)
        if type(value) is dict and len(path) < depth:
            found += leaves(value, depth, path)
        elif value is not None:
            found.append(path)
    return found


def kind(value: Any) -> str:
    if type(value) is int:
        return "int" if -(2**63) <= value < 2**63 else "string"
    return {bool: "bool", float: "float64", str: "string"}.get(type(value), "json")


def expected_type(values: list[Any]) -> str:
    """Return the reconciled type of one path's leaves, straight from the rules."""
    kinds = {kind(value) for value in values}
    big = any(type(value) is int and abs(value) > 2**53 for value in values)
    if kinds == {"int"}:
        return "int64"
    if kinds == {"int", "float64"}:
        return "string" if big else "float64"
    return kinds.pop() if len(kinds) == 1 else "string"


def matches(cell: Any, value: Any, type_: str) -> bool:
    """Return whether a cell holds `value` under a column type (JSON text compared parsed)."""
    if value is MISSING:
        return cell is None
    if type_ in ("bool", "int64"):
        return same(cell, value)
    if type_ == "float64":
        return same(cell, float(value))
    if type_ == "string" and type(value) is str:
        return same(cell, value)
    return type(cell) is str and same(json.loads(cell), value)  # stdlib: ints of any size


def run(
    snapshot: list[list[dict[str, Any]]], depth: int
) -> tuple[Normalizer, list[pa.RecordBatch]]:
    normalizer = Normalizer("acc", NormalizeOptions(depth=depth))
    batches = [normalizer.normalize(page) for page in snapshot]
    return normalizer, [normalizer.conform(batch) for batch in batches]


@SETTINGS
@given(MIXED_BATCHES)
def test_conflicting_values_widen_as_the_rules_say(batches: list[list[Any]]) -> None:
    """One key with values of every kind, split into batches: the final type is the rules'
    join of all of them, and every cell reads back as its value."""
    snapshot = [
        [{"id": f"img-{page}-{row}", "meta": {"v": value}} for row, value in enumerate(values)]
        for page, values in enumerate(batches)
    ]
    normalizer, conformed = run(snapshot, 1)  # depth 1: objects are JSON leaves
    values = [value for page in batches for value in page]
    present = [value for value in values if value is not None]
    specs = normalizer.columns()[len(CORE) :]
    assert [spec.path for spec in specs] == ([("v",)] if present else [])
    if present:
        cells = pa.Table.from_batches(conformed).column("meta__v").to_pylist()
        assert specs[0].type == expected_type(present)
        expected = [MISSING if value is None else value for value in values]
        assert all(
            matches(cell, value, specs[0].type) for cell, value in zip(cells, expected, strict=True)
        )


@SETTINGS
@given(snapshots())
def test_meta_json_round_trips(case: tuple[list[list[dict[str, Any]]], int]) -> None:
    """meta_json decodes to an object equal to the image's meta, types and key order kept."""
    snapshot, depth = case
    _, batches = run(snapshot, depth)
    for page, batch in zip(snapshot, batches, strict=True):
        for image, text in zip(page, batch.column("meta_json").to_pylist(), strict=True):
            assert (text is None) == (image["meta"] is None)
            if text is not None:
                assert same(orjson.loads(text), image["meta"])


@SETTINGS
@given(snapshots())
def test_cells_equal_the_value_at_their_path(case: tuple[list[list[dict[str, Any]]], int]) -> None:
    """Every meta cell is the leaf at its recorded path under the reconciled type, which is
    exactly what the widening rules give for all values of that path in the snapshot."""
    snapshot, depth = case
    normalizer, batches = run(snapshot, depth)
    images = [image for page in snapshot for image in page]
    table = pa.Table.from_batches(batches)
    for spec in normalizer.columns()[len(CORE) :]:
        assert spec.path is not None
        values = [at_path(image["meta"], spec.path, depth) for image in images]
        present = [value for value in values if value is not MISSING]
        assert present, f"{spec.name} has no value in the data"
        assert spec.type == expected_type(present)
        cells = table.column(spec.name).to_pylist()
        assert all(
            matches(cell, value, spec.type) for cell, value in zip(cells, values, strict=True)
        )


@SETTINGS
@given(snapshots())
def test_paths_and_columns_match_one_to_one(case: tuple[list[list[dict[str, Any]]], int]) -> None:
    """Every leaf path has exactly one column; no two paths share one; names are unique."""
    snapshot, depth = case
    normalizer, _ = run(snapshot, depth)
    specs = normalizer.columns()
    assert len({spec.name for spec in specs}) == len(specs)
    meta_paths = [spec.path for spec in specs[len(CORE) :]]
    assert len(set(meta_paths)) == len(meta_paths)
    found = {
        path
        for page in snapshot
        for image in page
        if type(image["meta"]) is dict
        for path in leaves(image["meta"], depth)
    }
    assert set(meta_paths) == found


@SETTINGS
@given(snapshots())
def test_conform_gives_one_schema_and_fresh_values(
    case: tuple[list[list[dict[str, Any]]], int],
) -> None:
    """After conform every batch has the final schema and equals a fresh run on the final plan;
    that run (seeded from a manifest round trip) reports no drift, as a stable night would."""
    snapshot, depth = case
    normalizer, batches = run(snapshot, depth)
    schema = normalizer.final_schema()
    seed = [
        ColumnSpec.from_dict(orjson.loads(orjson.dumps(spec.to_dict())))
        for spec in normalizer.columns()
    ]
    fresh = Normalizer("acc", NormalizeOptions(depth=depth), seed=seed)
    for page, batch in zip(snapshot, batches, strict=True):
        assert batch.schema.equals(schema, check_metadata=True)
        assert batch.equals(fresh.normalize(page))
    assert fresh.final_schema().equals(schema, check_metadata=True)
    assert [entry for entry in fresh.drift() if entry["change"] != "absent"] == []
