"""The Images API over HTTP: the only module importing aiohttp on the client side.

One `ClientSession` per run (keep-alive, connect/read timeouts, TLS verification on); the runs
of a fleet's accounts share its connections (a `ConnectionPool` the fleet passes down). Every
request waits for the shared `Pacer`, then runs in a tenacity loop built from `RetryPolicy`;
aiohttp exceptions never leave this module: they become `TransientError` inside the loop and
`RetriesExhausted`/`AuthError`/`ResponseError` outside it. Secrets (API token, key, batch
token) never appear in a log line, an exception message or a repr.

A batch host may refuse List V2 (reported from the field: 403 `{"code":"103","message":
"forbidden endpoint"}`). A 403 or 404 from the batch host, or any failure whose body says the
endpoint is forbidden, is no permission problem: the client says so once (a warning, and
`stats.batch_fallback`) and every walk goes on over the account API under the account's
pacer, from the same continuation token (the hosts' tokens interchange), so the walk stays
exact. A 401/403 of the account API itself is still an AuthError.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

import aiohttp
import anyio
import orjson
from tenacity import RetryError

from exporter._version import __version__
from exporter.api.auth import Credentials
from exporter.api.pacing import Pacer, Ticket
from exporter.api.pagination import (
    DEFAULT_BASE_URL,
    DEFAULT_BATCH_BASE_URL,
    ListRequest,
    Page,
    SortOrder,
    check_progress,
    first_error_code,
    parse_page,
    summarize_errors,
)
from exporter.api.retry import RetryPolicy, TransientError, build_retrying, parse_retry_after
from exporter.errors import AuthError, PageFormatError, ResponseError, RetriesExhausted
from exporter.stats import RunStats

log = logging.getLogger("exporter.client")

USER_AGENT = f"cf-images-exporter/{__version__}"
PERMISSION_HINT = "the API token needs the Images Read permission on this account"
BATCH_HINT = (
    "these credentials may not create batch tokens (/images/v1/batch_token); "
    "give the token the Images permissions it needs, or run without --batch-api"
)
# Cloudflare's reply to a malformed identifier: "Could not route to ..., perhaps your object
# identifier is invalid?"
BAD_IDENTIFIER = 7003
ACCOUNT_HINT = (
    "Cloudflare account ids are 32 hex digits (the dashboard's Account ID): "
    "check --account-id, CLOUDFLARE_ACCOUNT_ID or export.account_id"
)
# The batch host allows about 200 requests/s per token; stay under it.
BATCH_QUOTA, BATCH_WINDOW_S = 200, 1.0
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
BATCH_REFUSED_STATUS = frozenset({403, 404})
FORBIDDEN_ENDPOINT = "forbidden endpoint"

AuthHeaders = Callable[[], Awaitable[dict[str, str]]]
CONNECTIONS_PER_RUN = 16


@dataclass(frozen=True)
class ConnectionPool:
    """The connections the clients of a fleet's accounts share (`shared_connections`)."""

    connector: aiohttp.BaseConnector


