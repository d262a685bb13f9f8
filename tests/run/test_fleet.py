"""`fleet`: many accounts through the real CLI over loopback against one multi-account emulator.

Every account's snapshot must equal its own emulated catalog exactly, whatever happens to the
others (a rejected token, a storage failure, a kill of the whole run).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.emulator.settings import parse_accounts
from exporter.errors import FleetConfigError
from exporter.run.fleet import FleetRequest, parse_fleet
from tests.helpers import (
    PYTHON,
    EmulatorProcess,
    catalog_rows,
    clean_env,
    emulator_process,
    exported_rows,
    query_rows,
    run_cli,
)

DATE = "2026-11-30"
SIZES = [40, 75, 120, 10, 200, 33, 150, 61, 90, 25, 110]  # the primary account has 60


@dataclass(frozen=True)
class Fleet:
    emulator: EmulatorProcess
    accounts: dict[str, tuple[int, int, str]]  # id -> (images, seed, token)

    def env(self, **extra: str) -> dict[str, str]:
        env = clean_env()
        env["CLOUDFLARE_BASE_URL"] = self.emulator.base_url
        for index, (_, _, token) in enumerate(self.accounts.values()):
            env[f"CF_TOKEN_{index}"] = token
        env.update(extra)
        return env


def account_id(index: int) -> str:
    return f"{index:02d}" + "ab" * 15


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One emulator serving 12 accounts of different sizes, each with its own token."""
    directory = tmp_path_factory.mktemp("fleet-emulator")
    extra = {account_id(i): (size, 100 + i, f"token-{i}-secret") for i, size in enumerate(SIZES, 1)}
    lines = []
    for ident, (size, seed, token) in extra.items():
        lines += [
            "[[account]]",
            f'account_id = "{ident}"',
            f'token = "{token}"',
            f"images = {size}",
            f"seed = {seed}",
            "",
        ]
    accounts_file = directory / "emulator-accounts.toml"
    accounts_file.write_text("\n".join(lines))
    with emulator_process(60, 7, "--accounts-file", str(accounts_file)) as emu:
        accounts = {emu.account_id: (60, 7, emu.token), **extra}
        yield Fleet(emu, accounts)


def accounts_toml(fleet: Fleet, path: Path, **per_account: dict[str, str]) -> Path:
    """Write a fleet accounts file naming CF_TOKEN_<n> for each account (overrides by id)."""
    lines = []
    for index, ident in enumerate(fleet.accounts):
        lines += ["[[account]]", f'id = "{ident}"', f'token_env = "CF_TOKEN_{index}"']
        lines += [
            f"{k} = {orjson.dumps(v).decode()}" for k, v in per_account.get(ident, {}).items()
        ]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def assert_account_exact(fleet: Fleet, out: Path, ident: str) -> None:
    images, seed, _ = fleet.accounts[ident]
    glob = out / f"account_id={ident}" / f"snapshot_date={DATE}" / "*.parquet"
    got = exported_rows(query_rows(f"SELECT * FROM read_parquet('{glob}')"))
    assert got == catalog_rows(images, seed, ident)


def fleet_args(accounts: Path, out: Path, *extra: str) -> list[str]:
    base = ["fleet", "--accounts", str(accounts), "--output", str(out)]
    return [*base, "--snapshot-date", DATE, *extra]


def metric_values(path: Path, name: str) -> dict[str, float]:
    families = text_string_to_metric_families(path.read_text())
    return {s.labels["account_id"]: s.value for f in families for s in f.samples if s.name == name}


