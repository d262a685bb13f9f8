"""Config precedence, validation and the shipped config files."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from exporter.config import load_toml, parse_config
from exporter.errors import ConfigError
from exporter.options import (
    Option,
    SinkOptions,
    WalkOptions,
    all_options,
    at_least,
    declared,
    opt,
    override_file,
)
from exporter.run.pipeline import describe_request
from exporter.sinks import ENTRY_POINT_GROUP, open_sink
from exporter.snapshot.checkpoint import request_fingerprint

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
    assert all(option.help for option in all_options())


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


NIGHTLY = Path(__file__).parent.parent / "configs" / "nightly.toml"


def reference_lines(text: str) -> dict[str, str]:
    """Return {"section.key": value text} of every `key = value` line, commented out or not."""
    lines: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip().removeprefix("#").strip()
        if raw.startswith("[") and raw.rstrip().endswith("]"):
            section = raw.strip()[1:-1]
        elif section and re.match(r"^[a-z_0-9]+\s*=", line):
            key, _, value = line.partition("=")
            lines[f"{section}.{key.strip()}"] = value.strip()
    return lines


def toml_value(text: str) -> Any:
    """Return the value of a line's `value  # comment` text (as TOML reads it)."""
    return tomllib.loads(f"v = {text}")["v"]


@pytest.mark.parametrize("option", all_options(), ids=lambda o: o.key)
def test_reference_config_lists_every_option(option: Option) -> None:
    """configs/nightly.toml shows every option with its default (commented out when unset)."""
    lines = reference_lines(NIGHTLY.read_text())
    default = list(option.default) if isinstance(option.default, tuple) else option.default
    shown = "# " if default is None else ""
    example = f"[{option.section}]\n{shown}{option.name} = {orjson.dumps(default).decode()}"
    assert option.key in lines, f"configs/nightly.toml lacks {option.key}; add:\n{example}"
    if default is not None:
        assert toml_value(lines[option.key]) == default, f"{option.key}: the default is {default!r}"


def test_reference_config_names_only_options() -> None:
    """Every key in configs/nightly.toml, commented out or not, is a declared option."""
    assert set(reference_lines(NIGHTLY.read_text())) <= {o.key for o in all_options()}


class TestFingerprint:
    """The request fingerprint names the staging directory: it must not move between versions."""

    @pytest.mark.parametrize(
        ("file", "digest"),
        [
            pytest.param(
                {}, "bd0e0eed425eeebf9a8b1cc69d1cdc0f68df6c365d893de5897dd77299309402", id="default"
            ),
            pytest.param(
                {
                    "request": {
                        "per_page": 500,
                        "sort_order": "asc",
                        "filters": ["meta.status[eq]=active"],
                        "creator": "",
                    },
                    "export": {"formats": ["ndjson", "duckdb"]},
                    "ndjson": {"gzip": True},
                    "duckdb": {"path": "x.duckdb"},
                    "normalize": {"depth": 3, "include": ["a"], "exclude": ["b"], "column_cap": 9},
                    "walk": {"batch_api": True, "mode": "single"},
                },
                "bee53e8e1f61e43adee829e5d45b4a25c1a86687c3ebaba6ede4cbfe8b76bd5d",
                id="every-fingerprinted-option",
            ),
        ],
    )
    def test_same_digest_as_version_0_1(self, file: dict[str, Any], digest: str) -> None:
        """Digests computed by the code before options were declared in one module."""
        config = parse(file, {**ENV, "CLOUDFLARE_ACCOUNT_ID": "acc"})
        assert request_fingerprint(describe_request(config)) == digest

    @pytest.mark.parametrize(
        "option", [o for o in all_options() if o.fingerprint], ids=lambda o: o.key
    )
    def test_each_fingerprinted_option_changes_it(self, option: Option) -> None:
        """Changing any option declared with fingerprint= gives another staging key."""
        other = {
            "export.account_id": "acc-2",
            "export.formats": ["ndjson"],
            "export.base_url": "http://other.example/v4",
            "request.per_page": 10,
            "request.sort_order": "desc",
            "request.creator": "c",
            "request.filters": ["meta.a[eq]=1"],
            "walk.mode": "single",
            "walk.batch_api": True,
            "ndjson.gzip": True,
            "duckdb.path": "x.duckdb",
            "normalize.depth": 2,
            "normalize.include": ["a"],
            "normalize.exclude": ["b"],
            "normalize.column_cap": 3,
        }[option.key]
        base = request_fingerprint(describe_request(parse()))
        changed = request_fingerprint(describe_request(parse(**{option.key: other})))
        assert changed != base

    def test_other_options_leave_it(self) -> None:
        """Pacing, timeouts and part sizes do not make a different request."""
        base = request_fingerprint(describe_request(parse()))
        file = {"walk": {"quota": 60, "read_timeout_s": 5}, "parquet": {"part_rows": 10}}
        assert request_fingerprint(describe_request(parse(file))) == base


