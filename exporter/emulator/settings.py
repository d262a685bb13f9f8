"""Emulator knobs: frozen settings and the argparse wiring of `cf-images-export emulator`."""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from exporter.emulator.catalog import PROFILES
from exporter.emulator.nights import NightPlan
from exporter.emulator.ties import PROFILE_TIE_ORDERS, TIE_ORDERS
from exporter.errors import ConfigError

FAULT_KINDS = frozenset({"500", "502_html", "503", "reset", "truncated", "slow"})
DEMO_TOKEN = "emulator-demo-token"
DEMO_EMAIL = "demo@example.com"
DEMO_API_KEY = "emulator-demo-api-key"
DEMO_ACCOUNT_ID = "0123456789abcdef0123456789abcdef"
DEFAULT_PORT = 8787


DEFAULT_PAGE_CAP = 1000  # "up to 1000 results per page" (the List V2 description)


@dataclass(frozen=True, kw_only=True)
class AccountSettings:
    """One account an emulator serves: its credentials, catalog, faults and rate limit.

    Accounts that share a token (or an email + key) share one rate-limit budget: Cloudflare's
    limit is per user, so they must agree on it.
    """

    account_id: str
    token: str
    email: str | None = None  # with api_key: the X-Auth-Email + X-Auth-Key pair
    api_key: str | None = None
    images: int = 1000
    seed: int = 1
    profile: str = "classic"
    tie_group: int = 0
    tie_order: str | None = None  # see exporter.emulator.ties; None: the profile's
    fault_rate: float = 0.0
    fault_kinds: frozenset[str] = field(default_factory=lambda: FAULT_KINDS)
    rate_quota: int | None = None
    rate_window_s: float = 300.0
    lockout_s: float = 300.0
    extra_fields: bool | None = None  # fields the reference does not list; None: nasty only

    def __post_init__(self) -> None:
        object.__setattr__(self, "fault_kinds", frozenset(self.fault_kinds))
        _check_catalog(self.images, self.profile, self.tie_group, self.tie_order)
        _check_faults(self.fault_rate, self.fault_kinds)
        if self.rate_quota is not None and self.rate_quota < 1:
            raise ConfigError("emulator.rate_quota", "must be >= 1")
        if not self.account_id:
            raise ConfigError("emulator.account_id", "must not be empty")
        if (self.email is None) != (self.api_key is None):
            raise ConfigError("emulator.email", "email and api_key go together")

    @property
    def ties(self) -> str:
        """Return the tie order served: `tie_order`, else the profile's (nasty: hash)."""
        return self.tie_order or PROFILE_TIE_ORDERS[self.profile]

    @property
    def credentials(self) -> tuple[str, ...]:
        """Return the caller keys this account accepts (the rate limit is per caller)."""
        keys = [f"token:{self.token}"]
        if self.email is not None:
            keys.append(f"email:{self.email}:{self.api_key}")
        return tuple(keys)

    @property
    def rate_limit(self) -> tuple[int | None, float, float]:
        return self.rate_quota, self.rate_window_s, self.lockout_s

    @property
    def extras(self) -> bool:
        """Whether the images carry top-level fields the reference does not list."""
        return self.profile == "nasty" if self.extra_fields is None else self.extra_fields


def _check_catalog(images: int, profile: str, tie_group: int, tie_order: str | None) -> None:
    if images < 0:
        raise ConfigError("emulator.images", "must be >= 0")
    if profile not in PROFILES:
        raise ConfigError("emulator.profile", f"must be one of {', '.join(PROFILES)}")
    if tie_group < 0:
        raise ConfigError("emulator.tie_group", "must be >= 0")
    if tie_order is not None and tie_order not in TIE_ORDERS:
        raise ConfigError("emulator.tie_order", f"must be one of {', '.join(TIE_ORDERS)}")


def _check_faults(rate: float, kinds: frozenset[str]) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ConfigError("emulator.fault_rate", "must be between 0 and 1")
    unknown = set(kinds) - FAULT_KINDS
    if unknown:
        raise ConfigError(
            "emulator.fault_kinds",
            f"unknown {sorted(unknown)}, expected some of {sorted(FAULT_KINDS)}",
        )
    if rate > 0 and not kinds:
        raise ConfigError("emulator.fault_kinds", "empty while fault_rate > 0")


