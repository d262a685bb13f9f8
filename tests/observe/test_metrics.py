"""Metrics: the text format parses back to the runs' values; files and pushes are whole."""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar
from urllib.parse import quote

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.errors import ConfigError, SinkError
from exporter.observe.metrics import Pushgateway, RunMetrics, push, render, write_textfile

OK = RunMetrics(
    account_id="a" * 32,
    exit_code=0,
    last_success_timestamp=1_764_561_600.0,
    images=1234,
    requests=7,
    retries=2,
    throttled=1,
    duration_seconds=3.5,
    changes={"added": 10, "removed": 3, "changed": 4},
)
FAILED = RunMetrics(account_id="b" * 32, exit_code=3, requests=1, duration_seconds=0.2)


def samples(text: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return {(sample name, sorted labels): value} of a text exposition."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def one(name: str, account: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted({"account_id": account, **labels}.items()))


class TestRender:
    def test_every_design_series_with_the_runs_values(self) -> None:
        """Each series DESIGN names carries the run's value, labelled by account_id."""
        got = samples(render([OK]))
        a = OK.account_id
        assert got == {
            one("cf_images_export_last_success_timestamp_seconds", a): 1_764_561_600.0,
            one("cf_images_export_images", a): 1234,
            one("cf_images_export_requests_total", a): 7,
            one("cf_images_export_retries_total", a): 2,
            one("cf_images_export_throttled_total", a): 1,
            one("cf_images_export_duration_seconds", a): 3.5,
            one("cf_images_export_changes", a, change="added"): 10,
            one("cf_images_export_changes", a, change="removed"): 3,
            one("cf_images_export_changes", a, change="changed"): 4,
            one("cf_images_export_exit_code", a): 0,
        }

    def test_unknown_values_are_left_out_not_zero(self) -> None:
        """A run that never succeeded has no last-success series (an alert on absent fires)."""
        got = samples(render([FAILED]))
        names = {name for name, _ in got}
        assert "cf_images_export_last_success_timestamp_seconds" not in names
        assert "cf_images_export_images" not in names
        assert "cf_images_export_changes" not in names
        assert got[one("cf_images_export_exit_code", FAILED.account_id)] == 3

    def test_a_fleet_is_one_exposition_with_every_account(self) -> None:
        got = samples(render([OK, FAILED]))
        codes = {
            dict(labels)["account_id"]: v
            for (name, labels), v in got.items()
            if name == "cf_images_export_exit_code"
        }
        assert codes == {OK.account_id: 0, FAILED.account_id: 3}


class TestTextfile:
    def test_written_whole_and_replaced(self, tmp_path: Path) -> None:
        path = tmp_path / "cf_images.prom"
        path.write_text("stale")
        write_textfile(path, [OK])
        assert samples(path.read_text()) == samples(render([OK]))
        assert [p.name for p in tmp_path.iterdir()] == ["cf_images.prom"]  # no temp left

    def test_unwritable_directory_is_a_sink_error(self, tmp_path: Path) -> None:
        with pytest.raises(SinkError, match="metrics: cannot write"):
            write_textfile(tmp_path / "missing" / "x.prom", [OK])


class _Gateway(http.server.BaseHTTPRequestHandler):
    """A Pushgateway on loopback; with `auth` set, it requires that basic-auth header."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []
    status = 200
    auth: str | None = None

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.auth is not None and self.headers.get("Authorization") != self.auth:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="pushgateway"')
            self.end_headers()
            return
        self.received.append(("PUT", self.path, body))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def serve_gateway(auth: str | None = None) -> Iterator[tuple[str, type[_Gateway]]]:
    handler = type("Gateway", (_Gateway,), {"received": [], "status": 200, "auth": auth})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def gateway() -> Iterator[tuple[str, type[_Gateway]]]:
    yield from serve_gateway()


USER, PASSWORD = "metrics", "pw-Z7q!x@y:1"  # an "@" and a ":" in it: percent-encoded in URLs
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


@pytest.fixture
def auth_gateway() -> Iterator[tuple[str, type[_Gateway]]]:
    """A gateway that accepts only USER:PASSWORD (how one is exposed behind a proxy)."""
    yield from serve_gateway(BASIC)


def with_userinfo(url: str, user: str, password: str | None = None) -> str:
    userinfo = quote(user, safe="") + ("" if password is None else ":" + quote(password, safe=""))
    return url.replace("http://", f"http://{userinfo}@")


def target(url: str, password_env: str | None = None, **environ: str) -> Pushgateway:
    return Pushgateway.resolve(url, password_env, environ)


class TestPush:
    def test_one_group_per_account(self, gateway: tuple[str, type[_Gateway]]) -> None:
        """Accounts never replace each other's series: each is its own grouping key."""
        url, handler = gateway
        push(target(url), [OK, FAILED])
        paths = [path for _, path, _ in handler.received]
        assert paths == [
            f"/metrics/job/cf_images_export/account_id/{OK.account_id}",
            f"/metrics/job/cf_images_export/account_id/{FAILED.account_id}",
        ]
        assert samples(handler.received[0][2]) == samples(render([OK]))

    def test_refused_push_is_one_line_without_credentials(
        self, gateway: tuple[str, type[_Gateway]]
    ) -> None:
        url, handler = gateway
        handler.status = 500
        with pytest.raises(SinkError) as info:
            push(target(with_userinfo(url, "user", "hunter2")), [OK])
        assert "hunter2" not in str(info.value)
        assert "user:***@127.0.0.1" in str(info.value)
        assert "\n" not in str(info.value)

    def test_unreachable_gateway_is_a_sink_error(self) -> None:
        with pytest.raises(SinkError, match="pushgateway"):
            push(target("http://127.0.0.1:9"), [OK], timeout_s=2)


class TestBasicAuth:
    """A Pushgateway behind basic auth: `user:password@` in the URL, or the password in env."""

    def test_userinfo_is_basic_auth_and_the_host_stays_the_host(
        self, auth_gateway: tuple[str, type[_Gateway]]
    ) -> None:
        url, handler = auth_gateway
        push(target(with_userinfo(url, USER, PASSWORD)), [OK])
        assert [path for _, path, _ in handler.received] == [
            f"/metrics/job/cf_images_export/account_id/{OK.account_id}"
        ]

    def test_password_from_the_named_environment_variable(
        self, auth_gateway: tuple[str, type[_Gateway]]
    ) -> None:
        url, handler = auth_gateway
        push(target(with_userinfo(url, USER), "PGW_PASSWORD", PGW_PASSWORD=PASSWORD), [OK])
        assert len(handler.received) == 1

    def test_bare_host_port_with_userinfo_means_http(
        self, auth_gateway: tuple[str, type[_Gateway]]
    ) -> None:
        url, handler = auth_gateway
        push(target(with_userinfo(url, USER, PASSWORD).removeprefix("http://")), [OK])
        assert len(handler.received) == 1

    @pytest.mark.parametrize("password", [None, "wrong"])
    def test_missing_or_wrong_credentials_are_a_sink_error_without_them(
        self, auth_gateway: tuple[str, type[_Gateway]], password: str | None
    ) -> None:
        url, handler = auth_gateway
        gateway = target(url if password is None else with_userinfo(url, USER, password))
        with pytest.raises(SinkError) as info:
            push(gateway, [OK])
        message = str(info.value)
        assert "401" in message and "127.0.0.1" in message and "wrong" not in message
        assert not handler.received

    def test_repr_never_shows_the_password(self) -> None:
        gateway = target("http://u:hunter2@gw:9091", None)
        assert "hunter2" not in repr(gateway) and "hunter2" not in gateway.shown
        assert (gateway.url, gateway.username) == ("http://gw:9091", "u")
        assert gateway.password == "hunter2"

    @pytest.mark.parametrize(
        ("url", "password_env", "environ", "problem"),
        [
            ("http://u:pw@gw", "PGW", {"PGW": "x"}, "carries a password too; give it in one place"),
            ("http://gw", "PGW", {"PGW": "x"}, "name the user in the Pushgateway URL"),
            ("http://u@gw", "PGW", {}, "^PGW: not set in the environment"),
            ("http://u@gw", None, {}, "has a user but no password"),
        ],
    )
    def test_credentials_that_cannot_work_are_config_errors(
        self, url: str, password_env: str | None, environ: dict[str, str], problem: str
    ) -> None:
        with pytest.raises(ConfigError, match=problem):
            Pushgateway.resolve(url, password_env, environ)


class TestExportMetrics:
    """`export --metrics-textfile` through the real CLI against the emulator over loopback."""

    def test_success_then_failure_keeps_the_last_success(self, tmp_path: Path) -> None:
        """Never published: last success 0 (a stale-snapshot alert fires); then a success's
        time, which a later failure keeps."""
        from tests.helpers import emulator_process, run_cli

        out, prom = tmp_path / "out", tmp_path / "cf.prom"
        args = ["export", "--output", str(out), "--metrics-textfile", str(prom)]
        with emulator_process(120, 3) as emu:
            never = run_cli(
                [*args, "--snapshot-date", "2026-11-28"],
                env=emu.env(CLOUDFLARE_API_TOKEN="not-the-token"),
            )
            assert never.returncode == 3
            zero = samples(prom.read_text())
            assert zero[one("cf_images_export_last_success_timestamp_seconds", emu.account_id)] == 0
            ok = run_cli([*args, "--snapshot-date", "2026-11-29"], env=emu.env())
            assert ok.returncode == 0, ok.stderr
            first = samples(prom.read_text())
            account = emu.account_id
            assert first[one("cf_images_export_images", account)] == 120
            assert first[one("cf_images_export_exit_code", account)] == 0
            assert first[one("cf_images_export_changes", account, change="added")] == 120
            assert first[one("cf_images_export_requests_total", account)] >= 1
            manifest = orjson.loads(
                (out / "snapshot_date=2026-11-29" / "_manifest.json").read_bytes()
            )
            finished = dt.datetime.fromisoformat(manifest["finished_at"].replace("Z", "+00:00"))

            failed = run_cli(
                [*args, "--snapshot-date", "2026-11-30"],
                env=emu.env(CLOUDFLARE_API_TOKEN="not-the-token"),
            )
        assert failed.returncode == 3
        second = samples(prom.read_text())
        assert second[one("cf_images_export_exit_code", account)] == 3
        assert second[one("cf_images_export_last_success_timestamp_seconds", account)] == (
            finished.timestamp()
        )
        assert one("cf_images_export_images", account) not in second
        assert "not-the-token" not in prom.read_text()

    def test_a_withheld_change_set_reports_the_published_snapshot(self, tmp_path: Path) -> None:
        """Exit 9 published the snapshot: its images, the last success, and the changes the
        withheld set holds (the removals that tripped the guard) are reported."""
        from tests.helpers import emulator_process, run_cli

        out, prom = tmp_path / "out", tmp_path / "cf.prom"
        args = ["export", "--output", str(out), "--metrics-textfile", str(prom)]
        for night, date in ((4, "2026-11-29"), (5, "2026-11-30")):
            with emulator_process(120, 3, "--night", str(night)) as emu:
                result = run_cli([*args, "--snapshot-date", date], env=emu.env())
            assert result.returncode == (0 if night == 4 else 9), result.stderr
        account = emu.account_id
        before = orjson.loads((out / "snapshot_date=2026-11-29" / "_manifest.json").read_bytes())
        after = orjson.loads((out / "snapshot_date=2026-11-30" / "_manifest.json").read_bytes())
        got = samples(prom.read_text())
        assert got[one("cf_images_export_exit_code", account)] == 9
        assert got[one("cf_images_export_images", account)] == after["counts"]["rows"]
        finished = dt.datetime.fromisoformat(after["finished_at"].replace("Z", "+00:00"))
        assert got[one("cf_images_export_last_success_timestamp_seconds", account)] >= (
            finished.timestamp()
        )
        removed = got[one("cf_images_export_changes", account, change="removed")]
        assert removed / before["counts"]["rows"] > 0.2
        assert not (out / "changes" / "snapshot_date=2026-11-30").exists()
