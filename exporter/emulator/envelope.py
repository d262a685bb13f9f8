"""Cloudflare's JSON envelope: `{"result", "success", "errors", "messages"}` replies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from aiohttp import web

BAD_REQUEST = 5400  # the List V2 code for filter and parameter violations
AUTH_ERROR = 10000  # Cloudflare's "Authentication error"
NO_ROUTE = 7000  # Cloudflare's "No route for that URI"
BAD_IDENTIFIER = 7003  # "Could not route to ..., perhaps your object identifier is invalid?"
METHOD_NOT_ALLOWED = 10405


def json_response(
    result: Any, headers: Mapping[str, str] | None = None, status: int = 200
) -> web.Response:
    """Return a success envelope around `result`."""
    body = orjson.dumps({"result": result, "success": True, "errors": [], "messages": []})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def error_response(
    status: int, code: int, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Return a failure envelope with one error."""
    body = orjson.dumps(
        {
            "success": False,
            "errors": [{"code": code, "message": message}],
            "messages": [],
            "result": None,
        }
    )
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)
