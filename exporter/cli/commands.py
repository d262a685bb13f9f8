"""argv -> config -> run -> exit code. The only place that turns ExporterError into a line.

Commands: export, fleet, emulator, demo, inspect, report. Every user error is one line on
stderr and the exit code its class carries (errors.py); anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import itertools
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import anyio

from exporter._version import __version__
from exporter.errors import (
    ChangesWithheldError,
    ConfigError,
    ExporterError,
    FleetFailedError,
    IntegrityError,
    Interrupted,
    UnfinishedRun,
)
from exporter.stats import RunStats
from exporter.tasks import FirstErrorGroup

if TYPE_CHECKING:
    from exporter.observe.metrics import Pushgateway
    from exporter.options import Option
    from exporter.run.summary import RunSummary
    from exporter.snapshot.manifest import Manifest

PROG = "cf-images-export"
FLEET_FIXED = frozenset({"export.account_id"})  # the accounts file names each account

EXPORT_EXAMPLES = """\
examples:
  # nightly snapshot of the whole catalog to Parquet (token in the environment)
  export CLOUDFLARE_API_TOKEN=...  CLOUDFLARE_ACCOUNT_ID=...
  cf-images-export export --output /data/cf-images --resume

  # a config file's export (gzip NDJSON of active images), written elsewhere; a --filter
  # flag would replace the file's filters, not add to them
  cf-images-export export --config configs/filtered-ndjson.toml --output /data/active

  # show the resolved plan and the first request, send nothing
  cf-images-export export --config configs/nightly.toml --dry-run

  # every 15 minutes: only the images uploaded since the latest snapshot (a batch)
  cf-images-export export --output /data/cf-images --new-uploads --lag 600
"""

EMULATOR_EXAMPLES = """\
examples:
  cf-images-export emulator --port 8787 --images 100000
  cf-images-export emulator --rate-quota 60 --rate-window 10 --fault-rate 0.1
"""

DEMO_EXAMPLES = """\
examples:
  cf-images-export demo                       # 50,000 images into ./demo-output
  cf-images-export demo --images 5000 --output /tmp/demo
"""

FLEET_EXAMPLES = """\
examples:
  # every account of accounts.toml, 4 at once, one Hive-partitioned tree
  cf-images-export fleet --accounts accounts.toml --output /data/cf-images --workers 4 --resume

  # the same as tasks on a Dask cluster (or `local`: a local cluster of worker processes)
  cf-images-export fleet --accounts accounts.toml --output s3://bucket/cf-images \\
      --dask-scheduler tcp://scheduler:8786 --metrics-textfile /var/lib/node_exporter/cf.prom
"""

INSPECT_EXAMPLES = """\
examples:
  cf-images-export inspect demo-output                          # every snapshot under OUT
  cf-images-export inspect demo-output/snapshot_date=2026-11-27 # one snapshot
"""

REPORT_EXAMPLES = """\
examples:
  cf-images-export report demo-output              # writes demo-output/report.html
  cf-images-export report s3://bucket/cf-images --output /tmp/catalog.html
