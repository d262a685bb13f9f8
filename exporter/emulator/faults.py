"""Injected failures: which list request fails and how (pure), and the replies that do it.

Kinds: `500` (JSON envelope), `502_html` (Cloudflare-style HTML page), `503` (JSON envelope),
`reset` (headers and half the body, then the connection is aborted), `truncated` (status 200,
a body cut in half with a matching Content-Length), `slow` (a normal reply after `slow_s`).
The draw is a seeded stream advanced once per list request, so a run with one client in
sequence fails at the same requests every time.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

from aiohttp import web

from exporter.emulator.envelope import error_response

BAD_GATEWAY_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>api.cloudflare.com | 502: Bad gateway</title></head>"
    b"<body><h1>Bad gateway</h1><p>Error code 502</p>"
    b"<p>The web server reported a bad gateway error.</p></body></html>\n"
)


class FaultPlan:
    """Decide, deterministically from the seed, which requests fail and with what kind."""

    def __init__(self, seed: int, rate: float, kinds: Iterable[str]) -> None:
        self.rate = rate
        self.kinds = tuple(sorted(kinds))  # sorted: set order must not change the plan
        self._rng = random.Random(f"faults:{seed}")

    def next_fault(self) -> str | None:
        """Return the fault kind of the next list request, or None to serve it normally."""
        if self.rate <= 0 or not self.kinds:
            return None
        roll, pick = self._rng.random(), self._rng.random()
        if roll >= self.rate:
            return None
        return self.kinds[int(pick * len(self.kinds))]


async def fault_reply(
    request: web.Request, kind: str, body: bytes, headers: dict[str, str]
) -> web.StreamResponse:
    """Return (or half-send) the reply of a fault kind other than `slow`."""
    if kind == "500":
        return error_response(500, 10001, "Internal server error", headers)
    if kind == "503":
        return error_response(503, 10013, "Service temporarily unavailable", headers)
    if kind == "502_html":
        return web.Response(
            status=502, body=BAD_GATEWAY_HTML, content_type="text/html", headers=headers
        )
    if kind == "truncated":
        cut = body[: len(body) // 2]
        return web.Response(status=200, body=cut, content_type="application/json", headers=headers)
    if kind == "reset":
        return await _reset_mid_body(request, body, headers)
    raise ValueError(f"unknown fault kind {kind!r}")


async def _reset_mid_body(
    request: web.Request, body: bytes, headers: dict[str, str]
) -> web.StreamResponse:
    """Announce the whole body, send half of it, then abort the connection."""
    response = web.StreamResponse(status=200, headers=headers)
    response.content_type = "application/json"
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    await asyncio.sleep(0)  # let the half body leave before the abort
    transport = request.transport
    if transport is not None:
        transport.abort()
    return response
