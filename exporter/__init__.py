"""cf-images-exporter: snapshot a Cloudflare Images catalog into warehouse-ready files.

The public surface is what `__all__` lists; everything else may change between versions.

The package root stays light: the errors and `RunStats` need nothing outside the standard
library, and the names that do (the config and the pipeline, which bring aiohttp, anyio,
pyarrow and tenacity) are imported on first use (PEP 562), so `import exporter.errors` or
`exporter.__version__` loads none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from exporter._version import __version__
from exporter.errors import (
    AuthError,
    ConcurrentRunError,
    ConfigError,
    ExporterError,
    FetchError,
    FilterError,
    IntegrityError,
    Interrupted,
    SchemaContractError,
    SinkError,
)
from exporter.stats import RunStats

if TYPE_CHECKING:  # what type checkers see; at run time `__getattr__` imports them
    from exporter.config import ExportConfig, load_toml, parse_config
    from exporter.run.pipeline import export
    from exporter.run.plan import dry_run_plan
    from exporter.run.summary import RunSummary

_LAZY = {
    "ExportConfig": "exporter.config",
    "load_toml": "exporter.config",
    "parse_config": "exporter.config",
    "dry_run_plan": "exporter.run.plan",
    "export": "exporter.run.pipeline",
    "RunSummary": "exporter.run.summary",
}


def __getattr__(name: str) -> Any:
    """Import a public name of a heavy module when it is first asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "AuthError",
    "ConcurrentRunError",
    "ConfigError",
    "ExportConfig",
    "ExporterError",
    "FetchError",
    "FilterError",
    "IntegrityError",
    "Interrupted",
    "RunStats",
    "RunSummary",
    "SchemaContractError",
    "SinkError",
    "__version__",
    "dry_run_plan",
    "export",
    "load_toml",
    "parse_config",
]
