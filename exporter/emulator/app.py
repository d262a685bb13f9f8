"""The aiohttp application: routes of the Images API and of the batch host, auth, limits.

Routes (the API host lives under `/client/v4`, the batch host under `/batch`):

    GET /client/v4/accounts/{account_id}/images/v2            List V2
    GET /client/v4/accounts/{account_id}/images/v1/stats      result.count.current/allowed
    GET /client/v4/accounts/{account_id}/images/v1/batch_token
    GET /batch/images/v2                                      List V2 with a batch token

Each API-host request is authenticated (Bearer token, or X-Auth-Email + X-Auth-Key: 401),
counted against the caller's rate limit (429 + Retry-After once over), then checked against
the one account served (403). Batch-host requests bypass the global limit and have an
optional per-token rate. Faults and the latency knob apply to list requests only.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web

from exporter.emulator.catalog import Catalog
from exporter.emulator.envelope import (
    AUTH_ERROR,
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
    select_page,
)
from exporter.emulator.ratelimit import RateLimiter
from exporter.emulator.settings import EmulatorSettings
from exporter.emulator.tokens import TokenError, TokenSigner

API_PREFIX = "/client/v4"
BATCH_PREFIX = "/batch"
# Cloudflare's edge answers 429 with code 971, but the spec's messages need code >= 1000:
# the emulator follows the spec; clients must key on the HTTP status, not on this code.
THROTTLED = 10429
BATCH_DISABLED = 5403
SCAN_IN_THREAD = 20_000  # catalogs bigger than this are filtered off the event loop
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


@dataclass
class EmulatorState:
    """Everything the handlers share; one per application."""

    settings: EmulatorSettings
    catalog: Catalog
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    counters: Counters = field(default_factory=Counters)

    def __post_init__(self) -> None:
        s = self.settings
        self.signer = TokenSigner.for_emulator(s.seed, s.account_id)
        self.views = ViewCache(self.catalog)
        self.faults = FaultPlan(s.seed, s.fault_rate, s.fault_kinds)
        self.limiter = (
            RateLimiter(s.rate_quota, s.rate_window_s, s.lockout_s, self.clock)
            if s.rate_quota is not None
            else None
        )
        self.batch_limiter = (
            RateLimiter(max(1, int(s.batch_rate)), 1.0, 1.0, self.clock)
            if s.batch_rate is not None
            else None
        )


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
    return app


@web.middleware
async def _count_and_envelope(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every reply by status; unknown routes and methods get Cloudflare's envelope."""
    counters = request.app[STATE].counters
    counters.requests += 1
    try:
        response = await handler(request)
    except web.HTTPMethodNotAllowed:
        response = error_response(405, METHOD_NOT_ALLOWED, "Method not allowed")
    except web.HTTPNotFound:
        response = error_response(404, NO_ROUTE, "No route for the URI")
    counters.by_status[response.status] += 1
    return response


def _caller(settings: EmulatorSettings, headers: Mapping[str, str]) -> str | None:
    """Return who is calling (the rate-limit key), or None when the credentials are wrong."""
    authorization = headers.get("Authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip() == settings.token:
            return "token"
        return None
    email, key = headers.get("X-Auth-Email"), headers.get("X-Auth-Key")
    if email == settings.email and key == settings.api_key:
        return f"email:{email}"
    return None


def _admit(request: web.Request) -> tuple[web.Response | None, dict[str, str]]:
    """Authenticate, rate-limit and check the account; return a refusal or the headers."""
    state = request.app[STATE]
    caller = _caller(state.settings, request.headers)
    if caller is None:
        return error_response(401, AUTH_ERROR, "Authentication error"), {}
    headers: dict[str, str] = {}
    if state.limiter is not None:
        decision = state.limiter.hit(caller)
        headers = decision.headers()
        if not decision.allowed:
            state.counters.throttled += 1
            message = "Please wait and consider throttling your request speed"
            return error_response(429, THROTTLED, message, headers), headers
    if request.match_info["account_id"] != state.settings.account_id:
        return error_response(403, AUTH_ERROR, "Authentication error", headers), headers
    return None, headers


async def _list_images(request: web.Request) -> web.StreamResponse:
    refusal, headers = _admit(request)
    if refusal is not None:
        return refusal
    return await _serve_list(request, headers)


async def _batch_list_images(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    state.counters.batch_requests += 1
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    try:
        if scheme.lower() != "bearer":
            raise TokenError("Authentication error")
        account = state.signer.batch_account(token.strip(), int(state.wall() * 1000))
    except TokenError as exc:
        return error_response(401, AUTH_ERROR, str(exc))
    if account != state.settings.account_id:
        return error_response(403, AUTH_ERROR, "Authentication error")
    headers: dict[str, str] = {}
    if state.batch_limiter is not None:
        decision = state.batch_limiter.hit(token)
        if not decision.allowed:
            state.counters.throttled += 1
            headers = {"Retry-After": str(decision.retry_after)}
            message = "Please wait and consider throttling your request speed"
            return error_response(429, THROTTLED, message, headers)
    return await _serve_list(request, headers)


async def _serve_list(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    """Validate the query, maybe inject a fault, and serve one page."""
    state = request.app[STATE]
    try:
        query = parse_list_query(request.query.items())
        after = None
        if query.continuation_token is not None:
            after = state.signer.resume_key(
                query.continuation_token, query.sort_order, query.fingerprint
            )
    except (QueryError, TokenError) as exc:
        return error_response(400, BAD_REQUEST, str(exc), headers)
    fault = state.faults.next_fault()
    if fault is not None:
        state.counters.faults[fault] += 1
    if state.settings.latency_s > 0:
        await asyncio.sleep(state.settings.latency_s)
    if fault == "slow":
        await asyncio.sleep(state.settings.slow_s)
    if len(state.catalog) > SCAN_IN_THREAD and not state.views.is_cached(query):
        view = await asyncio.to_thread(state.views.positions, query)
    else:
        view = state.views.positions(query)
    size = min(query.per_page, state.settings.page_cap or query.per_page)
    page = select_page(state.catalog.keys, view, query.sort_order, size, after)
    token = None
    if page.next_key is not None:
        token = state.signer.continuation(query.sort_order, query.fingerprint, page.next_key)
    body = envelope(state.catalog.render_positions(page.positions), token)
    if fault is not None and fault != "slow":
        return await fault_reply(request, fault, body, headers)
    state.counters.pages += 1
    state.counters.images_served += len(page.positions)
    return web.Response(body=body, content_type="application/json", headers=headers)


async def _stats(request: web.Request) -> web.StreamResponse:
    refusal, headers = _admit(request)
    if refusal is not None:
        return refusal
    current = len(request.app[STATE].catalog)
    return json_response({"count": {"allowed": max(100_000, current), "current": current}}, headers)


async def _batch_token(request: web.Request) -> web.StreamResponse:
    refusal, headers = _admit(request)
    if refusal is not None:
        return refusal
    state = request.app[STATE]
    if not state.settings.allow_batch_tokens:
        message = "Batch tokens are not enabled for this account"
        return error_response(403, BATCH_DISABLED, message, headers)
    expires = state.wall() + state.settings.batch_token_ttl_s
    token = state.signer.batch_token(state.settings.account_id, int(expires * 1000))
    return json_response({"token": token, "expiresAt": _rfc3339(expires)}, headers)


def _rfc3339(epoch_s: float) -> str:
    """Return a UTC RFC 3339 timestamp with milliseconds, as the API writes them."""
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