"""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit 2 (a JSON record when the
    command line asks for `--log-format json`: `main` sets `json_errors` before parsing)."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        line = f"{self.prog}: error: {message} (see --help)"
        if OneLineParser.json_errors:
            record = {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "level": "error",
                "logger": "exporter.cli",
                "message": line,
                "exit_code": 2,
            }
            line = json.dumps(record, ensure_ascii=False)
        self.exit(2, line + "\n")


def _wants_json(argv: Sequence[str]) -> bool:
    """Return whether `argv` asks for JSON log lines (read before it is parsed)."""
    return "--log-format=json" in argv or ("--log-format", "json") in itertools.pairwise(argv)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Return the parser of every command and flag.

    Given the `command` about to run, the emulator's flags are left out unless it is
    `emulator`: they live in the emulator package, whose import (its aiohttp server) would
    otherwise delay every export's first request (docs/PERFORMANCE.md).
    """
    parser = OneLineParser(prog=PROG, description="Snapshot a Cloudflare Images catalog.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    export = _command(commands, "export", "export one snapshot", EXPORT_EXAMPLES)
    _add_export_flags(export)
    _add_feedback_flags(export)

    fleet = _command(commands, "fleet", "export many accounts in one run", FLEET_EXAMPLES)
    fleet.add_argument(
        "--accounts", metavar="FILE", required=True, help="TOML file of [[account]] tables"
    )
    fleet.add_argument(
        "--workers", type=int, default=4, help="accounts exported at once in this process (4)"
    )
    fleet.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="run each account as a task on this Dask scheduler ('local': start a local cluster)",
    )
    _add_export_flags(fleet, fleet=True)
    _add_feedback_flags(fleet)

    emulator = _command(commands, "emulator", "serve the Images API emulator", EMULATOR_EXAMPLES)
    if command in (None, "emulator"):
        from exporter.emulator import add_emulator_arguments

        add_emulator_arguments(emulator)

    demo = _command(commands, "demo", "emulator + export + DuckDB summary", DEMO_EXAMPLES)
    demo.add_argument("--images", type=int, default=50_000, help="catalog size (50000)")
    demo.add_argument("--seed", type=int, default=1, help="catalog seed (1)")
    demo.add_argument("--output", default="demo-output", help="output directory (demo-output)")
    _add_feedback_flags(demo)

    inspect = _command(commands, "inspect", "verify a published snapshot", INSPECT_EXAMPLES)
    inspect.add_argument("path", help="an output directory or one snapshot_date=... directory")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect.add_argument(
        "--s3-endpoint", metavar="URL", help="S3-compatible endpoint (env AWS_ENDPOINT_URL)"
    )

    report = _command(commands, "report", "write an HTML page of the catalog", REPORT_EXAMPLES)
    report.add_argument("path", help="an output directory (a single export or a fleet) or bucket")
    report.add_argument(
        "--output", metavar="FILE", help="where to write the page (PATH/report.html)"
    )
    report.add_argument(
        "--s3-endpoint", metavar="URL", help="S3-compatible endpoint (env AWS_ENDPOINT_URL)"
    )
    return parser


def _command(commands: Any, name: str, summary: str, examples: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def _add_export_flags(parser: argparse.ArgumentParser, *, fleet: bool = False) -> None:
    from exporter.options import all_options

    parser.add_argument("--config", metavar="FILE", help="TOML config file (see configs/)")
    for option in all_options():
        if option.flag is not None and not (fleet and option.key in FLEET_FIXED):
            parser.add_argument(option.flag, dest=option.key, **_flag_arguments(option))
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted run of the same request"
    )
    parser.add_argument(
        "--new-uploads",
        action="store_true",
        help="publish only the images uploaded since the latest snapshot (a batch; see --lag)",
    )
    parser.add_argument(
        "--accept-removals",
        action="store_true",
        help="publish the changes even when more than changes.max_removed_share were removed",
    )
    if not fleet:
        parser.add_argument(
            "--dry-run", action="store_true", help="print the plan and first request; send nothing"
        )


def shown_default(value: Any) -> str | None:
    """Return a default as `--help` shows it, or None when there is none worth showing."""
    if value is None or value is False or value in ((), ""):
        return None
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _with_default(help_text: str, default: Any) -> str:
    """Return `help_text` ending with its default, unless it already names it."""
    shown = shown_default(default)
    if shown is None or shown in help_text:
        return help_text
    return f"{help_text} (default: {shown.replace('%', '%%')})"


def _flag_arguments(option: Option) -> dict[str, Any]:
    """Return add_argument's keywords for an option's flag (None when not given)."""
    arguments: dict[str, Any] = {
        "help": _with_default(option.flag_help or option.help, option.default)
    }
    if option.kind is bool:
        return {**arguments, "action": "store_true", "default": None}
    if option.kind is tuple:
        arguments["action"] = "append"
    elif option.kind is not str:
        arguments["type"] = option.kind
    if option.choices:
        arguments["choices"] = [choice for choice in option.choices if choice != ""]
    if option.metavar:
        arguments["metavar"] = option.metavar
    return arguments


