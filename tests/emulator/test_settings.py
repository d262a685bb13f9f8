"""Settings validation, the CLI flag wiring, loopback-only binding, and `serve`."""

from __future__ import annotations

import argparse
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
import pytest

from exporter.emulator import (
    AccountSettings,
    EmulatorSettings,
    add_emulator_arguments,
    build_catalog,
    run_emulator,
    settings_from_args,
)
from exporter.emulator.server import check_loopback
from exporter.errors import ConfigError


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_emulator_arguments(parser)
    return parser.parse_args(argv)


class TestArguments:
    def test_defaults_are_the_demo_settings(self) -> None:
        """No flags: the demo settings, port 8787 on 127.0.0.1."""
        ns = _parse([])
        assert settings_from_args(ns) == EmulatorSettings()
        assert (ns.host, ns.port) == ("127.0.0.1", 8787)

    def test_every_flag(self) -> None:
        """Each flag lands in its settings field."""
        ns = _parse(
            "--images 50 --seed 4 --token t --account-id a --rate-quota 9 --rate-window 3 "
            "--lockout 7 --fault-rate 0.5 --fault-kinds 500,reset --slow 0.2 --latency 0.01 "
            "--page-cap 100 --batch-token-ttl 30 --batch-rate 5 --no-batch-tokens "
            "--profile nasty --tie-group 20".split()
        )
        assert settings_from_args(ns) == EmulatorSettings(
            images=50, seed=4, profile="nasty", tie_group=20, token="t", account_id="a",
            rate_quota=9, rate_window_s=3,
            lockout_s=7, fault_rate=0.5, fault_kinds=frozenset({"500", "reset"}), slow_s=0.2,
            latency_s=0.01, page_cap=100, batch_token_ttl_s=30, batch_rate=5,
            allow_batch_tokens=False,
        )  # fmt: skip

    def test_live_nights_pages_and_accounts_flags(self, tmp_path: Path) -> None:
        """The newer knobs land in their fields; --page-cap 0 means no cap."""
        accounts = tmp_path / "accounts.toml"
        accounts.write_text('[[account]]\naccount_id = "' + "b" * 32 + '"\ntoken = "tb"\n')
        ns = _parse(
            f"--page-cap 0 --short-pages --live-every 3 --live-mutations 2 --disorder-every 4 "
            f"--repeat-every 5 --night 2 --churn 0.1 --quiet-nights 1,4 --mass-deletion-nights 6 "
            f"--mass-deletion-share 0.5 --email e@x --api-key k --accounts-file {accounts}".split()
        )
        assert settings_from_args(ns) == EmulatorSettings(
            page_cap=None, short_pages=True, live_every=3, live_mutations=2, disorder_every=4,
            repeat_every=5, night=2, churn=0.1, quiet_nights=(1, 4), mass_deletion_nights=(6,),
            mass_deletion_share=0.5, email="e@x", api_key="k",
            accounts=(AccountSettings(account_id="b" * 32, token="tb"),),
        )  # fmt: skip


class TestValidation:
    @pytest.mark.parametrize(
        ("overrides", "key"),
        [
            pytest.param({"images": -1}, "emulator.images", id="images"),
            pytest.param({"profile": "evil"}, "emulator.profile", id="profile"),
            pytest.param({"tie_group": -1}, "emulator.tie_group", id="tie-group"),
            pytest.param({"fault_rate": 1.5}, "emulator.fault_rate", id="fault-rate"),
            pytest.param({"fault_kinds": {"404"}}, "emulator.fault_kinds", id="unknown-kind"),
            pytest.param(
                {"fault_rate": 0.1, "fault_kinds": set()}, "emulator.fault_kinds", id="no-kinds"
            ),
            pytest.param({"rate_quota": 0}, "emulator.rate_quota", id="quota"),
            pytest.param({"page_cap": 0}, "emulator.page_cap", id="page-cap"),
            pytest.param({"batch_rate": 0}, "emulator.batch_rate", id="batch-rate"),
        ],
    )
    def test_rejected(self, overrides: dict[str, object], key: str) -> None:
        """Impossible settings raise ConfigError naming the field."""
        with pytest.raises(ConfigError) as info:
            EmulatorSettings(**overrides)  # type: ignore[arg-type]
        assert info.value.key == key

    @pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
    def test_loopback_ok(self, host: str) -> None:
        """Loopback addresses are allowed."""
        check_loopback(host)

    @pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.1", "example.com", "::"])
    def test_public_refused(self, host: str) -> None:
        """The emulator never binds a public address."""
        with pytest.raises(ConfigError, match="not a loopback address"):
            check_loopback(host)


def test_serve_prints_banner_and_serves() -> None:
    """`serve` (behind `cf-images-export emulator`) prints where to connect, then answers."""
    code = (
        "from exporter.emulator import EmulatorSettings, serve;"
        "serve(EmulatorSettings(images=20), port=0)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, encoding="utf-8"
    )
    try:
        assert process.stdout is not None
        banner = [process.stdout.readline() for _ in range(6)]
        assert banner[0].startswith("Cloudflare Images emulator: 20 images")
        base_url = banner[1].strip().removeprefix("CLOUDFLARE_BASE_URL=")
        assert banner[2].strip() == f"CLOUDFLARE_ACCOUNT_ID={EmulatorSettings().account_id}"
        assert banner[3].strip() == f"CLOUDFLARE_API_TOKEN={EmulatorSettings().token}"
        demo = EmulatorSettings()
        assert f"CLOUDFLARE_EMAIL={demo.email} CLOUDFLARE_API_KEY={demo.api_key}" in banner[5]
        request = urllib.request.Request(
            f"{base_url}/accounts/{EmulatorSettings().account_id}/images/v1/stats",
            headers={"Authorization": f"Bearer {EmulatorSettings().token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert orjson.loads(response.read())["result"]["count"]["current"] == 20
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


async def test_prebuilt_catalog_reused() -> None:
    """run_emulator serves a prebuilt catalog as is, and refuses one of other settings."""
    catalog = build_catalog(40, seed=2)
    async with run_emulator(EmulatorSettings(images=40, seed=2), catalog=catalog) as emu:
        assert emu.catalog is catalog
    with pytest.raises(ConfigError, match="prebuilt catalog"):
        async with run_emulator(EmulatorSettings(images=41, seed=2), catalog=catalog):
            pass
