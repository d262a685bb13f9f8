"""cf-images-exporter: snapshot a Cloudflare Images catalog into warehouse-ready files.

The public surface is what `__all__` lists; everything else may change between versions.
"""

from exporter._version import __version__
from exporter.config import ExportConfig, load_toml, parse_config
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
from exporter.pipeline import dry_run_plan, export
from exporter.stats import RunStats

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
    "SchemaContractError",
    "SinkError",
    "__version__",
    "dry_run_plan",
    "export",
    "load_toml",
    "parse_config",
]
