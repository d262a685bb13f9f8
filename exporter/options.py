"""Every option, declared once: key, type, default, check, env, flag, help, fingerprint.

An option is a field of a frozen options dataclass, declared with `opt(...)`; one dataclass per
TOML table (its `section`). Everything else reads these declarations: `config.parse_config`
(file < env < flag over the defaults), the `export` command's flags (`cli.py`), `--dry-run`'s
plan, the request fingerprint (`run.plan.describe_request`) and the test that
`configs/nightly.toml` lists every option with its default. A new option is one line:

    max_removed_share: float = opt(0.2, check=share, help="...")     # key "<section>.<field>"

A new table is a new `Options` subclass with a `section` name, added to `SECTIONS`. A plugin sink
declares its own table the same way (`options_type` on the sink class; the section is the sink's
name), see `exporter.sinks`.

Pure: no I/O and no heavy import, so config, walker, normalize and the sinks all import it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from exporter.api.pagination import (
    DEFAULT_BASE_URL,
    DEFAULT_BATCH_BASE_URL,
    MAX_PER_PAGE,
    MIN_PER_PAGE,
    ListRequest,
    check_account_id,
)
from exporter.api.redact import has_userinfo, redact_url
from exporter.errors import ConfigError

if TYPE_CHECKING:
    from exporter.api.retry import RetryPolicy
    from exporter.changes.diff import DiffSettings

T = TypeVar("T")
Check = Callable[[Any], Any]  # returns the (normalised) value or raises ValueError(problem)

# The built-in sinks a user may name in `export.formats`, the default first, in the order help
# and errors list them. The one list of their names: the sink registry (`exporter.sinks.
# BUILTIN_SINKS`) derives from it, and it lives here because options may not import sinks.
BUILTIN_FORMATS = ("parquet", "ndjson", "duckdb", "delta")
MAX_DEPTH = 64
MAX_COLUMN_CAP = 10_000  # BigQuery's column limit; other warehouses allow more


@dataclass(frozen=True)
class Option:
    """One config key as declared by `opt()`; `key` is "section.name"."""

    key: str
    field: str  # the attribute of the options dataclass that holds it
    owner: type
    kind: type  # str, int, float, bool or tuple (a TOML list of strings)
    default: Any
    help: str
    check: Check | None = None
    choices: tuple[Any, ...] = ()
    env: str | None = None
    flag: str | None = None
    metavar: str | None = None
    flag_help: str | None = None
    fingerprint: str | None = None  # its name in the request description; None: not part
    url: bool = False  # a URL or URI: shown only through `redact.redact_url`

    @property
    def section(self) -> str:
        return self.key.partition(".")[0]

    @property
    def name(self) -> str:
        return self.key.partition(".")[2]

    def validate(self, value: Any) -> Any:
        """Return `value` converted to the option's type, or raise ConfigError naming the key."""
        if value is None and self.default is None:
            return None
        value = self._typed(value)
        if self.kind is float and not math.isfinite(value):
            raise ConfigError(self.key, f"must be a finite number, got {value}")
        for item in value if self.kind is tuple else (value,):
            if self.choices and item not in self.choices:
                allowed = ", ".join(repr(c) for c in self.choices)
                raise ConfigError(self.key, f"{item!r} is not one of {allowed}")
        if self.check is not None:
            try:
                value = self.check(value)
            except ConfigError:
                raise
            except ValueError as exc:
                raise ConfigError(self.key, str(exc)) from None
        return float(value) if self.kind is float else value

    def from_text(self, text: str) -> Any:
        """Return the value of an environment variable, typed like the TOML value."""
        try:
            if self.kind is bool:
                value: Any = {"true": True, "1": True, "false": False, "0": False}[text.lower()]
            else:
                value = text if self.kind in (str, tuple) else self.kind(text)
        except (KeyError, ValueError):
            raise ConfigError(self.key, f"{self.env}={text!r} is not {_KINDS[self.kind]}") from None
        return self.validate(value.split(",") if self.kind is tuple else value)

    def _typed(self, value: Any) -> Any:
        if self.kind is tuple:
            if not isinstance(value, list | tuple):
                raise ConfigError(self.key, f"expected a list, got {value!r}")
            if not all(isinstance(item, str) for item in value):
                raise ConfigError(self.key, f"expected a list of strings, got {value!r}")
            return tuple(value)
        accepted: tuple[type, ...] = (int, float) if self.kind is float else (self.kind,)
        if isinstance(value, bool) != (self.kind is bool) or not isinstance(value, accepted):
            raise ConfigError(self.key, f"expected {_KINDS[self.kind]}, got {value!r}")
        return value


