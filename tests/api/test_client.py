"""The client's decisions, each path on canned replies (aioresponses): retry, fail fast, log."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
from aioresponses import aioresponses as _aioresponses

from exporter.api.auth import Credentials
from exporter.api.client import USER_AGENT, ApiClient, refuses_list
from exporter.api.pacing import Pacer
from exporter.api.pagination import ListRequest, Page
from exporter.api.retry import RetryPolicy
from exporter.errors import AuthError, CursorError, ResponseError, RetriesExhausted
from exporter.stats import RunStats

BASE = "https://api.example.test/client/v4"
ACCOUNT = "acc123"
TOKEN = "SECRET-token-value"
LIST = re.compile(r"^https://api\.example\.test/client/v4/accounts/acc123/images/v2(\?.*)?$")
STATS = f"{BASE}/accounts/{ACCOUNT}/images/v1/stats"
BATCH_TOKEN = f"{BASE}/accounts/{ACCOUNT}/images/v1/batch_token"
BATCH_LIST = re.compile(r"^https://batch\.example\.test/images/v2(\?.*)?$")
FAST = RetryPolicy(max_attempts=4, base_s=0.001, cap_s=0.002, deadline_s=30)


class _Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 predates aiohttp 3.14's required `stream_writer` argument."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class aioresponses(_aioresponses):
    """aioresponses whose canned replies build with the installed aiohttp."""

    def add(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _Response)
        super().add(*args, **kwargs)


def page_body(ids: list[str], token: str | None) -> dict[str, Any]:
    images = [{"id": i, "uploaded": "2024-01-01T00:00:00Z"} for i in ids]
    return {
        "success": True,
        "errors": [],
        "messages": [],
        "result": {"images": images, "continuation_token": token},
    }


def failure(code: int, message: str) -> dict[str, Any]:
    return {"success": False, "errors": [{"code": code, "message": message}], "result": None}


class SteppedPacer(Pacer):
    """A pacer on a virtual clock: waiting advances the clock instead of sleeping."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waited: list[float] = []
        super().__init__(1200, 300.0, 0.95, clock=lambda: self.now)

    async def _wait(self, delay: float) -> None:
        self.waited.append(delay)
        self.now += delay


@pytest.fixture
async def client() -> AsyncIterator[ApiClient]:
    api = ApiClient(
        BASE,
        ACCOUNT,
        Credentials(token=TOKEN),
        stats=RunStats(),
        retry=FAST,
        pacer=SteppedPacer(),
        batch_base_url="https://batch.example.test",
    )
    async with api:
        yield api


