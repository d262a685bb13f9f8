"""ExportConfig: TOML file, environment and flags merged (flag > env > file > default), validated.

The options themselves (keys, types, defaults, checks, env variables, flags) are declared in
`exporter.options`; this module merges the sources and resolves them into what a run uses.
`parse_config(file_data, environ, overrides)` is pure: it reads no file and no clock (today's
date is passed in), and raises `ConfigError` naming the offending key. `load_toml(path)` is the
only function that touches the disk. Credentials come only from the environment.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from exporter.api.auth import Credentials
from exporter.api.filters import parse_filter
from exporter.api.pagination import ListRequest
from exporter.api.redact import redact_url
from exporter.errors import ConfigError
from exporter.options import (
    BUILTIN_FORMATS,
    SECTIONS,
    ChangeOptions,
    ExportOptions,
    NormalizeOptions,
    Option,
    Options,
    RequestOptions,
    SinkOptions,
    WalkOptions,
    all_options,
    declared,
    options_by_key,
    parse_snapshot_date,
)

TableT = TypeVar("TableT", bound=Options)


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
    new_uploads: bool = False  # --new-uploads: a batch of new uploads, not a snapshot
    s3_endpoint: str | None = None
    # Every table as validated, by class (tables added later are read with `section()`), and
    # the tables plugin sinks declare, by sink name.
    tables: Mapping[type, Options] = field(default_factory=dict, repr=False)
    plugins: Mapping[str, Any] = field(default_factory=dict)

    def section(self, cls: type[TableT]) -> TableT:
        """Return one validated table, e.g. `config.section(WalkOptions)`."""
        table = self.tables[cls]
        assert isinstance(table, cls)
        return table

    def options(self) -> Iterator[Option]:
        """Yield every option of this run: the built-in ones, then the plugin sinks' ones."""
        yield from all_options()
        for name, table in self.plugins.items():
            yield from declared(type(table), name)

    def resolved(self, option: Option) -> Any:
        """Return the value `option` resolved to, as the run uses it (e.g. a date, not 'today')."""
        holders: dict[type, Any] = {
            ExportOptions: self,
            RequestOptions: self.request,
            WalkOptions: self.walk,
            NormalizeOptions: self.normalize,
            SinkOptions: self.sinks,
            ChangeOptions: self.changes,
        }
        holder = holders.get(option.owner) or self.plugins.get(option.section)
        if holder is None or not hasattr(holder, option.field):  # e.g. export.lock_lease_s
            holder = self.tables[option.owner]
        return getattr(holder, option.field)

    def plan(self) -> dict[str, Any]:
        """Return the resolved plan as JSON-ready data, secrets masked (for --dry-run)."""
        plan: dict[str, Any] = {}
        for option in self.options():
            table = plan if option.section == "export" else plan.setdefault(option.section, {})
            table[option.name] = shown(option, self.resolved(option))
            if option.key == "export.base_url":
                plan["credentials"] = self.credentials.describe()
        plan.setdefault("changes", {})["accept_removals"] = self.changes.accept_removals
        plan["resume"] = self.resume
        plan.setdefault("new_uploads", {})["batch"] = self.new_uploads  # --new-uploads
        return plan

    def fingerprinted(self) -> dict[str, Any]:
        """Return the options declared with `fingerprint=`, by those names (dots nest)."""
        described: dict[str, Any] = {}
        for option in self.options():
            if option.fingerprint is None:
                continue
            *outer, last = option.fingerprint.split(".")
            table = described
            for name in outer:
                table = table.setdefault(name, {})
            table[last] = shown(option, self.resolved(option))
        return described


def jsonable(value: Any) -> Any:
    """Return a resolved option value as JSON data (filters as their text, dates ISO)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, tuple | list):
        return [jsonable(item) for item in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def shown(option: Option, value: Any) -> Any:
    """Return a resolved value as JSON data that may be shown: a URL option's redacted."""
    data = jsonable(value)
    return redact_url(data) if option.url and isinstance(data, str) else data