_KINDS = {
    str: "a string",
    int: "an integer",
    float: "an integer or a number",
    bool: "true or false",
    tuple: "a list",
}


def opt(
    default: T,
    *,
    help: str,
    key: str | None = None,
    kind: type | None = None,
    check: Check | None = None,
    choices: Sequence[Any] = (),
    env: str | None = None,
    flag: str | None = None,
    metavar: str | None = None,
    flag_help: str | None = None,
    fingerprint: bool | str = False,
    url: bool = False,
) -> T:
    """Declare an option as a dataclass field (see the module docstring).

    `key` defaults to "<section>.<field name>"; `kind` to the default's type (str when the
    default is None, a list of strings when it is a tuple). `check` returns the value (it may
    normalise it) or raises ValueError with a problem that reads after "<key>: ". `env` and
    `flag` name an environment variable and an `export` flag that set it; `flag_help` is the
    flag's help when it differs from `help`. `fingerprint` puts the option in the request
    fingerprint (True: under its field name, or under the given dotted name). `url` marks a
    URL, which the plan, the fingerprint and error messages show only redacted.
    """
    spec = {
        "key": key,
        "kind": kind or (str if default is None else type(default)),
        "default": default,
        "help": help,
        "check": check,
        "choices": tuple(choices),
        "env": env,
        "flag": flag,
        "metavar": metavar,
        "flag_help": flag_help,
        "fingerprint": fingerprint,
        "url": url,
    }
    return field(default=default, metadata={"option": spec})


def declared(cls: type, section: str | None = None) -> tuple[Option, ...]:
    """Return the options declared on the dataclass `cls`, in order (`section` for plugins)."""
    cached = _DECLARED.get((cls, section))
    if cached is None:
        cached = _DECLARED[(cls, section)] = _declare(cls, section)
    return cached


_DECLARED: dict[tuple[type, str | None], tuple[Option, ...]] = {}


def _declare(cls: type, section: str | None) -> tuple[Option, ...]:
    options = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("option")
        if spec is None:
            continue  # an internal setting, not a config key
        spec = dict(spec)
        key = spec.pop("key") or f"{section or getattr(cls, 'section', '')}.{f.name}"
        mark = spec.pop("fingerprint")
        name = f.name if mark is True else (mark or None)
        if name and section:  # a plugin's: under its sink's name
            name = f"{section}.{name}"
        options.append(Option(key=key, field=f.name, owner=cls, fingerprint=name, **spec))
    return tuple(options)


