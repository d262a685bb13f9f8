"""Continuation and batch tokens: opaque, signed, tied to their query, expiring."""

from __future__ import annotations

import base64

import pytest

from exporter.emulator.tokens import TokenError, TokenSigner, query_fingerprint

SIGNER = TokenSigner.for_emulator(1, "acct")
FP = query_fingerprint("asc", None, ["meta.status[eq]=active"])
KEY = (1_704_067_200_123, "users/7/avatar-ü")


class TestContinuation:
    def test_round_trip(self) -> None:
        """A token resumes after the key it was issued for."""
        token = SIGNER.continuation("asc", FP, KEY)
        assert SIGNER.resume_key(token, "asc", FP) == KEY

    def test_url_safe(self) -> None:
        """Tokens need no escaping in a query string."""
        token = SIGNER.continuation("desc", FP, KEY)
        assert token.replace("-", "").replace("_", "").isalnum()

    def test_same_signer_after_restart(self) -> None:
        """Seed and account fix the secret, so a restarted emulator honours old tokens."""
        token = SIGNER.continuation("asc", FP, KEY)
        assert TokenSigner.for_emulator(1, "acct").resume_key(token, "asc", FP) == KEY

    @pytest.mark.parametrize(
        ("order", "fingerprint"),
        [
            pytest.param("desc", FP, id="other-order"),
            pytest.param(
                "asc", query_fingerprint("asc", "", ["meta.status[eq]=active"]), id="other-creator"
            ),
            pytest.param("asc", query_fingerprint("asc", None, []), id="other-filters"),
        ],
    )
    def test_foreign_query(self, order: str, fingerprint: bytes) -> None:
        """A token presented with another query is refused, naming the reason."""
        token = SIGNER.continuation("asc", FP, KEY)
        with pytest.raises(TokenError, match="different query"):
            SIGNER.resume_key(token, order, fingerprint)

    def test_filter_order_irrelevant(self) -> None:
        """The same filters in another order are the same query."""
        assert query_fingerprint("asc", None, ["b", "a"]) == query_fingerprint(
            "asc", None, ["a", "b"]
        )

    @pytest.mark.parametrize(
        "token",
        [
            pytest.param("", id="empty"),
            pytest.param("not a token!", id="garbage"),
            pytest.param("iD0bxlWFSVUWsDHbzIqvDkgBW4otifAAuGXLz1n8BQA", id="real-cf-example"),
            pytest.param(base64.urlsafe_b64encode(b"x" * 60).decode(), id="unsigned"),
        ],
    )
    def test_forged(self, token: str) -> None:
        """Anything not signed by this emulator is an invalid continuation_token."""
        with pytest.raises(TokenError, match="Invalid continuation_token"):
            SIGNER.resume_key(token, "asc", FP)

    def test_tampered(self) -> None:
        """Flipping one character of a genuine token invalidates it."""
        token = SIGNER.continuation("asc", FP, KEY)
        tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
        with pytest.raises(TokenError, match="Invalid continuation_token"):
            SIGNER.resume_key(tampered, "asc", FP)

    def test_other_secret(self) -> None:
        """Another emulator's (seed's) token is refused."""
        token = TokenSigner.for_emulator(2, "acct").continuation("asc", FP, KEY)
        with pytest.raises(TokenError, match="Invalid continuation_token"):
            SIGNER.resume_key(token, "asc", FP)


class TestBatch:
    def test_valid_until_expiry(self) -> None:
        """A batch token names its account until it expires, then is refused."""
        token = SIGNER.batch_token("acct", expires_ms=5_000)
        assert SIGNER.batch_account(token, now_ms=4_999) == "acct"
        with pytest.raises(TokenError, match="Batch token expired"):
            SIGNER.batch_account(token, now_ms=5_000)

    def test_continuation_token_is_not_a_batch_token(self) -> None:
        """Token kinds do not mix."""
        token = SIGNER.continuation("asc", FP, KEY)
        with pytest.raises(TokenError):
            SIGNER.batch_account(token, now_ms=0)
