"""Several accounts in one emulator: own tokens, catalogs and faults; shared rate budgets."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from exporter.emulator import AccountSettings, EmulatorSettings
from exporter.emulator.listing import served_order
from exporter.emulator.settings import load_accounts, parse_accounts
from exporter.errors import ConfigError

from .helpers import EmulatorFactory, bearer, get, walk

A = "a" * 32
B = "b" * 32
C = "c" * 32


def _fleet() -> tuple[AccountSettings, ...]:
    return (
        AccountSettings(account_id=A, token="tok-a", images=40, seed=2, rate_quota=5),
        AccountSettings(account_id=B, token="tok-shared", images=70, seed=3, profile="nasty"),
        AccountSettings(account_id=C, token="tok-shared", images=0, seed=4),
    )


class TestAccountsFile:
    def test_parse(self, tmp_path: Path) -> None:
        """[[account]] tables become AccountSettings, fault kinds as a list."""
        path = tmp_path / "accounts.toml"
        path.write_text(
            f'[[account]]\naccount_id = "{A}"\ntoken = "t1"\nimages = 5\n'
            f'fault_rate = 0.5\nfault_kinds = ["500"]\n'
            f'[[account]]\naccount_id = "{B}"\ntoken = "t2"\nemail = "e@x"\napi_key = "k"\n'
        )
        first, second = load_accounts(str(path))
        assert first == AccountSettings(
            account_id=A, token="t1", images=5, fault_rate=0.5, fault_kinds=frozenset({"500"})
        )
        assert second.credentials == ("token:t2", "email:e@x:k")

    @pytest.mark.parametrize(
        ("document", "key"),
        [
            pytest.param({"account": [{"account_id": A}]}, "emulator.account[0].token", id="token"),
            pytest.param(
                {"account": [{"account_id": A, "token": "t", "colour": 1}]},
                "emulator.account[0].colour",
                id="unknown-key",
            ),
            pytest.param({"accounts": []}, "emulator.accounts_file", id="bad-table"),
        ],
    )
    def test_rejected(self, document: dict[str, object], key: str) -> None:
        """Bad files raise ConfigError naming the key."""
        with pytest.raises(ConfigError) as info:
            parse_accounts(document)
        assert info.value.key == key

    def test_duplicate_and_conflicting_limits(self) -> None:
        """Duplicate ids, and one token under two rate limits, are refused."""
        with pytest.raises(ConfigError, match="twice"):
            EmulatorSettings(accounts=(AccountSettings(account_id=EmulatorSettings().account_id,
                                                       token="x"),))  # fmt: skip
        twins = (
            AccountSettings(account_id=A, token="t", rate_quota=5),
            AccountSettings(account_id=B, token="t", rate_quota=6),
        )
        with pytest.raises(ConfigError, match="per user"):
            EmulatorSettings(accounts=twins)


async def test_each_account_its_own(
    emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    """Each account serves its own catalog to its own token; another's token gets 403."""
    async with emulator_factory(images=30, accounts=_fleet()) as emu:
        for account_id, size in ((emu.account_id, 30), (A, 40), (B, 70), (C, 0)):
            served = emu.account(account_id)
            images, _ = await walk(session, emu, [("per_page", "10")], url=served.list_url,
                                   headers=bearer(served.token))  # fmt: skip
            truth = served_order(served.catalog, "desc", served.ties)
            assert [img["id"] for img in images] == [served.catalog.key(p)[1] for p in truth]
            assert len(images) == size
        wrong = await get(session, emu.account(A).list_url, headers=bearer("tok-shared"))
        assert wrong.status == 403 and wrong.error[0] == 10000
        unknown = f"{emu.base_url}/accounts/{'d' * 32}/images/v2"
        assert (await get(session, unknown, headers=bearer("tok-a"))).status == 403


async def test_shared_token_shares_the_budget(
    emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    """Two accounts on one token spend one rate-limit budget; another token has its own."""
    shared = (
        AccountSettings(account_id=A, token="t", rate_quota=4, images=10),
        AccountSettings(account_id=B, token="t", rate_quota=4, images=10),
    )
    async with emulator_factory(images=10, accounts=shared, clock=lambda: 100.0) as emu:
        statuses = []
        for account_id in (A, B, A, B, A):
            reply = await get(session, emu.account(account_id).list_url, headers=bearer("t"))
            statuses.append(reply.status)
        assert statuses == [200, 200, 200, 200, 429]
        primary = await get(session, emu.list_url, headers=bearer(emu.token))
        assert primary.status == 200


async def test_batch_token_of_a_second_account(
    emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    """A batch token names its account: the batch host serves that account's catalog."""
    async with emulator_factory(images=20, accounts=_fleet()) as emu:
        served = emu.account(B)
        token_url = served.list_url.replace("/v2", "/v1/batch_token")
        batch = (await get(session, token_url, headers=bearer(served.token))).json()["result"]
        images, _ = await walk(session, emu, [("per_page", "10")],
                               url=emu.batch_base_url + "/images/v2",
                               headers=bearer(batch["token"]))  # fmt: skip
        truth = served_order(served.catalog, "desc", served.ties)  # nasty: ties by a hash
        assert [img["id"] for img in images] == [served.catalog.key(p)[1] for p in truth]
        assert served.images_served == 70 and emu.account().images_served == 0