def load_toml(path: str | Path, flag: str = "--config") -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a ConfigError naming `flag`."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(flag, f"no such file: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(flag, f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(flag, f"cannot read {path}: {exc.strerror}") from None


def plugin_tables(data: Mapping[str, Any], formats: Any) -> dict[str, type]:
    """Return the options classes of the plugin sinks the file configures or `formats` names.

    Only those plugins are loaded; a table named after a plugin sink that declares no
    `options_type` stays an unknown table.
    """
    from exporter.sinks import BUILTIN_SINKS, available_sinks, sink_factory

    known = {option.section for option in all_options()}
    wanted = {name for name in data if name not in known}
    if isinstance(formats, list | tuple):
        wanted |= {name for name in formats if isinstance(name, str)}
    names = set(available_sinks()) - set(BUILTIN_SINKS)
    tables = {}
    for name in sorted(wanted & names):
        options_type = getattr(sink_factory(name), "options_type", None)
        if options_type is not None:
            tables[name] = options_type
    return tables


def flatten_file(data: Mapping[str, Any], extra: Mapping[str, Option]) -> dict[str, Any]:
    """Return {"section.key": value} from a parsed TOML document; unknown keys are errors."""
    known = {**options_by_key(), **extra}
    flat: dict[str, Any] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(section, _not_a_table(known, section))
        for key, value in table.items():
            name = f"{section}.{key}"
            if name not in known:
                raise ConfigError(name, f"unknown key; known keys: {_known_keys(known, section)}")
            flat[name] = value
    return flat


def _not_a_table(known: Mapping[str, Option], name: str) -> str:
    """Return what a top-level `name = value` is: a table written as a value, or a key that
    belongs in a table (every option lives in one)."""
    if any(option.section == name for option in known.values()):
        return f"expected a [{name}] table, not a value"
    homes = [f"[{option.section}] {name}" for option in known.values() if option.name == name]
    hint = f"did you mean {' or '.join(homes)}?" if homes else f"tables: {_known_keys(known, '')}"
    return f"unknown top-level key; {hint}"


def _known_keys(known: Mapping[str, Option], section: str) -> str:
    keys = [name for name in known if name.startswith(f"{section}.")]
    return ", ".join(keys) if keys else ", ".join(sorted({o.section for o in known.values()}))


def parse_config(
    file_data: Mapping[str, Any],
    environ: Mapping[str, str],
    overrides: Mapping[str, Any],
    *,
    today: dt.date,
    resume: bool = False,
    dry_run: bool = False,
    accept_removals: bool = False,
    new_uploads: bool = False,
) -> ExportConfig:
    """Merge file < env < flags over the defaults and return the validated ExportConfig.

    `resume`, `dry_run`, `accept_removals` and `new_uploads` are this run's flags, not options.
    """
    refuse_lag_without_batch(overrides, new_uploads=new_uploads)
    export = file_data.get("export")
    formats = overrides.get("export.formats") or (
        export.get("formats") if isinstance(export, dict) else None
    )
    plugins = plugin_tables(file_data, formats or ())
    plugin_options = {o.key: o for name, cls in plugins.items() for o in declared(cls, name)}
    known = {**options_by_key(), **plugin_options}
    values = {key: option.default for key, option in known.items()}
    values.update({k: known[k].validate(v) for k, v in flatten_file(file_data, known).items()})
    for key, option in known.items():
        if option.env and environ.get(option.env):
            values[key] = option.from_text(environ[option.env])
    values.update({k: known[k].validate(v) for k, v in overrides.items() if v is not None})
    tables: dict[type, Options] = {
        cls: cls(**{o.field: values[o.key] for o in declared(cls)}) for cls in SECTIONS
    }
    plugin_values = {
        name: cls(**{o.field: values[o.key] for o in declared(cls, name)})
        for name, cls in plugins.items()
    }
    changes = tables[ChangeOptions]
    assert isinstance(changes, ChangeOptions)
    tables[ChangeOptions] = dataclasses.replace(changes, accept_removals=accept_removals)
    config = _build(tables, plugin_values, environ, today=today, resume=resume, dry_run=dry_run)
    return dataclasses.replace(config, new_uploads=new_uploads) if new_uploads else config


def refuse_lag_without_batch(overrides: Mapping[str, Any], *, new_uploads: bool) -> None:
    """Raise ConfigError for `--lag` without `--new-uploads`: a snapshot has no look-back.

    Only the flag: the config file's `new_uploads.lag_s` serves the batches that share the
    nightly export's file (README, "Scheduling"), so a snapshot reading it is no contradiction.
    """
    if not new_uploads and overrides.get("new_uploads.lag_s") is not None:
        raise ConfigError(
            "--lag", "only with --new-uploads (a batch's look-back; a snapshot walks everything)"
        )


def _build(
    tables: dict[type, Options],
    plugins: dict[str, Any],
    environ: Mapping[str, str],
    *,
    today: dt.date,
    resume: bool,
    dry_run: bool,
) -> ExportConfig:
    export = tables[ExportOptions]
    request = tables[RequestOptions]
    assert isinstance(export, ExportOptions) and isinstance(request, RequestOptions)
    if not export.account_id:
        raise ConfigError(
            "export.account_id", "not set; pass --account-id or set CLOUDFLARE_ACCOUNT_ID"
        )
    list_request = ListRequest(
        per_page=request.per_page,
        sort_order=request.sort_order or None,  # type: ignore[arg-type]  # checked: asc/desc
        creator=request.creator,
        filters=tuple(parse_filter(text) for text in request.filters),
    )
    list_request.validate()
    walk, normalize, sinks = tables[WalkOptions], tables[NormalizeOptions], tables[SinkOptions]
    assert isinstance(walk, WalkOptions) and isinstance(normalize, NormalizeOptions)
    assert isinstance(sinks, SinkOptions)
    changes = tables[ChangeOptions]
    assert isinstance(changes, ChangeOptions)
    return ExportConfig(
        account_id=export.account_id,
        output=export.output,
        formats=_formats(export.formats),
        snapshot_date=parse_snapshot_date(export.snapshot_date, today),
        base_url=export.base_url,
        credentials=Credentials.from_env(environ),
        request=list_request,
        walk=walk,
        normalize=normalize,
        sinks=sinks,
        changes=changes,
        resume=resume,
        dry_run=dry_run,
        s3_endpoint=export.s3_endpoint or None,
        tables=tables,
        plugins=plugins,
    )


def _formats(formats: tuple[str, ...]) -> tuple[str, ...]:
    """Return the sink names, each one known (built-in or an installed plugin)."""
    from exporter.sinks import INTERNAL_SINKS, available_sinks

    known = [name for name in available_sinks() if name not in INTERNAL_SINKS]
    for name in formats:
        if name not in known:
            raise ConfigError("export.formats", f"unknown sink {name!r}; known: {', '.join(known)}")
    return formats


__all__ = [
    "BUILTIN_FORMATS",
    "ExportConfig",
    "jsonable",
    "load_toml",
    "parse_config",
    "refuse_lag_without_batch",
]