class Options:
    """Base of the option tables: validates every declared field when constructed."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for option in declared(type(self)):
            object.__setattr__(self, option.field, option.validate(getattr(self, option.field)))


# -- checks (each raises ValueError with the text that follows "<key>: ") --------------------
def at_least(low: int) -> Check:
    def check(value: int) -> int:
        if value < low:
            raise ValueError(f"must be at least {low}, got {value}")
        return value

    return check


def integer_from(low: int, high: int) -> Check:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return value

    return check


MAX_SECONDS = 7 * 24 * 3600
"""The bound of every duration option: each feeds a timer or a date (the `--lag` look-back),
and a longer one is a typo, not a wish."""


def seconds(value: float) -> float:
    if not 0 < value <= MAX_SECONDS:
        raise ValueError(
            f"must be a positive number of seconds, at most {MAX_SECONDS} (7 days), got {value}"
        )
    return value


def fraction(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"must be in [0, 1], got {value}")
    return value


def share(value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError(f"must be in (0, 1], got {value}")
    return value


def per_page(value: int) -> int:
    if not MIN_PER_PAGE <= value <= MAX_PER_PAGE:
        raise ValueError(f"must be {MIN_PER_PAGE}..{MAX_PER_PAGE}, got {value}")
    return value


API_CREDENTIALS = (
    "API credentials come only from the environment "
    "(CLOUDFLARE_API_TOKEN, or CLOUDFLARE_EMAIL and CLOUDFLARE_API_KEY)"
)
S3_CREDENTIALS = (
    "S3 credentials come only from the AWS provider chain "
    "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile or a role)"
)
GCS_CREDENTIALS = "GCS credentials come only from Application Default Credentials"

URI_OPTIONS = "options in the URI are not supported; use flags"


def account_identifier(value: str) -> str:
    try:
        return check_account_id(value)
    except ValueError as exc:
        raise ValueError(f"{exc}; set by --account-id, CLOUDFLARE_ACCOUNT_ID or this key") from None


def api_url(value: str) -> str:
    """Check an API base URL: http(s), and nothing the requests built on it would lose."""
    shown = redact_url(value)
    if not value.startswith(("https://", "http://")):
        raise ValueError(f"{shown!r} is not an http(s) URL")
    if has_userinfo(value):
        raise ValueError(f"{shown!r} carries credentials; {API_CREDENTIALS}")
    if "?" in value or "#" in value:
        raise ValueError(f"{shown!r}: give the base URL without a query")
    return value.rstrip("/")


def output_location(value: str) -> str:
    """Check `--output`: a path, or a bucket URI without credentials or options (so it is shown
    as given; `bucket.parse_bucket_uri` checks the rest when the store opens)."""
    nonempty(value)
    if "://" in value and has_userinfo(value):
        source = GCS_CREDENTIALS if value.startswith("gs://") else S3_CREDENTIALS
        raise ValueError(f"{redact_url(value)!r} carries credentials; {source}")
    if "://" in value and ("?" in value or "#" in value):
        raise ValueError(f"{redact_url(value)!r}: {URI_OPTIONS}")
    return value


def bucket_endpoint(value: str) -> str:
    """Check an S3-compatible endpoint (`bucket.s3_settings` checks the rest when used)."""
    if has_userinfo(value):  # neither pyarrow nor obstore would take them as the credentials
        raise ValueError(f"{redact_url(value)!r} carries credentials; {S3_CREDENTIALS}")
    return value


def pushgateway_url(value: str) -> str:
    """Check a Pushgateway URL: http(s) or a bare host:port (http), as prometheus-client takes."""
    scheme, sep, _ = value.partition("://")
    if not value.strip() or (sep and scheme.lower() not in ("http", "https")):
        raise ValueError(f"{redact_url(value)!r} is not an http(s) URL")
    return value


def env_name(value: str) -> str:
    if not value.strip() or "=" in value:
        raise ValueError(f"{value!r} is not the name of an environment variable")
    return value


def nonempty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def some_format(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError(f"name at least one of {', '.join(BUILTIN_FORMATS)}")
    return tuple(dict.fromkeys(value))


def date_or_today(value: str) -> str:
    parse_snapshot_date(value, dt.date.min)
    return value


def parse_snapshot_date(text: str, today: dt.date) -> dt.date:
    """Return the snapshot date from 'today' or YYYY-MM-DD."""
    if text == "today":
        return today
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
    except ValueError:
        pass
    raise ConfigError("export.snapshot_date", f"{text!r} is not a date; use YYYY-MM-DD or today")


def meta_paths(value: tuple[str, ...]) -> tuple[str, ...]:
    if not all(value):
        raise ValueError("every path must be a non-empty string")
    return value


def parquet_codec(name: str) -> str:
    """Return a Parquet compression codec this pyarrow build can write."""
    import pyarrow as pa

    if name.lower() == "none":
        return "none"
    try:
        available = pa.Codec.is_available(name)
    except ValueError:  # a name pyarrow does not know at all
        available = False
    if not available:
        raise ValueError(f"{name!r} is not available; use zstd, snappy, gzip, lz4, brotli or none")
    return name.lower()


# -- the tables ----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ExportOptions(Options):
    """`[export]`: what to export, where to, as of which date. Resolved into ExportConfig."""

    section: ClassVar[str] = "export"

    account_id: str | None = opt(
        None,
        help="Cloudflare account id (or CLOUDFLARE_ACCOUNT_ID)",
        check=account_identifier,
        env="CLOUDFLARE_ACCOUNT_ID",
        flag="--account-id",
        metavar="ID",
        flag_help=(
            "account id: at most 32 letters, digits, - or _; Cloudflare's are 32 hex digits "
            "(env CLOUDFLARE_ACCOUNT_ID)"
        ),
        fingerprint=True,
    )
    output: str = opt(
        "out",
        help="output directory or URI",
        check=output_location,
        flag="--output",
        metavar="DIR",
        flag_help="output directory or s3://, gs:// URI (default: out)",
    )
    lock_lease_s: float = opt(
        60.0,
        help="a bucket's run lock lease, seconds: a crashed run's successor waits at most this",
        check=seconds,
    )
    s3_endpoint: str | None = opt(
        None,
        help="S3-compatible endpoint URL (or AWS_ENDPOINT_URL); AWS when unset",
        check=bucket_endpoint,
        url=True,
        flag="--s3-endpoint",
        metavar="URL",
        flag_help="S3-compatible endpoint (env AWS_ENDPOINT_URL)",
    )
    formats: tuple[str, ...] = opt(
        ("parquet",),
        help=f"sinks to write: {', '.join(BUILTIN_FORMATS)}, or a plugin",
        check=some_format,
        flag="--format",
        metavar="NAME",
        flag_help=f"{BUILTIN_FORMATS[0]} (default), {', '.join(BUILTIN_FORMATS[1:])} or a plugin "
        "sink's name (repeatable; replaces the config's formats)",
        fingerprint=True,
    )
    snapshot_date: str = opt(
        "today",
        help="YYYY-MM-DD or 'today' (UTC)",
        check=date_or_today,
        flag="--snapshot-date",
        metavar="YYYY-MM-DD",
        flag_help="snapshot date (default: today, UTC)",
    )
    base_url: str = opt(
        DEFAULT_BASE_URL,
        help="API base URL (or CLOUDFLARE_BASE_URL)",
        check=api_url,
        url=True,
        env="CLOUDFLARE_BASE_URL",
        flag="--base-url",
        metavar="URL",
        flag_help="API base URL (env CLOUDFLARE_BASE_URL)",
        fingerprint=True,
    )


@dataclass(frozen=True, kw_only=True)
class RequestOptions(Options):
    """`[request]`: what to list. Resolved into `pagination.ListRequest` (same field names)."""

    section: ClassVar[str] = "request"

    per_page: int = opt(
        1000,
        help="images per page, 10..10000",
        check=per_page,
        flag="--per-page",
        metavar="N",
        flag_help="images per page, 10..10000 (1000)",
        fingerprint=True,
    )
    sort_order: str = opt(
        "",
        help="'asc', 'desc' or '' (both ends)",
        choices=("", "asc", "desc"),
        flag="--sort-order",
        flag_help="walk one cursor in this order",
        fingerprint=True,
    )
    creator: str | None = opt(
        None,
        help="only this creator; '' = images without a creator",
        flag="--creator",
        metavar="C",
        flag_help="only images of this creator; '' = without a creator",
        fingerprint=True,
    )
    filters: tuple[str, ...] = opt(
        (),
        help="metadata filters, e.g. 'meta.status[eq]=active'",
        flag="--filter",
        metavar="EXPR",
        flag_help="e.g. 'meta.status[eq]=active' (repeatable; replaces the config's filters)",
        fingerprint=True,
    )


RECENT_IDS = 10_000  # ids a walker cursor remembers to place a repeated or late image


@dataclass(frozen=True, kw_only=True)
class WalkOptions(Options):
    """`[walk]`: how to walk: cursors, batch host, retries, pacing and timeouts."""

    section: ClassVar[str] = "walk"

    mode: Literal["auto", "both", "single"] = opt(
        "auto",
        help="auto, both or single",
        choices=("auto", "both", "single"),
        flag="--walk",
        flag_help="cursor strategy (auto)",
        fingerprint="walk",
    )
    batch_api: bool = opt(
        False,
        help="list through the batch API host",
        flag="--batch-api",
        flag_help="list via the batch API host",
        fingerprint=True,
    )
    batch_base_url: str = opt(
        DEFAULT_BATCH_BASE_URL,
        help="batch API host",
        check=api_url,
        url=True,
        flag="--batch-base-url",
        metavar="URL",
    )
    quota: int = opt(1200, help="requests allowed per window (Cloudflare: 1200)", check=at_least(1))
    window_s: float = opt(300.0, help="rate-limit window in seconds", check=seconds)
    margin: float = opt(0.95, help="share of the quota the pacer may spend", check=share)
    max_attempts: int = opt(8, help="attempts per request before giving up", check=at_least(1))
    deadline_s: float = opt(600.0, help="total retry time per request, seconds", check=seconds)
    connect_timeout_s: float = opt(10.0, help="TCP/TLS connect timeout", check=seconds)
    read_timeout_s: float = opt(60.0, help="read timeout per reply", check=seconds)
    # Internal settings (no config key).
    retry: RetryPolicy | None = None  # replaces max_attempts/deadline_s (tests: fast backoff)
    recent_ids: int = RECENT_IDS  # ids each cursor remembers to place repeated or late images
    # Fetched ahead of the consumer, per cursor: a cursor asks for its next page only while
    # fewer than `prefetch` of its pages and `prefetch_images` of its images are buffered
    # (always when none are), so memory follows images when pages are large and requests
    # stay few when they are small.
    prefetch: int = 2
    prefetch_images: int = 2_000

    def __post_init__(self) -> None:
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for impossible internal settings (declared options are checked)."""
        if self.recent_ids < 1 or self.prefetch < 0 or self.prefetch_images < 0:
            raise ConfigError(
                "walk", "recent_ids >= 1, prefetch >= 0 and prefetch_images >= 0 are required"
            )

    def retry_policy(self) -> RetryPolicy:
        """Return the retry policy: `retry` when given, else max_attempts and deadline_s."""
        from exporter.api.retry import RetryPolicy

        if self.retry is not None:
            return self.retry
        return RetryPolicy(max_attempts=self.max_attempts, deadline_s=self.deadline_s)

    def both_ends(self, request: ListRequest) -> bool:
        """Return True when this request walks from both ends."""
        if self.mode == "both" and request.sort_order is not None:
            raise ConfigError("walk", "a both-ends walk cannot honour --sort-order")
        return self.mode == "both" or (self.mode == "auto" and request.sort_order is None)


