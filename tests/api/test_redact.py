"""The one rule for showing a URL (exporter/api/redact.py), with literal strings."""

from __future__ import annotations

import logging

import pytest

from exporter.api.redact import has_userinfo, redact_text, redact_url, split_userinfo
from exporter.cli.commands import report_error
from exporter.errors import SinkError
from exporter.observe.progress import setup_logging


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://ak:sk@minio:9000", "http://ak:***@minio:9000"),
        ("https://u:p%40ss@gw.example/x/", "https://u:***@gw.example/x/"),
        ("https://ghp_token@host/path", "https://***@host/path"),  # a bare userinfo: a token
        ("ak:sk@minio:9000", "ak:***@minio:9000"),  # host:port without a scheme
        ("http://u:pa/ss@host/p", "http://u:***@host/p"),  # a raw "/" in the password
        ("http://u:p#w?x@host:9091", "http://u:***@host:9091"),  # "#" and "?" too
        ("http://u:p@ss@host", "http://u:***@host"),  # and "@"
        ("https://gw/?token=abc&job=x", "https://gw/?token=***&job=x"),
        (
            "https://b.s3/k?X-Amz-Credential=AK%2F1&X-Amz-Date=1&X-Amz-Signature=f0&sig=2#top",
            "https://b.s3/k?X-Amz-Credential=***&X-Amz-Date=1&X-Amz-Signature=***&sig=***#top",
        ),
        (
            "https://h/?api_key=1&client_secret=2&password=3&access_token=4&Auth=5",
            "https://h/?api_key=***&client_secret=***&password=***&access_token=***&Auth=***",
        ),
        # a List V2 filter on a meta field named like a secret is not a secret parameter
        (
            "https://api/v2?meta.key%5Beq%5D=1&per_page=1000",
            "https://api/v2?meta.key%5Beq%5D=1&per_page=1000",
        ),
        ("https://api.cloudflare.com/client/v4", "https://api.cloudflare.com/client/v4"),
        ("/data/backups@2026/out", "/data/backups@2026/out"),  # a local path is left alone
        ("s3://bucket/prefix", "s3://bucket/prefix"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert has_userinfo(url) == ("***@" in shown)


def test_split_userinfo_decodes_and_leaves_the_host() -> None:
    assert split_userinfo("http://m:p%40ss%3A1@gw:9091/") == ("http://gw:9091/", "m", "p@ss:1")
    assert split_userinfo("m:pw@gw:9091") == ("gw:9091", "m", "pw")
    assert split_userinfo("http://m@gw") == ("http://gw", "m", None)
    assert split_userinfo("http://m:@gw") == ("http://gw", "m", "")
    assert split_userinfo("http://gw") == ("http://gw", None, None)


def test_redact_text_masks_every_url_in_a_line() -> None:
    text = "cannot push to 'http://u:pw@h:1/x': refused; see https://x/?sig=2, or ak:sk@h"
    assert redact_text(text) == (
        "cannot push to 'http://u:***@h:1/x': refused; see https://x/?sig=***, or ak:sk@h"
    )


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_every_log_line_is_redacted(log_format: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A URL in any message (a library's text, an exception) is masked in the log line."""
    setup_logging(log_format, 1)
    log = logging.getLogger("exporter.test")
    log.warning("store said: %s", "endpoint http://ak:hunter2@minio:9000 refused")
    try:
        raise OSError("connect to https://u:hunter2@gw failed")
    except OSError:
        log.exception("failed")
    err = capsys.readouterr().err
    assert "hunter2" not in err and "ak:***@minio:9000" in err and "u:***@gw" in err


def test_every_error_line_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    code = report_error(SinkError("store", "cannot open https://u:hunter2@minio:9000/b"))
    assert code == 5
    assert capsys.readouterr().err == (
        "cf-images-export: error: store: cannot open https://u:***@minio:9000/b\n"
    )
