"""The aiohttp application: routes of the Images API and of the batch host, auth, limits.

Routes (the API host lives under `/client/v4`, the batch host under `/batch`):

    GET /client/v4/accounts/{account_id}/images/v2            List V2
    GET /client/v4/accounts/{account_id}/images/v1/stats      result.count.current/allowed
    GET /client/v4/accounts/{account_id}/images/v1/batch_token
    GET /batch/images/v2                                      List V2 with a batch token
    GET /_emulator/accounts/{account_id}/live                 the live record (not an API route)
    GET /_emulator/accounts/{account_id}/changes              night N-1 -> N (not an API route)
    POST /_emulator/accounts/{account_id}/uploads             add uploads now (see uploads.py)
    GET /_emulator/accounts/{account_id}/uploads              the record of those uploads

An API-host request is routed first: an account id the emulator does not serve and that is
not 32 hex digits answers 404 code 7003, as Cloudflare does for a malformed identifier; an
unknown path answers 404 code 7000. Then it is authenticated (a Bearer token, or
X-Auth-Email + X-Auth-Key, of any served account: else 401), counted against its caller's
rate limit (429 + Retry-After once over; accounts sharing a credential share it), and checked
against the account (403 when the credential is not that account's). Batch-host requests
bypass the global limit and have an optional per-token rate. Latency delays every API reply
(a round trip to Cloudflare costs the same on every route); faults, live changes and
misbehaviour apply to list requests only.
"""

from __future__ import annotations

import asyncio
import re
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

from exporter.emulator.catalog import Catalog
from exporter.emulator.envelope import (
    AUTH_ERROR,
    BAD_IDENTIFIER,
    BAD_REQUEST,
    METHOD_NOT_ALLOWED,
    NO_ROUTE,
    error_response,
    json_response,
)
from exporter.emulator.faults import FaultPlan, fault_reply
from exporter.emulator.listing import (
    QueryError,
    ViewCache,
    envelope,
    parse_list_query,
    select_catalog_page,
)
from exporter.emulator.live import LiveCatalog, LiveRecord
from exporter.emulator.nights import NightChanges
from exporter.emulator.ratelimit import RateLimiter
from exporter.emulator.render import mix
from exporter.emulator.settings import AccountSettings, EmulatorSettings
from exporter.emulator.ties import TieOrder
from exporter.emulator.tokens import TokenError, TokenSigner
from exporter.emulator.uploads import Uploads