@dataclass(frozen=True, kw_only=True)
class NormalizeOptions(Options):
    """`[normalize]`: how meta is flattened into columns."""

    section: ClassVar[str] = "normalize"

    depth: int = opt(
        5,
        help="meta levels flattened into columns",
        check=integer_from(1, MAX_DEPTH),
        fingerprint="normalize.depth",
    )
    include: tuple[str, ...] = opt(
        (),
        help="meta path prefixes to flatten (empty = all)",
        check=meta_paths,
        fingerprint="normalize.include",
    )
    exclude: tuple[str, ...] = opt(
        (),
        help="meta path prefixes kept only in meta_json",
        check=meta_paths,
        fingerprint="normalize.exclude",
    )
    column_cap: int = opt(
        200,
        help="most meta columns; the rest stay in meta_json",
        check=integer_from(0, MAX_COLUMN_CAP),
        fingerprint="normalize.column_cap",
    )
    schema_contract: Literal["evolve", "freeze"] = opt(
        "evolve",
        help="evolve or freeze the previous schema",
        choices=("evolve", "freeze"),
        flag="--schema-contract",
        flag_help="schema drift policy (evolve)",
    )

    def selects(self, path: Sequence[str]) -> bool:
        """Return whether a meta path gets a column under include/exclude."""
        dotted = ".".join(path)
        if any(_under(dotted, prefix) for prefix in self.exclude):
            return False
        return not self.include or any(_under(dotted, prefix) for prefix in self.include)