def _add_feedback_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=["plain", "json"],
        default="plain",
        help="log lines as text or one JSON object each (default: plain)",
    )
    parser.add_argument("-q", "--quiet", action="count", default=0, help="fewer messages")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more messages")


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Return the config keys the flags set (None = not given)."""
    from exporter.options import all_options

    return {o.key: getattr(args, o.key, None) for o in all_options() if o.flag is not None}


def config_from_args(args: argparse.Namespace, environ: dict[str, str]) -> Any:
    """Return the ExportConfig for `export` from the flags, the environment and the file."""
    from exporter.config import load_toml, parse_config

    file_data = load_toml(args.config) if args.config else {}
    return parse_config(
        file_data,
        environ,
        overrides_from_args(args),
        today=dt.datetime.now(dt.UTC).date(),
        resume=args.resume,
        dry_run=args.dry_run,
        accept_removals=args.accept_removals,
        new_uploads=args.new_uploads,
    )


def _command_word(argv: Sequence[str]) -> str | None:
    """Return the command of `argv`: its first word that is not an option (the top level
    takes no option values)."""
    return next((word for word in argv if not word.startswith("-")), None)


def run() -> NoReturn:
    """The console script and `python -m exporter`: run `main` with sys.argv, then exit.

    An export that returned ends the process without the interpreter's teardown, which frees
    every object and module of Arrow, DuckDB and aiohttp one by one (0.1-0.2 s after a
    200,000-image run, as long as a dozen pages' wait; mypy's `hard_exit` does the same):
    by then the run has closed and synced what it wrote, reported its metrics and joined its
    threads, and the log handlers, stdout and stderr are flushed here. Other commands (a
    fleet's Dask cluster, the emulator) exit normally, and so does a run under a profiler or
    a tracer (`python -m cProfile`, coverage), which writes its results at exit.
    """
    argv = sys.argv[1:]
    if _command_word(argv) == "export":
        from exporter import handoff

        handoff.allow()
        if handoff.received() is not None:
            from exporter.run.crashpoint import crash_point

            crash_point("handed-over-start")
    code = main(argv)
    if _command_word(argv) == "export" and sys.getprofile() is None and sys.gettrace() is None:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code."""
    argv = sys.argv[1:] if argv is None else argv
    OneLineParser.json_errors = _wants_json(argv)
    args = build_parser(_command_word(argv)).parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "export": run_export,
        "fleet": run_fleet,
        "emulator": run_emulator,
        "demo": run_demo,
        "inspect": run_inspect,
        "report": run_report,
    }
    as_json = getattr(args, "log_format", "plain") == "json"
    try:
        return handlers[args.command](args)
    except ExporterError as exc:
        return report_error(exc, as_json=as_json)
    except KeyboardInterrupt:
        line = _interrupted_line(args.command)
        if as_json:
            return report_error(Interrupted(line), as_json=True)
        print(f"{PROG}: {line}", file=sys.stderr)
        return Interrupted.exit_code


def _interrupted_line(command: str) -> str:
    """Return the line of a Ctrl-C the run's own handler did not catch (before it was set up,
    a second one, or in the process a run hands its change step to): what to do next."""
    if command in ("export", "fleet"):
        return f"interrupted: run the same {command} with --resume to continue or finish it"
    return "interrupted"


def report_error(error: ExporterError, *, as_json: bool = False) -> int:
    """Print the error as one line on stderr (a JSON log record under --log-format json) and
    return its exit code. URLs are redacted once more: a library's text may hold one."""
    from exporter.api.redact import redact_text

    for line in error.lines():
        if as_json:
            fields = {"exit_code": error.exit_code}
            logging.getLogger("exporter.cli").error("%s", line, extra={"fields": fields})
        else:
            print(f"{PROG}: error: {redact_text(line)}", file=sys.stderr)
    return error.exit_code


def _verbosity(args: argparse.Namespace) -> int:
    return int(args.verbose) - int(args.quiet)


