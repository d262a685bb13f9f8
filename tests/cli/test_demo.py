"""The demo's DuckDB queries: meta keys shown readably and quoted safely, whatever they hold."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from exporter.cli.demo import demo_queries, display_path, render_table
from tests.helpers import run_cli


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        pytest.param(["region", "name"], "region.name", id="plain"),
        pytest.param([""], '[""]', id="empty-key"),
        pytest.param(["a.b"], '["a.b"]', id="dotted-key"),
    ],
)
def test_display_path(path: list[str], shown: str) -> None:
    """A path reads as a.b unless a key is empty or holds a dot (then JSON, unambiguous)."""
    assert display_path(path) == shown


def test_queries_quote_keys_with_quotes() -> None:
    """A key holding a single quote stays inside its SQL string literal."""
    schema = [{"name": "meta__it_s", "type": "string", "path": ["it's"]}]
    (_, sql) = next(q for q in demo_queries("x/*.parquet", schema) if "meta keys" in q[0])
    assert "'it''s'" in sql


def test_render_table_aligns_and_shows_null() -> None:
    """Columns are padded to the widest cell; None prints as NULL."""
    assert render_table(["k", "n"], [("ab", 1), (None, 22)]).splitlines() == [
        "k     n ",
        "----  --",
        "ab    1 ",
        "NULL  22",
    ]


def test_each_night_s_headline_is_what_that_night_holds(tmp_path: Path) -> None:
    """The demo's headline of each night names the images that night serves, as its
    snapshot's manifest counts them (night 1 has more than `--images`: uploads)."""
    result = run_cli(["demo", "--images", "1000", "--output", "demo"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    headlines = re.findall(r"night (\d): a ([\d,]+)-image emulated catalog", result.stderr)
    manifests = sorted((tmp_path / "demo").glob("snapshot_date=*/_manifest.json"))
    rows = [orjson.loads(m.read_bytes())["counts"]["rows"] for m in manifests]
    assert [(int(n), int(count.replace(",", ""))) for n, count in headlines] == list(
        enumerate(rows)
    )
    assert rows[0] == 1000 != rows[1]