class TestDeclarations:
    def test_config_imports_no_io_module(self) -> None:
        """Reading a config loads no HTTP client, walker, store, Arrow or DuckDB."""
        heavy = ["aiohttp", "anyio", "pyarrow", "duckdb", "exporter.walk", "exporter.store"]
        code = f"import sys, exporter.config; print([m for m in {heavy!r} if m in sys.modules])"
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert result.stdout.strip() == "[]", result.stdout

    def test_one_default_for_the_margin(self) -> None:
        """walk.margin's default is the pacer's margin of an export (no second default)."""
        (margin,) = [o for o in all_options() if o.key == "walk.margin"]
        assert margin.default == 0.95 == WalkOptions().margin == parse().walk.margin

    def test_direct_construction_is_checked(self) -> None:
        """The declared checks also guard options built in code (one place validates)."""
        with pytest.raises(ConfigError, match=r"^walk\.margin: must be in \(0, 1\], got 0$"):
            WalkOptions(margin=0)
        with pytest.raises(ConfigError, match=r"^parquet\.part_rows: must be at least 1"):
            SinkOptions(part_rows=0)

    def test_env_sets_a_declared_option(self) -> None:
        """An option's env variable sits between the file and the flag."""
        env = {**ENV, "CLOUDFLARE_BASE_URL": "http://env.example/v4/"}
        assert parse({}, env).base_url == "http://env.example/v4"
        file = {"export": {"base_url": "http://file.example/v4"}}
        assert parse(file, env).base_url == "http://env.example/v4"

    def test_plan_lists_every_option(self) -> None:
        """--dry-run's plan shows each option's resolved value, secrets masked."""
        plan = parse({"ndjson": {"gzip": True}}).plan()
        for option in all_options():
            table = plan if option.section == "export" else plan[option.section]
            assert option.name in table, option.key
        assert plan["ndjson"]["gzip"] is True
        assert plan["snapshot_date"] == TODAY.isoformat()
        assert plan["request"]["sort_order"] is None


class TestOverrideFile:
    """Per-account settings of a fleet: config-file keys applied onto a base config file."""

    def test_bare_and_dotted_keys(self) -> None:
        base = {"export": {"output": "out"}, "request": {"per_page": 1000}}
        merged = override_file(base, {"per_page": 500, "export.output": "o2", "filters": []})
        assert merged == {"export": {"output": "o2"}, "request": {"per_page": 500, "filters": ()}}
        assert base == {"export": {"output": "out"}, "request": {"per_page": 1000}}
        config = parse(merged)
        assert (config.output, config.request.per_page) == ("o2", 500)

    @pytest.mark.parametrize(
        ("overrides", "key"),
        [
            pytest.param({"per_pgae": 5}, "per_pgae", id="unknown"),
            pytest.param({"per_page": 5}, "request.per_page", id="out-of-range"),
            pytest.param({"base_url": 1}, "export.base_url", id="wrong-type"),
        ],
    )
    def test_bad_override_names_the_key(self, overrides: dict[str, Any], key: str) -> None:
        with pytest.raises(ConfigError) as caught:
            override_file({}, overrides)
        assert caught.value.key == key

    def test_ambiguous_bare_key(self) -> None:
        """A bare key two tables share must be written section.key."""
        extra = declared(PluginOptions, "counting")
        with pytest.raises(ConfigError, match="ambiguous"):
            override_file({}, {"depth": 2}, extra)
        assert override_file({}, {"counting.depth": 2}, extra) == {"counting": {"depth": 2}}


@dataclass(frozen=True, kw_only=True)
class PluginOptions:
    """A plugin sink's own table (see PLUGIN below, which declares the same)."""

    depth: int = opt(3, help="how deep", check=at_least(1), fingerprint=True)


PLUGIN = """
from dataclasses import dataclass

from exporter.options import at_least, opt
from exporter.sinks.memory import MemorySink


@dataclass(frozen=True, kw_only=True)
class CountingOptions:
    depth: int = opt(3, help="how deep", check=at_least(1), fingerprint=True)


class CountingSink(MemorySink):
    name = "counting"
    options_type = CountingOptions
    made = []

    def __init__(self, options=None, settings=None):
        super().__init__(options)
        self.settings = settings
        CountingSink.made.append(settings)
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install a distribution with a `counting` sink that declares its own options."""
    (tmp_path / "cf_counting_options.py").write_text(PLUGIN)
    info = tmp_path / "cf_counting_options-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cf-counting-options\nVersion: 1\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\ncounting = cf_counting_options:CountingSink\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


class TestPluginOptions:
    def test_table_named_after_the_sink(self, plugin: Path) -> None:
        """[counting] sets the plugin's options: validated, planned, fingerprinted, passed on."""
        file = {"export": {"formats": ["parquet", "counting"]}, "counting": {"depth": 7}}
        config = parse(file)
        assert config.plugins["counting"].depth == 7
        assert config.plan()["counting"] == {"depth": 7}
        assert describe_request(config)["counting"] == {"depth": 7}
        sink = open_sink("counting", config.sinks, config.plugins.get("counting"))
        assert sink.settings is config.plugins["counting"]  # type: ignore[attr-defined]

    def test_defaults_when_only_named_in_formats(self, plugin: Path) -> None:
        config = parse(**{"export.formats": ["counting"]})
        assert config.plugins["counting"].depth == 3

    @pytest.mark.parametrize(
        ("table", "message"),
        [
            pytest.param({"depth": 0}, "counting.depth: must be at least 1, got 0", id="check"),
            pytest.param({"depth": "2"}, "counting.depth: expected an integer", id="type"),
            pytest.param({"dpth": 2}, "counting.dpth: unknown key; known keys: counting.depth"),
        ],
    )
    def test_bad_value_names_the_key(
        self, plugin: Path, table: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ConfigError) as caught:
            parse({"counting": table})
        assert str(caught.value).startswith(message)

    def test_unknown_table_without_the_plugin(self) -> None:
        with pytest.raises(ConfigError, match=r"counting\.depth: unknown key"):
            parse({"counting": {"depth": 2}})
