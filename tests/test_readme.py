"""Every command the README shows is run: `sh` blocks as a user types them, `sql` in DuckDB.

Blocks tagged `text` or `yaml` are synopses and third-party snippets (cron, Kubernetes,
warehouses) that need services this project cannot reach; `make demo` is exercised through
`cf-images-export demo`, and `make test` is what runs this file.
"""

from __future__ import annotations

import re
import shlex
import urllib.request
from pathlib import Path

import duckdb
import orjson
import pytest

from exporter.cli.commands import build_parser
from exporter.config import load_toml
from exporter.options import BUILTIN_FORMATS
from tests.helpers import ROOT, EmulatorProcess, emulator_process, run_cli

README = (ROOT / "README.md").read_text()
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def blocks(language: str) -> list[str]:
    return [body for tag, body in BLOCK.findall(README) if tag == language]


def shell_commands() -> list[str]:
    """Return the README's shell commands, comments stripped, `export VAR=` lines dropped."""
    commands = []
    for body in blocks("sh"):
        for line in body.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith(("export ", "#")):
                commands.append(line)
    return commands


def add_uploads(emu: EmulatorProcess, count: int) -> None:
    """Upload `count` images to the emulator now (its test aid, not an API route)."""
    root = emu.base_url.removesuffix("/client/v4")
    url = f"{root}/_emulator/accounts/{emu.account_id}/uploads?count={count}"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST")) as reply:
        assert reply.status == 200


def test_readme_shows_the_two_commands() -> None:
    """The README promises `make demo` and `make test`."""
    assert "make demo" in README and "make test" in README


def test_every_sh_and_sql_block_runs(tmp_path: Path) -> None:
    """Each `sh` command exits 0 against the emulator; each `sql` query runs on its output."""
    commands = shell_commands()
    assert len(commands) >= 4
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    with emulator_process(images=400, seed=3) as emu:
        for command in commands:
            argv = shlex.split(command)
            assert argv[0] == "cf-images-export", command
            if "--new-uploads" in argv:  # uploads since the snapshot, so the batch has rows
                add_uploads(emu, count=5)
            result = run_cli(argv[1:], emu.env(), cwd=tmp_path)
            assert result.returncode == 0, f"{command}: {result.stderr}"
    queries = [q.strip() for body in blocks("sql") for q in body.split(";") if q.strip()]
    assert queries
    with duckdb.connect() as con:
        con.execute(f"SET file_search_path = '{tmp_path}'")
        for query in queries:
            assert con.execute(query).fetchall(), query


