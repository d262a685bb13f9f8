"""Prometheus metrics of export runs, for alerting on stale snapshots.

One `RunMetrics` per account and run; `render` turns any number of them into the text format
(a fleet writes one file holding every account's series), `write_textfile` publishes that text
atomically for node_exporter's textfile collector, and `push` sends it to a Pushgateway.

Every series carries `account_id` (never a secret). After a failed run,
`cf_images_export_last_success_timestamp_seconds` keeps the time of the last success, read from
the latest published manifest, so an alert on "older than 26 hours" fires; `exit_code` shows
the failure. An account that never published reports 0 (1970): the same alert fires for it,
where a missing series would keep it silent. Counters describe the run that wrote the file
(`*_total` as Prometheus expects of counters); a series with no value (a store that could not
be read, no change set) is left out, not written as 0.
"""

from __future__ import annotations

import datetime as dt
import functools
import http.client
import logging
import os
import tempfile
import time
import urllib.error
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest, push_to_gateway
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import basic_auth_handler, default_handler

from exporter.api.redact import redact_text, redact_url, split_userinfo
from exporter.errors import ConfigError, SinkError, first_line

if TYPE_CHECKING:
    from exporter.config import ExportConfig
    from exporter.run.summary import RunSummary
    from exporter.stats import RunStats
    from exporter.store.layout import Layout

log = logging.getLogger("exporter.metrics")

PREFIX = "cf_images_export"
JOB = "cf_images_export"
CHANGE_KINDS = ("added", "removed", "changed")


@dataclass(frozen=True, kw_only=True)
class RunMetrics:
    """What one account's run reports; `None` means "not known" and is not exported."""

    account_id: str
    exit_code: int
    last_success_timestamp: float | None = None
    images: int | None = None
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    duration_seconds: float = 0.0
    changes: Mapping[str, int] = field(default_factory=dict)
    new_images: int | None = None  # `export --new-uploads`: images in this run's batch
    last_new_uploads_timestamp: float | None = None


class _RunCollector:
    """A prometheus_client collector that yields the families of a fixed list of runs."""

    def __init__(self, runs: Sequence[RunMetrics]) -> None:
        self._runs = runs

    def collect(self) -> Iterator[Metric]:
        runs = self._runs
        label = ["account_id"]

        def gauge(name: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=label)

        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=label)

        last = gauge("last_success_timestamp_seconds", "Unix time the last snapshot was published")
        images = gauge("images", "Images in the snapshot this run published")
        requests = counter("requests", "API requests this run sent")
        retries = counter("retries", "Requests this run retried")
        throttled = counter("throttled", "HTTP 429 replies this run received")
        duration = gauge("duration_seconds", "Wall time of this process's run")
        exit_code = gauge("exit_code", "The run's exit code (0: published)")
        changes = GaugeMetricFamily(
            f"{PREFIX}_changes",
            "Images added, removed or changed since the previous snapshot",
            labels=["account_id", "change"],
        )
        new_images = gauge("new_images", "Images in the batch of new uploads this run published")
        last_new = gauge(
            "last_new_uploads_timestamp_seconds",
            "Unix time of the last --new-uploads run that succeeded",
        )
        for run in runs:
            key = [run.account_id]
            if run.new_images is not None:
                new_images.add_metric(key, run.new_images)
            if run.last_new_uploads_timestamp is not None:
                last_new.add_metric(key, run.last_new_uploads_timestamp)
            if run.last_success_timestamp is not None:
                last.add_metric(key, run.last_success_timestamp)
            if run.images is not None:
                images.add_metric(key, run.images)
            requests.add_metric(key, run.requests)
            retries.add_metric(key, run.retries)
            throttled.add_metric(key, run.throttled)
            duration.add_metric(key, run.duration_seconds)
            exit_code.add_metric(key, run.exit_code)
            for kind in CHANGE_KINDS:
                if kind in run.changes:
                    changes.add_metric([run.account_id, kind], run.changes[kind])
        yield from (last, images, requests, retries, throttled, duration, changes, exit_code)
        yield from (new_images, last_new)