@dataclass(frozen=True, kw_only=True)
class EmulatorSettings:
    """What the emulator serves and how it misbehaves; the defaults suit a demo."""

    images: int = 1000
    seed: int = 1
    profile: str = "classic"  # "nasty": the benchmark catalog (see exporter.emulator.nasty)
    tie_group: int = 0  # a bulk import of this many images on one `uploaded` instant
    tie_order: str | None = None  # how a tie is ordered (exporter.emulator.ties); None: profile's
    token: str = DEMO_TOKEN
    email: str = DEMO_EMAIL
    api_key: str = DEMO_API_KEY
    account_id: str = DEMO_ACCOUNT_ID
    rate_quota: int | None = None  # requests per window per credential; None: no limit
    rate_window_s: float = 300.0
    lockout_s: float = 300.0
    fault_rate: float = 0.0  # share of list requests that fail, 0..1
    fault_kinds: frozenset[str] = field(default_factory=lambda: FAULT_KINDS)
    slow_s: float = 2.0
    latency_s: float = 0.0  # added to every API reply: list pages, /stats, batch tokens
    stats_latency_s: float | None = None  # a /stats reply's delay instead; None: latency_s
    connect_latency_s: float = 0.0  # added to a connection's first reply (TCP + TLS handshakes)
    page_cap: int | None = DEFAULT_PAGE_CAP  # at most this many images per page; None: per_page
    short_pages: bool = False  # every page holds 1..size images (seeded), never assume full
    live_every: int = 0  # live mode: every N list requests of an account change its catalog
    live_mutations: int = 1  # how many changes (upload, delete, edit) each time
    disorder_every: int = 0  # misbehave: every Nth page breaks the sort order (0: never)
    repeat_every: int = 0  # misbehave: every Nth page after a token repeats the cursor's image
    accounts: tuple[AccountSettings, ...] = ()  # served besides the account above
    night: int = 0  # serve every catalog as evolved to this night (see exporter.emulator.nights)
    churn: float = 0.02  # share of the images uploaded per normal night
    quiet_nights: tuple[int, ...] = (3,)  # nights with no change
    mass_deletion_nights: tuple[int, ...] = (5,)  # nights that delete mass_deletion_share
    mass_deletion_share: float = 0.3
    drafts: int = 0  # images `/stats` counts that no listing shows (as drafts may be)
    batch_token_ttl_s: float = 900.0
    batch_rate: float | None = None  # requests/s per batch token; None: no limit
    allow_batch_tokens: bool = True
    # The batch host refuses List V2 with this status (403: code 103 "forbidden endpoint", as
    # reported from the field; 404: no route); 0: it serves it.
    refuse_batch_list: int = 0
    extra_fields: bool | None = None  # see AccountSettings.extra_fields

    def __post_init__(self) -> None:
        # Accept any iterable of kinds (a CLI list, a set) and keep the field hashable.
        object.__setattr__(self, "fault_kinds", frozenset(self.fault_kinds))
        object.__setattr__(self, "accounts", tuple(self.accounts))
        object.__setattr__(self, "quiet_nights", tuple(self.quiet_nights))
        object.__setattr__(self, "mass_deletion_nights", tuple(self.mass_deletion_nights))
        if self.night < 0:
            raise ConfigError("emulator.night", "must be >= 0")
        if not 0 <= self.churn <= 1:
            raise ConfigError("emulator.churn", "must be between 0 and 1")
        if not 0 <= self.mass_deletion_share <= 1:
            raise ConfigError("emulator.mass_deletion_share", "must be between 0 and 1")
        self.primary()  # validates the account fields
        if self.page_cap is not None and self.page_cap < 1:
            raise ConfigError("emulator.page_cap", "must be >= 1")
        names = ("live_every", "live_mutations", "disorder_every", "repeat_every", "drafts")
        for name in names:
            if getattr(self, name) < 0:
                raise ConfigError(f"emulator.{name}", "must be >= 0")
        _check_accounts(self.served())
        if self.batch_rate is not None and self.batch_rate <= 0:
            raise ConfigError("emulator.batch_rate", "must be > 0")
        if self.refuse_batch_list not in (0, 403, 404):
            raise ConfigError("emulator.refuse_batch_list", "must be 0, 403 or 404")

    def primary(self) -> AccountSettings:
        """Return the account the top-level fields describe."""
        return AccountSettings(
            account_id=self.account_id,
            token=self.token,
            email=self.email,
            api_key=self.api_key,
            images=self.images,
            seed=self.seed,
            profile=self.profile,
            tie_group=self.tie_group,
            tie_order=self.tie_order,
            fault_rate=self.fault_rate,
            fault_kinds=self.fault_kinds,
            rate_quota=self.rate_quota,
            rate_window_s=self.rate_window_s,
            lockout_s=self.lockout_s,
            extra_fields=self.extra_fields,
        )

    def night_plan(self) -> NightPlan:
        """Return how the catalogs change from night to night."""
        return NightPlan(
            churn=self.churn,
            quiet_nights=self.quiet_nights,
            mass_deletion_nights=self.mass_deletion_nights,
            mass_deletion_share=self.mass_deletion_share,
        )

    def served(self) -> tuple[AccountSettings, ...]:
        """Return every account served: the primary one first, then `accounts`."""
        return (self.primary(), *self.accounts)


