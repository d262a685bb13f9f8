"""The CLI as a user meets it: real subprocesses against an emulator process over loopback."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from exporter.api.filters import matches, parse_filter
from exporter.cli.commands import build_parser, main, overrides_from_args, shown_default
from exporter.config import load_toml
from exporter.emulator import build_catalog
from exporter.errors import ConfigError
from exporter.options import MAX_SECONDS, Option, all_options, seconds
from tests.helpers import (
    ROOT,
    EmulatorProcess,
    catalog_rows,
    clean_env,
    emulator_process,
    exported_rows,
    run_cli,
    snapshot_rows,
)

SECRET = "emulator-demo-token"
DEMO_ID = "0123456789abcdef0123456789abcdef"
DATE = "2026-11-27"


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorProcess]:
    """One emulator process (600 nasty images) shared by this module's tests."""
    with emulator_process(images=600, seed=11) as emulator:
        yield emulator


def one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return errors[0]


class TestExport:
    def test_export_matches_catalog_exactly(self, emu: EmulatorProcess, tmp_path: Path) -> None:
        """`export` publishes a snapshot that DuckDB reads back equal to the emulator's catalog."""
        out = tmp_path / "out"
        result = run_cli(
            ["export", "--output", str(out), "--snapshot-date", DATE, "--per-page", "50"],
            emu.env(),
        )
        assert result.returncode == 0, result.stderr
        assert SECRET not in result.stderr + result.stdout
        expected = catalog_rows(emu.images, emu.seed, emu.account_id)
        assert snapshot_rows(out, DATE) == expected
        snapshot = out / f"snapshot_date={DATE}"
        assert (snapshot / "_SUCCESS").exists()
        manifest = orjson.loads((snapshot / "_manifest.json").read_bytes())
        assert manifest["counts"]["rows"] == emu.images
        assert manifest["api_count"] == emu.images
        assert SECRET not in (snapshot / "_manifest.json").read_text()
        assert "summary:" in result.stderr

    def test_python_dash_m_and_single_walk_ndjson(
        self, emu: EmulatorProcess, tmp_path: Path
    ) -> None:
        """A single asc cursor to NDJSON: every image once, `meta` nested as the API sent it."""
        out = tmp_path / "out"
        args = ["export", "--output", str(out), "--snapshot-date", DATE, "--format", "ndjson"]
        result = run_cli([*args, "--sort-order", "asc", "--per-page", "100"], emu.env())
        assert result.returncode == 0, result.stderr
        (part,) = (out / f"snapshot_date={DATE}").glob("part-00000-*.ndjson")
        lines = part.read_bytes().splitlines()
        rows = [orjson.loads(line) for line in lines]
        assert exported_rows(rows) == catalog_rows(emu.images, emu.seed, emu.account_id)

    @pytest.mark.parametrize(
        "config", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name
    )
    def test_every_shipped_config(self, emu: EmulatorProcess, tmp_path: Path, config: Path) -> None:
        """Each config in configs/ exports the images its request selects, exactly."""
        out = tmp_path / "out"
        args = ["export", "--config", str(config), "--output", str(out), "--snapshot-date", DATE]
        result = run_cli([*args, "--account-id", emu.account_id], emu.env())
        assert result.returncode == 0, result.stderr
        filters = [parse_filter(f) for f in load_toml(config).get("request", {}).get("filters", [])]
        expected = {
            image["id"]
            for image in build_catalog(emu.images, emu.seed).iter_images()
            if all(matches(f, image.get("meta")) for f in filters)
        }
        manifest = orjson.loads((out / f"snapshot_date={DATE}" / "_manifest.json").read_bytes())
        assert manifest["counts"]["rows"] == len(expected)
        assert 0 < len(expected)

    def test_batch_api_export_matches_catalog(self, emu: EmulatorProcess, tmp_path: Path) -> None:
        """--batch-api lists through the batch host with a batch token: same exact snapshot."""
        out = tmp_path / "out"
        args = ["export", "--output", str(out), "--snapshot-date", DATE, "--batch-api"]
        result = run_cli([*args, "--batch-base-url", emu.batch_base_url], emu.env())
        assert result.returncode == 0, result.stderr
        expected = catalog_rows(emu.images, emu.seed, emu.account_id)
        assert snapshot_rows(out, DATE) == expected

    def test_json_logs_for_schedulers(self, emu: EmulatorProcess, tmp_path: Path) -> None:
        """--log-format json: every stderr line is one JSON object, the summary included."""
        args = ["export", "--output", str(tmp_path / "o"), "--log-format", "json"]
        result = run_cli(args, emu.env())
        assert result.returncode == 0, result.stderr
        records = [orjson.loads(line) for line in result.stderr.splitlines()]
        summary = [r for r in records if r["message"] == "summary"]
        assert summary and summary[0]["summary"]["images"] == emu.images
        assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)

    def test_quiet_prints_only_problems(self, emu: EmulatorProcess, tmp_path: Path) -> None:
        """-q: a successful run prints nothing at all."""
        result = run_cli(["export", "--output", str(tmp_path / "o"), "-q"], emu.env())
        assert result.returncode == 0, result.stderr
        assert result.stderr == "" and result.stdout == ""

    def test_verbose_adds_each_checkpoint(self, emu: EmulatorProcess, tmp_path: Path) -> None:
        """-v: debug lines, one per checkpoint, beside the usual ones."""
        (tmp_path / "c.toml").write_text("[parquet]\npart_rows = 200\n")
        args = ["export", "--config", str(tmp_path / "c.toml"), "--output", str(tmp_path / "o")]
        result = run_cli([*args, "--per-page", "100", "-v"], emu.env())
        assert result.returncode == 0, result.stderr
        debug = [line for line in result.stderr.splitlines() if " DEBUG checkpoint: " in line]
        assert len(debug) >= 3, result.stderr

    def test_dry_run_sends_nothing_and_masks_secrets(self, tmp_path: Path) -> None:
        """--dry-run prints the plan and requests, with no secret, even with no API reachable."""
        env = {**clean_env(), "CLOUDFLARE_API_TOKEN": "very-secret", "CLOUDFLARE_ACCOUNT_ID": "a1"}
        args = ["export", "--dry-run", "--base-url", "http://127.0.0.1:9/v4", "--output", "x"]
        result = run_cli([*args, "--filter", "meta.status[eq]=active"], env)
        assert result.returncode == 0, result.stderr
        plan = orjson.loads(result.stdout)
        assert "very-secret" not in result.stdout
        assert any("meta.status%5Beq%5D=active" in r for r in plan["requests"])
        assert not (tmp_path / "x").exists()
        assert plan["plan"]["credentials"] == "API token (from CLOUDFLARE_API_TOKEN)"
        env.update(CLOUDFLARE_EMAIL="me@example.com", CLOUDFLARE_API_KEY="very-secret-key")
        del env["CLOUDFLARE_API_TOKEN"]
        result = run_cli(args, env)
        assert result.returncode == 0, result.stderr
        assert "very-secret-key" not in result.stdout and "me@example.com" not in result.stdout
        shown = orjson.loads(result.stdout)["plan"]["credentials"]
        assert shown == "email + global API key (from CLOUDFLARE_EMAIL and CLOUDFLARE_API_KEY)"

    def test_lag_without_new_uploads_is_refused(self, emu: EmulatorProcess, tmp_path: Path) -> None:
        """`--lag` without `--new-uploads` (export or fleet): exit 2, one line naming both
        flags, nothing written; the config file's `new_uploads.lag_s`, which a nightly export
        shares with its batches, is no contradiction."""
        out = tmp_path / "out"
        result = run_cli(["export", "--output", str(out), "--lag", "30"], emu.env())
        assert result.returncode == 2, result.stderr
        line = one_line_error(result.stderr)
        assert "--lag" in line and "--new-uploads" in line
        accounts = tmp_path / "accounts.toml"
        accounts.write_text(f'[[account]]\nid = "{emu.account_id}"\ntoken_env = "T"\n')
        fleet = ["fleet", "--accounts", str(accounts), "--output", str(out), "--lag", "30"]
        result = run_cli(fleet, emu.env(T=emu.token))
        assert result.returncode == 2, result.stderr
        assert "--new-uploads" in one_line_error(result.stderr)
        assert not out.exists()
        (tmp_path / "c.toml").write_text("[new_uploads]\nlag_s = 30\n")
        args = ["export", "--config", str(tmp_path / "c.toml"), "--output", str(out)]
        result = run_cli([*args, "--snapshot-date", DATE], emu.env())
        assert result.returncode == 0, result.stderr
        assert (out / f"snapshot_date={DATE}" / "_SUCCESS").exists()

    def test_inspect_verifies_and_detects_damage(
        self, emu: EmulatorProcess, tmp_path: Path
    ) -> None:
        """`inspect` passes a fresh snapshot and exits 7 once a byte of a part is changed."""
        out = tmp_path / "out"
        result = run_cli(["export", "--output", str(out), "--snapshot-date", DATE], emu.env())
        assert result.returncode == 0, result.stderr
        ok = run_cli(["inspect", str(out)])
        assert ok.returncode == 0, ok.stderr
        assert f"{emu.images:,} images" in ok.stdout
        (part,) = (out / f"snapshot_date={DATE}").glob("part-00000-*.parquet")
        data = bytearray(part.read_bytes())
        data[len(data) // 2] ^= 0xFF
        part.write_bytes(bytes(data))
        bad = run_cli(["inspect", str(out / f"snapshot_date={DATE}")])
        assert bad.returncode == 7
        assert "sha256" in one_line_error(bad.stderr)

    def test_inspect_reports_every_snapshot_and_every_problem(
        self, emu: EmulatorProcess, tmp_path: Path
    ) -> None:
        """One damaged snapshot among several: every other one is still reported ok (text and
        --json), the damaged one with its problem, then exit 7; no snapshot at all: exit 2."""
        out = tmp_path / "out"
        for date in ("2026-11-26", DATE):
            args = ["export", "--output", str(out), "--snapshot-date", date, "-q"]
            assert run_cli(args, emu.env()).returncode == 0
        (part,) = (out / f"snapshot_date={DATE}").glob("part-00000-*.parquet")
        part.write_bytes(part.read_bytes()[:-1] + b"!")
        text = run_cli(["inspect", str(out)])
        assert text.returncode == 7, text.stderr
        assert "1 of 4 snapshots do not match" in one_line_error(text.stderr)
        lines = text.stdout.splitlines()
        assert len([line for line in lines if ": ok, " in line]) == 3, text.stdout
        damaged = [line for line in lines if "DAMAGED" in line]
        assert damaged and all(line.startswith(f"snapshot_date={DATE}: ") for line in damaged)
        assert any(part.name in line and "sha256" in line for line in damaged), damaged
        report = run_cli(["inspect", str(out), "--json"])
        assert report.returncode == 7
        entries = {e["snapshot"]: e for e in orjson.loads(report.stdout)}
        assert len(entries) == 4
        assert [s for s, e in entries.items() if "problems" in e] == [f"snapshot_date={DATE}"]
        (tmp_path / "empty").mkdir()
        for path in (tmp_path / "empty", tmp_path / "missing"):
            empty = run_cli(["inspect", str(path)])
            assert empty.returncode == 2, empty.stderr
            assert "no snapshot_date=* snapshot under" in one_line_error(empty.stderr)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["export", "--per-page", "x"], id="usage"),
        pytest.param(["export", "--per-page", "5"], id="config"),
        pytest.param(["fleet", "--accounts", "/nonexistent.toml"], id="fleet-config"),
    ],
)
def test_json_errors_for_schedulers(args: list[str]) -> None:
    """--log-format json: a refused command line is a JSON record too, with its exit code."""
    env = {**clean_env(), "CLOUDFLARE_API_TOKEN": "t", "CLOUDFLARE_ACCOUNT_ID": "a"}
    result = run_cli([*args, "--log-format", "json"], env)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    record = orjson.loads(line)
    assert record["level"] == "error" and record["exit_code"] == 2 and record["time"]
    assert record["message"] and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["export", "fleet", "emulator", "demo", "inspect"])