def run_export(args: argparse.Namespace) -> int:
    """`export`: resolve the config, then run the pipeline (or print the plan)."""
    from exporter.observe.progress import setup_logging

    setup_logging(args.log_format, _verbosity(args))
    config = config_from_args(args, dict(os.environ))
    pushgateway = _pushgateway(config, os.environ)
    if config.dry_run:
        from exporter.api.redact import redact_text
        from exporter.run.plan import dry_run_plan

        if config.new_uploads:
            from exporter.run.new_uploads_run import dry_run_plan as batch_plan

            plan = batch_plan(config)
        else:
            plan = dry_run_plan(config, _previous_night(config))
        print(redact_text(json.dumps(plan, indent=2, ensure_ascii=False)))
        return 0
    from exporter.options import MetricsOptions

    metrics = config.section(MetricsOptions)
    if not (metrics.textfile or pushgateway):
        anyio.run(_export_with_signals, config, args, RunStats())
        return 0
    from exporter.handoff import began as export_began

    stats, began, summary, code = RunStats(), export_began(time.monotonic()), None, 0
    try:
        summary = anyio.run(_export_with_signals, config, args, stats)
    except ExporterError as exc:
        code = exc.exit_code
        if isinstance(exc, ChangesWithheldError):  # the snapshot is published all the same
            summary = exc.summary
        raise
    finally:
        _report_metrics(
            config, metrics.textfile, pushgateway, code, summary, stats, time.monotonic() - began
        )
    return 0


def _previous_night(config: Any) -> Manifest | None:
    """Return the manifest of the output's latest night before the run's date, for the plan
    to say what `--walk auto` will walk; None without one (or where the walk is fixed)."""
    from exporter.snapshot.manifest import previous_manifest
    from exporter.store import open_store

    if config.walk.mode != "auto" or config.request.sort_order is not None:
        return None
    store = open_store(config.output, s3_endpoint=config.s3_endpoint)
    return previous_manifest(store, config.snapshot_date.isoformat())


def _pushgateway(config: Any, environ: Mapping[str, str]) -> Pushgateway | None:
    """Return the run's `metrics.Pushgateway` (None: no push); ConfigError before any request.

    Resolved here, in the process that pushes, not in `parse_config`: a fleet's Dask workers
    re-resolve their accounts' configs without needing the Pushgateway's password.
    """
    from exporter.options import MetricsOptions

    options = config.section(MetricsOptions)
    if not options.pushgateway:
        return None
    from exporter.observe.metrics import Pushgateway

    return Pushgateway.resolve(options.pushgateway, options.pushgateway_password_env, environ)


def _report_metrics(
    config: Any,
    textfile: str | None,
    pushgateway: Pushgateway | None,
    code: int,
    summary: RunSummary | None,
    stats: RunStats,
    duration_s: float,
) -> None:
    """Write/push the run's metrics; a failed run reports the last success found in OUT."""
    from exporter.observe.metrics import observe, report
    from exporter.store.layout import ROOT

    run = observe(config, ROOT, code, duration_s=duration_s, summary=summary, stats=stats)
    report([run], textfile=textfile, pushgateway=pushgateway)


async def _export_with_signals(
    config: Any, args: argparse.Namespace, stats: RunStats
) -> RunSummary:
    """Run the export; SIGINT/SIGTERM cancel it cleanly (checkpoint kept) -> Interrupted,
    whose line says what the checkpoint keeps."""
    from exporter.observe.progress import print_summary

    interactive = sys.stderr.isatty() and args.log_format == "plain" and _verbosity(args) >= 0
    result: list[RunSummary] = []
    stopped_by: list[int] = []

    try:
        await _run_with_signals(config, stats, result, stopped_by, interactive=interactive)
    except ChangesWithheldError as exc:  # exit 9: the snapshot is published all the same
        if exc.summary is not None:
            print_summary(exc.summary, log_format=args.log_format, interactive=interactive)
        raise
    if stopped_by and not result:  # a signal during publication lets it finish: success
        raise Interrupted(stopped_line(signal.Signals(stopped_by[0]).name, stats))
    print_summary(result[0], log_format=args.log_format, interactive=interactive)
    return result[0]


async def _run_with_signals(
    config: Any,
    stats: RunStats,
    result: list[RunSummary],
    stopped_by: list[int],
    *,
    interactive: bool,
) -> None:
    """Run the export into `result` beside the progress display, until done or a signal.

    A signal once the change step began lets the run finish (`RunStats.concluding`): what it
    publishes is then the whole run, and a stop could only leave it to be done again; a
    second signal stops it all the same.
    """
    from exporter import handoff
    from exporter.observe.progress import report_progress
    from exporter.run.new_uploads_run import run_export as export

    handed = handoff.received()
    if handed is not None:  # the walk's process was publishing this snapshot (a stop's line)
        stats.publishing = handed.publishing
    async with FirstErrorGroup() as group:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                handoff.unblock_stops()  # a stop sent during this process's start comes now
                finishing = False
                async for signum in signals:
                    if stats.concluding and not finishing:  # a second signal still stops it
                        finishing = True
                        logging.getLogger("exporter.cli").warning(
                            "%s received while the change set is published: finishing the run "
                            "(another signal stops it)",
                            signal.Signals(signum).name,
                        )
                        continue
                    stopped_by.append(signum)
                    group.cancel_scope.cancel()
                    return

        async def run() -> None:
            result.append(await export(config, stats=stats))
            group.cancel_scope.cancel()

        group.start_soon(watch_signals)
        if handed is None:  # a handed-over process walks nothing: no second bar from 0
            group.start_soon(functools.partial(report_progress, stats, interactive=interactive))
        group.start_soon(run)