API_PREFIX = "/client/v4"
BATCH_PREFIX = "/batch"
DEBUG_PREFIX = "/_emulator"
# Cloudflare's edge answers 429 with code 971, but the spec's messages need code >= 1000:
# the emulator follows the spec; clients must key on the HTTP status, not on this code.
THROTTLED = 10429
BATCH_DISABLED = 5403
FORBIDDEN_ENDPOINT = 103  # the batch host refusing List V2, as reported from the field
SCAN_IN_THREAD = 20_000  # catalogs bigger than this are filtered off the event loop
ACCOUNT_ID = re.compile(r"[0-9a-f]{32}")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Counters:
    """What the emulator saw; tests and benchmarks read it."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    throttled: int = 0  # 429 replies
    faults: Counter[str] = field(default_factory=Counter)
    batch_requests: int = 0
    pages: int = 0  # list pages served with status 200 (faults excluded)
    images_served: int = 0
    misbehaved: int = 0  # pages served out of order or repeating their cursor's image
    connections: int = 0  # client connections that sent a request


class AccountState:
    """One served account: its catalog, tokens, filter views, faults and live changes."""

    def __init__(
        self,
        account: AccountSettings,
        catalog: Catalog,
        live: LiveCatalog | None,
        changes: NightChanges | None = None,
        night: int = 0,
    ) -> None:
        self.settings = account
        self.changes = changes  # what changed from the previous night (None at night 0)
        self.catalog = catalog
        self.signer = TokenSigner.for_emulator(account.seed, account.account_id)
        self.views = ViewCache(catalog)
        # Another night, another hash order: only a cursor's own order is consistent.
        self.ties = TieOrder(account.ties, account.seed + 7919 * night)
        self.faults = FaultPlan(account.seed, account.fault_rate, account.fault_kinds)
        self.live = live
        self.uploads = Uploads(catalog, account.seed)  # uploads between walks (a test aid)
        self.pages = 0  # list pages chosen (the misbehaviour knobs count them)
        self.images_served = 0  # in pages served with status 200

    @property
    def record(self) -> LiveRecord | None:
        """Return the truth of live mode, or None when live mode is off."""
        return None if self.live is None else self.live.record


@dataclass
class EmulatorState:
    """Everything the handlers share; one per application."""

    settings: EmulatorSettings
    catalogs: Mapping[str, Catalog]  # by account id, one per served account
    changes: Mapping[str, NightChanges | None] = field(default_factory=dict)  # by account id
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        s = self.settings
        self.accounts: dict[str, AccountState] = {}
        self.limiters: dict[str, RateLimiter] = {}
        for account in s.served():
            catalog = self.catalogs[account.account_id]
            live = None
            if s.live_every:
                live = LiveCatalog(catalog, account.seed, s.live_every, s.live_mutations)
            changes = self.changes.get(account.account_id)
            self.accounts[account.account_id] = AccountState(
                account, catalog, live, changes, s.night
            )
            quota, window, lockout = account.rate_limit
            for credential in account.credentials:
                if quota is not None and credential not in self.limiters:
                    self.limiters[credential] = RateLimiter(quota, window, lockout, self.clock)
        self.connections: weakref.WeakSet[object] = weakref.WeakSet()  # transports seen
        self.batch_signer = TokenSigner.for_emulator(s.seed, s.account_id)
        self.batch_limiter = (
            RateLimiter(max(1, int(s.batch_rate)), 1.0, 1.0, self.clock)
            if s.batch_rate is not None
            else None
        )

    @property
    def catalog(self) -> Catalog:
        """Return the primary account's catalog."""
        return self.catalogs[self.settings.account_id]

    @property
    def limiter(self) -> RateLimiter | None:
        """Return the rate limiter of the primary account's token (None: no limit)."""
        return self.limiters.get(f"token:{self.settings.token}")


STATE = web.AppKey("state", EmulatorState)


def create_app(state: EmulatorState) -> web.Application:
    """Return the application serving both hosts from one state."""
    app = web.Application(middlewares=[_count_and_envelope])
    app[STATE] = state
    account = API_PREFIX + "/accounts/{account_id}/images"
    app.router.add_get(account + "/v2", _list_images)
    app.router.add_get(account + "/v1/stats", _stats)
    app.router.add_get(account + "/v1/batch_token", _batch_token)
    app.router.add_get(BATCH_PREFIX + "/images/v2", _batch_list_images)
    app.router.add_get(DEBUG_PREFIX + "/accounts/{account_id}/live", _live_record)
    app.router.add_get(DEBUG_PREFIX + "/accounts/{account_id}/changes", _night_changes)
    app.router.add_post(DEBUG_PREFIX + "/accounts/{account_id}/uploads", _add_uploads)
    app.router.add_get(DEBUG_PREFIX + "/accounts/{account_id}/uploads", _upload_record)
    return app


