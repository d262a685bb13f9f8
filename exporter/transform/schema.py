"""The column plan of one snapshot: naming meta columns, widening their types, reporting drift.

Pure code (no files, no clock). The normalizer asks the plan for a column when it meets a new
meta path and reports the value types it saw; the plan names the column once, widens its type
without loss, enforces the column cap and `schema_contract`, and lists what changed against the
previous snapshot's schema (the seed) for the manifest's drift report.

Type lattice, joined over the whole snapshot (order of arrival never matters):
    bool, int64, float64, json  <=  string
    int64 + float64 -> float64, unless an int exceeds 2**53 in magnitude -> string
    bool + number -> string (a bool never becomes a number); json + scalar -> string
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import orjson
import pyarrow as pa

from exporter.errors import ConfigError, SchemaContractError

MetaType = Literal["bool", "int64", "float64", "string", "json"]
META_TYPES: tuple[str, ...] = ("bool", "int64", "float64", "string", "json")
META_PREFIX = "meta__"
EXTRA_PREFIX = "extra__"  # typed columns of the top-level fields the reference does not list
# Redshift caps identifiers at 127 bytes; leave room for a "__NNN" collision suffix.
MAX_BASE_NAME = 100
_HASH_CHARS = 8
EXACT_INT_LIMIT = 2**53  # beyond this an int64 does not survive a float64 round trip
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_ARROW_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "json": pa.string(),  # JSON text; the manifest's type says how to read it
    "timestamp": pa.timestamp("us", tz="UTC"),
    "list<string>": pa.list_(pa.string()),
}
PATH_METADATA_KEY = b"cf_meta_path"  # Arrow field metadata: the column's original path (JSON)
EXTRA_PATH_METADATA_KEY = b"cf_extra_path"  # the same for an extra__ column (path from the image)


@dataclass(frozen=True)
class ColumnSpec:
    """One output column: its name, logical type and original path (None for core).

    The path of a `meta__` column starts inside `meta`; that of an `extra__` column at the
    image's top level (its first key is a field the reference does not list).
    """

    name: str
    type: str
    path: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form stored in the manifest and the checkpoint."""
        return {"name": self.name, "type": self.type, "path": _path_list(self.path)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnSpec:
        """Parse `to_dict()` output; a malformed entry raises ConfigError("schema.seed")."""
        name, type_, path = data.get("name"), data.get("type"), data.get("path")
        if not isinstance(name, str) or not name:
            raise ConfigError("schema.seed", f"column without a name: {dict(data)!r}")
        if path is None:
            if type_ not in CORE_TYPES:
                raise ConfigError("schema.seed", f"{name}: unknown core type {type_!r}")
            return cls(name, type_)
        if type_ not in META_TYPES:
            raise ConfigError("schema.seed", f"{name}: unknown meta type {type_!r}")
        if not isinstance(path, list | tuple) or not path:
            raise ConfigError("schema.seed", f"{name}: path must be a non-empty list of keys")
        if not all(isinstance(key, str) for key in path):
            raise ConfigError("schema.seed", f"{name}: path keys must be strings")
        return cls(name, type_, tuple(path))

    @property
    def extra(self) -> bool:
        """True for a typed column of a top-level field the reference does not list."""
        return self.path is not None and self.name.startswith(EXTRA_PREFIX)

    def arrow_field(self) -> pa.Field:
        """Return the Arrow field; meta and extra columns carry their original path as field
        metadata."""
        if self.path is None:
            return pa.field(self.name, _ARROW_TYPES[self.type], nullable=CORE[self.name].nullable)
        key = EXTRA_PATH_METADATA_KEY if self.extra else PATH_METADATA_KEY
        metadata = {key: orjson.dumps(list(self.path))}
        return pa.field(self.name, _ARROW_TYPES[self.type], metadata=metadata)


@dataclass(frozen=True)
class CoreField:
    """What every format promises about one core column; `CORE` lists them by name, in order."""

    type: str  # logical type; its Arrow type is `arrow_type(type)`
    key: str | None  # the image's key in a List V2 page; None: the account being exported
    nullable: bool = True
    unique: bool = False  # one value per image: a Parquet dictionary would not pay
    # "raw": the JSON text spliced in unparsed; "spread": a JSON object whose members are
    # spliced in as the line's own top-level keys (the fields as the API sent them)
    ndjson: Literal["value", "raw", "spread"] = "value"
    ndjson_key: str | None = None  # the key of an NDJSON line, when not the column name


META_JSON = "meta_json"
EXTRA_JSON = "extra_json"
# The core columns, in file order. The normalizer, the Arrow schema, the Parquet encodings and
# the NDJSON lines all read this table: a core column is added or changed here only.
CORE: Mapping[str, CoreField] = MappingProxyType(
    {
        "account_id": CoreField("string", None),
        "id": CoreField("string", "id", nullable=False, unique=True),
        "filename": CoreField("string", "filename", unique=True),
        "creator": CoreField("string", "creator"),
        "require_signed_urls": CoreField("bool", "requireSignedURLs"),
        "uploaded": CoreField("timestamp", "uploaded", unique=True),
        "variants": CoreField("list<string>", "variants", unique=True),
        META_JSON: CoreField("string", "meta", unique=True, ndjson="raw", ndjson_key="meta"),
        # The image's top-level fields that no other core column reads, as one JSON object
        # (null when none): the API adds fields over time and none may be dropped.
        EXTRA_JSON: CoreField("string", None, unique=True, ndjson="spread"),
    }
)
CORE_TYPES: tuple[str, ...] = tuple(dict.fromkeys(field.type for field in CORE.values()))
CORE_COLUMNS: tuple[ColumnSpec, ...] = tuple(ColumnSpec(name, f.type) for name, f in CORE.items())
CORE_NAMES: tuple[str, ...] = tuple(CORE)
CORE_FIELDS: tuple[pa.Field, ...] = tuple(spec.arrow_field() for spec in CORE_COLUMNS)
# The columns of one version of an image: the core columns, `id` first. A change row carries
# them (in CHANGES_SCHEMA's order), a history keeps them, Delta's `images_current` holds them.
IMAGE_COLUMNS: tuple[str, ...] = ("id", *(name for name in CORE if name != "id"))
# The image keys the reference lists, each read by one core column; any other is an extra.
KNOWN_FIELDS: frozenset[str] = frozenset(f.key for f in CORE.values() if f.key is not None)


def arrow_type(type_: str) -> pa.DataType:
    """Return the Arrow storage type of a logical column type ("json" is stored as string)."""
    return _ARROW_TYPES[type_]


_NOT_ALLOWED = re.compile(r"[^a-z0-9_]+")
_UNDERSCORES = re.compile(r"_{2,}")


def segment(key: str) -> str:
    """Return a key reduced to `[a-z0-9_]`: accents folded, runs of others to one "_".

    A segment never starts, ends or repeats "_", so "__" in a column name always separates
    segments; a key with nothing usable (e.g. "日本", "!!") becomes "_".
    """
    ascii_key = unicodedata.normalize("NFKD", key).encode("ascii", "ignore").decode("ascii")
    reduced = _UNDERSCORES.sub("_", _NOT_ALLOWED.sub("_", ascii_key.lower())).strip("_")
    return reduced or "_"


def base_name(path: Sequence[str], prefix: str = META_PREFIX) -> str:
    """Return the column name a meta (or, with EXTRA_PREFIX, extra) path asks for, before
    collisions are resolved.

    Over-long names are cut and end in a hash of the full path, so they stay distinct and
    under every warehouse's identifier limit.
    """
    name = prefix + "__".join(segment(key) for key in path)
    if len(name) <= MAX_BASE_NAME:
        return name
    digest = hashlib.blake2b(orjson.dumps(list(path)), digest_size=_HASH_CHARS // 2).hexdigest()
    return f"{name[: MAX_BASE_NAME - _HASH_CHARS - 1]}_{digest}"


def join_types(a: str, b: str, big_int: bool) -> str:
    """Return the narrowest type holding values of types `a` and `b` without loss.

    `big_int` says an int beyond 2**53 was seen in the column, which rules out float64.
    """
    if a == b:
        return a
    if {a, b} == {"int64", "float64"}:
        return "string" if big_int else "float64"
    return "string"


def _path_list(path: tuple[str, ...] | None) -> list[str] | None:
    return None if path is None else list(path)


def path_text(path: Sequence[str]) -> str:
    """Return a path as unambiguous one-line text for messages (JSON list of keys)."""
    return orjson.dumps(list(path)).decode()


def display_path(path: Sequence[str]) -> str:
    """Return a meta path as `a.b`, or as JSON when a key is empty or holds a dot."""
    if all(key and "." not in key for key in path):
        return ".".join(path)
    return path_text(path)


@dataclass(eq=False, slots=True)
class PlanColumn:
    """A meta column of the plan and what tonight's data said about it.

    `cells` is scratch space of the normalizer for the batch being built.
    """

    name: str
    path: tuple[str, ...]
    type: str | None  # None until a non-null value is seen (seeded columns start typed)
    seed_type: str | None = None
    big_int: bool = False
    seen: bool = False
    first_type: str | None = None  # first type seen tonight, the "from" of a widening
    reasons: list[str] = field(default_factory=list)
    cells: list[Any] | None = None

    def spec(self) -> ColumnSpec:
        """Return the public description of this column."""
        return ColumnSpec(self.name, self.type or "string", self.path)

    def to_state(self) -> dict[str, Any]:
        """Return the JSON-ready checkpoint form."""
        return {
            "name": self.name,
            "path": list(self.path),
            "type": self.type,
            "seed_type": self.seed_type,
            "big_int": self.big_int,
            "seen": self.seen,
            "first_type": self.first_type,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> PlanColumn:
        """Rebuild a column from `to_state()` output."""
        return cls(
            name=str(data["name"]),
            path=tuple(data["path"]),
            type=data["type"],
            seed_type=data.get("seed_type"),
            big_int=bool(data.get("big_int", False)),
            seen=bool(data.get("seen", False)),
            first_type=data.get("first_type"),
            reasons=list(data.get("reasons", [])),
        )


class ColumnPlan:
    """The ordered meta columns of one snapshot; grows and widens, never renames.

    Seeded columns (the previous snapshot's schema) keep their names, order and types; new
    paths are appended in order of first appearance, so names are deterministic across batches
    and, through the seed, across nights.
    """

    def __init__(
        self,
        *,
        column_cap: int,
        freeze: bool,
        seed: Iterable[ColumnSpec] | None = None,
        keep: Callable[[tuple[str, ...]], bool] | None = None,
        prefix: str = META_PREFIX,
    ) -> None:
        """`keep(path) -> bool` says whether a seeded path is still selected by the options;
        `prefix` starts every column name (META_PREFIX, or EXTRA_PREFIX for extra fields)."""
        self.prefix = prefix
        self.column_cap = column_cap
        self.freeze = freeze
        self.seeded = seed is not None
        self.columns: list[PlanColumn] = []
        self.by_path: dict[tuple[str, ...], PlanColumn] = {}
        self.top: dict[str, PlanColumn] = {}  # one-key paths by key: the hot lookup
        self.version = 0  # bumped on every change, so a schema can be cached
        self.removed: list[ColumnSpec] = []
        self._names: set[str] = set(CORE_NAMES)
        for spec in seed or ():
            if spec.path is None:
                continue  # core columns are fixed by the code, not by the seed
            self._add_seed(spec, keep)
        if self.freeze and self.removed:
            gone = self.removed[0]
            raise SchemaContractError(
                f"schema_contract=freeze: column {gone.name} (path {path_text(gone.path or ())})"
                " of the previous snapshot is excluded by the options"
            )

    def _add_seed(self, spec: ColumnSpec, keep: Callable[[tuple[str, ...]], bool] | None) -> None:
        assert spec.path is not None
        if spec.name in self._names or spec.path in self.by_path:
            raise ConfigError("schema.seed", f"duplicate column or path: {spec.name}")
        if keep is not None and not keep(spec.path):
            self.removed.append(spec)
            return
        column = PlanColumn(spec.name, spec.path, spec.type, seed_type=spec.type)
        self._append(column)

    def _append(self, column: PlanColumn) -> None:
        self.columns.append(column)
        self.by_path[column.path] = column
        if len(column.path) == 1:
            self.top[column.path[0]] = column
        self._names.add(column.name)
        self.version += 1

    @property
    def full(self) -> bool:
        """True when the column cap is reached: further paths live only in meta_json."""
        return len(self.columns) >= self.column_cap

    def add(self, path: tuple[str, ...]) -> PlanColumn:
        """Return a new column for `path`, uniquely named (`__2`, `__3`... on collisions)."""
        base = base_name(path, self.prefix)
        name, suffix = base, 2
        while name in self._names:
            name, suffix = f"{base}__{suffix}", suffix + 1
        if self.freeze and self.seeded:
            what = "meta column" if self.prefix == META_PREFIX else "column of a new API field"
            raise SchemaContractError(
                f"schema_contract=freeze: new {what} {name} (path {path_text(path)})"
                " is not in the previous snapshot's schema"
            )
        column = PlanColumn(name, path, None)
        self._append(column)
        return column

    def observe(self, column: PlanColumn, type_: str, big_int: bool) -> None:
        """Merge a value type seen in the data into the column, widening it if needed."""
        big = column.big_int or big_int
        if column.first_type is None:
            column.first_type = type_
        column.seen = True
        if column.type is None:
            column.type, column.big_int = type_, big
            self.version += 1
            return
        new = join_types(column.type, type_, big)
        if new != column.type:
            reason = _reason(column.type, type_, big)
            if self.freeze and self.seeded:
                raise SchemaContractError(
                    f"schema_contract=freeze: column {column.name} (path {path_text(column.path)})"
                    f" would widen from {column.type} to {new} ({reason})"
                )
            column.reasons.append(reason)
            column.type = new
            self.version += 1
        column.big_int = big

    def specs(self) -> list[ColumnSpec]:
        """Return the meta columns in plan order."""
        return [column.spec() for column in self.columns]

    def drift(self) -> list[dict[str, Any]]:
        """Return the drift report: added, widened, absent and removed columns, in plan order.

        Without a seed (first snapshot) there is no baseline: only conflicts (widened) show.
        """
        report: list[dict[str, Any]] = []
        new = "new key" if self.prefix == META_PREFIX else "new top-level field of the API"
        for column in self.columns:
            entry = {"column": column.name, "path": list(column.path)}
            final = column.type or "string"
            if self.seeded and column.seed_type is None:
                report.append(
                    {"change": "added", **entry, "from": None, "to": final, "reason": new}
                )
            if column.reasons:
                start = column.seed_type or column.first_type
                reason = "; ".join(dict.fromkeys(column.reasons))
                report.append(
                    {"change": "widened", **entry, "from": start, "to": final, "reason": reason}
                )
            if column.seed_type is not None and not column.seen:
                report.append(
                    {
                        "change": "absent",
                        **entry,
                        "from": column.seed_type,
                        "to": final,
                        "reason": "no value in this snapshot; column kept (all null)",
                    }
                )
        for spec in self.removed:
            report.append(
                {
                    "change": "removed",
                    "column": spec.name,
                    "path": _path_list(spec.path),
                    "from": spec.type,
                    "to": None,
                    "reason": "excluded by normalize.include/exclude",
                }
            )
        return report

    def to_state(self) -> dict[str, Any]:
        """Return the JSON-ready plan for a checkpoint."""
        return {
            "seeded": self.seeded,
            "columns": [column.to_state() for column in self.columns],
            "removed": [spec.to_dict() for spec in self.removed],
        }

    @classmethod
    def from_state(
        cls,
        data: Mapping[str, Any],
        *,
        column_cap: int,
        freeze: bool,
        prefix: str = META_PREFIX,
    ) -> ColumnPlan:
        """Rebuild a plan from `to_state()` output, exactly as it was."""
        plan = cls(column_cap=column_cap, freeze=freeze, prefix=prefix)
        plan.seeded = bool(data.get("seeded", False))
        for item in data.get("columns", []):
            plan._append(PlanColumn.from_state(item))
        plan.removed = [ColumnSpec.from_dict(item) for item in data.get("removed", [])]
        return plan


def _reason(old: str, new: str, big_int: bool) -> str:
    if {old, new} == {"int64", "float64"} and big_int:
        return f"{old} + {new} with an int beyond 2^53"
    return f"{old} + {new}"
