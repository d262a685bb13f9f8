"""Credentials from the environment, as request headers; a secret never reaches a repr or log.

`CLOUDFLARE_API_TOKEN` (a Bearer token) wins; else `CLOUDFLARE_EMAIL` + `CLOUDFLARE_API_KEY`
(the legacy global key), as the official SDK reads them. Flags and config files never carry
credentials (DESIGN.md, "CLI contract").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.errors import ConfigError

TOKEN_VAR = "CLOUDFLARE_API_TOKEN"
EMAIL_VAR = "CLOUDFLARE_EMAIL"
KEY_VAR = "CLOUDFLARE_API_KEY"
BOTH_NOTE = "both token and email/key set; using the token"


@dataclass(frozen=True, repr=False)
class Credentials:
    """A token, or an email + global API key; `note` says which was chosen when both exist."""

    token: str | None = field(default=None)
    email: str | None = field(default=None)
    api_key: str | None = field(default=None)
    note: str | None = None

    def __post_init__(self) -> None:
        if not self.token and not (self.email and self.api_key):
            raise ConfigError(TOKEN_VAR, "no credentials: need a token or an email + API key")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Credentials:
        """Return the credentials the environment holds; ConfigError names what is missing."""
        token = read_secret(environ, TOKEN_VAR)
        email = read_secret(environ, EMAIL_VAR)
        api_key = read_secret(environ, KEY_VAR)
        if token:
            note = BOTH_NOTE if (email or api_key) else None
            return cls(token=token, note=note)
        if email and api_key:
            return cls(email=email, api_key=api_key)
        if email or api_key:
            missing = KEY_VAR if email else EMAIL_VAR
            raise ConfigError(missing, f"set it too (or set {TOKEN_VAR} instead)")
        raise ConfigError(
            TOKEN_VAR,
            f"no credentials: set {TOKEN_VAR} (an API token with the Images Read permission), "
            f"or {EMAIL_VAR} and {KEY_VAR}",
        )

    @property
    def kind(self) -> str:
        """Return "token" or "email+key", safe to log."""
        return "token" if self.token else "email+key"

    def describe(self) -> str:
        """Return which credential a run uses and where it comes from, as a user reads it
        (the `--dry-run` plan): never a secret."""
        if self.token:
            unused = f"; {EMAIL_VAR}/{KEY_VAR} also set, not used" if self.note else ""
            return f"API token (from {TOKEN_VAR}{unused})"
        return f"email + global API key (from {EMAIL_VAR} and {KEY_VAR})"

    def headers(self) -> dict[str, str]:
        """Return the authentication headers of one request."""
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        assert self.email is not None and self.api_key is not None
        return {"X-Auth-Email": self.email, "X-Auth-Key": self.api_key}

    def secrets(self) -> tuple[str, ...]:
        """Return the strings to scrub from messages: the token, the key, and the account email."""
        return tuple(s for s in (self.token, self.api_key, self.email) if s)

    def __repr__(self) -> str:
        shown = "token=***" if self.token else "email=***, api_key=***"
        return f"Credentials({shown})"

    __str__ = __repr__


def read_secret(environ: Mapping[str, str], name: str) -> str | None:
    """Return variable `name` with surrounding whitespace stripped (None when unset or blank).

    A control character inside (a pasted line break, a CR from a Windows file) could never
    be sent as a header value: ConfigError names the variable, never the value."""
    value = environ.get(name, "").strip()
    if any(ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 for char in value):
        raise ConfigError(
            name, "contains a control character (a line break?); set it to the credential alone"
        )
    return value or None
