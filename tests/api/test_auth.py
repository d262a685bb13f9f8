"""Credentials come from the environment only, and never show up in a repr."""

from __future__ import annotations

import pytest

from exporter.api.auth import BOTH_NOTE, Credentials
from exporter.errors import ConfigError

TOKEN = "tok-SECRET-123"
KEY = "key-SECRET-456"


class TestCredentials:
    def test_token_gives_a_bearer_header(self) -> None:
        """CLOUDFLARE_API_TOKEN becomes `Authorization: Bearer`."""
        creds = Credentials.from_env({"CLOUDFLARE_API_TOKEN": f" {TOKEN}\n"})
        assert creds.headers() == {"Authorization": f"Bearer {TOKEN}"}
        assert creds.note is None
        assert creds.kind == "token"

    def test_email_and_key_give_legacy_headers(self) -> None:
        """Without a token, CLOUDFLARE_EMAIL + CLOUDFLARE_API_KEY are sent as X-Auth-*."""
        creds = Credentials.from_env({"CLOUDFLARE_EMAIL": "a@b.c", "CLOUDFLARE_API_KEY": KEY})
        assert creds.headers() == {"X-Auth-Email": "a@b.c", "X-Auth-Key": KEY}
        assert creds.kind == "email+key"

    def test_token_wins_over_email_and_key_and_says_so(self) -> None:
        """Both set: the token is used and `note` explains it."""
        env = {
            "CLOUDFLARE_API_TOKEN": TOKEN,
            "CLOUDFLARE_EMAIL": "a@b.c",
            "CLOUDFLARE_API_KEY": KEY,
        }
        creds = Credentials.from_env(env)
        assert creds.headers() == {"Authorization": f"Bearer {TOKEN}"}
        assert creds.note == BOTH_NOTE
        assert creds.describe() == (
            "API token (from CLOUDFLARE_API_TOKEN; "
            "CLOUDFLARE_EMAIL/CLOUDFLARE_API_KEY also set, not used)"
        )

    @pytest.mark.parametrize(
        ("env", "key"),
        [
            pytest.param({}, "CLOUDFLARE_API_TOKEN", id="nothing"),
            pytest.param({"CLOUDFLARE_API_TOKEN": "  "}, "CLOUDFLARE_API_TOKEN", id="blank"),
            pytest.param({"CLOUDFLARE_EMAIL": "a@b.c"}, "CLOUDFLARE_API_KEY", id="email-only"),
            pytest.param({"CLOUDFLARE_API_KEY": KEY}, "CLOUDFLARE_EMAIL", id="key-only"),
        ],
    )
    def test_missing_credentials_name_the_variable(self, env: dict[str, str], key: str) -> None:
        """Missing credentials raise ConfigError (exit 2) naming the variable to set."""
        with pytest.raises(ConfigError) as info:
            Credentials.from_env(env)
        assert info.value.key == key
        assert info.value.exit_code == 2
        assert KEY not in str(info.value)

    def test_secrets_never_in_repr_or_str(self) -> None:
        """repr() and str() mask the token, the key and the email."""
        for creds in (
            Credentials(token=TOKEN),
            Credentials(email="someone@example.com", api_key=KEY),
        ):
            for text in (repr(creds), str(creds), f"{creds}", repr([creds])):
                assert TOKEN not in text and KEY not in text and "someone" not in text
                assert "***" in text

    def test_secrets_lists_what_to_scrub(self) -> None:
        """secrets() returns the token, the key and the email (for scrubbing messages)."""
        assert Credentials(token=TOKEN).secrets() == (TOKEN,)
        assert Credentials(email="e@x.io", api_key=KEY).secrets() == (KEY, "e@x.io")