def test_demo_command_prints_query_results(tmp_path: Path) -> None:
    """`cf-images-export demo` (what `make demo` runs) exports and prints DuckDB tables."""
    result = run_cli(["demo", "--images", "3000", "--output", "demo"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    titles = ("images per meta.status", "images per creator", "uploads per month")
    titles += ("what changed since the previous night", "the fields that changed")
    titles += ("new uploads since the latest snapshot",)
    for title in titles:
        assert title in result.stdout
    assert any((tmp_path / "demo").glob("snapshot_date=*/_SUCCESS"))
    assert "3,000 images" in result.stderr or "images: 3,000" in result.stderr
    page = tmp_path / "demo" / "report.html"
    assert f"the catalog as a page: {Path('demo') / 'report.html'}" in result.stdout
    assert page.stat().st_size > 0


@pytest.mark.parametrize(
    "target", ["install", "lint", "test", "emulator", "demo", "bench", "clean"]
)
def test_makefile_targets_have_help(target: str) -> None:
    """Each documented make target exists with a `## help` line."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^{target}:.*## \S", makefile, re.MULTILINE)


def test_cross_night_query_sees_the_columns_a_later_night_added(tmp_path: Path) -> None:
    """Night 2 adds meta columns: a plain glob over both nights hides them (the README says
    so), the README's `union_by_name` query and the duckdb sink's `images` table show them."""
    (tmp_path / "night1.toml").write_text('[normalize]\ninclude = ["status"]\n')
    with emulator_process(images=400, seed=3) as emu:
        for date, config in (("2026-11-27", ["--config", "night1.toml"]), ("2026-11-28", [])):
            args = ["export", *config, "--output", "out", "--snapshot-date", date]
            args += ["--format", "parquet", "--format", "duckdb"]
            result = run_cli(args, emu.env(), cwd=tmp_path)
            assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    first, schema = (column_names(out / f"snapshot_date={d}") for d in ("2026-11-27", "2026-11-28"))
    added = [name for name in schema if name not in first]
    assert added, "night 2 must add columns for this test to mean anything"
    (query,) = [
        q for body in blocks("sql") for q in body.split(";") if "count(COLUMNS('^meta__'))" in q
    ]
    with duckdb.connect() as con:
        con.execute(f"SET file_search_path = '{tmp_path}'")
        plain = con.execute("DESCRIBE FROM read_parquet('out/snapshot_date=*/*.parquet')")
        assert not {str(row[0]) for row in plain.fetchall()} >= set(added)
        result = con.execute(query)
        names = [d[0] for d in result.description]
        rows = {str(row[0]): dict(zip(names, row, strict=True)) for row in result.fetchall()}
    assert names == ["snapshot_date", "images", *(n for n in schema if n.startswith("meta__"))]
    assert [rows[d]["images"] for d in ("2026-11-27", "2026-11-28")] == [400, 400]
    assert all(rows["2026-11-27"][name] == 0 for name in added)
    assert any(rows["2026-11-28"][name] > 0 for name in added)
    with duckdb.connect(str(out / "images.duckdb"), read_only=True) as con:
        table = {str(row[0]) for row in con.execute("DESCRIBE images").fetchall()}
    assert table >= set(schema)


def column_names(snapshot: Path) -> list[str]:
    """Return the columns a snapshot's manifest lists, in order."""
    manifest = orjson.loads((snapshot / "_manifest.json").read_bytes())
    return [str(column["name"]) for column in manifest["schema"]]


def synopsis() -> dict[str, str]:
    """Return the README's synopsis block, command by command."""
    (block,) = [b for b in blocks("text") if b.startswith("cf-images-export export   [")]
    commands: dict[str, str] = {}
    for line in block.splitlines():
        if line.startswith("cf-images-export "):
            command = line.split()[1]
        commands[command] = commands.get(command, "") + line + "\n"
    return commands


def parser_flags(command: str) -> set[str]:
    """Return the flags of one command as the synopsis writes them (no -h; -q, -v short)."""
    parsers = build_parser(command)._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    return {
        flag
        for action in parsers[command]._actions
        for flag in action.option_strings
        if flag not in ("-h", "--help", "--quiet", "--verbose")
    }


FLAG = re.compile(r"(?<![\w-])(--[a-z0-9-]+|-[qv])\b")


def test_synopsis_names_every_command_and_flag() -> None:
    """The README's synopsis lists every command; every flag of export, demo and inspect (and
    fleet's own); only flags that exist; and every built-in format."""
    shown = synopsis()
    parsers = build_parser("emulator")._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(shown) == set(parsers)
    flags = {command: set(FLAG.findall(text)) for command, text in shown.items()}
    for command in ("export", "demo", "inspect"):
        assert flags[command] == parser_flags(command), command
    assert flags["fleet"] >= parser_flags("fleet") - parser_flags("export")
    assert flags["fleet"] <= parser_flags("fleet") | {"--account-id", "--dry-run"}
    assert flags["emulator"] <= parser_flags("emulator")
    assert all(name in shown["export"] for name in BUILTIN_FORMATS)


def test_make_help_list_names_every_documented_target() -> None:
    """The README's list of make targets is the Makefile's targets with a `## help` line."""
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z]+):.*## \S", makefile, re.MULTILINE)) - {"help"}
    sentence = re.search(r"`make help` lists every target \(([^)]*)\)", README)
    assert sentence is not None
    assert set(re.findall(r"`([a-z]+)`", sentence.group(1))) == targets


def test_nightly_config_names_every_builtin_format() -> None:
    """configs/nightly.toml, the reference, names every built-in format beside `formats`."""
    (line,) = [
        line
        for line in (ROOT / "configs" / "nightly.toml").read_text().splitlines()
        if line.startswith("formats =")
    ]
    assert all(f'"{name}"' in line for name in BUILTIN_FORMATS), line


def test_meta_column_naming_example_is_what_the_normalizer_does() -> None:
    """The Schema section's naming examples, each key as the README shows it."""
    from exporter.options import NormalizeOptions
    from exporter.transform.normalize import Normalizer

    normalizer = Normalizer("a", NormalizeOptions())
    metas = [{"a": {"b": 2}}, {"a.b": 1}, {"a-b": 1}, {"Status": "x"}, {"status": "y"}]
    normalizer.normalize([{"id": str(i), "meta": meta} for i, meta in enumerate(metas)])
    names = [n for n in normalizer.final_schema().names if n.startswith("meta__")]
    assert names == ["meta__a__b", "meta__a_b", "meta__a_b__2", "meta__status", "meta__status__2"]
    for name in names:
        assert f"`{name}`" in README, name


def test_every_example_output_directory_is_ignored_by_git() -> None:
    """A user following the README or a shipped config must not see its output as untracked
    files (`out/`, `out-filtered/` and `out-active/` were not ignored)."""
    ignored = {line.strip("/") for line in (ROOT / ".gitignore").read_text().splitlines()}
    relative = re.compile(r"[a-z][a-z0-9-]*")
    outputs = set(re.findall(r"--output ([a-z][a-z0-9-]*)(?:\s|$)", README))
    for config in (ROOT / "configs").glob("*.toml"):
        output = load_toml(config).get("export", {}).get("output")
        if isinstance(output, str) and relative.fullmatch(output):
            outputs.add(output)
    assert {"out", "out-filtered", "out-active"} <= outputs
    assert outputs <= ignored, sorted(outputs - ignored)
