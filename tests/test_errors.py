"""The one-line reason every library failure is reduced to before the CLI prints it."""

from __future__ import annotations

import pytest

from exporter.errors import ResponseError, first_line


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


@pytest.mark.parametrize(
    ("code", "message", "line"),
    [
        pytest.param(
            7003,
            "code 7003: Could not route",
            "API replied 404: code 7003: Could not route",
            id="quoted",
        ),
        pytest.param(
            7003, "no error details", "API replied 404 code 7003: no error details", id="unquoted"
        ),
        pytest.param(None, "Not Found", "API replied 404: Not Found", id="no-code"),
    ],
)
def test_a_response_error_says_the_api_code_once(code: int | None, message: str, line: str) -> None:
    """The API's code appears once, whether or not the quoted errors carry it (a new user saw
    "API replied 404 code 7003: code 7003: Could not route")."""
    assert str(ResponseError("u", 404, code, message)).endswith(line)
