"""Run the emulator: an async context manager for tests and a blocking `serve` for the CLI."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TextIO

from aiohttp import web

from exporter.emulator.app import (
    API_PREFIX,
    BATCH_PREFIX,
    AccountState,
    Counters,
    EmulatorState,
    create_app,
)
from exporter.emulator.catalog import Catalog, build_catalog
from exporter.emulator.live import LiveRecord
from exporter.emulator.nights import NightChanges, NightPlan, catalog_at_night
from exporter.emulator.settings import DEFAULT_PORT, AccountSettings, EmulatorSettings
from exporter.emulator.ties import TieOrder
from exporter.emulator.uploads import Uploads
from exporter.errors import ConfigError


@dataclass(frozen=True)
class RunningEmulator:
    """A served emulator: where it listens and what it serves, counters live."""

    base_url: str  # e.g. http://127.0.0.1:PORT/client/v4, the SDK's base_url
    batch_base_url: str  # the batch host root; list at f"{batch_base_url}/images/v2"
    host: str
    port: int
    settings: EmulatorSettings
    catalog: Catalog
    state: EmulatorState

    @property
    def counters(self) -> Counters:
        return self.state.counters

    @property
    def account_id(self) -> str:
        return self.settings.account_id

    @property
    def token(self) -> str:
        return self.settings.token

    @property
    def ties(self) -> TieOrder:
        """Return how the primary account orders the images sharing an instant."""
        return self.state.accounts[self.account_id].ties

    @property
    def list_url(self) -> str:
        """Return the List V2 URL of the primary account."""
        return f"{self.base_url}/accounts/{self.account_id}/images/v2"

    @property
    def changes(self) -> NightChanges | None:
        """Return what changed in the primary account from night N-1 to N (None at night 0)."""
        return self.state.accounts[self.account_id].changes

    @property
    def live(self) -> LiveRecord:
        """Return the primary account's live record (live mode must be on)."""
        return self.account().live_record()

    def account(self, account_id: str | None = None) -> ServedAccount:
        """Return one served account (default: the primary one)."""
        state = self.state.accounts[account_id or self.account_id]
        return ServedAccount(self, state)


@dataclass(frozen=True)
class ServedAccount:
    """One account of a running emulator: its URL, credentials, catalog and records."""

    emulator: RunningEmulator
    state: AccountState

    @property
    def settings(self) -> AccountSettings:
        return self.state.settings

    @property
    def account_id(self) -> str:
        return self.state.settings.account_id

    @property
    def token(self) -> str:
        return self.state.settings.token

    @property
    def catalog(self) -> Catalog:
        return self.state.catalog

    @property
    def ties(self) -> TieOrder:
        """Return how this account orders the images sharing an instant."""
        return self.state.ties

    @property
    def list_url(self) -> str:
        return f"{self.emulator.base_url}/accounts/{self.account_id}/images/v2"

    @property
    def changes(self) -> NightChanges | None:
        """Return what changed from night N-1 to N (None at night 0)."""
        return self.state.changes

    @property
    def pages(self) -> int:
        """Return how many list pages this account was asked for (faults included)."""
        return self.state.pages

    @property
    def images_served(self) -> int:
        """Return how many images this account served in successful pages."""
        return self.state.images_served

    @property
    def uploads(self) -> Uploads:
        """Return the account's uploads between walks: `add(...)` and its `record`."""
        return self.state.uploads

    def live_record(self) -> LiveRecord:
        """Return the truth of live mode; RuntimeError when live mode is off."""
        if self.state.record is None:
            raise RuntimeError("live mode is off: set EmulatorSettings.live_every")
        return self.state.record


CACHE_LIMIT = 100_000  # bigger catalogs are not kept after their emulator stops


def catalog_for(
    settings: AccountSettings, night: int = 0, plan: NightPlan | None = None
) -> tuple[Catalog, NightChanges | None]:
    """Return a fresh catalog for an account as of `night`, and that night's changes.

    Small catalogs are built once per process; each call returns its own copy (live mode
    mutates it), sharing the immutable profile.
    """
    shape = (settings.images, settings.seed, settings.profile, settings.tie_group, settings.extras)
    if settings.images > CACHE_LIMIT:
        base, shared = _build(*shape), False
    else:
        base, shared = _small_catalog(*shape), True
    if night == 0:
        return (base.copy() if shared else base), None
    return catalog_at_night(base, night, plan or NightPlan())  # a copy


def _evolved(
    account: AccountSettings, settings: EmulatorSettings, base: Catalog | None
) -> tuple[Catalog, NightChanges | None]:
    """Return an account's catalog as of the settings' night (from a prebuilt base if given)."""
    if base is None:
        return catalog_for(account, settings.night, settings.night_plan())
    return catalog_at_night(base, settings.night, settings.night_plan())


def _build(images: int, seed: int, profile: str, tie_group: int, extras: bool) -> Catalog:
    return build_catalog(images, seed, profile=profile, tie_group=tie_group, extras=extras)