@web.middleware
async def _count_and_envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every reply by status; unknown routes and methods get Cloudflare's envelope.

    A connection's first request waits `connect_latency_s` more: what the TCP and TLS
    handshakes of a new connection cost a client before its first reply.
    """
    state = request.app[STATE]
    counters = state.counters
    counters.requests += 1
    transport = request.transport
    if transport is not None and transport not in state.connections:
        state.connections.add(transport)
        counters.connections += 1
        if state.settings.connect_latency_s > 0:
            await asyncio.sleep(state.settings.connect_latency_s)
    try:
        response = await handler(request)
    except web.HTTPMethodNotAllowed:
        response = error_response(405, METHOD_NOT_ALLOWED, "Method not allowed")
    except web.HTTPNotFound:
        response = error_response(404, NO_ROUTE, "No route for that URI")
    counters.by_status[response.status] += 1
    return response


def _caller(state: EmulatorState, headers: Mapping[str, str]) -> str | None:
    """Return who is calling (the rate-limit key), or None when no account knows them."""
    authorization = headers.get("Authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        caller = f"token:{token.strip()}" if scheme.lower() == "bearer" else ""
    else:
        caller = f"email:{headers.get('X-Auth-Email')}:{headers.get('X-Auth-Key')}"
    known = any(caller in account.settings.credentials for account in state.accounts.values())
    return caller if known else None


def _admit(request: web.Request) -> web.Response | tuple[AccountState, dict[str, str]]:
    """Route, authenticate, rate-limit and check the account; a refusal, or the account and
    the rate-limit headers its reply carries."""
    state = request.app[STATE]
    account_id = request.match_info["account_id"]
    account = state.accounts.get(account_id)
    if account is None and ACCOUNT_ID.fullmatch(account_id) is None:
        message = f"Could not route to {request.path}, perhaps your object identifier is invalid?"
        return error_response(404, BAD_IDENTIFIER, message)
    caller = _caller(state, request.headers)
    if caller is None:
        return error_response(401, AUTH_ERROR, "Authentication error")
    headers: dict[str, str] = {}
    limiter = state.limiters.get(caller)
    if limiter is not None:
        decision = limiter.hit(caller)
        headers = decision.headers()
        if not decision.allowed:
            state.counters.throttled += 1
            message = "Please wait and consider throttling your request speed"
            return error_response(429, THROTTLED, message, headers)
    if account is None or caller not in account.settings.credentials:
        return error_response(403, AUTH_ERROR, "Authentication error", headers)
    return account, headers


async def _list_images(request: web.Request) -> web.StreamResponse:
    admitted = _admit(request)
    if isinstance(admitted, web.Response):
        return admitted
    return await _serve_list(request, *admitted)


async def _batch_list_images(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.counters.batch_requests += 1
    if state.settings.refuse_batch_list == 403:
        return error_response(403, FORBIDDEN_ENDPOINT, "forbidden endpoint")
    if state.settings.refuse_batch_list == 404:
        return error_response(404, NO_ROUTE, "No route for that URI")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer":
            raise TokenError("Authentication error")
        account_id = state.batch_signer.batch_account(token.strip(), int(state.wall() * 1000))
    except TokenError as exc:
        return error_response(401, AUTH_ERROR, str(exc))
    account = state.accounts.get(account_id)
    if account is None:
        return error_response(403, AUTH_ERROR, "Authentication error")
    headers: dict[str, str] = {}
    if state.batch_limiter is not None:
        decision = state.batch_limiter.hit(token)
        if not decision.allowed:
            state.counters.throttled += 1
            headers = {"Retry-After": str(decision.retry_after)}
            message = "Please wait and consider throttling your request speed"
            return error_response(429, THROTTLED, message, headers)
    return await _serve_list(request, account, headers)


async def _serve_list(
    request: web.Request, account: AccountState, headers: dict[str, str]
) -> web.StreamResponse:
    """Validate the query, maybe inject a fault or a live change, and serve one page."""
    state = request.app[STATE]
    settings = state.settings
    try:
        query = parse_list_query(request.query.items())
        after = None
        if query.continuation_token is not None:
            after = account.signer.resume_key(
                query.continuation_token, query.sort_order, query.fingerprint
            )
    except (QueryError, TokenError) as exc:
        return error_response(400, BAD_REQUEST, str(exc), headers)
    if account.live is not None:
        account.live.on_request()
    fault = account.faults.next_fault()
    if fault is not None:
        state.counters.faults[fault] += 1
    if settings.latency_s > 0:
        await asyncio.sleep(settings.latency_s)
    if fault == "slow":
        await asyncio.sleep(settings.slow_s)
    catalog = account.catalog
    big = len(catalog) > SCAN_IN_THREAD and account.live is None  # live: no concurrent scans
    if big and not account.views.is_cached(query):
        view = await asyncio.to_thread(account.views.positions, query)
    else:
        view = account.views.positions(query)
    size = min(query.per_page, settings.page_cap or query.per_page)
    if settings.short_pages:
        size = short_page_size(account.settings.seed, after, query.sort_order, size)
    page = select_catalog_page(catalog, view, query.sort_order, size, after, account.ties)
    token = None
    if page.next_key is not None:
        token = account.signer.continuation(query.sort_order, query.fingerprint, page.next_key)
    account.pages += 1
    images = _misbehave(state, account, catalog.render_positions(page.positions), after)
    body = envelope(images, token)
    if fault is not None and fault != "slow":
        return await fault_reply(request, fault, body, headers)
    state.counters.pages += 1
    state.counters.images_served += len(page.positions)
    account.images_served += len(page.positions)
    return web.Response(body=body, content_type="application/json", headers=headers)


def short_page_size(seed: int, after: tuple[int, str] | None, order: str, size: int) -> int:
    """Return a page size in 1..size drawn from the cursor: the same request, the same page."""
    cursor = 0 if after is None else after[0] ^ int.from_bytes(after[1].encode()[-8:], "big")
    return 1 + mix(seed ^ cursor ^ (order == "asc")) % size


def _misbehave(
    state: EmulatorState, account: AccountState, images: list[bytes], after: tuple[int, str] | None
) -> list[bytes]:
    """Break the page as the misbehaviour knobs ask: swap two images, or repeat the cursor's."""
    settings, pages = state.settings, account.pages
    if settings.disorder_every and pages % settings.disorder_every == 0 and len(images) >= 2:
        state.counters.misbehaved += 1
        return [images[1], images[0], *images[2:]]
    if settings.repeat_every and after is not None and pages % settings.repeat_every == 0:
        position = account.catalog.position_of(after[1], after[0])
        if position is not None:
            state.counters.misbehaved += 1
            return [account.catalog.blob(position), *images]
    return images


