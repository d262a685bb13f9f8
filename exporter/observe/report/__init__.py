"""`report`: one self-contained HTML page of what OUT holds, for one account or a fleet.

    queries.py   the figures: manifests as they are, DuckDB over the latest snapshot's files
    render.py    figures -> HTML (inline CSS, no script)
    svg.py       the charts, inline SVG with a title and a text alternative each

The page is written atomically through the store (`OUT/report.html` by default, on a bucket
too). An OUT that exists but holds no snapshot yet gets a page that says so (exit 0: a report
scheduled before the first night is not an error); a local OUT that does not exist is a usage
error.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import tempfile
from pathlib import Path

from exporter.errors import ConfigError
from exporter.observe.report.queries import (
    Report,
    ReportSettings,
    account_figures,
    account_layouts_of,
)
from exporter.observe.report.render import render
from exporter.store import Store, open_store

REPORT_NAME = "report.html"


def collect(store: Store, out: str, settings: ReportSettings | None = None) -> Report:
    """Return the figures of every account under the store's root."""
    settings = settings or ReportSettings()
    layouts, fleet = account_layouts_of(store)
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with tempfile.TemporaryDirectory(prefix="cf-report-") as scratch:
        accounts = [account_figures(store, layout, Path(scratch), settings) for layout in layouts]
    return Report(out=out, generated_at=now, accounts=accounts, fleet=fleet)


def write_report(
    out: str, output: str | None = None, *, s3_endpoint: str | None = None
) -> tuple[str, Report]:
    """Write the page of OUT to `output` (default `OUT/report.html`); return where, and what."""
    if "://" not in out and not Path(out).expanduser().is_dir():
        raise ConfigError("", f"no such output directory: {out}")
    store = open_store(out, s3_endpoint=s3_endpoint)
    report = collect(store, out)
    page = render(report).encode()
    if output is None:
        store.write_atomic(REPORT_NAME, page)
        return posixpath.join(out.rstrip("/"), REPORT_NAME), report
    parent, name = posixpath.split(output)
    if not name:
        raise ConfigError("--output", f"names a directory, not a file: {output}")
    target = open_store(parent or ".", s3_endpoint=s3_endpoint)
    target.write_atomic(name, page)
    return output, report


__all__ = ["REPORT_NAME", "collect", "write_report"]