@pytest.fixture
def sleeps(client: ApiClient, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record retry waits instead of sleeping them."""
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        if isinstance(client.pacer, SteppedPacer):
            client.pacer.now += seconds  # the pacer's clock moves on, as it would in a real sleep

    monkeypatch.setattr(client, "_sleep", fake_sleep)
    return waits


async def pages(client: ApiClient, request: ListRequest | None = None) -> list[Page]:
    return [p async for p in client.iter_pages(request or ListRequest(per_page=10), "asc")]


class TestPaging:
    async def test_walks_until_null_token_with_headers_and_params(self, client: ApiClient) -> None:
        """Pages follow the token to its null end; UA, auth and query go out as specified."""
        with aioresponses() as m:
            m.get(LIST, payload=page_body(["a", "b"], "T1"))
            m.get(LIST, payload=page_body(["c"], "T2"))  # a short page is not the end
            m.get(LIST, payload=page_body([], None))
            got = await pages(client, ListRequest(per_page=10, creator="u1"))
            calls = [c for key, cs in m.requests.items() for c in cs]
            urls = [str(key[1]) for key in m.requests]
        assert [[i["id"] for i in p.images] for p in got] == [["a", "b"], ["c"], []]
        assert "continuation_token=T1" in urls[1] and "continuation_token=T2" in urls[2]
        assert all("per_page=10" in u and "sort_order=asc" in u and "creator=u1" in u for u in urls)
        headers = calls[0].kwargs["headers"]
        assert headers["Authorization"] == f"Bearer {TOKEN}"
        assert client._session is not None
        assert client._session.headers["User-Agent"] == USER_AGENT
        assert client.stats.requests == 3 and client.stats.retries == 0

    async def test_repeated_token_is_a_cursor_error(self, client: ApiClient) -> None:
        with aioresponses() as m:
            m.get(LIST, payload=page_body(["a"], "T1"))
            m.get(LIST, payload=page_body(["b"], "T1"))
            with pytest.raises(CursorError):
                await pages(client)

    async def test_count(self, client: ApiClient) -> None:
        with aioresponses() as m:
            m.get(STATS, payload={"success": True, "result": {"count": {"current": 42}}})
            m.get(STATS, payload={"success": True, "result": {}})
            assert await client.get_count() == 42
            assert await client.get_count() is None


TRANSIENT = [
    pytest.param({"status": 500, "payload": failure(10001, "Internal")}, id="500"),
    pytest.param(
        {
            "status": 502,
            "body": "<html><title>502 Bad Gateway</title></html>",
            "content_type": "text/html",
        },
        id="502-html",
    ),
    pytest.param({"status": 503, "payload": failure(10013, "Unavailable")}, id="503"),
    pytest.param({"status": 504, "body": "gateway timeout"}, id="504"),
    pytest.param({"status": 520, "body": "<html>cf</html>", "content_type": "text/html"}, id="520"),
    pytest.param({"status": 530, "body": ""}, id="530"),
    pytest.param({"status": 429, "payload": failure(971, "Please wait")}, id="429"),
    pytest.param({"exception": aiohttp.ClientConnectionError("reset by peer")}, id="reset"),
    pytest.param({"exception": aiohttp.ServerDisconnectedError()}, id="disconnected"),
    pytest.param({"exception": aiohttp.ClientPayloadError("cut")}, id="payload"),
    pytest.param({"exception": TimeoutError()}, id="timeout"),
    pytest.param({"status": 200, "body": b'{"success": true, "result": {"ima'}, id="truncated"),
    pytest.param(
        {"status": 200, "body": "<html>login</html>", "content_type": "text/html"}, id="200-html"
    ),
]


class TestRetry:
    @pytest.mark.parametrize("reply", TRANSIENT)
    async def test_transient_failures_retry_and_log(
        self,
        client: ApiClient,
        sleeps: list[float],
        reply: dict[str, Any],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """Each transient failure is retried once, logged with its reason and wait."""
        with aioresponses() as m, caplog.at_level(logging.WARNING, logger="exporter.client"):
            m.get(LIST, **reply)
            m.get(LIST, payload=page_body(["a"], None))
            got = await pages(client)
        assert [p.images[0]["id"] for p in got] == ["a"]
        assert client.stats.retries == 1 and len(sleeps) == 1
        [record] = [r for r in caplog.records if r.name == "exporter.client"]
        assert "retrying" in record.getMessage() and "attempt 1 of 4" in record.getMessage()
        assert f"{sleeps[0]:.2f} s" in record.getMessage()

    async def test_the_policy_alone_decides_which_statuses_retry(
        self, client: ApiClient, sleeps: list[float]
    ) -> None:
        """Adding 409 to the policy's statuses retries it; removing 503 fails it at once."""
        client.retry = dataclasses.replace(FAST, retry_status=FAST.retry_status | {409})
        with aioresponses() as m:
            m.get(LIST, status=409, payload=failure(5409, "busy"))
            m.get(LIST, payload=page_body(["a"], None))
            assert [p.images[0]["id"] for p in await pages(client)] == ["a"]
        assert client.stats.retries == 1
        client.retry = dataclasses.replace(FAST, retry_status=FAST.retry_status - {503})
        with aioresponses() as m:
            m.get(LIST, status=503, payload=failure(10013, "Service down"))
            with pytest.raises(ResponseError) as info:
                await pages(client)
        assert info.value.status == 503 and client.stats.requests == 3
        assert client.stats.retries == 1 and len(sleeps) == 1

    async def test_retry_after_seconds(self, client: ApiClient, sleeps: list[float]) -> None:
        """A 429 with Retry-After: 3 waits 3 s, counted as throttled and as a wait."""
        with aioresponses() as m:
            m.get(LIST, status=429, payload=failure(971, "wait"), headers={"Retry-After": "3"})
            m.get(LIST, payload=page_body(["a"], None))
            await pages(client)
        assert sleeps[0] == pytest.approx(3.0, abs=0.01)
        assert client.stats.throttled == 1 and client.stats.retries == 1
        assert client.stats.waits == 1 and client.stats.wait_seconds == pytest.approx(3.0, 0.01)

    async def test_a_429_and_the_pacers_hold_off_after_it_are_one_pause(
        self, client: ApiClient, sleeps: list[float]
    ) -> None:
        """Without Retry-After the pacer holds everyone off for a window after the retry's
        short backoff: one 429, one pause of both lengths (it was counted as two waits)."""
        assert isinstance(client.pacer, SteppedPacer)
        with aioresponses() as m:
            m.get(LIST, status=429, payload=failure(971, "wait"))
            m.get(LIST, payload=page_body(["a"], None))
            await pages(client)
        [held] = client.pacer.waited  # the shared budget slowed down too
        assert held == pytest.approx(300.0 - sleeps[0])
        assert client.stats.throttled == 1 and client.stats.requests == 2
        assert client.stats.waits == 1
        assert client.stats.wait_seconds == pytest.approx(300.0)

    async def test_retry_after_http_date(self, client: ApiClient, sleeps: list[float]) -> None:
        """A Retry-After HTTP-date 5 s ahead waits about 5 s."""
        when = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
        with aioresponses() as m:
            m.get(LIST, status=503, payload=failure(1, "x"), headers={"Retry-After": when})
            m.get(LIST, payload=page_body(["a"], None))
            await pages(client)
        assert 3.5 < sleeps[0] <= 5.0

    async def test_exhausted(self, client: ApiClient, sleeps: list[float]) -> None:
        """After max_attempts failures: RetriesExhausted (exit 4) with the last reason."""
        with aioresponses() as m:
            for _ in range(4):
                m.get(LIST, status=503, payload=failure(10013, "Service down"))
            with pytest.raises(RetriesExhausted) as info:
                await pages(client)
        assert info.value.attempts == 4 and info.value.exit_code == 4
        assert "Service down" in str(info.value)
        assert len(sleeps) == 3

    async def test_deadline_stops_before_a_wait_past_it(
        self, client: ApiClient, sleeps: list[float]
    ) -> None:
        """A Retry-After beyond the total deadline gives up instead of sleeping."""
        client.retry = RetryPolicy(max_attempts=8, base_s=0.001, cap_s=0.01, deadline_s=2.0)
        with aioresponses() as m:
            m.get(LIST, status=429, payload=failure(971, "x"), headers={"Retry-After": "60"})
            with pytest.raises(RetriesExhausted) as info:
                await pages(client)
        assert info.value.attempts == 1 and sleeps == []


FAIL_FAST = [
    pytest.param(
        400,
        failure(5400, "Unsupported metadata filter operator: 'x'"),
        ResponseError,
        "code 5400: Unsupported metadata filter operator",
        id="400",
    ),
    pytest.param(
        404,
        failure(7000, "No route for that URI"),
        ResponseError,
        "code 7000: No route for that URI",
        id="404",
    ),
    pytest.param(
        404,
        failure(7003, "Could not route to /x, perhaps your object identifier is invalid?"),
        ResponseError,
        "code 7003: account id 'acc123' not found or invalid (Could not route to /x, perhaps",
        id="404-identifier",
    ),
    pytest.param(401, failure(10000, "Authentication error"), AuthError, "Images Read", id="401"),
    pytest.param(403, failure(10000, "Authentication error"), AuthError, "Images Read", id="403"),
]


class TestFailFast:
    @pytest.mark.parametrize(("status", "body", "error", "text"), FAIL_FAST)
    async def test_fails_at_once_quoting_the_api(
        self, client: ApiClient, status: int, body: Any, error: type[Exception], text: str
    ) -> None:
        with aioresponses() as m:
            m.get(LIST, status=status, payload=body)
            with pytest.raises(error) as info:
                await pages(client)
        assert text in str(info.value)
        assert client.stats.requests == 1 and client.stats.retries == 0
        if isinstance(info.value, ResponseError):
            assert info.value.status == status and info.value.code == body["errors"][0]["code"]

    async def test_redirects_are_not_followed(self, client: ApiClient) -> None:
        """A 3xx is an error, never followed: X-Auth-Key would go to whatever host it names."""
        elsewhere = "http://elsewhere.example/steal"
        with aioresponses() as m:
            m.get(LIST, status=302, headers={"Location": elsewhere}, body="")
            m.get(elsewhere, payload=failure(1, "should never be asked"))
            with pytest.raises(ResponseError) as info:
                await pages(client)
        assert info.value.status == 302

    async def test_html_error_body_is_summarised(self, client: ApiClient) -> None:
        """An HTML 404 is described by its title and size, never dumped."""
        html = "<html><head><title>Not Found</title></head><body>" + "x" * 5000 + "</body></html>"
        with aioresponses() as m:
            m.get(LIST, status=404, body=html, content_type="text/html")
            with pytest.raises(ResponseError) as info:
                await pages(client)
        assert "Not Found" in str(info.value) and "xxxx" not in str(info.value)
        assert len(str(info.value)) < 300

    async def test_secrets_never_in_messages_or_logs(
        self, client: ApiClient, sleeps: list[float], caplog: pytest.LogCaptureFixture
    ) -> None:
        """Even a reply echoing the token does not put it in a log line or an error."""
        with aioresponses() as m, caplog.at_level(logging.DEBUG):
            m.get(LIST, status=500, payload=failure(1, f"bad token {TOKEN}"))
            m.get(LIST, status=400, payload=failure(5400, f"token {TOKEN} rejected"))
            with pytest.raises(ResponseError) as info:
                await pages(client)
        assert TOKEN not in str(info.value) and TOKEN not in caplog.text
        assert TOKEN not in repr(client) and "***" in str(info.value)


class TestBatch:
    async def test_lists_from_the_batch_host_with_a_batch_token(self, client: ApiClient) -> None:
        expires = (datetime.now(UTC) + timedelta(minutes=15)).isoformat()
        with aioresponses() as m:
            m.get(
                BATCH_TOKEN,
                payload={"success": True, "result": {"token": "BT1", "expiresAt": expires}},
            )
            m.get(BATCH_LIST, payload=page_body(["a"], "T"))
            m.get(BATCH_LIST, payload=page_body(["b"], None))
            got = [p async for p in client.iter_pages(ListRequest(), "asc", batch=True)]
            batch_calls = [c for k, cs in m.requests.items() if "batch." in str(k[1]) for c in cs]
        assert [p.images[0]["id"] for p in got] == ["a", "b"]
        assert all(c.kwargs["headers"]["Authorization"] == "Bearer BT1" for c in batch_calls)

    async def test_expired_batch_token_is_refreshed(
        self, client: ApiClient, sleeps: list[float]
    ) -> None:
        """A 401 from the batch host gets a new batch token and retries."""
        expires = (datetime.now(UTC) + timedelta(minutes=15)).isoformat()
        with aioresponses() as m:
            for token in ("BT1", "BT2"):
                m.get(
                    BATCH_TOKEN,
                    payload={"success": True, "result": {"token": token, "expiresAt": expires}},
                )
            m.get(BATCH_LIST, status=401, payload=failure(10000, "Authentication error"))
            m.get(BATCH_LIST, payload=page_body(["a"], None))
            got = [p async for p in client.iter_pages(ListRequest(), "asc", batch=True)]
            last = [c for k, cs in m.requests.items() if "batch." in str(k[1]) for c in cs][-1]
        assert got[0].images[0]["id"] == "a"
        assert last.kwargs["headers"]["Authorization"] == "Bearer BT2"

    async def test_credentials_that_may_not_create_batch_tokens(self, client: ApiClient) -> None:
        with aioresponses() as m:
            m.get(BATCH_TOKEN, status=403, payload=failure(5403, "Batch tokens not enabled"))
            with pytest.raises(AuthError) as info:
                [p async for p in client.iter_pages(ListRequest(), "asc", batch=True)]
        assert "batch tokens" in str(info.value) and "--batch-api" in str(info.value)


class TestBatchRefused:
    """The batch host refusing List V2 is no permission problem: the walk goes on over the
    account API, from the same token, and says so once."""

    def batch_token(self, m: aioresponses) -> None:
        expires = (datetime.now(UTC) + timedelta(minutes=15)).isoformat()
        result = {"token": "BT1", "expiresAt": expires}
        m.get(BATCH_TOKEN, payload={"success": True, "result": result})

    @pytest.mark.parametrize(
        ("status", "body"),
        [
            pytest.param(403, {"code": "103", "message": "forbidden endpoint"}, id="field-403"),
            pytest.param(403, failure(103, "forbidden endpoint"), id="envelope-403"),
            pytest.param(404, failure(7000, "No route for that URI"), id="404"),
            pytest.param(400, failure(103, "Forbidden endpoint"), id="400-says-forbidden"),
        ],
    )
    async def test_falls_back_to_the_account_api(
        self,
        client: ApiClient,
        caplog: pytest.LogCaptureFixture,
        status: int,
        body: dict[str, Any],
    ) -> None:
        with aioresponses() as m:
            self.batch_token(m)
            m.get(BATCH_LIST, payload=page_body(["a"], "T1"))
            m.get(BATCH_LIST, status=status, payload=body)
            m.get(LIST, payload=page_body(["b"], "T2"))
            m.get(LIST, payload=page_body(["c"], None))
            m.get(LIST, payload=page_body(["z"], None))
            with caplog.at_level("WARNING", logger="exporter.client"):
                got = [p async for p in client.iter_pages(ListRequest(), "asc", batch=True)]
                again = [p async for p in client.iter_pages(ListRequest(), "desc", batch=True)]
            calls = [(str(k[1]), c) for k, cs in m.requests.items() for c in cs]
        assert [p.images[0]["id"] for p in got] == ["a", "b", "c"]
        assert [p.images[0]["id"] for p in again] == ["z"]  # a later walk: the API host too
        assert len([url for url, _ in calls if "batch." in url]) == 2
        api_calls = [c for url, c in calls if "/images/v2" in url and "batch." not in url]
        assert api_calls[0].kwargs["params"][-1] == ("continuation_token", "T1")
        assert all(c.kwargs["headers"]["Authorization"] == f"Bearer {TOKEN}" for c in api_calls)
        assert client.stats.batch_fallback == 1
        warned = [r for r in caplog.records if "refused List V2" in r.getMessage()]
        assert len(warned) == 1 and str(status) in warned[0].getMessage()

    async def test_a_permission_error_of_the_account_api_is_still_one(
        self, client: ApiClient
    ) -> None:
        """After the fallback, a 403 of the account API is an AuthError with its words."""
        with aioresponses() as m:
            self.batch_token(m)
            m.get(BATCH_LIST, status=403, payload=failure(103, "forbidden endpoint"))
            m.get(LIST, status=403, payload=failure(10000, "Authentication error"))
            with pytest.raises(AuthError) as info:
                [p async for p in client.iter_pages(ListRequest(), "asc", batch=True)]
        assert "Images Read permission" in str(info.value)

    def test_refuses_list(self) -> None:
        """Only a 403/404 or a body naming a forbidden endpoint refuses the endpoint."""
        assert refuses_list(403, {}) and refuses_list(404, {})
        assert refuses_list(400, {"code": "103", "message": "forbidden endpoint"})
        assert not refuses_list(400, failure(5400, "bad per_page"))
        assert not refuses_list(500, {})


async def test_used_outside_async_with_is_a_bug() -> None:
    api = ApiClient(BASE, ACCOUNT, Credentials(token=TOKEN), stats=RunStats(), pacer=SteppedPacer())
    with pytest.raises(RuntimeError):
        await api.get_count()


def test_orjson_page_bytes_roundtrip() -> None:
    assert orjson.loads(orjson.dumps(page_body(["a"], None)))["result"]["images"][0]["id"] == "a"


async def test_cancelled_request_gives_its_budget_back(client: ApiClient) -> None:
    """A request cancelled mid-flight (a stopped cursor) is no longer counted in flight."""

    async def hang(url: Any, **kwargs: Any) -> None:
        await anyio.sleep(10)

    with aioresponses() as m:
        m.get(LIST, callback=hang)
        with anyio.move_on_after(0.05):
            await pages(client)
    assert client.pacer.inflight == 0


async def test_both_credentials_note_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    env = {"CLOUDFLARE_API_TOKEN": TOKEN, "CLOUDFLARE_EMAIL": "e@x", "CLOUDFLARE_API_KEY": "k"}
    with caplog.at_level(logging.INFO, logger="exporter.client"):
        creds = Credentials.from_env(env)
        async with ApiClient(BASE, ACCOUNT, creds, stats=RunStats(), pacer=SteppedPacer()):
            pass
    assert caplog.text.count("using the token") == 1 and TOKEN not in caplog.text