async def _stats(request: web.Request) -> web.StreamResponse:
    admitted = _admit(request)
    if isinstance(admitted, web.Response):
        return admitted
    account, headers = admitted
    settings = request.app[STATE].settings
    delay = settings.latency_s if settings.stats_latency_s is None else settings.stats_latency_s
    if delay > 0:
        await asyncio.sleep(delay)
    current = len(account.catalog) + settings.drafts
    return json_response({"count": {"allowed": max(100_000, current), "current": current}}, headers)


async def _batch_token(request: web.Request) -> web.StreamResponse:
    admitted = _admit(request)
    if isinstance(admitted, web.Response):
        return admitted
    account, headers = admitted
    state = request.app[STATE]
    if state.settings.latency_s > 0:
        await asyncio.sleep(state.settings.latency_s)
    if not state.settings.allow_batch_tokens:
        message = "Batch tokens are not enabled for this account"
        return error_response(403, BATCH_DISABLED, message, headers)
    expires = state.wall() + state.settings.batch_token_ttl_s
    token = state.batch_signer.batch_token(account.settings.account_id, int(expires * 1000))
    return json_response({"token": token, "expiresAt": _rfc3339(expires)}, headers)


async def _live_record(request: web.Request) -> web.StreamResponse:
    """Return the live record of an account (a test and debugging aid, not an API route)."""
    account = request.app[STATE].accounts.get(request.match_info["account_id"])
    if account is None or account.record is None:
        return error_response(404, NO_ROUTE, "No live record: unknown account or live mode off")
    return json_response(account.record.to_json())


async def _night_changes(request: web.Request) -> web.StreamResponse:
    """Return what changed in an account from night N-1 to N (a test aid, not an API route)."""
    account = request.app[STATE].accounts.get(request.match_info["account_id"])
    if account is None or account.changes is None:
        return error_response(404, NO_ROUTE, "No night changes: unknown account or night 0")
    return json_response(account.changes.to_json())


async def _add_uploads(request: web.Request) -> web.StreamResponse:
    """Add a burst of uploads now: `?count=N&late=L&ties=T&lateness_s=S` (a test aid)."""
    account = request.app[STATE].accounts.get(request.match_info["account_id"])
    if account is None:
        return error_response(404, NO_ROUTE, "No such account")
    query = request.query
    try:
        count, late, ties = (int(query.get(k, "0")) for k in ("count", "late", "ties"))
        added = account.uploads.add(
            count, late=late, ties=ties, lateness_s=float(query.get("lateness_s", "180"))
        )
    except ValueError as exc:
        return error_response(400, BAD_REQUEST, str(exc))
    return json_response(added)


async def _upload_record(request: web.Request) -> web.StreamResponse:
    """Return every upload added through `_add_uploads` (a test aid, not an API route)."""
    account = request.app[STATE].accounts.get(request.match_info["account_id"])
    if account is None:
        return error_response(404, NO_ROUTE, "No such account")
    return json_response(account.uploads.record.to_json())


def _rfc3339(epoch_s: float) -> str:
    """Return a UTC RFC 3339 timestamp with milliseconds, as the API writes them."""
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
