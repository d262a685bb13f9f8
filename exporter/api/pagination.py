"""List V2 paging, pure: the request, its query parameters, and one page parsed from a body.

A page is `result.images` plus `result.continuation_token`; the walk ends only when the token
is null or absent (never on a short page). Tokens are opaque: never parsed or length-checked
(the OpenAPI extract's own example breaks its `maxLength`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from exporter.api.filters import MetaFilter, validate_filters
from exporter.errors import ConfigError, CursorError, PageFormatError

Image = dict[str, Any]
SortOrder = Literal["asc", "desc"]
# Where the API is: the account API (List V2, /stats) and the host that serves List V2 for batches.
DEFAULT_BASE_URL = "https://api.cloudflare.com/client/v4"
DEFAULT_BATCH_BASE_URL = "https://batch.imagedelivery.net"
MIN_PER_PAGE = 10
MAX_PER_PAGE = 10_000
# The reference promises an account id only as a string of at most 32 characters
# (`images_account_identifier`; its example, like every real one, is 32 hex digits). It is a
# path segment of every URL: another character ('/', '?', a space) would send it elsewhere.
MAX_ACCOUNT_ID = 32
ACCOUNT_ID_SHAPE = (
    f"an account id is at most {MAX_ACCOUNT_ID} letters, digits, '-' or '_' "
    "(Cloudflare's are 32 hex digits, e.g. 023e105f4ecef8ad9ca31a8372d0c353)"
)


def check_account_id(value: str) -> str:
    """Return `value` if the API can be asked about it; ValueError naming the expected shape.

    The value is not quoted back: a secret pasted into the wrong variable stays unshown.
    """
    if not value:
        raise ValueError(f"empty, but {ACCOUNT_ID_SHAPE}")
    bad = next((c for c in value if not (c.isascii() and (c.isalnum() or c in "-_"))), None)
    if bad is not None:
        shown = repr(bad)
        if bad.isspace() or not bad.isprintable():
            shown = "a space or control character"
        raise ValueError(f"holds {shown}, but {ACCOUNT_ID_SHAPE}")
    if len(value) > MAX_ACCOUNT_ID:
        raise ValueError(f"{len(value)} characters, but {ACCOUNT_ID_SHAPE}")
    return value


@dataclass(frozen=True, kw_only=True)
class ListRequest:
    """What to list: page size, order (None lets the walker pick both ends), creator, filters."""

    per_page: int = 1000
    sort_order: SortOrder | None = None
    creator: str | None = None
    filters: tuple[MetaFilter, ...] = ()

    def validate(self) -> None:
        """Raise ConfigError/FilterError for what the API would reject, before any request."""
        if isinstance(self.per_page, bool) or not isinstance(self.per_page, int):
            raise ConfigError("per_page", f"must be an integer, got {self.per_page!r}")
        if not MIN_PER_PAGE <= self.per_page <= MAX_PER_PAGE:
            raise ConfigError(
                "per_page", f"must be {MIN_PER_PAGE}..{MAX_PER_PAGE}, got {self.per_page}"
            )
        if self.sort_order not in (None, "asc", "desc"):
            raise ConfigError("sort_order", f"must be asc or desc, got {self.sort_order!r}")
        validate_filters(self.filters)

    def params(self, sort_order: SortOrder | None, token: str | None) -> list[tuple[str, str]]:
        """Return the query of one List V2 request (a list: filter names may repeat)."""
        query = [("per_page", str(self.per_page))]
        if sort_order is not None:
            query.append(("sort_order", sort_order))
        if self.creator is not None:
            query.append(("creator", self.creator))
        query.extend((f.param_name, f.param_value) for f in self.filters)
        if token is not None:
            query.append(("continuation_token", token))
        return query


@dataclass(frozen=True)
class Page:
    """The images of one reply and the token of the next page (None: the walk is over)."""

    images: list[Image]
    next_token: str | None


def parse_page(body: bytes | Mapping[str, Any], url: str = "") -> Page:
    """Return the images and continuation token of one List V2 response envelope."""
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            body = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise PageFormatError(url, f"reply is not JSON: {exc}") from exc
    if not isinstance(body, Mapping):
        raise PageFormatError(url, "reply is not a JSON object")
    if body.get("success") is False:
        raise PageFormatError(url, f"reply has success=false: {summarize_errors(body)}")
    result = body.get("result")
    if not isinstance(result, Mapping):
        raise PageFormatError(url, "reply has no result object")
    images = result.get("images")
    if not isinstance(images, list):
        raise PageFormatError(url, "reply has no result.images list")
    for image in images:
        if not isinstance(image, dict) or not isinstance(image.get("id"), str):
            raise PageFormatError(url, "an image has no string id")
    token = result.get("continuation_token")
    if token is not None and not isinstance(token, str):
        raise PageFormatError(url, f"continuation_token is a {type(token).__name__}")
    # An empty token cannot be sent back meaningfully; the API uses null for "no more".
    return Page(images=images, next_token=token or None)


def summarize_errors(body: Mapping[str, Any]) -> str:
    """Return "code N: message; ..." from an API envelope's `errors`, or a short fallback."""
    errors = body.get("errors")
    parts = []
    if isinstance(errors, list):
        for err in errors[:3]:
            if isinstance(err, Mapping):
                code = err.get("code")
                message = str(err.get("message", ""))[:300]
                parts.append(f"code {code}: {message}" if code is not None else message)
    return "; ".join(parts) or "no error details"


def first_error_code(body: Mapping[str, Any]) -> int | None:
    """Return the first API error code of an envelope, if any."""
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        code = errors[0].get("code")
        return code if isinstance(code, int) else None
    return None


def check_progress(
    url: str, sent: str | None, page: Page, previous: Sequence[str] | None
) -> list[str]:
    """Return this page's ids; CursorError when it repeats the token sent or the last page.

    Only the previous page is kept (bounded memory): a cursor stuck on a token or a page is
    caught on its second repetition instead of looping forever.
    """
    if page.next_token is not None and page.next_token == sent:
        raise CursorError(url, "the API returned the same continuation token it was sent")
    ids = [image["id"] for image in page.images]
    if ids and previous is not None and ids == list(previous):
        raise CursorError(url, "the API returned the same page twice in a row")
    return ids


def uploaded_key(image: Mapping[str, Any], url: str = "") -> datetime:
    """Return an image's `uploaded` as an aware datetime, the List V2 sort key."""
    text = image.get("uploaded")
    if not isinstance(text, str):
        raise PageFormatError(url, f"image {image.get('id')!r} has no uploaded time")
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PageFormatError(url, f"image {image.get('id')!r}: bad uploaded {text!r}") from exc
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
