"""Image dicts of List V2 pages -> Arrow record batches: core columns, raw meta, flattened meta.

Pure code: no aiohttp, no files, no clock. Columns are built column-wise (one Python list per
column, then one `pa.array` call with an explicit type); per-image Python work is limited to
walking `meta`, the one part that has no vectorised path.

Decisions the output contract leaves open:
- `id` must be a non-empty string: anything else raises PageFormatError (an id-less row would
  break de-duplication and resume).
- `creator` is null when missing or null; an empty string stays "" (never invent or drop data).
- `require_signed_urls`, `variants`, `filename`: null when missing; a value of the wrong type
  becomes null (or JSON text for `filename`/`creator`) and counts as an anomaly.
- `uploaded` must carry an offset (RFC 3339: "Z" or "+hh:mm"); fractions beyond microseconds
  are truncated; a naive, malformed or non-string value becomes null and counts as an anomaly.
- A meta column holds the value found at its path where that value is a leaf (a scalar, a list,
  or an object at the flatten depth); where the path is missing, null, or an object that was
  flattened further, the cell is null. Empty objects above the depth give no column. Everything
  stays in `meta_json`.
- `include`/`exclude` match dotted meta paths: "a.b" selects the path ["a", "b"] and everything
  below it, and also a key literally named "a.b" (the API's filter syntax is dotted as well).
- A top-level field the reference does not list (KNOWN_FIELDS) is an extra: the image's extras
  go to `extra_json` as one object (keys in the order sent) and are flattened into `extra__`
  columns exactly as meta is into `meta__` ones (same depth, naming, widening, contract), by a
  plan of their own with its own cap: extras are the API's few fields, meta is the users'
  many, and a shared cap would let a meta explosion take a new API field's column.
  include/exclude select meta paths only. An image without extras costs one set check.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from exporter.errors import ConfigError, PageFormatError
from exporter.options import NormalizeOptions
from exporter.transform.schema import (
    CORE,
    CORE_COLUMNS,
    CORE_FIELDS,
    EXACT_INT_LIMIT,
    EXTRA_JSON,
    EXTRA_PREFIX,
    INT64_MAX,
    INT64_MIN,
    KNOWN_FIELDS,
    META_JSON,
    ColumnPlan,
    ColumnSpec,
    PlanColumn,
    arrow_type,
    join_types,
)

STATE_VERSION = 2  # 2: the extra fields' plan
CAPPED_SAMPLE = 100  # distinct capped paths kept for the report
_SKIP_CACHE_LIMIT = 100_000  # unselected/capped paths remembered; memory stays bounded
_TIMESTAMP = pa.timestamp("us", tz="UTC")
_TIMESTAMP_NS = pa.timestamp("ns", tz="UTC")
_NONE = type(None)
# Core column -> the image key it is read from (all but `account_id`).
_IMAGE_KEYS = {name: field.key for name, field in CORE.items() if field.key is not None}


# A level of the path tree: columns of the leaves at this level by key, subtrees by key.
_Node = tuple[dict[str, PlanColumn], dict[str, "_Node"]]


def _everything(path: tuple[str, ...]) -> bool:
    return True


class _Leaves:
    """One column plan with what flattening into it remembers: the path tree, the paths that
    got no column, and the capped ones (meta has one, the extra fields another)."""

    def __init__(self, plan: ColumnPlan, selects: Callable[[tuple[str, ...]], bool]) -> None:
        self.plan = plan
        self.selects = selects
        # The plan's columns by path as a tree of keys: a nested leaf is found by its key's
        # (cached) hash, not by building and hashing its path. Filled as paths show up.
        self.tree: _Node = ({}, {})
        self.skip: set[tuple[str, ...]] = set()
        self.capped_values = 0  # leaves that got no column because of the cap
        self.capped_keys: dict[tuple[str, ...], None] = {}

    def state(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_state(),
            "capped_values": self.capped_values,
            "capped_keys": [list(path) for path in self.capped_keys],
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        self.capped_values = int(state.get("capped_values", 0))
        self.capped_keys = {tuple(path): None for path in state.get("capped_keys", [])}


class Normalizer:
    """Turns pages of image dicts into record batches under one growing column plan."""

    def __init__(
        self,
        account_id: str,
        options: NormalizeOptions,
        seed: Sequence[ColumnSpec] | None = None,
        *,
        _plans: tuple[ColumnPlan, ColumnPlan] | None = None,
    ) -> None:
        """`seed`: the previous snapshot's columns (meta and extra, told apart by name)."""
        self.account_id = account_id
        self.options = options
        if _plans is None:
            freeze = options.schema_contract == "freeze"
            seeds = None if seed is None else list(seed)
            extra = None if seeds is None else [s for s in seeds if s.extra]
            meta = None if seeds is None else [s for s in seeds if not s.extra]
            cap = options.column_cap
            _plans = (
                ColumnPlan(column_cap=cap, freeze=freeze, seed=meta, keep=options.selects),
                ColumnPlan(column_cap=cap, freeze=freeze, seed=extra, prefix=EXTRA_PREFIX),
            )
        self._meta = _Leaves(_plans[0], options.selects)
        self._extra = _Leaves(_plans[1], _everything)
        self.anomalies = 0
        self._conforming = False
        self._touched: list[PlanColumn] = []
        self._arrays: dict[str, Rendered] = {}  # per batch: columns built while typing them
        self._rows = 0
        self._account: pa.Array | None = None
        self._schema: tuple[tuple[int, int], pa.Schema] | None = None

    # -- public API ---------------------------------------------------------------------------

    def normalize(self, images: Sequence[Mapping[str, Any]]) -> pa.RecordBatch:
        """Return one batch for a page of images, under the plan so far (which may grow)."""
        _check_images(images)
        ids = [image.get("id") for image in images]
        _check_ids(ids)
        build = {
            "string": self._strings,
            "bool": self._bools,
            "timestamp": self._timestamps,
            "list<string>": self._variants,
        }
        core = {"account_id": self._account_column(len(images)), "id": self._strings(ids)}
        for name, key in _IMAGE_KEYS.items():
            if name not in core and name != META_JSON:  # meta_json: with the meta columns
                core[name] = build[CORE[name].type]([image.get(key) for image in images])
        rows = len(images)
        try:
            metas = [image.get(_IMAGE_KEYS[META_JSON]) for image in images]
            meta_texts = _json_texts(metas)
            self._flatten(self._meta, metas)
            extra_json = self._extras(images)
            self._observe()
        except BaseException:
            self._reset()  # e.g. SchemaContractError mid-page: leave no half-filled cells
            raise
        return self._finish(core, _texts(meta_texts), extra_json, rows)

    def final_schema(self) -> pa.Schema:
        """Return the schema every part of the snapshot gets once the last batch is in."""
        version = (self._meta.plan.version, self._extra.plan.version)  # both only grow
        if self._schema is None or self._schema[0] != version:
            columns = [*self._meta.plan.columns, *self._extra.plan.columns]
            fields = [*CORE_FIELDS, *(c.spec().arrow_field() for c in columns)]
            self._schema = (version, pa.schema(fields))
        return self._schema[1]

    def conform(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Return `batch` re-derived under the current (final) plan from its core columns,
        `meta_json` and `extra_json`; identical to what normalizing its images now would give."""
        schema = self.final_schema()
        if batch.schema.equals(schema, check_metadata=True):
            return batch  # built under this very plan: names, paths and types all match
        rows = batch.num_rows
        core = {name: batch[name] for name in CORE if name not in (META_JSON, EXTRA_JSON)}
        self._conforming = True
        try:
            self._flatten(self._meta, _loads(batch[META_JSON]))
            if batch[EXTRA_JSON].null_count < rows:
                self._flatten(self._extra, _loads(batch[EXTRA_JSON]))
            for column in self._touched:
                if self._batch_type(column) != column.type:
                    raise ValueError(f"{column.name}: batch does not come from this normalizer")
            return self._finish(core, batch[META_JSON], batch[EXTRA_JSON], rows)
        finally:
            self._conforming = False
            self._reset()

    def columns(self) -> list[ColumnSpec]:
        """Return every column: core columns, then meta columns, then extra columns, with
        their original paths."""
        return [*CORE_COLUMNS, *self._meta.plan.specs(), *self._extra.plan.specs()]

    def drift(self) -> list[dict[str, Any]]:
        """Return the drift report (added, widened, absent, removed columns) for the manifest."""
        return [*self._meta.plan.drift(), *self._extra.plan.drift()]

    @property
    def capped_values(self) -> int:
        """Return the meta leaves that got no column because of the column cap."""
        return self._meta.capped_values

    @property
    def capped_keys(self) -> list[tuple[str, ...]]:
        """Return up to CAPPED_SAMPLE distinct meta paths left out by the column cap."""
        return list(self._meta.capped_keys)

    def report(self) -> dict[str, Any]:
        """Return the normalizer's other findings for the manifest: anomalies, capped keys
        (the extra fields' own only when their cap was reached)."""
        found = {
            "anomalies": self.anomalies,
            "capped_values": self._meta.capped_values,
            "capped_keys": [list(path) for path in self._meta.capped_keys],
        }
        if self._extra.capped_values:
            found["capped_extra_values"] = self._extra.capped_values
            found["capped_extra_keys"] = [list(path) for path in self._extra.capped_keys]
        return found

    def state(self) -> dict[str, Any]:
        """Return JSON-ready state for a checkpoint: the plans and the counters."""
        meta = self._meta.state()
        return {
            "version": STATE_VERSION,
            "plan": meta["plan"],
            "anomalies": self.anomalies,
            "capped_values": meta["capped_values"],
            "capped_keys": meta["capped_keys"],
            "extra": self._extra.state(),
        }

    @classmethod
    def from_state(
        cls, account_id: str, options: NormalizeOptions, state: Mapping[str, Any]
    ) -> Normalizer:
        """Return a normalizer that continues a checkpointed run with the very same plan."""
        if state.get("version") != STATE_VERSION:
            raise ConfigError(
                "checkpoint.normalizer",
                f"state version {state.get('version')!r}, this exporter reads {STATE_VERSION} "
                "(a run of another version: export again without --resume)",
            )
        cap, freeze = options.column_cap, options.schema_contract == "freeze"
        extra = state["extra"]
        plans = (
            ColumnPlan.from_state(state["plan"], column_cap=cap, freeze=freeze),
            ColumnPlan.from_state(
                extra["plan"], column_cap=cap, freeze=freeze, prefix=EXTRA_PREFIX
            ),
        )
        normalizer = cls(account_id, options, _plans=plans)
        normalizer.anomalies = int(state.get("anomalies", 0))
        normalizer._meta.restore(state)
        normalizer._extra.restore(extra)
        return normalizer

    # -- meta and extra flattening --------------------------------------------------------------

    def _extras(self, images: Sequence[Mapping[str, Any]]) -> pa.Array:
        """Return `extra_json` of a page and fill the extra columns from the same objects."""
        known = KNOWN_FIELDS
        if known.issuperset(chain.from_iterable(images)):  # every key of the page, in C
            return pa.nulls(len(images), pa.string())
        rows = [row for row, image in enumerate(images) if not known.issuperset(image)]
        extras: list[Any] = [None] * len(images)
        for row in rows:
            extras[row] = {k: v for k, v in images[row].items() if k not in known}
        self._flatten(self._extra, extras)
        return _texts(_json_texts(extras))

    def _flatten(self, leaves_of: _Leaves, metas: list[Any]) -> None:
        """Fill the cells of one plan's columns from each row's object (meta, or extras)."""
        self._rows = len(metas)
        walk = self._walk
        top, subs = leaves_of.tree
        depth = self.options.depth
        for row, meta in enumerate(metas):
            if type(meta) is not dict:
                if meta is not None and not self._conforming:
                    self.anomalies += 1  # meta must be an object; kept in meta_json as is
                continue
            for key, value in meta.items():  # the top level inline: most meta is flat
                if value is None:
                    continue
                if type(value) is dict and depth > 1:
                    sub = subs.get(key)
                    if sub is None:
                        sub = subs[key] = ({}, {})
                    # The second level inline as well (every nasty meta has one object).
                    leaves, deeper = sub
                    for key2, value2 in value.items():
                        if value2 is None:
                            continue
                        if type(value2) is dict and depth > 2:
                            node = deeper.get(key2)
                            if node is None:
                                node = deeper[key2] = ({}, {})
                            walk(leaves_of, value2, node, (key, key2), row, depth - 2)
                            continue
                        column = leaves.get(key2)
                        if column is not None and column.cells is not None:
                            column.cells[row] = value2
                        elif (
                            cells := self._cells(leaves_of, leaves, column, (key, key2))
                        ) is not None:
                            cells[row] = value2
                    continue
                column = top.get(key)
                if column is not None and column.cells is not None:
                    column.cells[row] = value
                elif (cells := self._cells(leaves_of, top, column, (key,))) is not None:
                    cells[row] = value

    def _walk(
        self,
        leaves_of: _Leaves,
        obj: dict[str, Any],
        node: _Node,
        prefix: tuple[str, ...],
        row: int,
        depth: int,
    ) -> None:
        """Fill cells for the leaves of a nested object (below the top level)."""
        leaves, subs = node
        for key, value in obj.items():
            if value is None:
                continue
            if type(value) is dict and depth > 1:
                sub = subs.get(key)
                if sub is None:
                    sub = subs[key] = ({}, {})
                self._walk(leaves_of, value, sub, prefix + (key,), row, depth - 1)  # noqa: RUF005
                continue
            column = leaves.get(key)
            if column is not None and column.cells is not None:
                column.cells[row] = value
            elif (cells := self._cells(leaves_of, leaves, column, (*prefix, key))) is not None:
                cells[row] = value

    def _cells(
        self,
        leaves_of: _Leaves,
        leaves: dict[str, PlanColumn],
        column: PlanColumn | None,
        path: tuple[str, ...],
    ) -> list[Any] | None:
        """Return the cells of a leaf met for the first time in this batch, or None (dropped).

        The callers store into a column's cells inline when the column is known and already
        has them (nearly every leaf of a batch): only the first meeting calls here.
        """
        if column is None:
            column = self._column(leaves_of, leaves, path)
            if column is None:
                return None
        if column.cells is None:
            column.cells = [None] * self._rows
            self._touched.append(column)
        return column.cells

    def _column(
        self, leaves_of: _Leaves, leaves: dict[str, PlanColumn], path: tuple[str, ...]
    ) -> PlanColumn | None:
        """Return the column of a path not in the tree yet (planned or new), or None."""
        column = leaves_of.plan.by_path.get(path) or self._resolve(leaves_of, path)
        if column is not None:
            leaves[path[-1]] = column
        return column

    def _resolve(self, leaves_of: _Leaves, path: tuple[str, ...]) -> PlanColumn | None:
        """Return a new column for a path not yet planned, or None (unselected or capped)."""
        if self._conforming:
            return None  # the plan is final; such paths were unselected or capped
        plan, skip = leaves_of.plan, leaves_of.skip
        skipped = path in skip
        if not skipped and leaves_of.selects(path) and not plan.full:
            return plan.add(path)
        if not skipped:
            if len(skip) >= _SKIP_CACHE_LIMIT:
                skip.clear()
            skip.add(path)
        if plan.full and leaves_of.selects(path):
            leaves_of.capped_values += 1
            if len(leaves_of.capped_keys) < CAPPED_SAMPLE:
                leaves_of.capped_keys[path] = None
        return None

    def _observe(self) -> None:
        """Merge the value types of this batch into the plan (may widen or raise on freeze)."""
        for column in self._touched:
            assert column.cells is not None
            kinds, rendered = _kinds(column.cells, column.type, column.seen)
            self._arrays[column.name] = rendered
            plan = self._extra.plan if column.name.startswith(EXTRA_PREFIX) else self._meta.plan
            for type_, big in kinds:
                plan.observe(column, type_, big)

    def _batch_type(self, column: PlanColumn) -> str | None:
        """Return the type this batch alone would give the column, joined with the plan's."""
        assert column.cells is not None
        kinds, rendered = _kinds(column.cells, column.type, column.seen)
        self._arrays[column.name] = rendered
        result = column.type
        for type_, big in kinds:
            result = type_ if result is None else join_types(result, type_, big or column.big_int)
        return result

    def _finish(
        self, core: dict[str, Any], meta_json: Any, extra_json: Any, rows: int
    ) -> pa.RecordBatch:
        try:
            texts = {META_JSON: meta_json, EXTRA_JSON: extra_json}
            arrays = [texts[name] if name in texts else core[name] for name in CORE]
            for column in (*self._meta.plan.columns, *self._extra.plan.columns):
                type_ = column.type or "string"
                cells = column.cells
                if cells is None:
                    arrays.append(pa.nulls(rows, arrow_type(type_)))
                else:
                    arrays.append(_meta_array(cells, type_, self._arrays.get(column.name)))
            return pa.RecordBatch.from_arrays(arrays, schema=self.final_schema())
        finally:
            self._reset()

    def _reset(self) -> None:
        for column in self._touched:
            column.cells = None
        self._touched = []
        self._arrays = {}

    # -- core columns ---------------------------------------------------------------------------

    def _account_column(self, rows: int) -> pa.Array:
        """Return `account_id` for a batch of `rows` (Arrow arrays are immutable: one serves
        every page of that size)."""
        cached = self._account
        if cached is None or len(cached) != rows:
            cached = self._account = pa.array([self.account_id] * rows, pa.string())
        return cached

    def _strings(self, values: list[Any]) -> pa.Array:
        """Return a string column; non-string values become JSON text and count as anomalies."""
        try:
            return pa.array(values, pa.string())
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            pass
        fixed = []
        for value in values:
            if value is not None and type(value) is not str:
                self.anomalies += 1
                value = _json_text(value)
            fixed.append(value)
        return pa.array(fixed, pa.string())

    def _bools(self, values: list[Any]) -> pa.Array:
        """Return a bool column; a non-bool value (1, "true") becomes null, an anomaly."""
        if not set(map(type, values)) <= {bool, _NONE}:
            bad = [value is not None and type(value) is not bool for value in values]
            self.anomalies += sum(bad)
            values = [None if wrong else value for value, wrong in zip(values, bad, strict=True)]
        return pa.array(values, pa.bool_())

    def _variants(self, values: list[Any]) -> pa.Array:
        """Return the variants list column; anything but a list of strings becomes null."""
        list_type = pa.list_(pa.string())
        if set(map(type, values)) <= {list, _NONE}:
            try:
                return pa.array(values, list_type)
            except (pa.ArrowTypeError, pa.ArrowInvalid):
                pass
        fixed = []
        for value in values:
            if value is not None and not (
                type(value) is list and all(type(item) is str for item in value)
            ):
                self.anomalies += 1
                value = None
            fixed.append(value)
        return pa.array(fixed, list_type)

    def _timestamps(self, values: list[Any]) -> pa.Array:
        """Return `uploaded` as timestamp(us, UTC), vectorised when every value parses."""
        try:
            return pa.array(values, pa.string()).cast(_TIMESTAMP)
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            pass
        parsed = [_timestamp(value) for value in values]
        self.anomalies += sum(
            1
            for value, out in zip(values, parsed, strict=True)
            if value is not None and out is None
        )
        return pa.array(parsed, _TIMESTAMP)


# -- helpers --------------------------------------------------------------------------------------


def _check_images(images: Sequence[Any]) -> None:
    if set(map(type, images)) <= {dict}:
        return
    for index, image in enumerate(images):
        if not isinstance(image, Mapping):
            raise PageFormatError("", f"image #{index} is not an object: {type(image).__name__}")


def _check_ids(ids: list[Any]) -> None:
    if set(map(type, ids)) <= {str} and "" not in ids:
        return
    for index, value in enumerate(ids):
        if type(value) is not str or not value:
            raise PageFormatError("", f"image #{index} has no usable id: {value!r}")


def _timestamp(value: Any) -> dt.datetime | None:
    """Parse one `uploaded` value the way the vectorised path would, or return None.

    Arrow first (so a value parses the same whatever its neighbours), then nanosecond
    fractions through Arrow, then Python's ISO parser, which still requires an offset.
    """
    if type(value) is not str:
        return None
    one = pa.array([value], pa.string())
    for target in (_TIMESTAMP, _TIMESTAMP_NS):
        try:
            return one.cast(target).cast(_TIMESTAMP, safe=False)[0].as_py()  # type: ignore[no-any-return]
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            continue
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None  # naive or date-only: not an instant
    return parsed.astimezone(dt.UTC)


_INFERRED: dict[pa.DataType, str] = {
    pa.bool_(): "bool",
    pa.int64(): "int64",
    pa.float64(): "float64",
    pa.string(): "string",
}
# Arrow converts nothing else to these types (a str or bytes to string, a bool to bool), so
# building the column under them is a type check as well. int64 and float64 take floats and
# bools, so those columns are checked by inference or in Python.
_STRICT = {"string": pa.string(), "bool": pa.bool_()}
Rendered = tuple[str, pa.Array] | None  # the column already built under this planned type


def _kinds(
    cells: list[Any], planned: str | None, seen: bool = False
) -> tuple[list[tuple[str, bool]], Rendered]:
    """Return the (type, has an int beyond 2**53) pairs of a column's non-null values, and
    the column built under a type when that came on the way.

    A column planned as string or bool is built under that type first: it succeeds only when
    every value has that type. Otherwise Arrow infers one scalar type in C and refuses ints
    beyond int64, most bool/number mixes, and int + float mixes with an int beyond 2**53 (the
    same bound as ours). It does take a bool after a float (as 1.0), so float64 columns and
    anything mixed are checked in Python (float64 columns directly: inference cannot settle
    them). `seen` says the plan's type comes from tonight's data (not only from a seed).
    """
    if planned is not None and planned in _STRICT:
        try:
            return [(planned, False)], (planned, pa.array(cells, _STRICT[planned]))
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            if seen and planned == "string":
                return [], None  # nothing widens a string column further (nor needs its kinds)
            return _python_kinds(cells), None  # another type among them: widens
    if planned in ("float64", "json"):
        return _checked_kinds(cells)
    try:
        array = pa.array(cells)
    except (pa.ArrowException, OverflowError, TypeError, ValueError):
        return _python_kinds(cells), None
    type_ = _INFERRED.get(array.type)
    if type_ is None:
        return _python_kinds(cells), None  # lists and objects: JSON text, built in Python
    if type_ == "float64":
        return _checked_kinds(cells)
    if type_ == "int64":
        bounds = pc.min_max(array)
        low, high = bounds["min"].as_py(), bounds["max"].as_py()
        return [("int64", max(-low, high) > EXACT_INT_LIMIT)], ("int64", array)
    return [(type_, False)], (type_, array)


def _checked_kinds(cells: list[Any]) -> tuple[list[tuple[str, bool]], Rendered]:
    """Return the kinds of a column found in Python, and the column as float64 when its
    values are floats and ints within 2**53 (exact as floats)."""
    kinds = _python_kinds(cells)
    if all(kind in ("int64", "float64") and not big for kind, big in kinds):
        return kinds, ("float64", pa.array(cells, pa.float64()))
    return kinds, None


def _python_kinds(cells: list[Any]) -> list[tuple[str, bool]]:
    kinds = set(map(type, cells))
    kinds.discard(_NONE)
    found: list[tuple[str, bool]] = []
    for kind in kinds:
        if kind is bool:
            found.append(("bool", False))
        elif kind is int:
            ints = [value for value in cells if type(value) is int]
            low, high = min(ints), max(ints)
            if low < INT64_MIN or high > INT64_MAX:
                found.append(("string", False))  # beyond int64: kept exactly as its JSON text
            else:
                found.append(("int64", max(-low, high) > EXACT_INT_LIMIT))
        elif kind is float:
            found.append(("float64", False))
        elif kind is str:
            found.append(("string", False))
        else:
            found.append(("json", False))
    found.sort()  # a stable order for the drift reasons
    return found


def _meta_array(cells: list[Any], type_: str, rendered: Rendered) -> pa.Array:
    """Return one meta column of a batch rendered under its planned type."""
    if rendered is not None:
        built, array = rendered
        if built == type_:
            return array
        if type_ == "float64" and built == "int64":
            return array.cast(pa.float64())  # exact: the plan allows no int beyond 2**53
    if type_ in ("string", "json"):
        dumps = orjson.dumps
        try:
            if type_ == "string":
                texts = [v if v is None or type(v) is str else dumps(v) for v in cells]
            else:
                texts = [None if v is None else dumps(v) for v in cells]
        except (orjson.JSONEncodeError, TypeError):
            texts = [  # ints beyond 64 bits: the stdlib's text, in orjson's layout
                value
                if value is None or (type_ == "string" and type(value) is str)
                else _json_text(value)
                for value in cells
            ]
        return _texts(texts)
    return pa.array(cells, arrow_type(type_))


def _json_texts(values: list[Any]) -> list[bytes | str | None]:
    """Return the JSON text of each value (None stays None), as orjson writes it."""
    dumps = orjson.dumps
    try:
        return [None if value is None else dumps(value) for value in values]
    except (orjson.JSONEncodeError, TypeError):
        return [None if value is None else _json_bytes(value) for value in values]


def _loads(texts: pa.Array) -> list[Any]:
    """Return the values of a column of JSON texts (None where null)."""
    loads = orjson.loads
    return [None if text is None else loads(text) for text in texts.to_pylist()]


def _texts(texts: list[Any]) -> pa.Array:
    """Return a string array of JSON texts: orjson's bytes (UTF-8 by construction) or str.

    Built as binary and viewed as string: Arrow's UTF-8 check of every text on the way in to
    a string array costs as much as the rest of the build.
    """
    return pa.array(texts, pa.binary()).view(pa.string())


def _json_bytes(value: Any) -> bytes | str:
    """Return the JSON text of a value as orjson's bytes, or the stdlib's text where orjson
    refuses it (ints beyond 64 bits), in orjson's layout."""
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return _stdlib_json(value)


def _json_text(value: Any) -> str:
    """Return the JSON text of a value, as orjson writes meta_json (so they always agree)."""
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        return _stdlib_json(value)


def _stdlib_json(value: Any) -> str:
    """Return JSON text for what orjson refuses (ints beyond 64 bits), in orjson's layout."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
