"""The one-line reason every library failure is reduced to before the CLI prints it."""

from __future__ import annotations

import pytest

from exporter.errors import first_line


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            OSError("Out of Memory Error: 60 MiB used\n\nPossible solutions:\n* more"),
            "Out of Memory Error: 60 MiB used",
        ),
        (ValueError("\n  leading blank line\nrest"), "leading blank line"),
        (KeyError(), "KeyError"),
    ],
    ids=["duckdb-hints", "leading-newline", "no-text"],
)
def test_first_line(error: BaseException, line: str) -> None:
    assert first_line(error) == line