@contextlib.asynccontextmanager
async def shared_connections(runs: int) -> AsyncIterator[ConnectionPool]:
    """Yield one pool for the clients of a fleet's accounts (`runs` at a time), kept alive
    from one account to the next; close it on the way out.

    A new connection to the API costs its TCP and TLS handshakes, round trips before the
    first reply, where a small account's whole walk is a request or two. A connection holds
    no credential (each request carries its own), so accounts of different users share it.
    """
    connector = aiohttp.TCPConnector(limit=CONNECTIONS_PER_RUN * runs, keepalive_timeout=60)
    try:
        yield ConnectionPool(connector)
    finally:
        await connector.close()


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class _BatchRefused(Exception):
    """The batch host refused List V2 (never leaves this module: the walk falls back)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ApiClient:
    """An async context manager around one session; `iter_pages` walks one cursor.

    Its session takes its connections from `pool` when given (a fleet's, shared by its
    accounts), else from a connector of its own, closed with it.
    """

    def __init__(
        self,
        base_url: str,
        account_id: str,
        credentials: Credentials,
        *,
        stats: RunStats,
        pacer: Pacer,
        pool: ConnectionPool | None = None,
        retry: RetryPolicy | None = None,
        batch_base_url: str = DEFAULT_BATCH_BASE_URL,
        batch_pacer: Pacer | None = None,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.account_id = account_id
        self.batch_base_url = batch_base_url.rstrip("/")
        self.stats = stats
        self.retry = retry or RetryPolicy()
        self.pacer = pacer
        self._pool = pool
        self.batch_pacer = batch_pacer or Pacer(BATCH_QUOTA, BATCH_WINDOW_S, 0.9)
        self._credentials = credentials
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout_s,
            sock_connect=connect_timeout_s,
            sock_read=read_timeout_s,
        )
        self._rng = rng or random.Random()
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._batch_token: str | None = None
        self._batch_refused = False  # the batch host refused List V2: walks use the API host
        self._batch_refresh_at = -math.inf
        self._batch_lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"ApiClient(base_url={self.base_url!r}, credentials={self._credentials!r})"

    async def __aenter__(self) -> ApiClient:
        if self._credentials.note:
            log.info("credentials: %s", self._credentials.note)  # once per run
        if self._pool is not None:
            connector = self._pool.connector
        else:
            connector = aiohttp.TCPConnector(limit=CONNECTIONS_PER_RUN, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(  # TLS verification: aiohttp's default, on
            connector=connector,
            connector_owner=self._pool is None,
            timeout=self._timeout,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            raise_for_status=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session (idempotent)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def _account_url(self) -> str:
        return f"{self.base_url}/accounts/{self.account_id}"

    async def get_count(self) -> int | None:
        """Return the catalog's image count (`/images/v1/stats`), None if the reply lacks it."""
        url = f"{self._account_url}/images/v1/stats"
        try:
            body = await self._get_json(url, (), self._api_auth, self.pacer)
        except ResponseError as exc:
            if exc.code == BAD_IDENTIFIER:  # no account to list either: one error, not two
                raise
            log.warning("image count unavailable: %s", exc)
            return None
        result = body.get("result")
        count = result.get("count") if isinstance(result, Mapping) else None
        current = count.get("current") if isinstance(count, Mapping) else None
        if isinstance(current, bool) or not isinstance(current, int):
            log.warning("image count unavailable: the stats reply has no result.count.current")
            return None
        return current

    async def iter_pages(
        self,
        request: ListRequest,
        sort_order: SortOrder | None,
        token: str | None = None,
        *,
        batch: bool = False,
    ) -> AsyncIterator[Page]:
        """Yield the pages of one cursor from `token` (None: the start) to a null token.

        CursorError if the API repeats the token it was sent or the previous page. `batch`
        walks on the batch host, or on the account API once the batch host refused List V2.
        """
        batch = batch and not self._batch_refused
        url = f"{self.batch_base_url if batch else self._account_url}/images/v2"
        auth = self._batch_auth if batch else self._api_auth
        pacer = self.batch_pacer if batch else self.pacer
        previous: list[str] | None = None
        while True:
            params = request.params(sort_order, token)
            try:
                body = await self._get_json(url, params, auth, pacer)
            except _BatchRefused as refused:
                self._fall_back(refused.reason)
                url, auth, pacer = f"{self._account_url}/images/v2", self._api_auth, self.pacer
                continue  # the same request, token included, on the account API
            page = parse_page(body, url)
            previous = check_progress(url, token, page, previous)
            yield page
            if page.next_token is None:
                return
            token = page.next_token

    def _fall_back(self, reason: str) -> None:
        """Record that the batch host refused List V2; say so once per run."""
        if self._batch_refused:
            return  # another cursor's walk met the refusal first
        self._batch_refused = True
        self.stats.batch_fallback = 1
        self.stats.batch_refusal = reason
        log.warning(
            "the batch host refused List V2 (%s); going on over the account API under its "
            "normal pacing",
            reason,
        )

    # -- authentication -------------------------------------------------------------------

    async def _api_auth(self) -> dict[str, str]:
        return self._credentials.headers()

    async def _batch_auth(self) -> dict[str, str]:
        async with self._batch_lock:
            if self._batch_token is None or self._clock() >= self._batch_refresh_at:
                await self._refresh_batch_token()
            assert self._batch_token is not None
            return {"Authorization": f"Bearer {self._batch_token}"}

    async def _refresh_batch_token(self) -> None:
        url = f"{self._account_url}/images/v1/batch_token"
        try:
            body = await self._get_json(url, (), self._api_auth, self.pacer)
        except AuthError as exc:
            raise AuthError(f"batch API: {BATCH_HINT} ({exc})") from None
        result = body.get("result")
        token = result.get("token") if isinstance(result, Mapping) else None
        if not isinstance(token, str) or not token:
            raise PageFormatError(url, "the batch_token reply has no result.token")
        assert isinstance(result, Mapping)
        lifetime = _seconds_until(result.get("expiresAt"), time.time())
        # Refresh well before expiry: a fifth of the lifetime, at most 60 s early.
        early = min(60.0, lifetime / 5) if lifetime is not None else 0.0
        self._batch_token = token
        self._batch_refresh_at = (
            self._clock() + lifetime - early if lifetime is not None else math.inf
        )
        log.info("got a batch token (valid %s)", _describe_lifetime(lifetime))

    # -- one request, retried ---------------------------------------------------------------

    async def _get_json(
        self,
        url: str,
        params: Sequence[tuple[str, str]],
        auth: AuthHeaders,
        pacer: Pacer,
    ) -> dict[str, Any]:
        """Return the decoded JSON object of a 200 reply, retrying per the policy."""
        throttled_sleep = 0.0  # a 429's retry sleep: one pause with the pacer's hold-off after

        def before_sleep(exc: TransientError, attempt: int, wait: float) -> None:
            nonlocal throttled_sleep
            throttled_sleep = wait if exc.status == 429 else 0.0
            self._log_retry(url, exc, attempt, wait)

        retrying = build_retrying(
            self.retry,
            rng=self._rng,
            sleep=self._sleep,
            before_sleep=before_sleep,
            monotonic=self._clock,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(url, params, auth, pacer, throttled_sleep)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            reason = self._scrub(str(last))
            raise RetriesExhausted(url, exc.last_attempt.attempt_number, reason) from last
        raise AssertionError("unreachable: tenacity either returns or raises")  # pragma: no cover

    async def _attempt(
        self,
        url: str,
        params: Sequence[tuple[str, str]],
        auth: AuthHeaders,
        pacer: Pacer,
        throttled_sleep: float,
    ) -> dict[str, Any]:
        if self._session is None:
            raise RuntimeError("ApiClient used outside `async with`")
        headers = await auth()
        ticket = await self._acquire(pacer)
        paused = throttled_sleep + ticket.waited
        if paused > 0:
            self.stats.waits += 1
            self.stats.wait_seconds += paused
        self.stats.requests += 1
        reply: _Reply | None = None
        try:
            # Redirects are never followed: aiohttp would send X-Auth-Email/X-Auth-Key on to
            # whatever host a 3xx names (it strips only Authorization across origins).
            request = self._session.get(
                url, params=list(params), headers=headers, allow_redirects=False
            )
            async with request as resp:
                reply = _Reply(resp.status, resp.headers, await resp.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise TransientError(self._scrub(f"{kind}: {exc}".rstrip(": "))) from None
        finally:
            if reply is None:  # failed or cancelled: the request no longer holds budget
                pacer.release(ticket, None, None)
        retry_after = reply.headers.get("Retry-After")
        pacer.release(
            ticket, reply.status, reply.headers, parse_retry_after(retry_after, self.retry.clock)
        )
        return self._decode(url, reply, retry_after, batch=pacer is self.batch_pacer)

    def _decode(
        self, url: str, reply: _Reply, retry_after: str | None, *, batch: bool
    ) -> dict[str, Any]:
        status = reply.status
        if status == 200:
            if _looks_html(reply):
                raise TransientError(f"HTTP 200 with an HTML body ({_summarize(reply.body)})")
            try:
                body = orjson.loads(reply.body)
            except orjson.JSONDecodeError:
                raise TransientError(
                    f"HTTP 200 with truncated or invalid JSON ({len(reply.body)} bytes)"
                ) from None
            if not isinstance(body, dict):
                raise PageFormatError(url, "reply is not a JSON object")
            return body
        if status == 429:
            self.stats.throttled += 1
        message = self._scrub(_describe(reply))
        if batch and refuses_list(status, _json_or_empty(reply.body)):
            raise _BatchRefused(f"HTTP {status}: {message}")
        if self.retry.retries(status):
            reason = "HTTP 429 (rate limited)" if status == 429 else f"HTTP {status}: {message}"
            raise TransientError(reason, status, retry_after)
        if status == 401 and batch:
            # The batch token expired or was revoked: get a new one and try again.
            self._batch_token = None
            raise TransientError("HTTP 401 from the batch host: refreshing the batch token")
        if status in (401, 403):
            what = "rejected the credentials" if status == 401 else "denied permission"
            raise AuthError(f"the API {what} (HTTP {status}: {message}); {PERMISSION_HINT}")
        code = first_error_code(_json_or_empty(reply.body))
        if status == 404 and code == BAD_IDENTIFIER:  # the only identifier in our paths
            said = message.removeprefix(f"code {code}: ")
            message = f"account id {self.account_id!r} not found or invalid ({said}); "
            message += ACCOUNT_HINT
        raise ResponseError(url, status, code, message)

    async def _acquire(self, pacer: Pacer) -> Ticket:
        """Wait for the pacer's budget, showing "rate limit" while (and only while) waiting."""
        if pacer.delay() <= 0:
            return await pacer.acquire()  # grants at once, without yielding
        self.stats.current_wait = "rate limit"
        try:
            return await pacer.acquire()
        finally:
            self.stats.current_wait = ""

    async def _sleep(self, seconds: float) -> None:
        self.stats.current_wait = "retry"
        try:
            await anyio.sleep(seconds)
        finally:
            self.stats.current_wait = ""

    def _log_retry(self, url: str, exc: TransientError, attempt: int, wait: float) -> None:
        self.stats.retries += 1
        log.warning(
            "retrying %s in %.2f s (attempt %d of %d failed): %s",
            url,
            wait,
            attempt,
            self.retry.max_attempts,
            self._scrub(exc.reason),
        )

    def _scrub(self, text: str) -> str:
        for secret in (*self._credentials.secrets(), self._batch_token):
            if secret:
                text = text.replace(secret, "***")
        return text


def refuses_list(status: int, body: Mapping[str, Any]) -> bool:
    """Return whether a batch host's failure reply refuses List V2 itself: a 403 or 404, or
    a body saying the endpoint is forbidden (in `errors`, or at the top level as reported
    from the field: `{"code":"103","message":"forbidden endpoint"}`)."""
    if status in BATCH_REFUSED_STATUS:
        return True
    errors = body.get("errors")
    entries = [e for e in errors if isinstance(e, Mapping)] if isinstance(errors, list) else []
    return any(
        FORBIDDEN_ENDPOINT in str(entry.get("message", "")).lower() for entry in [body, *entries]
    )


def _looks_html(reply: _Reply) -> bool:
    ctype = reply.headers.get("Content-Type", "")
    return "html" in ctype.lower() or reply.body.lstrip()[:1] == b"<"


def _json_or_empty(body: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _describe(reply: _Reply) -> str:
    """Return the API's own error text, or a one-line summary of a non-JSON body."""
    if not _looks_html(reply):
        body = _json_or_empty(reply.body)
        if body and "errors" not in body and "message" in body:  # {"code", "message"} alone
            return f"code {body.get('code')}: {str(body['message'])[:300]}"
        if body:
            return summarize_errors(body)
    return _summarize(reply.body)


def _summarize(body: bytes) -> str:
    """Return a short, single-line description of a non-JSON body (never the whole body)."""
    match = _TITLE.search(body[:65536])
    if match:
        title = " ".join(match.group(1).decode("utf-8", "replace").split())[:120]
        return f"HTML page {title!r}, {len(body)} bytes"
    if body.lstrip()[:1] == b"<":
        return f"HTML page, {len(body)} bytes"
    text = " ".join(body[:200].decode("utf-8", "replace").split())
    return f"{text!r}, {len(body)} bytes" if text else "empty body"


def _seconds_until(expires: Any, wall_now: float) -> float | None:
    """Return the seconds until `expiresAt` (RFC 3339 text or a Unix time), None if unknown."""
    if isinstance(expires, bool):
        return None
    if isinstance(expires, int | float):
        when = float(expires)
    elif isinstance(expires, str):
        try:
            when = datetime.fromisoformat(expires).timestamp()
        except ValueError:
            return None
    else:
        return None
    return max(0.0, when - wall_now)


def _describe_lifetime(lifetime: float | None) -> str:
    return "until refused" if lifetime is None else f"{lifetime:.0f} s"


__all__ = ["DEFAULT_BASE_URL", "DEFAULT_BATCH_BASE_URL", "USER_AGENT", "ApiClient"]