class TestFleetRun:
    def test_failures_stay_isolated_and_the_rest_is_exact(
        self, fleet: Fleet, tmp_path: Path
    ) -> None:
        """A rejected token (3) and a storage failure (5) touch no other account: exit 10."""
        ids = list(fleet.accounts)
        bad_token, bad_storage = ids[3], ids[7]
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("a file where a directory should be")
        accounts = accounts_toml(
            fleet, tmp_path / "accounts.toml", **{bad_storage: {"output": str(blocker)}}
        )
        out = tmp_path / "out"
        prom = tmp_path / "fleet.prom"
        env = fleet.env(CF_TOKEN_3="a-wrong-token")
        result = run_cli(
            [*fleet_args(accounts, out), "--workers", "3", "--metrics-textfile", str(prom)],
            env=env,
            timeout=300,
        )
        assert result.returncode == 10, result.stderr
        for ident in ids:
            if ident not in (bad_token, bad_storage):
                assert_account_exact(fleet, out, ident)
        assert not (out / f"account_id={bad_token}" / f"snapshot_date={DATE}").exists()
        codes = metric_values(prom, "cf_images_export_exit_code")
        assert codes == {i: (3 if i == bad_token else 5 if i == bad_storage else 0) for i in ids}
        images = metric_values(prom, "cf_images_export_images")
        assert images == {i: fleet.accounts[i][0] for i in ids if i not in (bad_token, bad_storage)}
        assert "a-wrong-token" not in result.stderr + prom.read_text()
        table = [line for line in result.stderr.splitlines() if "account " in line]
        assert len([line for line in table if "exit 0" in line]) == len(ids) - 2
        assert any(bad_token in line and "exit 3" in line for line in table)
        assert (
            result.stderr.rstrip().splitlines()[-1].startswith("cf-images-export: error: 2 of 12")
        )
        # One glob with Hive partitioning reads every account.
        rows = query_rows(
            f"SELECT account_id, count(*) AS n FROM read_parquet('{out}/*/*/*.parquet', "
            "hive_partitioning = true) GROUP BY ALL"
        )
        assert {r["account_id"]: r["n"] for r in rows} == {
            i: fleet.accounts[i][0] for i in ids if i not in (bad_token, bad_storage)
        }

    def test_json_logs_name_each_line_s_account(self, fleet: Fleet, tmp_path: Path) -> None:
        """--log-format json: every line is JSON, an account's run lines carry its id, its
        result line says "published" or why not, and the final error is JSON with exit 10."""
        ids = list(fleet.accounts)
        accounts = accounts_toml(fleet, tmp_path / "accounts.toml")
        args = [*fleet_args(accounts, tmp_path / "out"), "--resume", "--log-format", "json"]
        result = run_cli(args, env=fleet.env(CF_TOKEN_3="a-wrong-token"), timeout=300)
        assert result.returncode == 10, result.stderr
        records = [orjson.loads(line) for line in result.stderr.splitlines()]
        fresh = [r for r in records if r["message"].startswith("nothing to resume")]
        assert sorted(r.get("account_id") for r in fresh) == sorted(ids)
        results = {
            r["account_id"]: r for r in records if r["logger"] == "exporter" and "exit_code" in r
        }
        assert {i: r["message"] for i, r in results.items() if i != ids[3]} == {
            i: "published" for i in ids if i != ids[3]
        }
        assert results[ids[3]]["exit_code"] == 3 and results[ids[3]]["message"]
        assert records[-1]["level"] == "error" and records[-1]["exit_code"] == 10
        assert "listed above" in records[-1]["message"]

    def test_a_killed_fleet_resumes_only_what_was_unfinished(
        self, fleet: Fleet, tmp_path: Path
    ) -> None:
        ids = list(fleet.accounts)
        accounts = accounts_toml(fleet, tmp_path / "accounts.toml")
        out = tmp_path / "out"
        process = subprocess.Popen(
            [PYTHON, "-m", "exporter", *fleet_args(accounts, out), "--workers", "1"],
            env=fleet.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        published = lambda: sorted(out.glob(f"account_id=*/snapshot_date={DATE}/_SUCCESS"))  # noqa: E731
        deadline = time.monotonic() + 120
        while len(published()) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        done_before = {
            p.parent.parent.name: orjson.loads((p.parent / "_manifest.json").read_bytes())["run_id"]
            for p in published()
        }
        assert 2 <= len(done_before) < len(ids), "the kill must land mid-fleet"
        result = run_cli([*fleet_args(accounts, out), "--resume"], env=fleet.env(), timeout=300)
        assert result.returncode == 0, result.stderr
        for ident in ids:
            assert_account_exact(fleet, out, ident)
            manifest = orjson.loads(
                (
                    out / f"account_id={ident}" / f"snapshot_date={DATE}" / "_manifest.json"
                ).read_bytes()
            )
            if f"account_id={ident}" in done_before:
                assert manifest["run_id"] == done_before[f"account_id={ident}"], "redone"

    def test_a_local_dask_cluster_exports_every_account_exactly(
        self, fleet: Fleet, tmp_path: Path
    ) -> None:
        accounts = accounts_toml(fleet, tmp_path / "accounts.toml")
        out = tmp_path / "out"
        with socket.socket() as busy:  # Dask's default dashboard port (the emulator's too)
            with contextlib.suppress(OSError):  # already taken: as good
                busy.bind(("127.0.0.1", 8787))
                busy.listen()
            result = run_cli(
                [*fleet_args(accounts, out), "--dask-scheduler", "local", "--workers", "2"],
                env=fleet.env(),
                timeout=300,
            )
        assert result.returncode == 0, result.stderr
        assert "8787" not in result.stderr  # the dashboard takes a free port, silently
        for ident in fleet.accounts:
            assert_account_exact(fleet, out, ident)
        inspected = run_cli(["inspect", str(out)])
        assert inspected.returncode == 0, inspected.stderr
        verified = [line for line in inspected.stdout.splitlines() if "sha256 verified" in line]
        assert len(verified) == 2 * len(fleet.accounts)  # each account's snapshot and changes


class TestAccountsFile:
    """Bad entries refuse the whole fleet before any request, one line each (exit 2)."""

    def test_every_bad_entry_is_its_own_line(self, tmp_path: Path) -> None:
        accounts = tmp_path / "accounts.toml"
        accounts.write_text(
            "\n".join(
                [
                    "[[account]]",
                    f'id = "{account_id(1)}"',
                    'token_env = "T1"',
                    "per_pag = 50",
                    "",
                    "[[account]]",
                    f'id = "{account_id(2)}"',
                    'token_env = "MISSING"',
                    "",
                    "[[account]]",
                    f'id = "{account_id(1)}"',
                    'token_env = "T1"',
                    "",
                    "[[account]]",
                    f'id = "{account_id(3)}"',
                    'token_env = "T1"',
                    "",
                ]
            )
        )
        env = clean_env()
        env.update(T1="secret-token-1", CLOUDFLARE_BASE_URL="http://127.0.0.1:9")
        result = run_cli(
            ["fleet", "--accounts", str(accounts), "--output", str(tmp_path / "o")], env=env
        )
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 3, result.stderr
        assert "per_pag" in lines[0] and "unknown key" in lines[0]
        assert "MISSING" in lines[1] and "not set" in lines[1]
        assert "duplicate of account 1" in lines[2]
        assert "secret-token-1" not in result.stderr
        assert not (tmp_path / "o").exists()

    @pytest.mark.parametrize("char", ["\n", "\r"], ids=["lf", "cr"])
    def test_a_control_character_in_a_credential_is_one_line(
        self, tmp_path: Path, char: str
    ) -> None:
        """A line break inside a named variable crashed the account's run at its first
        request ("unexpected error: ValueError"); it is refused before any request."""
        accounts = tmp_path / "accounts.toml"
        accounts.write_text(
            f'[[account]]\nid = "{account_id(1)}"\ntoken_env = "T1"\n\n'
            f'[[account]]\nid = "{account_id(2)}"\nemail_env = "E2"\nkey_env = "K2"\n'
        )
        env = clean_env()
        env.update(
            T1=f"secret-token-1{char}x",
            E2="me@example.com",
            K2=f"secret-key{char}2\n",
            CLOUDFLARE_BASE_URL="http://127.0.0.1:9",
        )
        out = tmp_path / "o"
        result = run_cli(["fleet", "--accounts", str(accounts), "--output", str(out)], env=env)
        assert result.returncode == 2, result.stderr
        first, second = result.stderr.strip().splitlines()
        assert "T1: contains a control character" in first
        assert "K2: contains a control character" in second
        assert "secret" not in result.stderr
        assert not out.exists()

    def test_an_entry_s_own_metrics_refuse_the_fleet(self, tmp_path: Path) -> None:
        """A per-account `pushgateway` (or any `[metrics]` key) was accepted and then pushed
        to for every account, or ignored: the fleet's metrics are one set, so the entry is
        refused before any request, one line naming the account and the key."""
        accounts = tmp_path / "accounts.toml"
        accounts.write_text(
            f'[[account]]\nid = "{account_id(1)}"\ntoken_env = "T1"\n'
            'pushgateway = "http://127.0.0.1:9"\n\n'
            f'[[account]]\nid = "{account_id(2)}"\ntoken_env = "T1"\n'
            'metrics = {textfile = "b.prom"}\n'
        )
        env = clean_env()
        env.update(T1="secret-token-1", CLOUDFLARE_BASE_URL="http://127.0.0.1:9")
        out = tmp_path / "o"
        result = run_cli(["fleet", "--accounts", str(accounts), "--output", str(out)], env=env)
        assert result.returncode == 2, result.stderr
        first, second = result.stderr.strip().splitlines()
        assert f"account 1 ({account_id(1)}): pushgateway: set once for the whole fleet" in first
        assert f"account 2 ({account_id(2)}): metrics: set once for the whole fleet" in second
        assert not out.exists() and not (tmp_path / "b.prom").exists()

    def test_overrides_apply_per_account_and_the_date_is_fixed_once(self) -> None:
        data = {
            "account": [
                {"id": account_id(1), "token_env": "T1", "per_page": 50},
                {"id": account_id(2), "email_env": "E", "key_env": "K", "request": {"creator": ""}},
            ]
        }
        request = FleetRequest(
            {"request": {"per_page": 200}}, {}, snapshot_date=dt.date(2026, 11, 30)
        )
        first, second = parse_fleet(data, request, {"T1": "t", "E": "e@x", "K": "k"})
        assert first.config.request.per_page == 50
        assert second.config.request.per_page == 200
        assert second.config.request.creator == ""
        assert first.config.snapshot_date == second.config.snapshot_date
        assert second.config.credentials.kind == "email+key"
        assert first.layout.prefix == f"account_id={account_id(1)}"

    def test_account_id_names_the_account_as_in_the_emulator_s_file(self) -> None:
        """`account_id` works as `id`, so one accounts file serves the emulator and the fleet."""
        request = FleetRequest({}, {}, snapshot_date=dt.date(2026, 11, 30))
        entry = {"account_id": account_id(1), "token_env": "T1"}
        (account,) = parse_fleet({"account": [entry]}, request, {"T1": "t"})
        assert account.account_id == account_id(1)
        assert account.config.account_id == account_id(1)
        served = parse_accounts({"account": [{"id": account_id(2), "token": "t2"}]})
        assert [a.account_id for a in served] == [account_id(2)]

    @pytest.mark.parametrize(
        ("entry", "problem"),
        [
            pytest.param({"token_env": "T1"}, "id: missing", id="no-id"),
            pytest.param({"id": "../x", "token_env": "T1"}, "id: holds '.'", id="unsafe-id"),
            pytest.param(
                {"id": account_id(1) + "0", "token_env": "T1"},
                "id: 33 characters, but an account id is at most 32",
                id="long-id",
            ),
            pytest.param({"id": account_id(1)}, "token_env: missing", id="no-credential"),
            pytest.param(
                {"id": account_id(1), "email_env": "E"}, "key_env: missing", id="email-no-key"
            ),
            pytest.param(
                {"id": account_id(1), "key_env": "K"}, "email_env: missing", id="key-no-email"
            ),
            pytest.param(
                {"id": account_id(1), "account_id": account_id(1), "token_env": "T1"},
                "account_id: the same as id",
                id="both-ids",
            ),
            pytest.param(
                {"id": account_id(1), "token_env": "T1", "snapshot_date": "2026-01-01"},
                "whole fleet",
                id="date",
            ),
            pytest.param(
                {"id": account_id(1), "token_env": "T1", "metrics.textfile": "a.prom"},
                "metrics.textfile: set once for the whole fleet",
                id="textfile",
            ),
            pytest.param(
                {"id": account_id(1), "token_env": "T1", "pushgateway_password_env": "P"},
                "pushgateway_password_env: set once for the whole fleet",
                id="push-password",
            ),
            pytest.param(
                {"id": account_id(1), "token_env": "T1", "per_page": 5},
                "request.per_page",
                id="bad-value",
            ),
        ],
    )
    def test_bad_entry(self, entry: dict[str, object], problem: str) -> None:
        request = FleetRequest({}, {}, snapshot_date=dt.date(2026, 11, 30))
        with pytest.raises(FleetConfigError) as info:
            parse_fleet({"account": [entry]}, request, {"T1": "t"})
        assert problem in info.value.lines()[0]


class TestWithheldChanges:
    """A mass deletion (night 5 deletes 30%, above the 20% guard) in every account: each
    snapshot is published and its change set withheld (exit 9), which the table, the closing
    line and the metrics say as such."""

    def test_a_fleet_says_its_snapshots_were_published(self, tmp_path: Path) -> None:
        ids = [account_id(i) for i in (1, 2)]
        lines = []
        for n, ident in enumerate(ids):
            lines += ["[[account]]", f'account_id = "{ident}"', f'token = "tok-{n}"']
            lines += [f"images = {50 + 10 * n}", f"seed = {21 + n}", ""]
        (tmp_path / "emulator.toml").write_text("\n".join(lines))
        out, prom = tmp_path / "out", tmp_path / "fleet.prom"
        for night, date in ((4, "2026-11-29"), (5, DATE)):
            flags = ("--accounts-file", str(tmp_path / "emulator.toml"), "--night", str(night))
            with emulator_process(40, 7, *flags) as emu:
                tokens = {emu.account_id: emu.token, ids[0]: "tok-0", ids[1]: "tok-1"}
                accounts = tmp_path / "accounts.toml"
                accounts.write_text(
                    "".join(
                        f'[[account]]\nid = "{i}"\ntoken_env = "TOK_{n}"\n'
                        for n, i in enumerate(tokens)
                    )
                )
                env = emu.env(**{f"TOK_{n}": t for n, t in enumerate(tokens.values())})
                args = ["fleet", "--accounts", str(accounts), "--output", str(out)]
                args += ["--snapshot-date", date, "--metrics-textfile", str(prom)]
                result = run_cli(args, env=env, timeout=300)
                assert result.returncode == (0 if night == 4 else 10), result.stderr
                if night == 5:  # what the closing line advises publishes the change sets
                    resumed = run_cli([*args[:-2], "--resume", "--accept-removals"], env=env)
        table = [line for line in result.stderr.splitlines() if "account " in line]
        for ident in tokens:
            manifest = orjson.loads(
                (
                    out / f"account_id={ident}" / f"snapshot_date={DATE}" / "_manifest.json"
                ).read_bytes()
            )
            images = manifest["counts"]["rows"]
            (row,) = [line for line in table if f"account {ident}: images" in line]
            assert f"images {images:,}," in row and "exit 9, changes withheld (exit 9)" in row
            assert metric_values(prom, "cf_images_export_images")[ident] == images
            assert metric_values(prom, "cf_images_export_exit_code")[ident] == 9
        last = result.stderr.rstrip().splitlines()[-1]
        assert last.startswith(
            "cf-images-export: error: 3 of 3 accounts published; 3 withheld their change set "
            "(exit 9)"
        ), last
        assert "--resume --accept-removals" in last
        removed = {
            s.labels["account_id"]: s.value
            for f in text_string_to_metric_families(prom.read_text())
            for s in f.samples
            if s.name == "cf_images_export_changes" and s.labels["change"] == "removed"
        }
        assert set(removed) == set(tokens) and min(removed.values()) > 0
        assert resumed.returncode == 0, resumed.stderr
        for ident in tokens:
            assert (out / f"account_id={ident}" / "changes" / f"snapshot_date={DATE}").is_dir()