def _under(dotted: str, prefix: str) -> bool:
    return dotted == prefix or dotted.startswith(prefix + ".")


@dataclass(frozen=True, kw_only=True)
class SinkOptions(Options):
    """`[parquet]`, `[ndjson]`, `[duckdb]`: how the built-in sinks write; shared by a run's sinks.

    One table for the three because `[parquet]`'s part sizes bound every file sink's parts.
    Defaults: row groups of at most 100,000 rows or 8 MiB of Arrow buffers, whichever comes
    first (large enough for DuckDB/warehouse scans to skip by statistics; the byte bound keeps
    the one buffered group small when meta is large: 100,000 images with 1 KB of meta would
    hold ~100 MB), parts of at most 100,000 rows or 256 MiB, whichever comes first, and one
    committed at least every 60 s of walking: each committed part is a checkpoint, so a kill
    loses at most about a minute of walking (`exporter.run.cadence`).
    """

    parquet_codec: str = opt(
        "zstd", key="parquet.codec", help="compression codec", check=parquet_codec
    )
    part_rows: int = opt(
        100_000,
        key="parquet.part_rows",
        help="rows per part file (each committed part is a checkpoint)",
        check=at_least(1),
    )
    part_s: float = opt(
        60.0,
        key="parquet.part_s",
        help="commit the open part (a checkpoint) after this many seconds of walking",
        check=seconds,
    )
    part_bytes: int = opt(
        256 * 1024 * 1024, key="parquet.part_bytes", help="bytes per part file", check=at_least(1)
    )
    row_group_rows: int = opt(
        100_000, key="parquet.row_group_rows", help="rows per row group", check=at_least(1)
    )
    row_group_bytes: int = opt(
        8 * 1024 * 1024,
        key="parquet.row_group_bytes",
        help="in-memory bytes per row group (bounds the buffer)",
        check=at_least(1),
    )
    ndjson_gzip: bool = opt(
        False,
        key="ndjson.gzip",
        help="write .ndjson.gz",
        fingerprint=True,  # the staged parts' file type depends on it
    )
    duckdb_path: str | None = opt(
        None,
        key="duckdb.path",
        help="DuckDB database file (default OUT/images.duckdb)",
        fingerprint=True,
    )
    # Internal settings (no config key).
    compression_level: int | None = None
    # Part files are named part-NNNNN-<run_tag><suffix>: a reader that listed the previous
    # snapshot of a date just before a re-publish then finds no such file (an error), never a
    # file of the new snapshot under an old name (mixed data).
    run_tag: str = ""