def registry(runs: Sequence[RunMetrics]) -> CollectorRegistry:
    """Return a registry holding exactly the series of `runs` (no process or GC series)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(_RunCollector(runs))
    return reg


def render(runs: Sequence[RunMetrics]) -> bytes:
    """Return the Prometheus text format of `runs`."""
    return generate_latest(registry(runs))


def write_textfile(path: str | Path, runs: Sequence[RunMetrics]) -> None:
    """Replace `path` with the metrics of `runs` in one rename, so a scrape never sees half.

    The temporary file lives beside the target (same file system) and does not end in `.prom`,
    so node_exporter's collector never reads it.
    """
    target = Path(path)
    data = render(runs)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise SinkError("metrics", f"cannot write {target}: {exc.strerror or exc}") from None


@dataclass(frozen=True, repr=False)
class Pushgateway:
    """A Pushgateway: its URL without userinfo, and the HTTP basic-auth user and password.

    Built by `resolve` from `metrics.pushgateway` (whose `user:password@` is the basic auth)
    and `metrics.pushgateway_password_env`; it is shown only as `shown` (password masked).
    """

    url: str
    shown: str
    username: str | None = None
    password: str | None = None

    @classmethod
    def resolve(cls, url: str, password_env: str | None, environ: Mapping[str, str]) -> Pushgateway:
        """Return the target of `url`; ConfigError when its credentials cannot be used.

        The password is given once: in the URL, or (so it need not sit in a crontab or a
        config file) in the environment variable `password_env` names, the user in the URL.
        """
        bare, user, password = split_userinfo(url)
        key = "metrics.pushgateway_password_env"
        if password_env:
            if password is not None:
                raise ConfigError(
                    key, f"{redact_url(url)!r} carries a password too; give it in one place"
                )
            if not user:
                raise ConfigError(key, "name the user in the Pushgateway URL: http://USER@host")
            password = environ.get(password_env, "")
            if not password:
                raise ConfigError(password_env, f"not set in the environment (named by {key})")
        elif user is not None and password is None:
            raise ConfigError(
                "metrics.pushgateway",
                f"{redact_url(url)!r} has a user but no password; write user:password@ "
                f"or set {key}",
            )
        return cls(bare, redact_url(url), user, password)

    def __repr__(self) -> str:
        return f"Pushgateway({self.shown!r})"

    def handler(self) -> Callable[..., Callable[[], None]]:
        """Return prometheus-client's request handler: basic auth when a user is set."""
        if self.username is None:
            return default_handler
        return functools.partial(basic_auth_handler, username=self.username, password=self.password)


def push(target: Pushgateway, runs: Sequence[RunMetrics], *, timeout_s: float = 10.0) -> None:
    """Send each account's series to a Pushgateway, grouped by `account_id`.

    One group per account, so the accounts of one fleet, or separate single-account exports,
    never replace each other's series.
    """
    for run in runs:
        try:
            push_to_gateway(
                target.url,
                job=JOB,
                registry=registry([run]),
                grouping_key={"account_id": run.account_id},
                timeout=timeout_s,
                handler=target.handler(),
            )
        # URLError/HTTPError (a refusal, 401 included) and connection errors are OSErrors;
        # a malformed host or port is a ValueError (http.client.InvalidURL).
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()  # it holds the reply's socket open
            reason = redact_text(first_line(exc))
            raise SinkError("pushgateway", f"cannot push to {target.shown}: {reason}") from None


def observe(
    config: ExportConfig,
    layout: Layout,
    exit_code: int,
    *,
    duration_s: float,
    summary: RunSummary | None,
    stats: RunStats,
) -> RunMetrics:
    """Return the metrics of one finished run (published: `summary` is export()'s).

    A run that published is its own last success; one that failed reports the finish time
    of the newest snapshot in its output, so a stale-snapshot alert keeps counting.
    """
    published = summary is not None and exit_code in (0, 9)
    if config.new_uploads:  # a batch: the snapshot's series stay those of the last snapshot
        return RunMetrics(
            account_id=config.account_id,
            exit_code=exit_code,
            last_success_timestamp=_last_success(config, layout),
            requests=stats.requests,
            retries=stats.retries,
            throttled=stats.throttled,
            duration_seconds=duration_s,
            new_images=summary.new_images if summary is not None else None,
            last_new_uploads_timestamp=time.time() if published else None,
        )
    return RunMetrics(
        account_id=config.account_id,
        exit_code=exit_code,
        last_success_timestamp=time.time() if published else _last_success(config, layout),
        images=summary.images if summary is not None else None,
        requests=stats.requests,
        retries=stats.retries,
        throttled=stats.throttled,
        duration_seconds=duration_s,
        changes=dict(summary.change_counts or {}) if summary is not None else {},
    )


def _last_success(config: ExportConfig, layout: Layout) -> float | None:
    """Return the finish time of the newest snapshot published under `layout`; 0 when none
    is, None when the store cannot be read."""
    from exporter.errors import ExporterError
    from exporter.snapshot.manifest import sealed_manifests
    from exporter.store import open_store

    try:
        store = open_store(config.output, s3_endpoint=config.s3_endpoint)
        newest = next(sealed_manifests(store, layout, newest_first=True), None)
    except ExporterError:
        return None
    if newest is None:
        return 0.0
    return dt.datetime.fromisoformat(newest.finished_at.replace("Z", "+00:00")).timestamp()


def report(
    runs: Sequence[RunMetrics], *, textfile: str | None, pushgateway: Pushgateway | None
) -> None:
    """Write and/or push `runs`, as the run's options ask; a failure is a warning, not raised.

    The snapshot is published by then: failing to report it must not turn into a retry of
    the whole export (nor change its exit code), and a missing series is what the
    stale-snapshot alert catches anyway.
    """
    try:
        if textfile:
            write_textfile(textfile, runs)
    except SinkError as exc:
        log.warning("%s", exc)
    try:
        if pushgateway is not None:
            push(pushgateway, runs)
    except SinkError as exc:
        log.warning("%s", exc)
