"""Credentials written into URLs (issue 26), through the real CLI over loopback: never shown,
refused before any request where nothing would use them, the Pushgateway's basic auth.

Every URL option gets the same distinctive password; stdout, stderr, every file under OUT and
the metrics textfile are searched for it, and a loopback recorder standing in for each host
shows whether a request was sent at all.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import EmulatorProcess, clean_env, emulator_process, run_cli

PASSWORD = "Qx7w9zS3cr3tPw"  # nothing in a URL encodes it differently
USER = "metrics"


@dataclass
class Recorder:
    """A loopback HTTP server that records every request; with `auth`, it requires it."""

    auth: str | None = None
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    server: http.server.ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo}@{self.host}" if userinfo else f"http://{self.host}"

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                authorization = self.headers.get("Authorization")
                recorder.requests.append((self.command, self.path, authorization))
                refused = recorder.auth is not None and authorization != recorder.auth
                self.send_response(401 if refused else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_PUT = do_POST = do_HEAD = _reply

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    yield from _serve(Recorder())


@pytest.fixture
def auth_gateway() -> Iterator[Recorder]:
    """A Pushgateway behind basic auth, accepting USER:PASSWORD only."""
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    yield from _serve(Recorder(auth=basic))


def _serve(recorder: Recorder) -> Iterator[Recorder]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), recorder.handler())
    recorder.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


def everything_shown(result: Any, *paths: Path) -> str:
    """Return stdout, stderr and the bytes of every file under `paths`, as one text."""
    texts = [result.stdout, result.stderr]
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        texts += [f.read_bytes().decode("utf-8", "replace") for f in files]
    return "\n".join(texts)


# (extra argv, config file text, extra environment): every place a URL with a password can be
# given that nothing would use as credentials. "{rec}" is the recorder's host:port.
REFUSED = {
    "--base-url": (["--base-url", f"http://u:{PASSWORD}@{{rec}}/client/v4"], None, {}),
    "CLOUDFLARE_BASE_URL": ([], None, {"CLOUDFLARE_BASE_URL": f"http://u:{PASSWORD}@{{rec}}"}),
    "--batch-base-url": (
        ["--batch-base-url", f"http://{PASSWORD}@{{rec}}", "--batch-api"],
        None,
        {},
    ),
    "--s3-endpoint": (["--s3-endpoint", f"http://ak:{PASSWORD}@{{rec}}"], None, {}),
    "export.s3_endpoint": ([], f"[export]\ns3_endpoint = 'ak:{PASSWORD}@{{rec}}'\n", {}),
    "AWS_ENDPOINT_URL": (
        ["--output", "s3://bkt/x"],
        None,
        {"AWS_ENDPOINT_URL": f"http://ak:{PASSWORD}@{{rec}}"},
    ),
    "AWS_ENDPOINT_URL_S3": (
        ["--output", "s3://bkt/x"],
        None,
        {"AWS_ENDPOINT_URL_S3": f"http://ak:{PASSWORD}@{{rec}}"},
    ),
    "--output": (["--output", f"s3://ak:{PASSWORD}@bkt/x"], None, {}),
    "STORAGE_EMULATOR_HOST": (
        ["--output", "gs://bkt/x"],
        None,
        {"STORAGE_EMULATOR_HOST": f"u:{PASSWORD}@{{rec}}"},
    ),
    "--pushgateway and pushgateway_password_env": (
        ["--pushgateway", f"http://{USER}:{PASSWORD}@{{rec}}"],
        "[metrics]\npushgateway_password_env = 'PGW_PASSWORD'\n",
        {"PGW_PASSWORD": PASSWORD},
    ),
}


@pytest.mark.parametrize("case", REFUSED)
@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_credentials_nothing_would_use_are_refused_before_any_request(
    case: str, log_format: str, recorder: Recorder, tmp_path: Path
) -> None:
    """Exit 2 and one line, the password masked, and not one request sent anywhere."""
    argv, config, extra = REFUSED[case]
    out = tmp_path / "out"
    args = ["export", "--output", str(out), "-v", "--log-format", log_format]
    args += [a.replace("{rec}", recorder.host) for a in argv]
    if config is not None:
        (tmp_path / "c.toml").write_text(config.replace("{rec}", recorder.host))
        args += ["--config", str(tmp_path / "c.toml")]
    env = clean_env()
    env.update(
        CLOUDFLARE_API_TOKEN="tok",
        CLOUDFLARE_ACCOUNT_ID="acc",
        CLOUDFLARE_BASE_URL=recorder.url() + "/client/v4",
    )
    env.update({k: v.replace("{rec}", recorder.host) for k, v in extra.items()})
    result = run_cli(args, env, timeout=60)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    if log_format == "json":  # every line is a JSON record, the error's too
        record = json.loads(line)
        assert record["level"] == "error" and record["exit_code"] == 2, line
        line = f"cf-images-export: error: {record['message']}"
    assert line.startswith("cf-images-export: error: ") and "***" in line, line
    assert PASSWORD not in everything_shown(result, out)
    assert recorder.requests == []


def test_the_dry_run_masks_every_url_it_shows(tmp_path: Path) -> None:
    """The plan (pushgateway, its secret query) and the planned requests show no secret."""
    env = clean_env()
    env.update(CLOUDFLARE_API_TOKEN=PASSWORD + "tok", CLOUDFLARE_ACCOUNT_ID="acc")
    gateway = f"http://{USER}:{PASSWORD}@127.0.0.1:9/?token={PASSWORD}&job=x"
    result = run_cli(["export", "--dry-run", "--pushgateway", gateway, "-v"], env)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in everything_shown(result)
    assert f'"pushgateway": "http://{USER}:***@127.0.0.1:9/?token=***&job=x"' in result.stdout


def export_args(out: Path, *extra: str) -> list[str]:
    return ["export", "--output", str(out), "--snapshot-date", "2026-11-27", "-v", *extra]


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorProcess]:
    with emulator_process(150, 5) as emulator:
        yield emulator


@pytest.mark.parametrize("where", ["url", "environment", "--pushgateway-password-env", "fleet"])
def test_a_pushgateway_behind_basic_auth_gets_the_push(
    where: str, emu: EmulatorProcess, auth_gateway: Recorder, tmp_path: Path
) -> None:
    """`user:password@` (or the password from the variable the config names) is basic auth."""
    out, prom = tmp_path / "out", tmp_path / "cf.prom"
    env = emu.env()
    metrics = ["--metrics-textfile", str(prom)]
    if where == "--pushgateway-password-env":
        env["PGW_PASSWORD"] = PASSWORD
        metrics += ["--pushgateway", auth_gateway.url(USER), where, "PGW_PASSWORD"]
    elif where == "environment":
        (tmp_path / "c.toml").write_text(
            "[metrics]\n"
            f"pushgateway = '{auth_gateway.url(USER)}'\n"
            "pushgateway_password_env = 'PGW_PASSWORD'\n"
        )
        env["PGW_PASSWORD"] = PASSWORD
        metrics += ["--config", str(tmp_path / "c.toml")]
    else:
        metrics += ["--pushgateway", auth_gateway.url(f"{USER}:{PASSWORD}")]
    if where == "fleet":
        accounts = tmp_path / "accounts.toml"
        accounts.write_text(f'[[account]]\nid = "{emu.account_id}"\ntoken_env = "TOKEN_A"\n')
        env["TOKEN_A"] = env.pop("CLOUDFLARE_API_TOKEN")
        args = ["fleet", "--accounts", str(accounts), "--output", str(out), "-v", *metrics]
    else:
        args = export_args(out, *metrics)
    result = run_cli(args, env)
    assert result.returncode == 0, result.stderr
    path = f"/metrics/job/cf_images_export/account_id/{emu.account_id}"
    assert [(method, p) for method, p, _ in auth_gateway.requests] == [("PUT", path)]
    assert auth_gateway.requests[0][2] == auth_gateway.auth
    assert "WARNING" not in result.stderr
    assert PASSWORD not in everything_shown(result, out, prom)


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_refused_credentials_are_a_warning_and_the_export_still_succeeds(
    log_format: str, emu: EmulatorProcess, auth_gateway: Recorder, tmp_path: Path
) -> None:
    """A wrong password: the snapshot is published (exit 0), one warning names the gateway."""
    out, prom = tmp_path / "out", tmp_path / "cf.prom"
    wrong = "Wr0ngPassw0rdZ"
    gateway = auth_gateway.url(f"{USER}:{wrong}")
    extra = ["--pushgateway", gateway, "--metrics-textfile", str(prom), "--log-format", log_format]
    result = run_cli(export_args(out, *extra), emu.env())
    assert result.returncode == 0, result.stderr
    assert (out / "snapshot_date=2026-11-27" / "_SUCCESS").exists()
    assert len(auth_gateway.requests) == 1 and auth_gateway.requests[0][2] != auth_gateway.auth
    (warning,) = [line for line in result.stderr.splitlines() if "cannot push" in line]
    assert f"cannot push to http://{USER}:***@{auth_gateway.host}" in warning
    assert "401" in warning and ("WARNING" in warning or '"warning"' in warning)
    shown = everything_shown(result, out, prom)
    assert wrong not in shown and PASSWORD not in shown


def test_a_fleet_entry_base_url_with_credentials_refuses_the_fleet(
    recorder: Recorder, tmp_path: Path
) -> None:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(
        f'[[account]]\nid = "{"a" * 32}"\ntoken_env = "TOKEN_A"\n'
        f"base_url = 'http://u:{PASSWORD}@{recorder.host}/client/v4'\n"
    )
    env = clean_env()
    env["TOKEN_A"] = "tok"
    out = tmp_path / "out"
    result = run_cli(["fleet", "--accounts", str(accounts), "--output", str(out)], env)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert "export.base_url: 'http://u:***@127.0.0.1:" in line
    assert "API credentials come only from the environment" in line
    assert PASSWORD not in everything_shown(result)
    assert recorder.requests == [] and not out.exists()


def test_a_dask_task_carries_no_pushgateway_password() -> None:
    """The fleet's task payload (entries, file, flags) leaves the Pushgateway URL behind."""
    import datetime as dt
    import pickle

    from exporter.run.fleet import FleetRequest, worker_entry, worker_request

    gateway = f"http://{USER}:{PASSWORD}@gw:9091"
    request = FleetRequest(
        {"metrics": {"pushgateway": gateway, "textfile": "m.prom"}, "request": {"per_page": 50}},
        {"metrics.pushgateway": gateway, "request.per_page": 100},
        snapshot_date=dt.date(2026, 11, 27),
    )
    entry: dict[str, Any] = {"id": "a" * 32, "token_env": "T", "pushgateway": gateway}
    entry["metrics"] = {"pushgateway": gateway}
    payload = pickle.dumps((worker_request(request), worker_entry(entry)))
    assert PASSWORD.encode() not in payload
    sent = worker_request(request)
    assert sent.file_data == {"metrics": {"textfile": "m.prom"}, "request": {"per_page": 50}}
    assert sent.overrides == {"request.per_page": 100}
    assert worker_entry(entry) == {"id": "a" * 32, "token_env": "T", "metrics": {}}
