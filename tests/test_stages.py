"""Each stage of `exporter` imports only the stages its row of docs/ARCHITECTURE.md names.

The table is read from ARCHITECTURE ("Stages and who may import whom"), so the page and the code
cannot drift apart: a new import across stages is either in the table (and the page says why)
or it fails here. Imports count as in `test_imports.py` (deferred ones too, `if TYPE_CHECKING:`
aside).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.test_imports import PACKAGE, Graph, find_cycle, import_graph

ARCHITECTURE = PACKAGE.parent / "docs" / "ARCHITECTURE.md"
CORE = "core"

Table = dict[str, set[str]]


def stage_of(module: str, package: Path = PACKAGE) -> str:
    """Return the stage of a dotted module: its sub-package, or `core` for the root's modules
    (errors, stats, tasks, `_version`, the root), or the module itself for `options`/`config`.
    `__main__` is the command line's."""
    parts = module.split(".")
    if len(parts) == 1:
        return CORE
    if parts[1] == "__main__":
        return "cli"
    if (package / parts[1]).is_dir() or parts[1] in ("options", "config"):
        return parts[1]
    return CORE


def _block_after(text: str, heading: str, first: str) -> list[str]:
    """Return the lines of the first fenced block after `heading` whose first line starts
    with `first`."""
    section = text.split(heading, 1)[1]
    for block in re.findall(r"```\n(.*?)```", section, flags=re.S):
        lines = block.splitlines()
        if lines and lines[0].startswith(first):
            return lines
    raise AssertionError(f"no block starting {first!r} after {heading!r}")


def read_table(text: str) -> Table:
    """Return stage -> the stages it may import."""
    heading = "## Stages and who may import whom"
    table: Table = {}
    for line in _block_after(text, heading, "stage ")[1:]:
        stage, *allowed = line.split()
        table[stage] = {s for s in allowed if s != "-"}
    return table


def violations(graph: Graph, table: Table) -> list[str]:
    """Return each import that crosses into a stage its importer's row does not name."""
    found = []
    for module, targets in sorted(graph.items()):
        stage = stage_of(module)
        for target in sorted(targets):
            other = stage_of(target)
            if other == stage:
                continue
            if other not in table.get(stage, set()):
                found.append(f"{module} ({stage}) imports {target} ({other})")
    return found


TABLE = read_table(ARCHITECTURE.read_text())


def test_every_stage_has_a_row() -> None:
    graph = import_graph()
    stages = {stage_of(m) for m in graph}
    assert stages == set(TABLE), "a stage without a row, or a row without a stage"


def test_each_stage_imports_only_the_stages_its_row_names() -> None:
    assert violations(import_graph(), TABLE) == []


def test_the_table_has_no_cycle() -> None:
    """The rows order the stages: none may reach back to itself through the others."""
    assert find_cycle({stage: allowed - {stage} for stage, allowed in TABLE.items()}) is None


@pytest.mark.parametrize(
    ("module", "stage"),
    [
        pytest.param("exporter", "core", id="root"),
        pytest.param("exporter.errors", "core", id="root-module"),
        pytest.param("exporter.__main__", "cli", id="main"),
        pytest.param("exporter.options", "options", id="options"),
        pytest.param("exporter.api.client", "api", id="package-module"),
        pytest.param("exporter.observe.report.svg", "observe", id="nested-package"),
        pytest.param("exporter.sinks", "sinks", id="package-root"),
    ],
)
def test_stage_of(module: str, stage: str) -> None:
    assert stage_of(module) == stage


def test_a_crossing_import_is_found() -> None:
    """The checker itself: an import against the table is named."""
    graph = {"exporter.api.client": {"exporter.run.pipeline", "exporter.errors"}}
    table = {"api": {CORE}, "run": {"api", CORE}, CORE: set()}
    assert violations(graph, table) == [
        "exporter.api.client (api) imports exporter.run.pipeline (run)"
    ]
