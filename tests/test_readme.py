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
import pytest

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


@pytest.mark.parametrize(
    "target", ["install", "lint", "test", "emulator", "demo", "bench", "clean"]
)
def test_makefile_targets_have_help(target: str) -> None:
    """Each documented make target exists with a `## help` line."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(rf"^{target}:.*## \S", makefile, re.MULTILINE)
