"""Sinks: where normalized batches go. Built-ins plus third-party entry points, by name.

A third-party package registers a sink class (or factory taking `SinkOptions`) under the
entry point group `cf_images_exporter.sinks`; `open_sink("name", options)` finds it exactly
like a built-in. Built-in names win over entry points of the same name. The class (or the
factory, as an attribute) declares `file_formats`, which `inspect` uses to count the rows of
the files it wrote (`find_file_format`).

A sink with options of its own declares them as an options dataclass (fields made with
`exporter.options.opt`) in its `options_type` attribute; the config file's table named after
the sink sets them (`[csv]` for a sink "csv"), `--dry-run` shows them, and the sink is built as
`factory(options, settings)` with `settings` that table, validated:

    @dataclass(frozen=True, kw_only=True)
    class CsvOptions:
        delimiter: str = opt(",", help="field separator", check=one_character)

    class CsvSink(FilePartSink):
        options_type = CsvOptions
        def __init__(self, options=None, settings=None): ...

A sink keeping tables derived from nights implements `TableKeeper` and is handed each
published change set and batch of new uploads; one whose nights DuckDB can read back implements
`ReadableNights` (both in `_base.py`). `night_sinks(request)` re-opens the sinks of a published
night, configured as its request recorded them, for both.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, cast

from exporter.errors import ConfigError
from exporter.options import BUILTIN_FORMATS, from_request
from exporter.sinks._base import (
    Conform,
    FileFormat,
    FilePartSink,
    PartFile,
    Publication,
    PublishedChanges,
    ReadableNights,
    Sink,
    SinkOptions,
    TableKeeper,
    schema_fingerprint,
)
from exporter.sinks.night import NIGHT_KINDS, NightSource, PublishedNight, SourceKind

log = logging.getLogger("exporter.sinks")

ENTRY_POINT_GROUP = "cf_images_exporter.sinks"
INTERNAL_SINKS = ("memory",)  # keeps batches in memory: for tests, never an output
# Each built-in is the class `<Name>Sink` of `exporter/sinks/<name>.py`; the names users may
# choose are declared once, in `options.BUILTIN_FORMATS`.
BUILTIN_SINKS = {
    name: f"exporter.sinks.{name}:{name.capitalize()}Sink"
    for name in (*BUILTIN_FORMATS, *INTERNAL_SINKS)
}

SinkFactory = Callable[..., Sink]  # (SinkOptions) or (SinkOptions, its own options_type)


def _load(target: str) -> SinkFactory:
    module, _, attribute = target.partition(":")
    return cast(SinkFactory, getattr(import_module(module), attribute))


def available_sinks() -> list[str]:
    """Return every sink name: built-ins and installed entry points, sorted."""
    return sorted(set(BUILTIN_SINKS) | _installed_sinks(tuple(sys.path)))


@functools.lru_cache(maxsize=4)
def _installed_sinks(path: tuple[str, ...]) -> frozenset[str]:
    """Return the entry points' sink names found on `path` (sys.path): reading every
    distribution's metadata took ~6 ms, twice per account of a fleet."""
    return frozenset(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def sink_factory(name: str) -> SinkFactory:
    """Return the class or factory registered as `name`; ConfigError when none is."""
    if name in BUILTIN_SINKS:
        return _load(BUILTIN_SINKS[name])
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        try:
            return cast(SinkFactory, ep.load())
        except Exception as exc:  # a broken plugin is a configuration problem, named as such
            raise ConfigError("export.formats", f"sink {name!r} failed to load: {exc}") from exc
    known = ", ".join(available_sinks())
    raise ConfigError("export.formats", f"unknown sink {name!r}; available: {known}")


def find_file_format(name: str) -> FileFormat | None:
    """Return the format called `name` ("parquet", "ndjson.gz") that some sink declares.

    Built-ins first, then the installed entry points; a plugin that fails to load is skipped
    here (it cannot have written the file being checked on this machine).
    """
    factories = [sink_factory(sink) for sink in BUILTIN_SINKS]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in BUILTIN_SINKS:
            with contextlib.suppress(Exception):  # a broken plugin declares nothing
                factories.append(ep.load())
    for factory in factories:
        for found in getattr(factory, "file_formats", ()):
            if isinstance(found, FileFormat) and found.name == name:
                return found
    return None


def open_sink(name: str, options: SinkOptions | None = None, settings: Any = None) -> Sink:
    """Return a new, not yet opened, sink called `name` configured by `options`.

    A sink that declares `options_type` also gets `settings`: its own table (defaults if None).
    """
    factory = sink_factory(name)
    options_type = getattr(factory, "options_type", None)
    if options_type is None:
        sink = factory(options or SinkOptions())
    else:
        sink = factory(options or SinkOptions(), settings or options_type())
    if not isinstance(sink, Sink):
        raise ConfigError("export.formats", f"sink {name!r} does not implement the Sink protocol")
    return sink


def night_sinks(request: Mapping[str, Any]) -> list[Sink]:
    """Return the sinks a published night's request names (`formats`), each configured as the
    night recorded it (its options declared with `fingerprint=`, e.g. `duckdb.path`).

    A sink that is no longer installed is left out, with a warning: it cannot read the night
    back nor load what derives from it on this machine.
    """
    options = from_request(SinkOptions, request)
    found = []
    for name in request.get("formats") or []:
        try:
            options_type = getattr(sink_factory(name), "options_type", None)
            settings = None if options_type is None else from_request(options_type, request, name)
            found.append(open_sink(name, options, settings))
        except ConfigError as exc:
            log.warning("sink %r of a published night left out: %s", name, exc)
    return found


def readable_formats() -> list[str]:
    """Return the built-in formats whose nights the diff and the report read back
    (`ReadableNights`), in `BUILTIN_FORMATS` order."""
    return [name for name in BUILTIN_FORMATS if hasattr(sink_factory(name), "night_source")]


def table_keepers(sinks: Iterable[Sink]) -> list[TableKeeper]:
    """Return the sinks that keep tables derived from nights (`TableKeeper`)."""
    return [sink for sink in sinks if isinstance(sink, TableKeeper)]


def read_night(sinks: Iterable[Sink], night: PublishedNight, scratch: Path) -> NightSource | None:
    """Return where DuckDB reads `night`: through the sink whose `night_kind` comes first in
    `NIGHT_KINDS` among those holding it; None when none does."""
    readers = [sink for sink in sinks if isinstance(sink, ReadableNights)]
    for reader in sorted(readers, key=lambda r: NIGHT_KINDS.index(r.night_kind)):
        source = reader.night_source(night, scratch)
        if source is not None:
            return source
    return None


__all__ = [
    "BUILTIN_SINKS",
    "ENTRY_POINT_GROUP",
    "INTERNAL_SINKS",
    "NIGHT_KINDS",
    "Conform",
    "FileFormat",
    "FilePartSink",
    "NightSource",
    "PartFile",
    "Publication",
    "PublishedChanges",
    "PublishedNight",
    "ReadableNights",
    "Sink",
    "SinkOptions",
    "SourceKind",
    "TableKeeper",
    "available_sinks",
    "find_file_format",
    "night_sinks",
    "open_sink",
    "read_night",
    "readable_formats",
    "schema_fingerprint",
    "sink_factory",
    "table_keepers",
]