def test_help_shows_every_default(command: str) -> None:
    """Each flag with a default says it in --help: argparse's own defaults, and for the
    export flags the default of the option they set."""
    parsers = build_parser(command)._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    parser = parsers[command]
    options = {o.key: o for o in all_options()}
    for action in parser._actions:
        if action.help in (None, argparse.SUPPRESS) or action.nargs == 0:
            continue  # no help, or a switch (-h, -q, --resume): nothing to default
        option = options.get(action.dest)
        default = option.default if option is not None else action.default
        shown = shown_default(default) if default != 0 or default is False else "0"
        if shown is not None:
            text = action.help % {"default": action.default}
            assert shown in text, f"{command} {action.option_strings}: {text!r} lacks {shown!r}"


@pytest.mark.parametrize("command", ["export", "emulator", "demo", "inspect", "report"])
def test_help_shows_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every command's --help exits 0 and shows real examples."""
    with pytest.raises(SystemExit) as caught:
        main([command, "--help"])
    assert caught.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_export_does_not_load_the_emulator(capsys: pytest.CaptureFixture[str]) -> None:
    """An export parses its flags without importing the emulator (its server is ~40 ms of
    start-up before the first request); `emulator --help` still lists the emulator's flags."""
    argv = ["export", "--dry-run", "--base-url", "http://127.0.0.1:9/v4", "--output", "x"]
    code = (
        "import sys; from exporter.cli.commands import main; code = main(sys.argv[1:]); "
        "print([m for m in sys.modules if m.startswith('exporter.emulator')], file=sys.stderr); "
        "sys.exit(code)"
    )
    env = {**clean_env(), "CLOUDFLARE_API_TOKEN": "t", "CLOUDFLARE_ACCOUNT_ID": "a1"}
    result = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "[]", result.stderr

    with pytest.raises(SystemExit):
        main(["emulator", "--help"])
    assert "--latency" in capsys.readouterr().out


