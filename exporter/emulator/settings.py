"""Emulator knobs: frozen settings and the argparse wiring of `cf-images-export emulator`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from exporter.emulator.catalog import PROFILES
from exporter.errors import ConfigError

FAULT_KINDS = frozenset({"500", "502_html", "503", "reset", "truncated", "slow"})
DEMO_TOKEN = "emulator-demo-token"
DEMO_EMAIL = "demo@example.com"
DEMO_API_KEY = "emulator-demo-api-key"
DEMO_ACCOUNT_ID = "0123456789abcdef0123456789abcdef"
DEFAULT_PORT = 8787


@dataclass(frozen=True, kw_only=True)
class EmulatorSettings:
    """What the emulator serves and how it misbehaves; the defaults suit a demo."""

    images: int = 1000
    seed: int = 1
    profile: str = "classic"  # "nasty": the benchmark catalog (see exporter.emulator.nasty)
    tie_group: int = 0  # a bulk import of this many images on one `uploaded` instant
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
    latency_s: float = 0.0  # added to every list page
    page_cap: int | None = None  # serve at most this many images per page
    batch_token_ttl_s: float = 900.0
    batch_rate: float | None = None  # requests/s per batch token; None: no limit
    allow_batch_tokens: bool = True

    def __post_init__(self) -> None:
        # Accept any iterable of kinds (a CLI list, a set) and keep the field hashable.
        object.__setattr__(self, "fault_kinds", frozenset(self.fault_kinds))
        if self.images < 0:
            raise ConfigError("emulator.images", "must be >= 0")
        if self.profile not in PROFILES:
            raise ConfigError("emulator.profile", f"must be one of {', '.join(PROFILES)}")
        if self.tie_group < 0:
            raise ConfigError("emulator.tie_group", "must be >= 0")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ConfigError("emulator.fault_rate", "must be between 0 and 1")
        unknown = set(self.fault_kinds) - FAULT_KINDS
        if unknown:
            raise ConfigError(
                "emulator.fault_kinds",
                f"unknown {sorted(unknown)}, expected some of {sorted(FAULT_KINDS)}",
            )
        if self.fault_rate > 0 and not self.fault_kinds:
            raise ConfigError("emulator.fault_kinds", "empty while fault_rate > 0")
        if self.rate_quota is not None and self.rate_quota < 1:
            raise ConfigError("emulator.rate_quota", "must be >= 1")
        if self.page_cap is not None and self.page_cap < 1:
            raise ConfigError("emulator.page_cap", "must be >= 1")
        if self.batch_rate is not None and self.batch_rate <= 0:
            raise ConfigError("emulator.batch_rate", "must be > 0")


def add_emulator_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's flags (`--host`, `--port`, catalog, auth, limits, faults)."""
    d = EmulatorSettings()
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    add("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}, 0: any)")
    add("--images", type=int, default=d.images, help="catalog size")
    add("--seed", type=int, default=d.seed, help="catalog and fault seed")
    add(
        "--profile",
        choices=PROFILES,
        default=d.profile,
        help="catalog: classic (default) or nasty (benchmarks: ~1 KB meta on 12%%, ~40 meta "
        "columns, 5%% of images on one instant; rendered on demand, fine at millions)",
    )
    add("--tie-group", type=int, default=d.tie_group, help="bulk import of N images on one instant")
    add("--token", default=d.token, help="accepted API token")
    add("--account-id", default=d.account_id, help="the only account served")
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
    add("--latency", type=float, default=d.latency_s, help="delay added to every page, seconds")
    add("--page-cap", type=int, default=None, help="serve at most N images per page")
    add("--batch-token-ttl", type=float, default=d.batch_token_ttl_s, help="seconds")
    add("--batch-rate", type=float, default=None, help="requests/s per batch token")
    add("--no-batch-tokens", action="store_true", help="refuse batch tokens (403)")


def settings_from_args(ns: argparse.Namespace) -> EmulatorSettings:
    """Return the settings that the parsed flags of `add_emulator_arguments` describe."""
    kinds = frozenset(kind.strip() for kind in ns.fault_kinds.split(",") if kind.strip())
    return EmulatorSettings(
        images=ns.images,
        seed=ns.seed,
        profile=ns.profile,
        tie_group=ns.tie_group,
        token=ns.token,
        account_id=ns.account_id,
        rate_quota=ns.rate_quota,
        rate_window_s=ns.rate_window,
        lockout_s=ns.lockout,
        fault_rate=ns.fault_rate,
        fault_kinds=kinds,
        slow_s=ns.slow,
        latency_s=ns.latency,
        page_cap=ns.page_cap,
        batch_token_ttl_s=ns.batch_token_ttl,
        batch_rate=ns.batch_rate,
        allow_batch_tokens=not ns.no_batch_tokens,
    )