@dataclass(frozen=True, kw_only=True)
class ChangeOptions(Options):
    """`[changes]`: how change sets are published (the removal guard)."""

    section: ClassVar[str] = "changes"

    max_removed_share: float = opt(
        0.2, help="withhold a change set removing more than this share of images", check=fraction
    )
    # Internal settings (no config key).
    accept_removals: bool = False  # --accept-removals: this run publishes past the guard
    diff: DiffSettings | None = None  # DuckDB's resources for the diff (None: its defaults)


@dataclass(frozen=True, kw_only=True)
class NewUploadsOptions(Options):
    """`[new_uploads]`: `export --new-uploads`, the batches between nightly snapshots."""

    section: ClassVar[str] = "new_uploads"

    lag_s: float = opt(
        600.0,
        help="seconds before the watermark a batch looks back (uploads listed late)",
        check=seconds,
        flag="--lag",
        metavar="SECONDS",
        flag_help=(
            "with --new-uploads: look back this long before the watermark "
            "(default 600, at most 604800: 7 days)"
        ),
    )


@dataclass(frozen=True, kw_only=True)
class MetricsOptions(Options):
    """`[metrics]`: where a run reports its Prometheus metrics (for stale-snapshot alerts)."""

    section: ClassVar[str] = "metrics"

    textfile: str | None = opt(
        None,
        help="write the run's metrics to this file (node_exporter's textfile collector)",
        flag="--metrics-textfile",
        metavar="FILE",
        flag_help="write Prometheus metrics to FILE, atomically (textfile collector)",
    )
    pushgateway: str | None = opt(
        None,
        help="push the run's metrics to this Pushgateway URL (user:password@ = basic auth)",
        check=pushgateway_url,
        url=True,
        flag="--pushgateway",
        metavar="URL",
        flag_help="push Prometheus metrics to this Pushgateway URL (user:password@ = basic auth)",
    )
    pushgateway_password_env: str | None = opt(
        None,
        help="environment variable holding the Pushgateway's basic-auth password (user in the URL)",
        check=env_name,
        flag="--pushgateway-password-env",
        metavar="VAR",
        flag_help="read the Pushgateway's basic-auth password from this variable",
    )