@functools.lru_cache(maxsize=16)
def _small_catalog(images: int, seed: int, profile: str, tie_group: int, extras: bool) -> Catalog:
    return _build(images, seed, profile, tie_group, extras)


def check_loopback(host: str) -> None:
    """Raise ConfigError unless `host` is a loopback address: the emulator is never public."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError("emulator.host", f"{host!r} is not a loopback address")


@asynccontextmanager
async def run_emulator(
    settings: EmulatorSettings | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
    catalog: Catalog | None = None,
) -> AsyncIterator[RunningEmulator]:
    """Serve the emulator on `host:port` (0: any free port) until the block exits.

    `catalog` reuses a prebuilt `build_catalog(settings.images, settings.seed, ...)` (served
    as is: live mode mutates it), so a benchmark pays the build of a big catalog once; the
    clocks drive rate limits and batch-token expiry.
    """
    settings = settings or EmulatorSettings()
    check_loopback(host)
    if catalog is not None and (
        len(catalog),
        catalog.seed,
        catalog.profile.name,
        catalog.extras,
    ) != (settings.images, settings.seed, settings.profile, settings.primary().extras):
        raise ConfigError("emulator.images", "the prebuilt catalog does not match the settings")
    catalogs: dict[str, Catalog] = {}
    changes: dict[str, NightChanges | None] = {}
    for account in settings.served():
        key = account.account_id
        if catalog is not None and key == settings.account_id and settings.night == 0:
            catalogs[key], changes[key] = catalog, None
        else:
            built = catalog if key == settings.account_id else None
            catalogs[key], changes[key] = await asyncio.to_thread(
                _evolved, account, settings, built
            )
    state = EmulatorState(
        settings=settings, catalogs=catalogs, changes=changes, clock=clock, wall=wall
    )
    runner = web.AppRunner(create_app(state), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            message = f"cannot listen on {host}:{port}: {reason}"
            raise ConfigError("emulator.port", message) from None
        bound_port = _bound_port(runner)
        root = f"http://{host}:{bound_port}"
        yield RunningEmulator(
            base_url=root + API_PREFIX,
            batch_base_url=root + BATCH_PREFIX,
            host=host,
            port=bound_port,
            settings=settings,
            catalog=state.catalog,
            state=state,
        )
    finally:
        await runner.cleanup()


def _bound_port(runner: web.AppRunner) -> int:
    address = runner.addresses[0]
    return int(address[1])


def serve(
    settings: EmulatorSettings,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    out: TextIO = sys.stdout,
) -> None:
    """Serve until interrupted, printing the base URL, account id and token first."""

    async def main() -> None:
        async with run_emulator(settings, host, port) as emu:
            print(describe(emu), file=out, flush=True)
            await asyncio.Event().wait()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        print("emulator stopped", file=out)


def describe(emu: RunningEmulator) -> str:
    """Return the start banner: what to point a client at."""
    s = emu.settings
    lines = [
        f"Cloudflare Images emulator: {len(emu.catalog)} images "
        f"({s.profile} catalog, seed {s.seed}, night {s.night})",
        f"  CLOUDFLARE_BASE_URL={emu.base_url}",
        f"  CLOUDFLARE_ACCOUNT_ID={emu.account_id}",
        f"  CLOUDFLARE_API_TOKEN={emu.token}",
        f"  batch host: --batch-api --batch-base-url {emu.batch_base_url}",
    ]
    if s.email:
        lines.append(f"  or email + key: CLOUDFLARE_EMAIL={s.email} CLOUDFLARE_API_KEY={s.api_key}")
    if s.page_cap is not None:
        lines.append(f"  pages: at most {s.page_cap} images" + (", short" * s.short_pages))
    changes = emu.changes
    if changes is not None:
        lines.append(
            f"  since night {s.night - 1}: {len(changes.added)} added, {len(changes.removed)} "
            f"removed, {len(changes.changed)} changed"
        )
    if s.live_every:
        lines.append(f"  live: {s.live_mutations} change(s) every {s.live_every} list requests")
    if s.primary().extras:
        lines.append("  images carry fields the API reference does not list (--extra-fields)")
    if s.refuse_batch_list:
        lines.append(f"  the batch host refuses List V2 with HTTP {s.refuse_batch_list}")
    for account in s.accounts:
        lines.append(
            f"  account {account.account_id}: {len(emu.state.catalogs[account.account_id])} "
            f"images ({account.profile}, seed {account.seed}), token {account.token}"
        )
    if s.rate_quota is not None:
        lines.append(f"  rate limit: {s.rate_quota}/{s.rate_window_s:g}s, lockout {s.lockout_s:g}s")
    if s.fault_rate > 0:
        lines.append(f"  faults: {s.fault_rate:.0%} of list requests, {sorted(s.fault_kinds)}")
    return "\n".join(lines)
