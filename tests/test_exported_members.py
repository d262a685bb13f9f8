"""The package's public surface: what `exporter.__all__` lists, sorted, and importable."""

import subprocess

import exporter
from tests.helpers import PYTHON, ROOT


def test_all_is_sorted_and_importable() -> None:
    """`__all__` is sorted and every name in it exists."""
    assert exporter.__all__ == sorted(exporter.__all__)
    for name in exporter.__all__:
        assert getattr(exporter, name) is not None


def test_public_errors_carry_distinct_exit_codes() -> None:
    """Each documented failure class maps to its own exit code (the README's table)."""
    codes = {
        exporter.ConfigError: 2,
        exporter.AuthError: 3,
        exporter.FetchError: 4,
        exporter.SinkError: 5,
        exporter.SchemaContractError: 6,
        exporter.IntegrityError: 7,
        exporter.ConcurrentRunError: 8,
        exporter.Interrupted: 130,
    }
    assert {cls: cls.exit_code for cls in codes} == codes


def test_lazy_names_resolve_to_their_modules() -> None:
    """Every lazily imported name is public and is the very object its module defines."""
    from exporter import config
    from exporter.run import pipeline

    assert set(exporter._LAZY) <= set(exporter.__all__)
    assert exporter.export is pipeline.export and exporter.ExportConfig is config.ExportConfig
    assert set(exporter.__all__) <= set(dir(exporter))


def test_importing_the_errors_loads_no_heavy_dependency() -> None:
    """`import exporter.errors` (and the package root) loads no network or Arrow library."""
    heavy = ("aiohttp", "anyio", "pyarrow", "tenacity", "duckdb", "orjson")
    code = (
        "import sys, exporter.errors, exporter; exporter.__version__; exporter.RunStats; "
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == ""
    # The probe can fail: asking for a lazy name does load the pipeline's dependencies.
    code = code.replace("exporter.RunStats", "exporter.export")
    result = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert {"anyio", "pyarrow"} <= set(result.stdout.split())  # aiohttp: when walking