# The tables in the order the plan, the fingerprint and the reference config list them.
SECTIONS: tuple[type[Options], ...] = (
    ExportOptions,
    RequestOptions,
    WalkOptions,
    SinkOptions,
    NormalizeOptions,
    ChangeOptions,
    NewUploadsOptions,
    MetricsOptions,
)


def all_options() -> tuple[Option, ...]:
    """Return every built-in option, table by table."""
    return tuple(option for cls in SECTIONS for option in declared(cls))


def options_by_key() -> dict[str, Option]:
    return {option.key: option for option in all_options()}


def from_request(cls: type[T], request: Mapping[str, Any], section: str | None = None) -> T:
    """Return the options table `cls` as a run recorded it in its request description: the
    options declared with `fingerprint=` (not URLs, recorded redacted) from `request`, the
    others at their defaults (`section` for a plugin sink's table).

    A later step re-opens a published night's sinks this way, configured as they wrote it.
    """
    values: dict[str, Any] = {}
    for option in declared(cls, section):
        if option.fingerprint is None or option.url:
            continue
        value: Any = request
        for name in option.fingerprint.split("."):
            if not isinstance(value, Mapping) or name not in value:
                break
            value = value[name]
        else:
            values[option.field] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def override_file(
    file_data: Mapping[str, Any],
    overrides: Mapping[str, Any],
    extra: Sequence[Option] = (),
) -> dict[str, Any]:
    """Return a copy of a config file's tables with `overrides` applied, each value checked.

    Keys are the config file's: "request.per_page", or the bare "per_page" when only one table
    has it (a fleet's per-account settings). `extra` adds plugin sinks' options. The result is
    a file mapping for `config.parse_config`, which validates the whole.
    """
    known = {option.key: option for option in (*all_options(), *extra)}
    by_name: dict[str, list[Option]] = {}
    for option in known.values():
        by_name.setdefault(option.name, []).append(option)
    merged = {k: dict(v) if isinstance(v, Mapping) else v for k, v in file_data.items()}
    for name, value in overrides.items():
        candidates = [known[name]] if name in known else by_name.get(name, [])
        if len(candidates) != 1:
            problem = "unknown key" if not candidates else "ambiguous key; write section.key"
            raise ConfigError(name, problem)
        (option,) = candidates
        merged.setdefault(option.section, {})[option.name] = option.validate(value)
    return merged