def stopped_line(name: str, stats: RunStats) -> str:
    """Return what a stopped run keeps and what to do: finish its publication, resume its
    walk after the committed parts, or nothing."""
    if stats.publishing is not None:
        return (
            f"stopped by {name} while publishing {stats.publishing}: run the same export "
            "with --resume to finish it (nothing is walked again)"
        )
    if stats.committed_pages == 0:
        return f"stopped by {name} before the first checkpoint: nothing is kept to resume"
    return (
        f"stopped by {name}; the checkpoint keeps {stats.committed_images:,} images "
        f"({stats.committed_pages:,} pages) in committed parts: --resume continues after them"
    )


def run_fleet(args: argparse.Namespace) -> int:
    """`fleet`: resolve every account (refusing bad entries first), run them, print the table."""
    from exporter.config import load_toml
    from exporter.observe.metrics import report
    from exporter.observe.progress import print_fleet_table, setup_logging
    from exporter.options import MetricsOptions, parse_snapshot_date
    from exporter.run.fleet import FleetRequest, parse_fleet, run_accounts, run_on_dask

    setup_logging(args.log_format, _verbosity(args))
    if args.workers < 1:
        raise ConfigError("--workers", "must be at least 1")
    accounts_data = load_toml(args.accounts, "--accounts")
    file_data = load_toml(args.config) if args.config else {}
    overrides = overrides_from_args(args)
    today = dt.datetime.now(dt.UTC).date()
    export_table = file_data.get("export")
    date_text = overrides.get("export.snapshot_date") or (
        export_table.get("snapshot_date") if isinstance(export_table, dict) else None
    )
    request = FleetRequest(
        file_data,
        overrides,
        snapshot_date=parse_snapshot_date(date_text or "today", today),
        resume=args.resume,
        accept_removals=args.accept_removals,
        new_uploads=args.new_uploads,
    )
    accounts = parse_fleet(accounts_data, request, os.environ)
    pushgateway = _pushgateway(accounts[0].config, os.environ)
    if args.dask_scheduler:
        outcomes = run_on_dask(accounts, request, args.dask_scheduler, args.workers)
    else:
        outcomes = anyio.run(functools.partial(run_accounts, accounts, workers=args.workers))
    metrics = accounts[0].config.section(MetricsOptions)
    report(
        [o.metrics for o in outcomes if o.metrics is not None],
        textfile=metrics.textfile,
        pushgateway=pushgateway,
    )
    interactive = sys.stderr.isatty() and args.log_format == "plain"
    print_fleet_table(outcomes, log_format=args.log_format, interactive=interactive)
    withheld = sum(1 for o in outcomes if o.exit_code == ChangesWithheldError.exit_code)
    failed = sum(1 for o in outcomes if o.exit_code != 0) - withheld
    if failed or withheld:
        raise FleetFailedError(failed, len(outcomes), withheld)
    return 0