def test_an_export_under_a_profiler_still_writes_its_results(tmp_path: Path) -> None:
    """An export ends without the interpreter's teardown, except under a profiler or tracer,
    whose results are written at exit (`python -m cProfile -o FILE -m exporter export`)."""
    argv = ["export", "--dry-run", "--base-url", "http://127.0.0.1:9/v4", "--output", "x"]
    env = {**clean_env(), "CLOUDFLARE_API_TOKEN": "t", "CLOUDFLARE_ACCOUNT_ID": "a1"}
    stats = tmp_path / "export.prof"
    profiled = [sys.executable, "-m", "cProfile", "-o", str(stats), "-m", "exporter", *argv]
    result = subprocess.run(profiled, capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert stats.stat().st_size > 0


BASE_ENV = {"CLOUDFLARE_API_TOKEN": "tok-secret-1", "CLOUDFLARE_ACCOUNT_ID": "acc"}
EMAIL_AND_KEY: dict[str, str | None] = {
    "CLOUDFLARE_API_TOKEN": None,
    "CLOUDFLARE_EMAIL": "a@b.c",
    "CLOUDFLARE_API_KEY": "k",
}
# (argv, env overrides (None = unset), config file text or None, exit code, text in the line)
BAD_INPUTS = [
    pytest.param(["export", "--per-page", "x"], {}, None, 2, "--per-page", id="per-page-text"),
    pytest.param(["export", "--per-page", "5"], {}, None, 2, "per_page", id="per-page-low"),
    pytest.param(["export", "--per-page", "20000"], {}, None, 2, "per_page", id="per-page-high"),
    pytest.param(["export", "--sort-order", "up"], {}, None, 2, "--sort-order", id="sort-order"),
    pytest.param(["export", "--walk", "zig"], {}, None, 2, "--walk", id="walk"),
    pytest.param(["export", "--bogus"], {}, None, 2, "--bogus", id="unknown-flag"),
    pytest.param(["exprot"], {}, None, 2, "exprot", id="unknown-command"),
    pytest.param([], {}, None, 2, "command", id="no-command"),
    pytest.param(["export", "--filter", "status=1"], {}, None, 2, "filter", id="filter-syntax"),
    pytest.param(["export", "--filter", "meta.a[ne]=1"], {}, None, 2, "ne", id="filter-op"),
    pytest.param(
        ["export", "--filter", "meta.a[gt]=x"], {}, None, 2, "filter", id="filter-gt-text"
    ),
    pytest.param(
        ["export", "--filter", "meta.a[eq:boolean]=yes"], {}, None, 2, "filter", id="filter-bool"
    ),
    pytest.param(
        ["export", *[a for i in range(6) for a in ("--filter", f"meta.k{i}[eq]=1")]],
        {},
        None,
        2,
        "Too many metadata filters",
        id="six-filters",
    ),
    pytest.param(
        ["export", "--filter", "meta.a.b.c.d.e.f[eq]=1"], {}, None, 2, "filter", id="filter-depth"
    ),
    pytest.param(
        ["export", "--filter", "meta.a[in]=" + "|".join("abcdefghijk")],
        {},
        None,
        2,
        "filter",
        id="filter-in-11",
    ),
    pytest.param(["export", "--snapshot-date", "2026-13-01"], {}, None, 2, "date", id="date"),
    pytest.param(["export", "--snapshot-date", "yesterday"], {}, None, 2, "date", id="date-word"),
    pytest.param(["export", "--base-url", "api.example"], {}, None, 2, "base_url", id="base-url"),
    pytest.param(["export", "--format", "xlsx"], {}, None, 2, "xlsx", id="unknown-sink"),
    pytest.param(
        ["export"],
        {"CLOUDFLARE_API_TOKEN": None},
        None,
        2,
        "CLOUDFLARE_API_TOKEN",
        id="no-credentials",
    ),
    pytest.param(
        ["export"],
        {"CLOUDFLARE_API_TOKEN": None, "CLOUDFLARE_EMAIL": "a@b.c"},
        None,
        2,
        "CLOUDFLARE_API_KEY",
        id="email-without-key",
    ),
    *(
        pytest.param(
            ["export"],
            {**pair, var: f"tok-secret-1{char}part2"},
            None,
            2,
            f"{var}: contains a control character",
            id=f"{var.lower()}-{name}",
        )
        for var, pair in (
            ("CLOUDFLARE_API_TOKEN", {}),
            *((var, EMAIL_AND_KEY) for var in ("CLOUDFLARE_EMAIL", "CLOUDFLARE_API_KEY")),
        )
        for char, name in (("\n", "lf"), ("\r", "cr"))
    ),
    pytest.param(["export"], {"CLOUDFLARE_ACCOUNT_ID": None}, None, 2, "account", id="no-account"),
    pytest.param(
        ["export"], {"CLOUDFLARE_BASE_URL": "ftp://x"}, None, 2, "base_url", id="env-base-url"
    ),
    pytest.param(
        ["export", "--config", "/nonexistent.toml"], {}, None, 2, "--config", id="config-missing"
    ),
    pytest.param(["export"], {}, "[export\n", 2, "TOML", id="config-syntax"),
    pytest.param(
        ["fleet", "--accounts", "/nonexistent.toml"],
        {},
        None,
        2,
        "--accounts: no such file",
        id="accounts-missing",
    ),
    pytest.param(["export"], {}, "[export]\nouptut = 'x'\n", 2, "export.ouptut", id="config-key"),
    pytest.param(
        ["export"],
        {},
        "output = 'x'\n",
        2,
        "output: unknown top-level key; did you mean [export] output?",
        id="config-top-level-key",
    ),
    pytest.param(
        ["export"], {}, "walk = 3\n", 2, "walk: expected a [walk] table", id="config-not-a-table"
    ),
    pytest.param(
        ["export"], {}, "[request]\nper_page = '9'\n", 2, "request.per_page", id="config-type"
    ),
    pytest.param(["export"], {}, "[walk]\nmargin = 2.0\n", 2, "walk.margin", id="config-margin"),
    pytest.param(
        ["export"],
        {},
        "[normalize]\nschema_contract = 'x'\n",
        2,
        "schema_contract",
        id="config-contract",
    ),
    pytest.param(["export"], {}, "[export]\nformats = []\n", 2, "formats", id="config-formats"),
    pytest.param(["emulator", "--host", "0.0.0.0"], {}, None, 2, "loopback", id="emulator-host"),
    pytest.param(["emulator", "--port", "70000"], {}, None, 2, "--port", id="emulator-port-high"),
    pytest.param(["emulator", "--port=-1"], {}, None, 2, "--port", id="emulator-port-negative"),
    pytest.param(["demo", "--images", "0"], {}, None, 2, "--images", id="demo-images"),
    pytest.param(["inspect", "/nonexistent-dir"], {}, None, 2, "snapshot", id="inspect-missing"),
]


@pytest.mark.parametrize(("argv", "env", "config", "code", "text"), BAD_INPUTS)
def test_bad_input_one_line_and_exit_code(
    argv: list[str],
    env: dict[str, str | None],
    config: str | None,
    code: int,
    text: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each bad input: the documented exit code and one error line naming the problem."""
    for key in [k for k in os.environ if k.startswith("CLOUDFLARE_")]:
        monkeypatch.delenv(key)
    for key, value in {**BASE_ENV, **env}.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    if config is not None:
        (tmp_path / "c.toml").write_text(config)
        argv = [*argv, "--config", "c.toml"]
    try:
        result = main(argv)
    except SystemExit as exit_:
        result = exit_.code
    assert result == code
    line = one_line_error(capsys.readouterr().err)
    assert text in line
    assert "tok-secret-1" not in line


FLOAT_OPTIONS = [option for option in all_options() if option.kind is float]
NOT_FINITE = ["nan", "inf", "-inf"]


@pytest.mark.parametrize(
    ("option", "value", "where"),
    [
        pytest.param(option, value, where, id=f"{option.key}-{value}-{where}")
        for option in FLOAT_OPTIONS
        for value in NOT_FINITE
        for where in ("toml", *(("flag",) if option.flag else ()))
    ],
)
def test_every_float_option_must_be_finite(
    option: Option,
    value: str,
    where: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """nan, inf and -inf stop the run before any request, one line naming the key (a NaN
    `--lag` was a traceback; an infinite `walk.window_s` was accepted)."""
    for key in [k for k in os.environ if k.startswith("CLOUDFLARE_")]:
        monkeypatch.delenv(key)
    for key, text in BASE_ENV.items():
        monkeypatch.setenv(key, text)
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)
    argv = ["export", "--output", "o"]
    if option.section == "new_uploads":
        argv.append("--new-uploads")
    if where == "flag":
        argv.append(f"{option.flag}={value}")
    else:
        (tmp_path / "c.toml").write_text(f"[{option.section}]\n{option.name} = {value}\n")
        argv += ["--config", "c.toml"]
    try:
        result = main(argv)
    except SystemExit as exit_:
        result = exit_.code
    assert result == 2
    line = one_line_error(capsys.readouterr().err)
    assert f"{option.key}: must be a finite number" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "option", [option for option in FLOAT_OPTIONS if option.check is seconds], ids=str
)
def test_every_duration_is_bounded(option: Option) -> None:
    """A duration feeds a timer or a date: `--lag 1e12` was "date value out of range"."""
    assert option.validate(float(MAX_SECONDS)) == MAX_SECONDS
    with pytest.raises(ConfigError, match=f"{option.key}: .*at most {MAX_SECONDS}"):
        option.validate(MAX_SECONDS + 1)


def test_a_lag_beyond_the_bound_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--new-uploads", "--lag", "1e12", "--dry-run"]) == 2
    assert "new_uploads.lag_s: " in one_line_error(capsys.readouterr().err)


def test_emulator_on_a_busy_port_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A second emulator on the same port was an OSError traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["emulator", "--port", str(port), "--images", "10"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line


def test_bad_input_table_is_large_enough() -> None:
    """The issue asks for at least 30 bad inputs."""
    assert len(BAD_INPUTS) >= 30


class TestServerSideErrors:
    def test_wrong_token_is_exit_3(self, emu: EmulatorProcess, tmp_path: Path) -> None:
        """A token the API refuses: exit 3, one line that says which permission is needed."""
        env = emu.env(CLOUDFLARE_API_TOKEN="wrong-token-xyz")
        result = run_cli(["export", "--output", str(tmp_path / "o")], env)
        assert result.returncode == 3
        line = one_line_error(result.stderr)
        assert "Images Read" in line
        assert "wrong-token-xyz" not in result.stderr
        assert not (tmp_path / "o" / f"snapshot_date={dt.date.today()}").exists()

    def test_unknown_account_is_exit_3(self, emu: EmulatorProcess, tmp_path: Path) -> None:
        """An account the credentials cannot see (a well-formed id, 403): exit 3."""
        result = run_cli(
            ["export", "--output", str(tmp_path / "o"), "--account-id", "f" * 32], emu.env()
        )
        assert result.returncode == 3, result.stderr
        one_line_error(result.stderr)

    def test_malformed_account_is_exit_4(self, emu: EmulatorProcess, tmp_path: Path) -> None:
        """An account id the API cannot route (404 code 7003) is a request it rejects: exit
        4, one line saying which account id and what one looks like (and no count warning)."""
        result = run_cli(
            ["export", "--output", str(tmp_path / "o"), "--account-id", "ffff"], emu.env()
        )
        assert result.returncode == 4, result.stderr
        line = one_line_error(result.stderr)
        assert "account id 'ffff' not found or invalid" in line
        assert "perhaps your object identifier is invalid" in line
        assert "32 hex digits" in line and "CLOUDFLARE_ACCOUNT_ID" in line
        assert "WARNING" not in result.stderr

    @pytest.mark.parametrize(
        ("account", "problem"),
        [
            pytest.param("x" * 40, "40 characters", id="too-long"),
            pytest.param("0123456789abcdef/images", "holds '/'", id="slash"),
            pytest.param(DEMO_ID + "\n", "a space or control character", id="newline"),
        ],
    )
    def test_account_id_the_api_cannot_take_is_refused_first(
        self, emu: EmulatorProcess, tmp_path: Path, account: str, problem: str
    ) -> None:
        """An account id longer than the reference's 32 characters, or one that is no URL
        path segment, is refused before any request (the emulator would answer 404: exit
        4): exit 2, one line naming the key, flag and variable, never quoting the value."""
        out = tmp_path / "o"
        result = run_cli(["export", "--output", str(out)], emu.env(CLOUDFLARE_ACCOUNT_ID=account))
        assert result.returncode == 2, result.stderr
        line = one_line_error(result.stderr)
        assert problem in line and "export.account_id" in line
        assert "--account-id" in line and "CLOUDFLARE_ACCOUNT_ID" in line
        assert account.strip() not in line
        assert not out.exists()

    def test_unreachable_api_is_exit_4(self, tmp_path: Path) -> None:
        """Nothing listening: retries are bounded, then exit 4 with one line."""
        (tmp_path / "c.toml").write_text("[walk]\nmax_attempts = 2\ndeadline_s = 2\n")
        env = {**clean_env(), **BASE_ENV}
        args = ["export", "--config", str(tmp_path / "c.toml"), "--output", str(tmp_path / "o")]
        result = run_cli([*args, "--base-url", "http://127.0.0.1:9/client/v4"], env)
        assert result.returncode == 4, result.stderr
        one_line_error(result.stderr)

    def test_output_is_a_file_is_exit_5(self, emu: EmulatorProcess, tmp_path: Path) -> None:
        """An output path that is a regular file: exit 5, one line."""
        target = tmp_path / "file"
        target.write_text("not a directory")
        result = run_cli(["export", "--output", str(target)], emu.env())
        assert result.returncode == 5, result.stderr
        line = one_line_error(result.stderr)
        assert line.endswith(
            f"cannot create {target}/.staging: {target} is a file, not a directory"
        )
        assert target.read_text() == "not a directory"

    def test_output_where_no_file_can_be_made_is_exit_5(self, emu: EmulatorProcess) -> None:
        """An output under /proc (a file system that holds no new entries): exit 5, one line
        naming the directory it could not create and why, not "was it removed during the
        run?" about a lock file of the run's staging."""
        result = run_cli(["export", "--output", "/proc/cf-images-out/o"], emu.env())
        assert result.returncode == 5, result.stderr
        line = one_line_error(result.stderr)
        assert line.endswith(
            "store: cannot create /proc/cf-images-out: /proc cannot hold new files or directories"
        )


@pytest.mark.parametrize("option", [o for o in all_options() if o.flag], ids=lambda o: str(o.flag))
def test_each_flag_sets_only_its_key(option: Option) -> None:
    """An option's flag (declared in exporter/options.py) sets that key and no other."""
    assert option.flag is not None
    given = {int: "20", float: "1.5", tuple: "meta.a[eq]=1"}.get(option.kind, "x")
    given = option.choices[-1] if option.choices else given
    args = build_parser().parse_args(
        ["export", option.flag] if option.kind is bool else ["export", option.flag, given]
    )
    expected = {
        bool: True,
        int: 20,
        float: 1.5,
        tuple: [given],
    }.get(option.kind, given)
    overrides = overrides_from_args(args)
    assert overrides.pop(option.key) == expected
    assert set(overrides.values()) == {None}
