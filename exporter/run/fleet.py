"""`fleet`: many accounts in one run, each an isolated export under `OUT/account_id=<id>/`.

The accounts file is TOML, one `[[account]]` table per account:

    [[account]]
    id = "0123456789abcdef0123456789abcdef"
    token_env = "CF_TOKEN_TEAM_A"        # or email_env + key_env: the variables, never a secret
    per_page = 500                       # any config-file key, bare or as "section.key"

`parse_fleet` is pure: it resolves every account's ExportConfig (account entry > flags > env >
config file > default; the snapshot date fixed once for all) and refuses the whole fleet, one
line per bad entry, before any request. `run_fleet` runs the accounts, at most `workers` at
once in this process or each credential group as a task on a Dask cluster; an account's
failure is its own exit code in the outcome, never another account's problem.

Secrets stay out of task payloads: a Dask task carries the account's entry (variable names)
and re-resolves it with the worker's own environment, so a worker needs the package, the
credential variables and access to the output store; the Pushgateway URL, which may carry a
password, stays with the process that pushes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from exporter.api.auth import EMAIL_VAR, KEY_VAR, TOKEN_VAR, Credentials, read_secret
from exporter.api.pacing import Pacer
from exporter.api.pagination import check_account_id
from exporter.config import ExportConfig, parse_config, refuse_lag_without_batch
from exporter.errors import ChangesWithheldError, ConfigError, ExporterError, FleetConfigError
from exporter.observe.metrics import RunMetrics, observe
from exporter.observe.progress import ACCOUNT
from exporter.options import MetricsOptions, declared, override_file
from exporter.run.summary import WITHHELD, RunSummary, display_path
from exporter.stats import RunStats
from exporter.store.layout import Layout

if TYPE_CHECKING:  # aiohttp and pyarrow load only where accounts walk
    from exporter.api.client import ConnectionPool
    from exporter.run.writer import Shared

log = logging.getLogger("exporter.fleet")

CREDENTIAL_KEYS = ("token_env", "email_env", "key_env")
FIXED_KEYS = {"id", "account_id", *CREDENTIAL_KEYS}
NOT_PER_ACCOUNT = {"export.account_id", "snapshot_date", "export.snapshot_date"}
# One metrics file and one Pushgateway hold every account's series (DESIGN, "Fleets"): an
# entry's own would be ignored, or taken for the whole fleet's.
METRICS_KEYS = {"metrics", *(k for o in declared(MetricsOptions) for k in (o.key, o.name))}
FLEET_METRICS = (
    "set once for the whole fleet, not per account (one metrics file and one Pushgateway "
    "hold every account's series): give it on the command line or in --config"
)
_ACCOUNT_VARS = (TOKEN_VAR, EMAIL_VAR, KEY_VAR, "CLOUDFLARE_ACCOUNT_ID")


@dataclass(frozen=True)
class FleetRequest:
    """What every account shares: the config file, flags, environment and the date."""

    file_data: Mapping[str, Any]
    overrides: Mapping[str, Any]  # the command line's option values, by key
    snapshot_date: dt.date
    resume: bool = False
    accept_removals: bool = False
    new_uploads: bool = False  # each account publishes a batch of new uploads


@dataclass(frozen=True)
class FleetAccount:
    """One account of the fleet, resolved; `credential` groups accounts sharing a user."""

    account_id: str
    entry: Mapping[str, Any]
    config: ExportConfig = field(repr=False)
    layout: Layout
    credential: str  # a digest of the credential, never the credential


@dataclass(frozen=True)
class AccountOutcome:
    """How one account's export ended, and the metrics it reports."""

    account_id: str
    exit_code: int
    images: int | None
    duration_s: float
    message: str = ""
    metrics: RunMetrics | None = None


