"""Opaque, HMAC-signed tokens: List V2 continuation tokens and batch-host tokens.

A continuation token carries the order key of the last image served and a fingerprint of the
query (sort order, creator, filters; not per_page), so a token from another query or a forged
one is refused. The secret derives from the seed and account, so tokens stay valid across a
restart of the same emulator (the catalog is the same too), which lets `--resume` be tested.
Tokens are longer than the spec's `maxLength: 32`, as the spec's own 43-character example is:
clients must treat them as opaque.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Sequence

from exporter.emulator.render import OrderKey

_VERSION = 1
_HEAD = struct.Struct(">BcQ8s")  # version, order (a/d), uploaded ms, query fingerprint
_MAC_BYTES = 16
_BATCH = struct.Struct(">BQ")  # version, expiry in ms since the epoch


class TokenError(ValueError):
    """A token that is malformed, forged, from another query, or expired."""


def query_fingerprint(sort_order: str, creator: str | None, filters: Sequence[str]) -> bytes:
    """Return 8 bytes identifying the query a continuation token belongs to."""
    creator_part = "<none>" if creator is None else f"={creator}"
    text = "\x00".join([sort_order, creator_part, *sorted(filters)])
    return hashlib.sha256(text.encode()).digest()[:8]


class TokenSigner:
    """Issue and check the emulator's tokens with one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    @classmethod
    def for_emulator(cls, seed: int, account_id: str) -> TokenSigner:
        """Return the signer of an emulator instance (same seed and account: same secret)."""
        return cls(hashlib.sha256(f"cf-images-emulator:{seed}:{account_id}".encode()).digest())

    def continuation(self, sort_order: str, fingerprint: bytes, key: OrderKey) -> str:
        """Return a token that resumes a walk after `key`."""
        head = _HEAD.pack(_VERSION, sort_order[0].encode(), key[0], fingerprint)
        return self._seal(b"list", head + key[1].encode())

    def resume_key(self, token: str, sort_order: str, fingerprint: bytes) -> OrderKey:
        """Return the order key a token resumes after; TokenError if it is not this query's."""
        payload = self._open(b"list", token, "Invalid continuation_token")
        if len(payload) < _HEAD.size:
            raise TokenError("Invalid continuation_token")
        version, order, uploaded, token_fingerprint = _HEAD.unpack_from(payload)
        if version != _VERSION:
            raise TokenError("Invalid continuation_token")
        if order != sort_order[0].encode() or token_fingerprint != fingerprint:
            raise TokenError(
                "Invalid continuation_token: it was issued for a different query "
                "(sort_order, creator and metadata filters must not change)"
            )
        try:
            image_id = payload[_HEAD.size :].decode()
        except UnicodeDecodeError as exc:
            raise TokenError("Invalid continuation_token") from exc
        return uploaded, image_id

    def batch_token(self, account_id: str, expires_ms: int) -> str:
        """Return a batch-host token for `account_id` valid until `expires_ms`."""
        return self._seal(b"batch", _BATCH.pack(_VERSION, expires_ms) + account_id.encode())

    def batch_account(self, token: str, now_ms: int) -> str:
        """Return the account of a batch token; TokenError if forged or expired."""
        payload = self._open(b"batch", token, "Invalid batch token")
        if len(payload) < _BATCH.size:
            raise TokenError("Invalid batch token")
        version, expires_ms = _BATCH.unpack_from(payload)
        if version != _VERSION:
            raise TokenError("Invalid batch token")
        if now_ms >= expires_ms:
            raise TokenError("Batch token expired")
        return payload[_BATCH.size :].decode(errors="replace")

    def _mac(self, purpose: bytes, payload: bytes) -> bytes:
        """Sign purpose and payload together, so a token of one kind never passes as another."""
        message = purpose + b"\x00" + payload
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def _seal(self, purpose: bytes, payload: bytes) -> str:
        mac = self._mac(purpose, payload)
        return base64.urlsafe_b64encode(payload + mac).rstrip(b"=").decode()

    def _open(self, purpose: bytes, token: str, invalid: str) -> bytes:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError) as exc:
            raise TokenError(invalid) from exc
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        expected = self._mac(purpose, payload)
        if len(raw) <= _MAC_BYTES or not hmac.compare_digest(mac, expected):
            raise TokenError(invalid)
        return payload