def _check_accounts(accounts: tuple[AccountSettings, ...]) -> None:
    """Refuse duplicate account ids, and credentials shared under different rate limits."""
    seen: set[str] = set()
    limits: dict[str, tuple[int | None, float, float]] = {}
    for account in accounts:
        if account.account_id in seen:
            raise ConfigError("emulator.accounts", f"account {account.account_id!r} twice")
        seen.add(account.account_id)
        for credential in account.credentials:
            if limits.setdefault(credential, account.rate_limit) != account.rate_limit:
                raise ConfigError(
                    "emulator.accounts",
                    f"account {account.account_id!r} shares a credential with another account "
                    "under a different rate limit (the limit is per user: make them equal)",
                )


def tcp_port(text: str) -> int:
    """Return `--port` as an int in 0..65535 (argparse turns the error into one line)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535 (0: any free port), got {port}")
    return port


def add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's flags (`--host`, `--port`, catalog, auth, limits, faults)."""
    d = EmulatorSettings()

    def add(*flags: str, **arguments: Any) -> None:
        """Add a flag whose help ends with its default (unless it names it already)."""
        default, text = arguments.get("default"), str(arguments.get("help", ""))
        if default is not None and default is not False and default != "" and "default" not in text:
            arguments["help"] = f"{text} (default: %(default)s)"
        parser.add_argument(*flags, **arguments)

    add("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    port_help = f"port (default {DEFAULT_PORT}, 0: any)"
    add("--port", type=tcp_port, default=DEFAULT_PORT, help=port_help)
    add("--images", type=int, default=d.images, help="catalog size")
    add("--seed", type=int, default=d.seed, help="catalog and fault seed")
    add(
        "--profile",
        choices=PROFILES,
        default=d.profile,
        help="catalog: classic (default) or nasty (benchmarks: ~1 KB meta on 12%%, ~40 meta "
        "columns, 5%% of images on one instant, fields the reference does not list; rendered "
        "on demand, fine at millions)",
    )
    add(
        "--extra-fields",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="images carry top-level fields the reference does not list (sizeBytes, draft, "
        "labels; reviewed from the first night that edits them); default: with --profile nasty",
    )
    add("--tie-group", type=int, default=d.tie_group, help="bulk import of N images on one instant")
    add(
        "--tie-order",
        choices=TIE_ORDERS,
        default=None,
        help="order of the images sharing an instant: id (asc by id, desc the reverse; the "
        "classic default), id-desc, same (id ascending both ways), hash (seeded, another in "
        "desc; the nasty default)",
    )
    add("--token", default=d.token, help="accepted API token")
    add("--email", default=d.email, help="accepted X-Auth-Email (with --api-key)")
    add("--api-key", default=d.api_key, help="accepted X-Auth-Key (with --email)")
    add("--account-id", default=d.account_id, help="the account served")
    add(
        "--accounts-file",
        metavar="FILE",
        help="TOML: more accounts to serve, [[account]] tables of id (or account_id), token, "
        "email, api_key, images, seed, profile, tie_group, tie_order, fault_rate, fault_kinds, "
        "rate_quota, rate_window_s, lockout_s, extra_fields",
    )
    add("--rate-quota", type=int, default=None, help="requests per window (default: no limit)")
    add("--rate-window", type=float, default=d.rate_window_s, help="rate window, seconds")
    add("--lockout", type=float, default=d.lockout_s, help="429 lockout after the quota, seconds")
    add("--fault-rate", type=float, default=d.fault_rate, help="share of failing list requests")
    add(
        "--fault-kinds",
        default=",".join(sorted(d.fault_kinds)),
        help=f"comma-separated subset of {','.join(sorted(FAULT_KINDS))}",
    )
    add("--slow", type=float, default=d.slow_s, help="delay of a 'slow' fault, seconds")
    add(
        "--latency",
        type=float,
        default=d.latency_s,
        help="delay added to every API reply (pages, /stats, batch tokens), seconds",
    )
    add("--stats-latency", type=float, help="/stats's own delay, seconds (default: --latency)")
    add(
        "--connect-latency",
        type=float,
        default=d.connect_latency_s,
        help="delay added to a new connection's first reply (its handshakes), seconds",
    )
    add(
        "--page-cap",
        type=int,
        default=d.page_cap,
        help=f"serve at most N images per page (default {d.page_cap}, as Cloudflare says; 0: "
        "per_page)",
    )
    add("--short-pages", action="store_true", help="every page holds a seeded 1..size images")
    add("--live-every", type=int, default=0, help="live mode: change the catalog every N lists")
    add("--live-mutations", type=int, default=1, help="live mode: changes each time")
    add("--night", type=int, default=d.night, help="serve the catalogs as of night N (0: built)")
    add("--churn", type=float, default=d.churn, help="share of images uploaded per night")
    add(
        "--quiet-nights",
        default=_ints(d.quiet_nights),
        help="nights with no change, comma-separated",
    )
    add(
        "--mass-deletion-nights",
        default=_ints(d.mass_deletion_nights),
        help="nights that delete --mass-deletion-share of the images",
    )
    add("--mass-deletion-share", type=float, default=d.mass_deletion_share, help="0..1")
    add("--disorder-every", type=int, default=0, help="every Nth page breaks the sort order")
    add("--repeat-every", type=int, default=0, help="every Nth page repeats its cursor's image")
    add("--drafts", type=int, default=0, help="/stats counts N more images than lists show")
    add("--batch-token-ttl", type=float, default=d.batch_token_ttl_s, help="seconds")
    add("--batch-rate", type=float, default=None, help="requests/s per batch token")
    add("--no-batch-tokens", action="store_true", help="refuse batch tokens (403)")
    add(
        "--refuse-batch-list",
        type=int,
        choices=(403, 404),
        default=None,
        help="the batch host refuses List V2: 403 code 103 'forbidden endpoint', or 404",
    )


def settings_from_args(ns: argparse.Namespace) -> EmulatorSettings:
    """Return the settings that the parsed flags of `add_emulator_arguments` describe."""
    kinds = frozenset(kind.strip() for kind in ns.fault_kinds.split(",") if kind.strip())
    return EmulatorSettings(
        images=ns.images,
        seed=ns.seed,
        profile=ns.profile,
        tie_group=ns.tie_group,
        tie_order=ns.tie_order,
        token=ns.token,
        email=ns.email,
        api_key=ns.api_key,
        account_id=ns.account_id,
        rate_quota=ns.rate_quota,
        rate_window_s=ns.rate_window,
        lockout_s=ns.lockout,
        fault_rate=ns.fault_rate,
        fault_kinds=kinds,
        slow_s=ns.slow,
        latency_s=ns.latency,
        stats_latency_s=ns.stats_latency,
        connect_latency_s=ns.connect_latency,
        page_cap=ns.page_cap or None,
        short_pages=ns.short_pages,
        live_every=ns.live_every,
        live_mutations=ns.live_mutations,
        disorder_every=ns.disorder_every,
        repeat_every=ns.repeat_every,
        accounts=load_accounts(ns.accounts_file) if ns.accounts_file else (),
        night=ns.night,
        churn=ns.churn,
        quiet_nights=_parse_ints("quiet_nights", ns.quiet_nights),
        mass_deletion_nights=_parse_ints("mass_deletion_nights", ns.mass_deletion_nights),
        mass_deletion_share=ns.mass_deletion_share,
        drafts=ns.drafts,
        batch_token_ttl_s=ns.batch_token_ttl,
        batch_rate=ns.batch_rate,
        allow_batch_tokens=not ns.no_batch_tokens,
        refuse_batch_list=ns.refuse_batch_list or 0,
        extra_fields=ns.extra_fields,
    )


def _ints(values: tuple[int, ...]) -> str:
    return ",".join(str(value) for value in values)


def _parse_ints(name: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"emulator.{name}", f"expected comma-separated nights: {text!r}") from exc


ACCOUNT_KEYS = frozenset(f.name for f in fields(AccountSettings))


def load_accounts(path: str) -> tuple[AccountSettings, ...]:
    """Return the accounts of a TOML file of `[[account]]` tables; ConfigError names the key."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("emulator.accounts_file", f"cannot read {path}: {exc}") from exc
    return parse_accounts(document)


def parse_accounts(document: Mapping[str, Any]) -> tuple[AccountSettings, ...]:
    """Return the accounts of a parsed accounts file (pure: tests feed it dicts)."""
    tables = document.get("account", [])
    if set(document) - {"account"} or not isinstance(tables, list):
        raise ConfigError("emulator.accounts_file", "expected only [[account]] tables")
    accounts = []
    for index, table in enumerate(tables):
        where = f"emulator.account[{index}]"
        if "id" in table:  # the fleet file's name for it
            if "account_id" in table:
                raise ConfigError(f"{where}.id", "the same as account_id: give one of them")
            table = {**{k: v for k, v in table.items() if k != "id"}, "account_id": table["id"]}
        unknown = set(table) - ACCOUNT_KEYS
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}", "unknown key")
        for key in ("account_id", "token"):
            if not isinstance(table.get(key), str):
                raise ConfigError(f"{where}.{key}", "required, a string")
        try:
            accounts.append(AccountSettings(**table))
        except TypeError as exc:
            raise ConfigError(where, str(exc)) from exc
    return tuple(accounts)
