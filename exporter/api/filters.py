"""Metadata filters of List Images V2: parse, validate, and match (client and emulator share it).

A filter is the query parameter `meta.<path>[<op>]=<value>`; the rules come from the List V2
operation of the OpenAPI extract (`../shared/reference/`):

* operators `eq`, `eq:string`, `eq:number`, `eq:boolean`, `in`, `in:string`, `in:number`, and
  the range operators `gt`, `gte`, `lt`, `lte` with an optional `:number` (numbers only);
* at most 5 filters per request, at most 5 path levels, at most 10 values in an `in` list,
  whose values are pipe-separated (`a|b|c`);
* `:number` and range values must be numbers; `:boolean` values are `true` or `false`.

Violations raise `FilterError` with a message in the API's own style
("Unsupported metadata filter operator: 'not-eq'").

Matching (`matches`, the emulator's semantics; the real API documents no more than this):

* The path walks nested objects key by key; a key that itself contains a dot (`{"a.b": 1}`)
  cannot be addressed, because the dot is the path separator. A missing path never matches.
* `eq:string` / `in:string` match JSON strings equal to the text.
* `eq:number` / `in:number` and the range operators match JSON numbers (never booleans, never
  numeric strings), compared numerically: `5` equals `5.0`.
* `eq:boolean` matches JSON `true`/`false`.
* Untyped `eq` / `in` match a JSON string equal to the text, or a JSON number numerically equal
  to the text when the text is a number, or a JSON boolean when the text is `true`/`false`.
  So `meta.priority[eq]=5` matches `5`, `5.0` and `"5"`, but not `"5.0"`.
* `null`, lists and objects never match any operator.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter.errors import FilterError

MAX_FILTERS = 5
MAX_DEPTH = 5
MAX_IN_VALUES = 10
RANGE_OPS = frozenset({"gt", "gte", "lt", "lte"})
# Operator -> the value kinds it may carry (None: untyped).
OPERATOR_KINDS: Mapping[str, frozenset[str | None]] = {
    "eq": frozenset({None, "string", "number", "boolean"}),
    "in": frozenset({None, "string", "number"}),
    **{op: frozenset({None, "number"}) for op in RANGE_OPS},
}
_PARAM = re.compile(r"^meta\.(?P<path>.*)\[(?P<op>[^\[\]]*)\]$", re.DOTALL)
# JSON numbers (RFC 8259), ASCII digits only: no "nan", "inf", "1_000", "+5", ".5" or
# Arabic-Indic digits, all of which Python's float() accepts (`\d` would match the last).
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_BOOLEANS = {"true": True, "false": False}

Number = int | float


@dataclass(frozen=True)
class MetaFilter:
    """One metadata filter; `values` are the raw texts (one, or the split `in` list)."""

    path: tuple[str, ...]
    op: str
    kind: str | None
    values: tuple[str, ...]

    @property
    def param_name(self) -> str:
        """Return the query parameter name, e.g. `meta.region.name[eq:string]`."""
        op = self.op if self.kind is None else f"{self.op}:{self.kind}"
        return f"meta.{'.'.join(self.path)}[{op}]"

    @property
    def param_value(self) -> str:
        """Return the query parameter value (`in` values joined by pipes)."""
        return "|".join(self.values)

    @property
    def value_kind(self) -> str | None:
        """Return how values compare: range operators are numeric even when untyped."""
        return "number" if self.op in RANGE_OPS else self.kind

    def __str__(self) -> str:
        return f"{self.param_name}={self.param_value}"


def parse_filter(expr: str) -> MetaFilter:
    """Return the filter of a CLI expression such as `meta.status[eq]=active`."""
    name, sep, value = expr.partition("]=")
    if not sep:
        raise FilterError(f"Invalid metadata filter: {expr!r}, expected meta.<field>[<op>]=<value>")
    return parse_filter_param(name + "]", value)


def parse_filter_param(name: str, value: str) -> MetaFilter:
    """Return the filter of one query parameter; raise FilterError naming what is wrong."""
    match = _PARAM.match(name)
    if match is None:
        raise FilterError(f"Invalid metadata filter: {name!r}, expected meta.<field>[<op>]")
    path = tuple(match["path"].split("."))
    if any(not segment for segment in path):
        raise FilterError(f"Invalid metadata filter field: {name!r}")
    op, _, kind_text = match["op"].partition(":")
    kind = kind_text or None
    if op not in OPERATOR_KINDS or kind not in OPERATOR_KINDS[op] or match["op"].endswith(":"):
        raise FilterError(f"Unsupported metadata filter operator: {match['op']!r}")
    values = tuple(value.split("|")) if op == "in" else (value,)
    result = MetaFilter(path=path, op=op, kind=kind, values=values)
    _check_filter(result)
    return result


def validate_filters(filters: Sequence[MetaFilter]) -> None:
    """Raise FilterError when the filters break a per-request or per-filter limit."""
    if len(filters) > MAX_FILTERS:
        raise FilterError(
            f"Too many metadata filters: {len(filters)} provided, maximum {MAX_FILTERS} allowed"
        )
    for meta_filter in filters:
        _check_filter(meta_filter)


def _check_filter(f: MetaFilter) -> None:
    """Raise FilterError when one filter breaks a depth, list-size or value-type rule."""
    if len(f.path) > MAX_DEPTH:
        raise FilterError(
            f"Metadata filter nesting too deep: {len(f.path)} levels in {f.param_name!r}, "
            f"maximum {MAX_DEPTH} allowed"
        )
    if len(f.values) > MAX_IN_VALUES:
        raise FilterError(
            f"Too many values for metadata filter {f.param_name!r}: {len(f.values)} provided, "
            f"maximum {MAX_IN_VALUES} allowed"
        )
    for value in f.values:
        if f.value_kind == "number" and not is_json_number(value):
            raise FilterError(
                f"Invalid numeric value for metadata filter {f.param_name!r}: {value!r}"
            )
        if f.value_kind == "boolean" and value not in _BOOLEANS:
            raise FilterError(
                f"Invalid boolean value for metadata filter {f.param_name!r}: {value!r}, "
                "expected true or false"
            )


def is_json_number(text: str) -> bool:
    """Return whether `text` is a JSON number whose value is finite (`1e999` is not)."""
    return _NUMBER.fullmatch(text) is not None and math.isfinite(float(text))


def parse_number(text: str) -> Number:
    """Return the number a filter value spells (int when integral text, else float)."""
    if not is_json_number(text):
        raise FilterError(f"Invalid numeric value: {text!r}")
    try:
        return int(text)
    except ValueError:
        return float(text)


def lookup(meta: Mapping[str, Any] | None, path: Sequence[str]) -> tuple[bool, Any]:
    """Return (found, value) at `path` inside nested objects; dotted keys are not split."""
    node: Any = meta
    for segment in path:
        if not isinstance(node, Mapping) or segment not in node:
            return False, None
        node = node[segment]
    return True, node


def matches(f: MetaFilter, meta: Mapping[str, Any] | None) -> bool:
    """Return whether an image's meta satisfies one filter (semantics in the module doc)."""
    found, value = lookup(meta, f.path)
    if not found:
        return False
    if f.op in RANGE_OPS:
        return _is_number(value) and _compare(f.op, value, parse_number(f.values[0]))
    return any(_equals(f.kind, value, text) for text in f.values)


def _is_number(value: Any) -> bool:
    # bool is an int subclass in Python; JSON keeps them apart, and so do we.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(op: str, value: Number, bound: Number) -> bool:
    if op == "gt":
        return value > bound
    if op == "gte":
        return value >= bound
    if op == "lt":
        return value < bound
    return value <= bound


def _equals(kind: str | None, value: Any, text: str) -> bool:
    """Return whether a JSON leaf equals a filter text under the operator's kind."""
    if isinstance(value, str):
        return kind in (None, "string") and value == text
    if isinstance(value, bool):
        return kind in (None, "boolean") and _BOOLEANS.get(text) is value
    if _is_number(value):
        if kind not in (None, "number") or not is_json_number(text):
            return False
        return bool(value == parse_number(text))
    return False
