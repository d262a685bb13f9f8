"""ExportConfig: TOML file, environment and flags merged (flag > env > file > default), validated.

`parse_config(file_data, environ, overrides)` is pure: it reads no file and no clock (today's
date is passed in), and raises `ConfigError` naming the offending key. `load_config(path)`
is the only function that touches the disk. Credentials come only from the environment.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from exporter.auth import Credentials
from exporter.changes import ChangeOptions
from exporter.errors import ConfigError, ExporterError
from exporter.filters import parse_filter, validate_filters
from exporter.normalize import NormalizeOptions
from exporter.pagination import ListRequest
from exporter.retry import RetryPolicy
from exporter.sinks import SinkOptions, available_sinks
from exporter.walker import WalkOptions

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
FORMATS = ("parquet", "ndjson", "duckdb")
INTERNAL_SINKS = frozenset({"memory"})  # keeps batches in memory: for tests, never an output


@dataclass(frozen=True)
class Option:
    """One config key: its TOML type, default and an optional check of its value."""

    kind: type | tuple[type, ...]
    default: Any
    help: str
    choices: tuple[Any, ...] = ()


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


# Every key a config file may hold, by "section.key". The comments in configs/*.toml mirror it.
OPTIONS: dict[str, Option] = {
    "export.account_id": Option(str, None, "Cloudflare account id (or CLOUDFLARE_ACCOUNT_ID)"),
    "export.output": Option(str, "out", "output directory or URI"),
    "export.s3_endpoint": Option(
        str, None, "S3-compatible endpoint URL (or AWS_ENDPOINT_URL); AWS when unset"
    ),
    "export.formats": Option(
        list, ["parquet"], "sinks to write: parquet, ndjson, duckdb, or a plugin"
    ),
    "export.snapshot_date": Option(str, "today", "YYYY-MM-DD or 'today' (UTC)"),
    "export.base_url": Option(str, DEFAULT_BASE_URL, "API base URL (or CLOUDFLARE_BASE_URL)"),
    "request.per_page": Option(int, 1000, "images per page, 10..10000"),
    "request.sort_order": Option(str, "", "'asc', 'desc' or '' (both ends)", ("", "asc", "desc")),
    "request.creator": Option(str, None, "only this creator; '' = images without a creator"),
    "request.filters": Option(list, [], "metadata filters, e.g. 'meta.status[eq]=active'"),
    "walk.mode": Option(str, "auto", "auto, both or single", ("auto", "both", "single")),
    "walk.batch_api": Option(bool, False, "list through the batch API host"),
    "walk.batch_base_url": Option(str, "https://batch.imagedelivery.net", "batch API host"),
    "walk.quota": Option(int, 1200, "requests allowed per window (Cloudflare: 1200)"),
    "walk.window_s": Option((int, float), 300.0, "rate-limit window in seconds"),
    "walk.margin": Option((int, float), 0.95, "share of the quota the pacer may spend"),
    "walk.max_attempts": Option(int, 8, "attempts per request before giving up"),
    "walk.deadline_s": Option((int, float), 600.0, "total retry time per request, seconds"),
    "walk.connect_timeout_s": Option((int, float), 10.0, "TCP/TLS connect timeout"),
    "walk.read_timeout_s": Option((int, float), 60.0, "read timeout per reply"),
    "normalize.depth": Option(int, 5, "meta levels flattened into columns"),
    "normalize.include": Option(list, [], "meta path prefixes to flatten (empty = all)"),
    "normalize.exclude": Option(list, [], "meta path prefixes kept only in meta_json"),
    "normalize.column_cap": Option(int, 200, "most meta columns; the rest stay in meta_json"),
    "normalize.schema_contract": Option(
        str, "evolve", "evolve or freeze the previous schema", ("evolve", "freeze")
    ),
    "parquet.codec": Option(str, "zstd", "compression codec"),
    "parquet.part_rows": Option(int, SinkOptions.part_rows, "rows per part file"),
    "parquet.part_bytes": Option(int, SinkOptions.part_bytes, "bytes per part file"),
    "parquet.row_group_rows": Option(int, SinkOptions.row_group_rows, "rows per row group"),
    "parquet.row_group_bytes": Option(
        int, SinkOptions.row_group_bytes, "in-memory bytes per row group (bounds the buffer)"
    ),
    "ndjson.gzip": Option(bool, False, "write .ndjson.gz"),
    "duckdb.path": Option(str, None, "DuckDB database file (default OUT/images.duckdb)"),
    "changes.max_removed_share": Option(
        (int, float), 0.2, "withhold a change set removing more than this share of images"
    ),
}

# Environment variables that set a key, as the official SDK names them.
ENV_KEYS = {
    "CLOUDFLARE_ACCOUNT_ID": "export.account_id",
    "CLOUDFLARE_BASE_URL": "export.base_url",
}


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Everything one export run needs, validated; credentials are masked in its repr."""

    account_id: str
    output: str
    formats: tuple[str, ...]
    snapshot_date: dt.date
    base_url: str
    credentials: Credentials
    request: ListRequest
    walk: WalkOptions
    normalize: NormalizeOptions
    sinks: SinkOptions
    changes: ChangeOptions = field(default_factory=ChangeOptions)
    resume: bool = False
    dry_run: bool = False
    s3_endpoint: str | None = None

    def plan(self) -> dict[str, Any]:
        """Return the resolved plan as JSON-ready data, secrets masked (for --dry-run)."""
        return {
            "account_id": self.account_id,
            "output": self.output,
            "formats": list(self.formats),
            "snapshot_date": self.snapshot_date.isoformat(),
            "base_url": self.base_url,
            "credentials": repr(self.credentials),
            "request": {
                "per_page": self.request.per_page,
                "sort_order": self.request.sort_order,
                "creator": self.request.creator,
                "filters": [str(f) for f in self.request.filters],
            },
            "walk": {
                "mode": self.walk.mode,
                "batch_api": self.walk.batch_api,
                "quota": self.walk.quota,
                "window_s": self.walk.window_s,
            },
            "changes": {
                "max_removed_share": self.changes.max_removed_share,
                "accept_removals": self.changes.accept_removals,
            },
            "resume": self.resume,
        }


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file; a missing or malformed file is a ConfigError."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError("--config", f"no such file: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("--config", f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc.strerror}") from None