def parse_fleet(
    accounts_data: Mapping[str, Any], request: FleetRequest, environ: Mapping[str, str]
) -> list[FleetAccount]:
    """Return every account resolved, or raise one ConfigError listing each bad entry."""
    refuse_lag_without_batch(request.overrides, new_uploads=request.new_uploads)
    entries = accounts_data.get("account")
    unknown_tables = sorted(set(accounts_data) - {"account"})
    if unknown_tables:
        raise ConfigError("accounts", f"unknown table {unknown_tables[0]!r}; expected [[account]]")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("accounts", "no [[account]] tables")
    problems: list[str] = []
    accounts: list[FleetAccount] = []
    seen_ids: dict[str, int] = {}
    seen_outputs: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(entries, 1):
        raw_id = entry_id(entry) if isinstance(entry, Mapping) else None
        where = f"account {index}" + (f" ({raw_id})" if isinstance(raw_id, str) else "")
        if isinstance(raw_id, str) and raw_id in seen_ids:
            problems.append(f"{where}: duplicate of account {seen_ids[raw_id]}")
            continue
        if isinstance(raw_id, str):
            seen_ids[raw_id] = index
        try:
            account = resolve_account(entry, request, environ)
        except ConfigError as exc:
            problems.append(f"{where}: {exc}")
            continue
        target = (account.config.output.rstrip("/"), account.layout.prefix)
        if target in seen_outputs:
            problems.append(f"{where}: same output as account {seen_outputs[target]}")
            continue
        seen_outputs[target] = index
        accounts.append(account)
    if problems:
        raise FleetConfigError(problems)
    return accounts


def resolve_account(entry: Any, request: FleetRequest, environ: Mapping[str, str]) -> FleetAccount:
    """Return one account's export, resolved with its own credentials; ConfigError if bad."""
    if not isinstance(entry, Mapping):
        raise ConfigError("account", "expected a table")
    account_id = entry_id(entry)
    if not isinstance(account_id, str) or not account_id:
        raise ConfigError("id", "missing (the account id)")
    if "id" in entry and "account_id" in entry:
        raise ConfigError("account_id", "the same as id: give one of them")
    try:
        layout = Layout.for_account(check_account_id(account_id))
    except ValueError as exc:
        raise ConfigError("id", str(exc)) from None
    credentials = _credentials(entry, environ)
    settings = {k: v for k, v in entry.items() if k not in FIXED_KEYS}
    for key in settings:
        if key in NOT_PER_ACCOUNT:
            raise ConfigError(key, "set once for the whole fleet, not per account")
        if key in METRICS_KEYS:
            raise ConfigError(key, FLEET_METRICS)
    file_data = override_file(request.file_data, _flatten_sections(settings))
    account_env = {k: v for k, v in environ.items() if k not in _ACCOUNT_VARS}
    account_env.update(credentials)
    config = parse_config(
        file_data,
        account_env,
        {
            **{k: v for k, v in request.overrides.items() if not _set_by(k, settings)},
            "export.account_id": account_id,
            "export.snapshot_date": request.snapshot_date.isoformat(),
        },
        today=request.snapshot_date,
        resume=request.resume,
        accept_removals=request.accept_removals,
        new_uploads=request.new_uploads,
    )
    digest = hashlib.sha256("\0".join(sorted(credentials.values())).encode()).hexdigest()[:16]
    return FleetAccount(account_id, dict(entry), config, layout, digest)


def entry_id(entry: Mapping[str, Any]) -> Any:
    """Return an entry's account id: `id`, or `account_id` (the emulator's accounts file's
    name, so one file can serve both)."""
    return entry.get("id", entry.get("account_id"))


