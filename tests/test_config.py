"""Config precedence, validation and the shipped config files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from exporter.config import OPTIONS, load_toml, parse_config
from exporter.errors import ConfigError

TODAY = dt.date(2026, 11, 27)
ENV = {"CLOUDFLARE_API_TOKEN": "secret-token-value", "CLOUDFLARE_ACCOUNT_ID": "acc-env"}
CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))


def parse(file: dict[str, Any] | None = None, env: dict[str, str] | None = None, **flags: Any):  # type: ignore[no-untyped-def]
    return parse_config(file or {}, ENV if env is None else env, flags, today=TODAY)


class TestPrecedence:
    def test_defaults(self) -> None:
        """With only credentials and an account, every default applies."""
        config = parse()
        assert config.account_id == "acc-env"
        assert config.output == "out"
        assert config.formats == ("parquet",)
        assert config.snapshot_date == TODAY
        assert config.base_url == "https://api.cloudflare.com/client/v4"
        assert config.request.per_page == 1000
        assert config.request.sort_order is None

    def test_flag_beats_env_beats_file(self) -> None:
        """A flag overrides the environment, which overrides the file."""
        file = {"export": {"account_id": "acc-file", "base_url": "http://file.example/v4"}}
        env = {**ENV, "CLOUDFLARE_BASE_URL": "http://env.example/v4"}
        config = parse(file, env)
        assert (config.account_id, config.base_url) == ("acc-env", "http://env.example/v4")
        config = parse(file, env, **{"export.account_id": "acc-flag"})
        assert config.account_id == "acc-flag"

    def test_file_beats_default(self) -> None:
        """A file value replaces the default when nothing else sets the key."""
        config = parse({"request": {"per_page": 500, "sort_order": "asc"}})
        assert (config.request.per_page, config.request.sort_order) == (500, "asc")

    def test_filters_and_snapshot_date(self) -> None:
        """Filters are parsed; an explicit snapshot date is kept."""
        config = parse(
            **{"request.filters": ["meta.status[eq]=active"], "export.snapshot_date": "2026-01-02"}
        )
        assert [str(f) for f in config.request.filters] == ["meta.status[eq]=active"]
        assert config.snapshot_date == dt.date(2026, 1, 2)

    def test_plan_masks_the_secret(self) -> None:
        """The resolved plan never carries the token."""
        assert "secret-token-value" not in repr(parse().plan())
        assert "secret-token-value" not in repr(parse())


BAD_CONFIGS = [
    pytest.param({"export": {"acount_id": "x"}}, {}, "export.acount_id", id="unknown-key"),
    pytest.param({"exprot": {"output": "x"}}, {}, "exprot.output", id="unknown-section"),
    pytest.param({"export": "x"}, {}, "export", id="section-not-table"),
    pytest.param({"request": {"per_page": "10"}}, {}, "request.per_page", id="per-page-str"),
    pytest.param({"request": {"per_page": 5}}, {}, "per_page", id="per-page-low"),
    pytest.param({"request": {"per_page": 10001}}, {}, "per_page", id="per-page-high"),
    pytest.param({"request": {"per_page": True}}, {}, "request.per_page", id="per-page-bool"),
    pytest.param({"request": {"sort_order": "up"}}, {}, "request.sort_order", id="sort-order"),
    pytest.param({"request": {"filters": "meta.a[eq]=1"}}, {}, "request.filters", id="filters-str"),
    pytest.param({"request": {"filters": ["meta.a[bad]=1"]}}, {}, "filter", id="filter-op"),
    pytest.param({"request": {"filters": ["status[eq]=1"]}}, {}, "filter", id="filter-prefix"),
    pytest.param({"request": {"filters": ["meta.a[gt]=x"]}}, {}, "filter", id="filter-range-str"),
    pytest.param(
        {"request": {"filters": [f"meta.k{i}[eq]=1" for i in range(6)]}},
        {},
        "filter",
        id="six-filters",
    ),
    pytest.param({"request": {"filters": ["meta.a.b.c.d.e.f[eq]=1"]}}, {}, "filter", id="deep"),
    pytest.param(
        {"request": {"filters": ["meta.a[in]=" + "|".join("abcdefghijk")]}},
        {},
        "filter",
        id="in-eleven",
    ),
    pytest.param({"export": {"formats": []}}, {}, "export.formats", id="no-format"),
    pytest.param({"export": {"formats": [1]}}, {}, "export.formats", id="format-int"),
    pytest.param({"export": {"snapshot_date": "27/11/2026"}}, {}, "snapshot_date", id="date"),
    pytest.param({"export": {"snapshot_date": "2026-02-30"}}, {}, "snapshot_date", id="feb-30"),
    pytest.param({"export": {"base_url": "ftp://x"}}, {}, "export.base_url", id="base-url"),
    pytest.param({"export": {"output": " "}}, {}, "export.output", id="empty-output"),
    pytest.param({"walk": {"mode": "zigzag"}}, {}, "walk.mode", id="walk-mode"),
    pytest.param({"walk": {"quota": 0}}, {}, "walk.quota", id="quota-zero"),
    pytest.param({"walk": {"margin": 1.5}}, {}, "walk.margin", id="margin"),
    pytest.param({"walk": {"window_s": -1}}, {}, "walk.window_s", id="window"),
    pytest.param({"walk": {"max_attempts": 0}}, {}, "walk.max_attempts", id="attempts"),
    pytest.param({"walk": {"batch_api": "yes"}}, {}, "walk.batch_api", id="batch-api-str"),
    pytest.param({"normalize": {"depth": 0}}, {}, "normalize", id="depth-zero"),
    pytest.param({"normalize": {"column_cap": -1}}, {}, "normalize", id="cap-negative"),
    pytest.param(
        {"normalize": {"schema_contract": "strict"}}, {}, "normalize.schema_contract", id="contract"
    ),
    pytest.param({"ndjson": {"gzip": 1}}, {}, "ndjson.gzip", id="gzip-int"),
    pytest.param({"parquet": {"codec": "zstandard"}}, {}, "parquet.codec", id="codec"),
    pytest.param({"walk": {"read_timeout_s": 0}}, {}, "walk.read_timeout_s", id="read-timeout"),
    pytest.param({"export": {"formats": ["memory"]}}, {}, "export.formats", id="memory-sink"),
    pytest.param({}, {"CLOUDFLARE_ACCOUNT_ID": "a"}, "CLOUDFLARE_API_TOKEN", id="no-credentials"),
    pytest.param({}, {"CLOUDFLARE_API_TOKEN": "t"}, "export.account_id", id="no-account"),
]


@pytest.mark.parametrize(("file", "env", "key"), BAD_CONFIGS)
def test_bad_config_names_the_key(file: dict[str, Any], env: dict[str, str], key: str) -> None:
    """Every bad value raises one ConfigError whose single-line message names the key."""
    with pytest.raises(ConfigError) as caught:
        parse(file, env or ENV)
    message = str(caught.value)
    assert key in message
    assert "\n" not in message
    assert "secret-token-value" not in message


def test_every_option_has_help() -> None:
    """Every key is documented (the config files' comments mirror these)."""
    assert all(option.help for option in OPTIONS.values())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path: Path) -> None:
    """Every file in configs/ parses into a valid ExportConfig."""
    config = parse(load_toml(path))
    assert config.formats


def test_shipped_configs_exist() -> None:
    """The three documented configs are shipped."""
    assert {p.name for p in CONFIGS} >= {"nightly.toml", "filtered-ndjson.toml", "demo.toml"}


def test_load_toml_errors(tmp_path: Path) -> None:
    """A missing or malformed file is a ConfigError naming --config."""
    with pytest.raises(ConfigError, match="--config: no such file"):
        load_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[export\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(bad)