def flatten_file(data: Mapping[str, Any]) -> dict[str, Any]:
    """Return {"section.key": value} from a parsed TOML document; unknown keys are errors."""
    flat: dict[str, Any] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(section, f"expected a [{section}] table, not a value")
        for key, value in table.items():
            name = f"{section}.{key}"
            if name not in OPTIONS:
                raise ConfigError(name, f"unknown key; known keys: {_known_keys(section)}")
            flat[name] = value
    return flat


def _known_keys(section: str) -> str:
    keys = [name for name in OPTIONS if name.startswith(f"{section}.")]
    return ", ".join(keys) if keys else ", ".join(sorted({n.split(".")[0] for n in OPTIONS}))


def check_value(name: str, value: Any) -> Any:
    """Return `value` if it has the type and range `OPTIONS[name]` allows, else ConfigError."""
    option = OPTIONS[name]
    if value is None and option.default is None:
        return None
    kinds = option.kind if isinstance(option.kind, tuple) else (option.kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(name, f"expected {_kind_name(kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        raise ConfigError(name, f"expected {_kind_name(kinds)}, got {value!r}")
    if option.kind is list and not _str_list(value):
        raise ConfigError(name, f"expected a list of strings, got {value!r}")
    if option.choices:
        for item in value if isinstance(value, list) else [value]:
            if item not in option.choices:
                allowed = ", ".join(repr(c) for c in option.choices)
                raise ConfigError(name, f"{item!r} is not one of {allowed}")
    return value


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    names[list] = "a list"
    return " or ".join(names.get(kind, kind.__name__) for kind in kinds)


def parse_snapshot_date(text: str, today: dt.date) -> dt.date:
    """Return the snapshot date from 'today' or YYYY-MM-DD."""
    if text == "today":
        return today
    try:
        return dt.date.fromisoformat(text) if len(text) == 10 else _bad_date(text)
    except ValueError:
        return _bad_date(text)


def _bad_date(text: str) -> dt.date:
    raise ConfigError("export.snapshot_date", f"{text!r} is not a date; use YYYY-MM-DD or today")


def parse_config(
    file_data: Mapping[str, Any],
    environ: Mapping[str, str],
    overrides: Mapping[str, Any],
    *,
    today: dt.date,
    resume: bool = False,
    dry_run: bool = False,
    accept_removals: bool = False,
) -> ExportConfig:
    """Merge file < env < flags over the defaults and return the validated ExportConfig."""
    values = {name: option.default for name, option in OPTIONS.items()}
    values.update({k: check_value(k, v) for k, v in flatten_file(file_data).items()})
    for env_name, key in ENV_KEYS.items():
        if environ.get(env_name):
            values[key] = environ[env_name]
    values.update({k: check_value(k, v) for k, v in overrides.items() if v is not None})
    return _build(
        values,
        environ,
        today=today,
        resume=resume,
        dry_run=dry_run,
        accept_removals=accept_removals,
    )


def _build(values: Mapping[str, Any], environ: Mapping[str, str], **run: Any) -> ExportConfig:
    account_id = values["export.account_id"]
    if not account_id:
        raise ConfigError(
            "export.account_id", "not set; pass --account-id or set CLOUDFLARE_ACCOUNT_ID"
        )
    filters = tuple(parse_filter(text) for text in values["request.filters"])
    validate_filters(filters)
    base_url = _url("export.base_url", values["export.base_url"])
    request = _construct(
        ListRequest,
        "request",
        per_page=values["request.per_page"],
        sort_order=values["request.sort_order"] or None,
        creator=values["request.creator"],
        filters=filters,
    )
    request.validate()
    return ExportConfig(
        account_id=account_id,
        output=_nonempty("export.output", values["export.output"]),
        formats=_formats(values["export.formats"]),
        snapshot_date=parse_snapshot_date(values["export.snapshot_date"], run["today"]),
        base_url=base_url,
        credentials=Credentials.from_env(environ),
        request=request,
        walk=_walk_options(values),
        normalize=_construct(
            NormalizeOptions,
            "normalize",
            depth=values["normalize.depth"],
            include=tuple(values["normalize.include"]),
            exclude=tuple(values["normalize.exclude"]),
            column_cap=values["normalize.column_cap"],
            schema_contract=values["normalize.schema_contract"],
        ),
        sinks=_construct(
            SinkOptions,
            "parquet",
            formats=_formats(values["export.formats"]),
            parquet_codec=_codec(values["parquet.codec"]),
            part_rows=values["parquet.part_rows"],
            part_bytes=values["parquet.part_bytes"],
            row_group_rows=values["parquet.row_group_rows"],
            row_group_bytes=values["parquet.row_group_bytes"],
            ndjson_gzip=values["ndjson.gzip"],
            duckdb_path=values["duckdb.path"],
        ),
        changes=_construct(
            ChangeOptions,
            "changes.max_removed_share",
            max_removed_share=float(values["changes.max_removed_share"]),
            accept_removals=run.get("accept_removals", False),
        ),
        resume=run["resume"],
        dry_run=run["dry_run"],
        s3_endpoint=values["export.s3_endpoint"] or None,
    )


def _walk_options(values: Mapping[str, Any]) -> WalkOptions:
    for key in ("walk.quota", "walk.max_attempts"):
        if values[key] < 1:
            raise ConfigError(key, f"must be at least 1, got {values[key]}")
    for key in (
        "walk.window_s",
        "walk.deadline_s",
        "walk.connect_timeout_s",
        "walk.read_timeout_s",
    ):
        if values[key] <= 0:
            raise ConfigError(key, f"must be a positive number of seconds, got {values[key]}")
    if not 0 < values["walk.margin"] <= 1:
        raise ConfigError("walk.margin", f"must be in (0, 1], got {values['walk.margin']}")
    retry = _construct(
        RetryPolicy,
        "walk",
        max_attempts=values["walk.max_attempts"],
        deadline_s=float(values["walk.deadline_s"]),
    )
    walk = _construct(
        WalkOptions,
        "walk",
        mode=values["walk.mode"],
        batch_api=values["walk.batch_api"],
        batch_base_url=_url("walk.batch_base_url", values["walk.batch_base_url"]),
        retry=retry,
        quota=values["walk.quota"],
        window_s=float(values["walk.window_s"]),
        margin=float(values["walk.margin"]),
        connect_timeout_s=float(values["walk.connect_timeout_s"]),
        read_timeout_s=float(values["walk.read_timeout_s"]),
    )
    walk.validate()
    return walk


def _construct(factory: Callable[..., T], section: str, **kwargs: Any) -> T:
    """Build an options dataclass; its own checks become ConfigErrors naming the section."""
    try:
        return factory(**kwargs)
    except ExporterError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(section, str(exc)) from None


def _formats(formats: list[str]) -> tuple[str, ...]:
    """Return the sink names, each one known (built-in or an installed plugin)."""
    if not formats:
        raise ConfigError("export.formats", f"name at least one of {', '.join(FORMATS)}")
    known = [name for name in available_sinks() if name not in INTERNAL_SINKS]
    for name in formats:
        if name not in known:
            raise ConfigError("export.formats", f"unknown sink {name!r}; known: {', '.join(known)}")
    return tuple(dict.fromkeys(formats))


def _codec(name: str) -> str:
    """Return a Parquet compression codec this pyarrow build can write."""
    import pyarrow as pa

    if name.lower() == "none":
        return "none"
    try:
        available = pa.Codec.is_available(name)
    except ValueError:  # a name pyarrow does not know at all
        available = False
    if not available:
        raise ConfigError(
            "parquet.codec",
            f"{name!r} is not available; use zstd, snappy, gzip, lz4, brotli or none",
        )
    return name.lower()


def _nonempty(key: str, value: str) -> str:
    if not value.strip():
        raise ConfigError(key, "must not be empty")
    return value


def _url(key: str, value: str) -> str:
    if not value.startswith(("https://", "http://")):
        raise ConfigError(key, f"{value!r} is not an http(s) URL")
    return value.rstrip("/")