def _credentials(entry: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Return the account's CLOUDFLARE_* variables, read from the variables its entry names."""
    names: dict[str, str] = {}
    for key in CREDENTIAL_KEYS:
        if key in entry:
            name = entry[key]
            if not isinstance(name, str) or not name:
                raise ConfigError(key, "expected the name of an environment variable")
            names[key] = name
    if "token_env" in names:
        pairs = {TOKEN_VAR: names["token_env"]}
    elif "email_env" in names and "key_env" in names:
        pairs = {EMAIL_VAR: names["email_env"], KEY_VAR: names["key_env"]}
    elif "email_env" in names or "key_env" in names:
        missing = "key_env" if "email_env" in names else "email_env"
        raise ConfigError(missing, "missing: email_env and key_env go together (or token_env)")
    else:
        raise ConfigError("token_env", "missing (or email_env + key_env): the credential variable")
    values = {}
    for target, name in pairs.items():
        value = read_secret(environ, name)
        if not value:
            raise ConfigError(name, "not set in the environment (named by the accounts file)")
        values[target] = value
    Credentials.from_env(values)  # the same checks as a single export
    return values


def _flatten_sections(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Return settings with `[account.request]`-style tables as "request.key" entries."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            flat[key] = value
    return flat


def _set_by(key: str, settings: Mapping[str, Any]) -> bool:
    """Return True when the account entry sets option `key` (bare or dotted)."""
    section, _, name = key.partition(".")
    nested = settings.get(section)
    return key in settings or name in settings or (isinstance(nested, Mapping) and name in nested)


# -- running -------------------------------------------------------------------------------


ExportOne = Callable[[FleetAccount, "Shared", RunStats], Awaitable[RunSummary]]


async def export_account(account: FleetAccount, shared: Shared, stats: RunStats) -> RunSummary:
    """Export one account into its own level of the output (the default `ExportOne`)."""
    from exporter.run.new_uploads_run import run_export as export

    if account.config.resume and not account.config.new_uploads:
        done = await anyio.to_thread.run_sync(published_summary, account)
        if done is not None:
            log.info("%s is already published", done.snapshot)
            return done
    return await export(account.config, stats=stats, layout=account.layout, shared=shared)


def published_summary(account: FleetAccount) -> RunSummary | None:
    """Return a summary of the account's published snapshot of this request and date, if any.

    `--resume` does not redo an account that finished: its snapshot of D is published by the
    same request and no run of it is staged (a staged run may still owe its DuckDB load).
    """
    from exporter.run.plan import describe_request
    from exporter.snapshot.checkpoint import redact_request, request_fingerprint
    from exporter.snapshot.manifest import read_manifest
    from exporter.store import open_store
    from exporter.store.layout import run_key

    config, layout = account.config, account.layout
    date = config.snapshot_date.isoformat()
    store = open_store(config.output, s3_endpoint=config.s3_endpoint)
    manifest = read_manifest(store, layout.snapshot(date))
    request = describe_request(config)
    if manifest is None or manifest.request != redact_request(request):
        return None
    if store.exists(layout.run(run_key(request_fingerprint(request), date))):
        return None
    return RunSummary(
        snapshot=display_path(config.output, layout.snapshot(date)),
        images=int(manifest.counts["rows"]),
        already_published=True,
    )


async def run_accounts(
    accounts: Sequence[FleetAccount], *, workers: int, export_one: ExportOne = export_account
) -> list[AccountOutcome]:
    """Run every account, at most `workers` at once; return the outcomes in fleet order.

    Accounts sharing a credential share one pacer (Cloudflare's limit is per user), sized by
    the smallest share any of them configures; all of them share one pool of connections
    (`shared_connections`: a new connection's handshakes cost as much as a small account's
    walk). Each account's run gets both as its `Shared`.
    """
    from exporter.api.client import shared_connections  # aiohttp: only where accounts walk
    from exporter.run.writer import Shared

    pacers: dict[str, Pacer] = {}
    for account in accounts:
        walk = account.config.walk
        pacer = pacers.get(account.credential)
        if pacer is None or walk.quota / walk.window_s < pacer.quota / pacer.window_s:
            pacers[account.credential] = Pacer(walk.quota, walk.window_s, walk.margin)
    limiter = anyio.CapacityLimiter(workers)
    outcomes: dict[str, AccountOutcome] = {}

    async def one(account: FleetAccount, pool: ConnectionPool) -> None:
        ACCOUNT.set(account.account_id)  # this task's log lines name their account
        async with limiter:
            stats = RunStats()
            outcomes[account.account_id] = await run_account(
                account, stats, export_one(account, Shared(pacers[account.credential], pool), stats)
            )

    async with shared_connections(workers) as pool, anyio.create_task_group() as group:
        for account in accounts:
            group.start_soon(one, account, pool)
    return [outcomes[a.account_id] for a in accounts]


async def run_account(
    account: FleetAccount, stats: RunStats, work: Awaitable[RunSummary]
) -> AccountOutcome:
    """Await one account's export and turn how it ended into an outcome (never raise)."""
    began = time.monotonic()
    code, summary, message = 0, None, ""
    try:
        summary = await work
        message = summary.nothing_new() or ""
    except ChangesWithheldError as exc:  # published: the table shows it, the metrics count it
        code, summary, message = exc.exit_code, exc.summary, f"changes {WITHHELD}"
        log.error("%s", " ".join(str(exc).split()))
    except ExporterError as exc:
        code, message = exc.exit_code, " ".join(str(exc).split())
        log.error("%s", message)
    except Exception as exc:  # a bug in one account's run must not stop the others
        code, message = 1, f"unexpected error: {exc!r}"
        log.error("unexpected error\n%s", traceback.format_exc())
    duration = time.monotonic() - began
    metrics = await anyio.to_thread.run_sync(
        functools.partial(
            observe,
            account.config,
            account.layout,
            code,
            duration_s=duration,
            summary=summary,
            stats=stats,
        )
    )
    images = summary.images if summary is not None else None
    return AccountOutcome(account.account_id, code, images, duration, message, metrics)


# -- Dask ----------------------------------------------------------------------------------


def credential_groups(accounts: Sequence[FleetAccount]) -> list[list[FleetAccount]]:
    """Return the accounts grouped by credential: one Dask task each, so they share a pacer."""
    groups: dict[str, list[FleetAccount]] = {}
    for account in accounts:
        groups.setdefault(account.credential, []).append(account)
    return list(groups.values())


def export_group_task(
    entries: Sequence[Mapping[str, Any]], request: FleetRequest, workers: int
) -> list[AccountOutcome]:
    """A Dask task: resolve the entries with this worker's environment and export them.

    The payload holds variable names, never a secret; the state lives in the output store
    (checkpoints, manifests, run locks), so any worker can resume any account.
    """
    import os

    accounts = [resolve_account(entry, request, os.environ) for entry in entries]
    return anyio.run(_run_group, accounts, workers)


async def _run_group(accounts: list[FleetAccount], workers: int) -> list[AccountOutcome]:
    return await run_accounts(accounts, workers=workers)


PUSH_KEYS = frozenset({"metrics.pushgateway", "pushgateway"})


def worker_request(request: FleetRequest) -> FleetRequest:
    """Return `request` as a Dask task carries it: without the Pushgateway URL, whose
    `user:password@` is a secret and which only this process (the one that pushes) needs."""
    file_data = {
        name: {k: v for k, v in table.items() if k != "pushgateway"}
        if name == "metrics" and isinstance(table, Mapping)
        else table
        for name, table in request.file_data.items()
    }
    overrides = {k: v for k, v in request.overrides.items() if k not in PUSH_KEYS}
    return dataclasses.replace(request, file_data=file_data, overrides=overrides)


def worker_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Return an account's entry as a Dask task carries it (no Pushgateway URL either)."""
    return {
        k: {n: v for n, v in value.items() if n != "pushgateway"}
        if k == "metrics" and isinstance(value, Mapping)
        else value
        for k, value in entry.items()
        if k not in PUSH_KEYS
    }


def run_on_dask(
    accounts: Sequence[FleetAccount], request: FleetRequest, scheduler: str, workers: int
) -> list[AccountOutcome]:
    """Run each credential group as a task on a Dask cluster (`local`: start one here)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError(
            "--dask-scheduler", "needs the Dask extra: pip install 'cf-images-exporter[dask]'"
        ) from None
    groups = credential_groups(accounts)
    with contextlib.ExitStack() as stack:
        if scheduler == "local":
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=min(workers, len(groups)),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    # a free port: None still tries 8787 first (the emulator's port, too)
                    # and warns when it is taken
                    dashboard_address=":0",
                )
            )
            client = stack.enter_context(Client(cluster))
        else:
            try:
                client = stack.enter_context(Client(scheduler, timeout="30s"))
            except OSError as exc:
                raise ConfigError("--dask-scheduler", f"cannot reach {scheduler}: {exc}") from None
        payload = worker_request(request)
        futures = [
            client.submit(
                export_group_task,
                [worker_entry(a.entry) for a in group],
                payload,
                workers,
                pure=False,
            )
            for group in groups
        ]
        results: dict[str, AccountOutcome] = {}
        for group, future in zip(groups, futures, strict=True):
            try:
                outcomes = future.result()
            except Exception as exc:  # the task itself died (worker lost, bad environment)
                message = " ".join(str(exc).split()) or type(exc).__name__
                outcomes = [
                    AccountOutcome(a.account_id, 1, None, 0.0, f"task failed: {message}")
                    for a in group
                ]
            results.update((o.account_id, o) for o in outcomes)
    return [results[a.account_id] for a in accounts]