def run_emulator(args: argparse.Namespace) -> int:
    """`emulator`: serve the Images API emulator on loopback until interrupted."""
    from exporter.emulator import serve, settings_from_args

    try:
        serve(settings_from_args(args), args.host, args.port)
    except KeyboardInterrupt:
        pass
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """`demo`: embedded emulator, a real export over loopback, then DuckDB query results."""
    from exporter.cli.demo import run_demo as demo
    from exporter.observe.progress import setup_logging

    if args.images < 1:
        raise ConfigError("--images", "must be at least 1")
    setup_logging(args.log_format, _verbosity(args))
    interactive = sys.stderr.isatty() and args.log_format == "plain"
    anyio.run(demo, args.images, args.seed, args.output, interactive)
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    """`inspect`: verify every file of one snapshot, or of every snapshot under OUT.

    OUT may hold a fleet's `account_id=<id>/` levels: every account's snapshots are verified.
    OUT may be a directory or a bucket URI (s3://, gs://), as for `export --output`. Every
    snapshot is verified and reported, the damaged ones with each of their problems, before
    the run exits 7 for any of them; a path without any snapshot is a usage error (exit 2).
    A snapshot whose run stopped before loading its tables (checkpoint "committing") is
    unfinished, not damaged: it exits 130, the code of the stopped run `--resume` finishes.
    """
    from exporter.changes.change_set import change_dates
    from exporter.snapshot.manifest import snapshot_dates
    from exporter.snapshot.verify import VerifyReport, verify_snapshot
    from exporter.store import open_store
    from exporter.store.layout import ROOT, SNAPSHOT_PREFIX, account_layouts, split_snapshot_path

    one = split_snapshot_path(args.path)
    if one is not None:
        store, directories = open_store(one[0], s3_endpoint=args.s3_endpoint), [one[1]]
    else:
        store = open_store(args.path, s3_endpoint=args.s3_endpoint)
        directories = []
        for layout in [ROOT, *account_layouts(store.list_dir(ROOT.snapshots))]:
            directories += [layout.snapshot(d) for d in snapshot_dates(store, layout)]
            directories += [layout.changes(d) for d in change_dates(store, layout)]
            for date in layout.snapshot_dates(store.list_dir(layout.new_uploads_root)):
                names = layout.batch_names(store.list_dir(layout.new_uploads(date)))
                directories += [layout.batch(date, name) for name in names]
    if not directories:
        raise ConfigError("inspect", f"no {SNAPSHOT_PREFIX}* snapshot under {args.path}")
    reports: list[VerifyReport] = []
    for directory in directories:
        try:
            reports.append(verify_snapshot((store, directory), strict=False))
        except IntegrityError as exc:  # no manifest, or one that is not JSON
            problem = str(exc).removeprefix(f"{directory}: ")
            reports.append(VerifyReport(directory=directory, problems=[problem]))
    if args.json:
        data = [
            {"snapshot": r.directory, "files": r.files, "rows": r.rows, "bytes": r.bytes}
            | ({} if r.ok else {"problems": r.problems})
            | ({"unfinished": r.unfinished} if r.unfinished else {})
            for r in reports
        ]
        print(json.dumps(data, indent=2))
    for r in reports if not args.json else ():
        kind = r.manifest.kind if r.manifest else None
        what = {"changes": "changes", "new_uploads": "new uploads"}.get(str(kind), "images")
        intact = r.ok and not r.unfinished  # else its lines say what is wrong or left to do
        if intact and not r.files and r.tables:  # no file: nothing had a sha256 to verify
            print(f"{r.directory}: ok, {r.rows:,} {what} in the {' and '.join(r.tables)} table")
        elif intact:
            print(
                f"{r.directory}: ok, {r.rows:,} {what} in {r.files} file{'s' * (r.files != 1)}, "
                f"{r.bytes:,} bytes, "
                "sha256 verified"
            )
        for waiting in r.unfinished:
            print(f"{r.directory}: UNFINISHED: {waiting}")
        for problem in r.problems:
            print(f"{r.directory}: DAMAGED: {problem}")
    damaged = [r for r in reports if not r.ok]
    if len(damaged) == 1 and len(reports) == 1:
        raise IntegrityError(f"{damaged[0].directory}: {'; '.join(damaged[0].problems)}")
    if damaged:
        first = damaged[0]
        raise IntegrityError(
            f"{len(damaged)} of {len(reports)} snapshots do not match their manifests (every "
            f"problem is listed above), first {first.directory}: {first.problems[0]}"
        )
    unfinished = [r for r in reports if r.unfinished]
    if unfinished:
        first = unfinished[0]
        raise UnfinishedRun(f"{first.directory}: {first.unfinished[0]}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    """`report`: write the HTML page of OUT (one account or a fleet), print where it is."""
    from exporter.observe.report import write_report

    path, _ = write_report(args.path, args.output, s3_endpoint=args.s3_endpoint)
    print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
