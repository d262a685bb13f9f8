"""The one rule for showing a URL: a password written into it, or a secret query value, is masked.

Every URL the exporter shows (the `--dry-run` plan, log lines, error messages, the summary, the
manifest, fleet tables) goes through `redact_url`, and every line a user sees goes through
`redact_text` once more, so a URL inside a library's message is masked too:

    >>> redact_url("http://ak:sk@minio:9000")
    'http://ak:***@minio:9000'
    >>> redact_url("https://gw.example/?token=abc&job=x")
    'https://gw.example/?token=***&job=x'

A userinfo without a colon is masked whole (`https://***@host`): it is how tokens are often
written into URLs. `split_userinfo` takes the credentials out of a URL that may carry them (the
Pushgateway's basic auth); `has_userinfo` is how the URL options refuse those that cannot use
them (`exporter.options`).

Pure: no I/O, no import beyond the standard library.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, unquote_plus

MASK = "***"
# Query parameter names that hold secrets, by how they end: access_token, X-Amz-Security-Token,
# api_key, client_secret, password, pwd, X-Amz-Signature, sig (Azure SAS), X-Amz-Credential,
# auth. Anchored at the end, so the List V2 filter `meta.key[eq]` is not one.
SECRET_PARAM = re.compile(
    r"(token|key|secret|passw(or)?d|pwd|signature|sig|credentials?|auth)$", re.I
)
# A URL inside free text: a scheme, "://", then everything up to whitespace or a quote.
URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def _split(url: str) -> tuple[str, str | None, str]:
    """Return (scheme with "://" or "", userinfo or None, the rest from the host on).

    With a scheme, the userinfo runs to the last "@", as urllib and aiohttp split a netloc,
    and further: a password holding a raw "/", "?" or "#" is still taken whole (an "@" in a
    path or query is then masked too, which none of the exporter's URL options may hold).
    Without a scheme (`user:pw@host:port`), only the first path segment can hold it, so a
    local path with an "@" is left alone.
    """
    scheme, sep, rest = url.partition("://")
    if sep:
        at = rest.rfind("@")
        scheme += sep
    else:
        scheme, rest = "", url
        slash = rest.find("/")
        at = rest.rfind("@", 0, slash if slash >= 0 else len(rest))
    if at < 0:
        return scheme, None, rest
    return scheme, rest[:at], rest[at + 1 :]


def has_userinfo(url: str) -> bool:
    """Return whether `url` carries a user name or password (`user:password@host`)."""
    return _split(url)[1] is not None


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """Return (url without userinfo, user name, password), the last two percent-decoded."""
    scheme, userinfo, rest = _split(url)
    if userinfo is None:
        return url, None, None
    user, colon, password = userinfo.partition(":")
    return scheme + rest, unquote(user), unquote(password) if colon else None


def redact_url(url: str) -> str:
    """Return `url` as it may be shown: userinfo password and secret query values masked."""
    scheme, userinfo, rest = _split(url)
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        rest = f"{user}:{MASK}@{rest}" if colon else f"{MASK}@{rest}"
    return scheme + _redact_query(rest)


def _redact_query(rest: str) -> str:
    head, question, query = rest.partition("?")
    if not question:
        return rest
    query, hash_sign, fragment = query.partition("#")
    pairs = []
    for pair in query.split("&"):
        name, equals, _ = pair.partition("=")
        secret = equals and SECRET_PARAM.search(unquote_plus(name).strip())
        pairs.append(f"{name}={MASK}" if secret else pair)
    return f"{head}?{'&'.join(pairs)}{hash_sign}{fragment}"


def redact_text(text: str) -> str:
    """Return `text` with every URL in it redacted (log lines, error messages, plans)."""
    if "://" not in text:
        return text
    return URL_IN_TEXT.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    url = match.group(0)
    bare = url.rstrip(".,;:!?)]}")  # the sentence's punctuation, not the URL's
    return redact_url(bare) + url[len(bare) :]


__all__ = ["MASK", "has_userinfo", "redact_text", "redact_url", "split_userinfo"]
