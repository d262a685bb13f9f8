"""What a person or a scheduler sees while an export runs: logs, a progress bar, a summary.

On a terminal a rich progress bar redraws from the shared RunStats; elsewhere a plain (or JSON)
log line reports progress every few seconds. Nothing here changes what the export does.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from exporter import handoff
from exporter.api.redact import redact_text
from exporter.stats import RunStats

if TYPE_CHECKING:  # a run's, built above this stage; printed here through to_dict()
    from exporter.run.summary import RunSummary

LOG = logging.getLogger("exporter")

# The fleet account whose run logs a line: set in each account's task, so every line of its
# export (pipeline, walker, changes; worker threads copy the context) names its account.
ACCOUNT: ContextVar[str | None] = ContextVar("account", default=None)


class AccountFilter(logging.Filter):
    """Stamp each record with the account of the task that logs it (None outside a fleet)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__["account_id"] = ACCOUNT.get()
        return True


class PlainFormatter(logging.Formatter):
    """`HH:MM:SS LEVEL message`, the message led by `account <id>: ` inside a fleet."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        account = getattr(record, "account_id", None)
        if account:
            record.message = f"account {account}: {record.message}"
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for schedulers that parse logs."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        account = getattr(record, "account_id", None)
        if account:
            data["account_id"] = account
        data.update(getattr(record, "fields", {}))
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class StderrHandler(logging.StreamHandler[TextIO]):
    """A handler writing to whatever `sys.stderr` is at the time of each record."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


class RedactingFormatter(logging.Formatter):
    """Another formatter's line with every URL in it redacted (`exporter.api.redact`)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(self.inner.format(record))


def setup_logging(log_format: str, verbosity: int) -> None:
    """Route the exporter's logs to stderr as plain or JSON lines; -q/-v move the level.

    Each line is redacted as a whole, so a URL in a library's message, an exception or a
    JSON line's fields never shows a password.
    """
    handler = StderrHandler()
    handler.addFilter(AccountFilter())
    inner = JsonFormatter() if log_format == "json" else PlainFormatter()
    handler.setFormatter(RedactingFormatter(inner))
    level = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG)
    root = logging.getLogger("exporter")
    root.handlers[:] = [handler]
    root.setLevel(level if verbosity >= -1 else logging.ERROR)


def progress_line(stats: RunStats, elapsed: float) -> str:
    """Return the one-line progress text shared by the bar's caption and the plain log."""
    total = stats.extra.get("api_count")
    done = f"{stats.images:,}/{total:,}" if isinstance(total, int) else f"{stats.images:,}"
    rate = stats.images / elapsed if elapsed > 0 else 0.0
    text = (
        f"{done} images, {stats.pages:,} pages, {rate:,.0f} images/s, "
        f"{stats.retries} retries, {stats.throttled} 429s"
    )
    return f"{text}, waiting: {stats.current_wait}" if stats.current_wait else text


def walking(stats: RunStats) -> bool:
    """Return whether the walk has begun (a request sent, or one waiting for the quota).

    Before that the run opens its store, takes its lock and reads its checkpoint: lines of
    "0 images" then say nothing, and would stand above a store's or lock's one-line error.
    """
    return stats.requests > 0 or bool(stats.current_wait)


async def report_progress(stats: RunStats, *, interactive: bool, interval_s: float = 5.0) -> None:
    """Show progress until cancelled: a rich bar on a terminal, else a log line per interval."""
    started = time.monotonic()
    if not interactive:
        while True:
            await anyio.sleep(interval_s)
            if walking(stats):
                LOG.info("progress: %s", progress_line(stats, time.monotonic() - started))
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with (
        Progress(
            TextColumn("[bold]exporting"),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            transient=True,
            console=Console(stderr=True),
        ) as bar,
        handoff.before_exec(bar.stop),  # the cursor is shown again before an exec
    ):
        task = bar.add_task("", total=None)
        while True:
            total = stats.extra.get("api_count")
            bar.update(
                task,
                completed=stats.images,
                total=total if isinstance(total, int) and total > 0 else None,
                description=progress_line(stats, time.monotonic() - started),
            )
            await anyio.sleep(0.2)


def summary_rows(fields: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Return the final summary (`RunSummary.to_dict()`) as (label, value) rows, in a fixed
    order: the labels are words for people, the dict's keys the names for machines."""
    labels = [
        ("snapshot", "snapshot"),
        ("batch", "batch"),
        ("base_snapshot", "after snapshot"),
        ("watermark", "watermark"),
        ("lag_s", "lag (s)"),
        ("images", "images"),
        ("files", "files"),
        ("bytes", "bytes"),
        ("duration_s", "duration (s)"),
        ("since_start_s", "since first start (s)"),
        ("requests", "requests"),
        ("retries", "retries"),
        ("throttled", "429s"),
        ("drift", "schema drift"),
        ("changes", "changes"),
        ("warnings", "warnings"),
    ]
    rows = []
    for key, label in labels:
        if key in fields:
            value = fields[key]
            text = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
            rows.append((label, redact_text(str(text))))
    return rows


def print_summary(summary: RunSummary, *, log_format: str, interactive: bool) -> None:
    """Print the end-of-run summary: a table on a terminal, one log record otherwise."""
    fields = summary.to_dict()  # what users see, whichever the form
    if log_format == "json":
        LOG.info("summary", extra={"fields": {"summary": fields}})
        return
    if interactive:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="export summary", show_header=False)
        for label, value in summary_rows(fields):
            table.add_row(label, value)
        Console(stderr=True).print(table)
        return
    text = "; ".join(f"{label}: {value}" for label, value in summary_rows(fields))
    LOG.info("summary: %s", text)


def print_fleet_table(outcomes: Sequence[Any], *, log_format: str, interactive: bool) -> None:
    """Print one row per account of a fleet: images, duration, exit code and why it failed."""
    results = [
        redact_text(o.message) or ("published" if o.exit_code == 0 else "") for o in outcomes
    ]
    rows = [
        (
            o.account_id,
            "-" if o.images is None else f"{o.images:,}",
            f"{o.duration_s:.1f}",
            str(o.exit_code),
            result,
        )
        for o, result in zip(outcomes, results, strict=True)
    ]
    if log_format == "json":
        for o, result in zip(outcomes, results, strict=True):
            fields = {
                "account_id": o.account_id,
                "images": o.images,
                "duration_s": round(o.duration_s, 2),
                "exit_code": o.exit_code,
                "message": result,
            }
            LOG.info("account", extra={"fields": fields})
        return
    if interactive:
        from rich.console import Console
        from rich.table import Table

        # An account id is what users grep for: never cut or wrapped, whatever the width; the
        # result folds (a URL in it is kept whole across lines) and the figures shrink instead.
        table = Table(title="fleet summary")
        widest = max((len(row[0]) for row in rows), default=0)
        table.add_column("account", no_wrap=True, min_width=widest)
        for header in ("images", "duration (s)", "exit"):
            table.add_column(header)
        table.add_column("result", overflow="fold")
        for row in rows:
            table.add_row(*row)
        Console(stderr=True).print(table)
        return
    for account, images, duration, code, result in rows:
        LOG.info(
            "account %s: images %s, %s s, exit %s%s",
            account,
            images,
            duration,
            code,
            f", {result}" if result else "",
        )
