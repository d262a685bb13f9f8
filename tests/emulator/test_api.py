"""The emulator over HTTP: auth, validation, pagination, stats, batch host, rate limit."""

from __future__ import annotations

import aiohttp
import pytest

from exporter.api.filters import matches, parse_filter
from exporter.emulator import RunningEmulator

from .helpers import EmulatorFactory, bearer, get, list_page, walk


class FakeClock:
    """A clock the test steps by hand."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TestAuth:
    async def test_bearer_token(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession
    ) -> None:
        """The configured token reads the list."""
        reply = await list_page(session, emulator)
        assert reply.status == 200 and reply.json()["success"] is True

    async def test_email_and_key(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession
    ) -> None:
        """X-Auth-Email + X-Auth-Key is the other accepted scheme."""
        headers = {"X-Auth-Email": emulator.settings.email, "X-Auth-Key": emulator.settings.api_key}
        reply = await get(session, emulator.list_url, headers=headers)
        assert reply.status == 200

    @pytest.mark.parametrize(
        "headers",
        [
            pytest.param({}, id="missing"),
            pytest.param({"Authorization": "Bearer wrong"}, id="wrong-token"),
            pytest.param({"Authorization": "Basic emulator-demo-token"}, id="wrong-scheme"),
            pytest.param(
                {"X-Auth-Email": "demo@example.com", "X-Auth-Key": "nope"}, id="wrong-key"
            ),
            pytest.param({"X-Auth-Email": "demo@example.com"}, id="email-only"),
        ],
    )
    async def test_refused(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession, headers: dict[str, str]
    ) -> None:
        """Missing or wrong credentials get a 401 envelope, code 10000, on every route."""
        for url in (emulator.list_url, emulator.list_url.replace("/v2", "/v1/stats")):
            reply = await get(session, url, headers=headers)
            assert reply.status == 401
            assert reply.error == (10000, "Authentication error")
            assert reply.json()["result"] is None

    async def test_unknown_account(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession
    ) -> None:
        """A valid token on another account is refused with 403."""
        url = f"{emulator.base_url}/accounts/{'f' * 32}/images/v2"
        reply = await get(session, url, headers=bearer(emulator.token))
        assert reply.status == 403 and reply.error[0] == 10000

    async def test_unknown_route(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession
    ) -> None:
        """Unknown paths answer Cloudflare's 7000 envelope (field reports), not 7003."""
        reply = await get(session, emulator.base_url + "/zones", headers=bearer(emulator.token))
        assert reply.status == 404 and reply.error == (7000, "No route for that URI")

    @pytest.mark.parametrize("account_id", ["not-an-account", "ABCDEF", "f" * 31, "F" * 32])
    async def test_malformed_account_id(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession, account_id: str
    ) -> None:
        """A malformed account id answers 404 code 7003 before any auth, as field reports show."""
        url = f"{emulator.base_url}/accounts/{account_id}/images/v2"
        for headers in (bearer(emulator.token), {}):
            reply = await get(session, url, headers=headers)
            assert reply.status == 404
            code, message = reply.error
            assert code == 7003 and "perhaps your object identifier is invalid" in message


class TestValidation:
    @pytest.mark.parametrize(
        ("params", "message"),
        [
            pytest.param({"per_page": "9"}, "Invalid per_page: '9'", id="per-page-low"),
            pytest.param({"per_page": "10001"}, "Invalid per_page: '10001'", id="per-page-high"),
            pytest.param({"per_page": "x"}, "Invalid per_page: 'x'", id="per-page-text"),
            pytest.param({"sort_order": "newest"}, "Invalid sort_order: 'newest'", id="sort"),
            pytest.param(
                {"meta.status[not-eq]": "x"},
                "Unsupported metadata filter operator: 'not-eq'",
                id="operator",
            ),
            pytest.param(
                {"meta.status[gt:string]": "x"},
                "Unsupported metadata filter operator: 'gt:string'",
                id="range-string",
            ),
            pytest.param(
                {f"meta.k{i}[eq]": "v" for i in range(6)},
                "Too many metadata filters: 6 provided, maximum 5 allowed",
                id="six-filters",
            ),
            pytest.param(
                {"meta.a.b.c.d.e.f[eq]": "v"},
                "Metadata filter nesting too deep: 6 levels",
                id="depth",
            ),
            pytest.param(
                {"meta.r[in]": "|".join(str(n) for n in range(11))},
                "Too many values for metadata filter 'meta.r[in]': 11 provided",
                id="in-values",
            ),
            pytest.param({"meta.p[gte]": "one"}, "Invalid numeric value", id="range-text"),
            pytest.param({"meta.p[eq:number]": "1,5"}, "Invalid numeric value", id="eq-number"),
            pytest.param({"meta.p[in:number]": "1|x"}, "Invalid numeric value", id="in-number"),
            pytest.param({"meta.e[eq:boolean]": "TRUE"}, "Invalid boolean value", id="boolean"),
            pytest.param({"meta.[eq]": "v"}, "Invalid metadata filter field", id="empty-field"),
            pytest.param({"meta.status": "v"}, "Invalid metadata filter", id="no-operator"),
            pytest.param(
                {"continuation_token": "forged"}, "Invalid continuation_token", id="token"
            ),
        ],
    )
    async def test_rejected(
        self,
        emulator: RunningEmulator,
        session: aiohttp.ClientSession,
        params: dict[str, str],
        message: str,
    ) -> None:
        """Each violation is a 400 envelope with code 5400 naming the problem."""
        reply = await list_page(session, emulator, params)
        assert reply.status == 400
        code, text = reply.error
        assert code == 5400 and text.startswith(message), text
        assert reply.json()["success"] is False

    async def test_five_filters_accepted(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession
    ) -> None:
        """Five filters and ten `in` values are within the limits."""
        params = {f"meta.k{i}[eq]": "v" for i in range(4)}
        params["meta.r[in]"] = "|".join(str(n) for n in range(10))
        reply = await list_page(session, emulator, params)
        assert reply.status == 200 and reply.json()["result"]["images"] == []


class TestPagination:
    @pytest.mark.parametrize("order", ["asc", "desc"])
    @pytest.mark.parametrize("per_page", [10, 37, 300])
    async def test_every_image_exactly_once(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession, order: str, per_page: int
    ) -> None:
        """Walking all pages yields the catalog once, by (uploaded, id), ties included."""
        images, pages = await walk(
            session, emulator, [("per_page", str(per_page)), ("sort_order", order)]
        )
        expected = list(emulator.catalog.iter_images())
        if order == "desc":
            expected.reverse()
        assert images == expected
        assert pages == -(-len(expected) // per_page)
        keys = [(img["uploaded"], img["id"]) for img in images]
        assert len(set(keys)) == len(keys) > len({img["uploaded"] for img in images})
        boundaries = range(per_page, len(images), per_page)
        split_ties = [k for k in boundaries if images[k - 1]["uploaded"] == images[k]["uploaded"]]
        assert split_ties or per_page >= len(images)  # tokens resume inside a tie group

    async def test_default_order_is_desc(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession
    ) -> None:
        """Without sort_order the newest image comes first."""
        first = (await list_page(session, emulator, {"per_page": "10"})).json()["result"]
        newest = emulator.catalog.image(len(emulator.catalog) - 1)
        assert first["images"][0] == newest

    @pytest.mark.parametrize(
        "params",
        [
            pytest.param([("meta.status[eq]", "active")], id="eq"),
            pytest.param(
                [("meta.priority[gte:number]", "3"), ("meta.priority[lt]", "7")], id="range"
            ),
            pytest.param([("meta.region.name[in]", "eu-west|us-east")], id="nested-in"),
            pytest.param([("creator", "")], id="creator-unset"),
            pytest.param([("creator", "Zoë")], id="creator-unicode"),
            pytest.param([("meta.ключ[eq:string]", "значение")], id="unicode-key"),
            pytest.param([("meta.UPPER[eq:boolean]", "true")], id="upper-boolean"),
            pytest.param([("meta.a.b[lt:number]", "0")], id="nested-not-dotted-key"),
            pytest.param(
                [("creator", "user-003"), ("meta.status[eq:string]", "active")],
                id="creator-and-meta",
            ),
        ],
    )
    @pytest.mark.parametrize("order", ["asc", "desc"])
    async def test_filtered_walk(
        self,
        emulator: RunningEmulator,
        session: aiohttp.ClientSession,
        params: list[tuple[str, str]],
        order: str,
    ) -> None:
        """A filtered walk returns exactly the matching images, in order, once each."""
        query = [*params, ("per_page", "10"), ("sort_order", order)]
        images, _ = await walk(session, emulator, query)
        filters = [parse_filter(f"{k}={v}") for k, v in params if k.startswith("meta.")]
        creator = dict(params).get("creator")
        expected = [
            img
            for img in emulator.catalog.iter_images()
            if all(matches(f, img.get("meta")) for f in filters)
            and (creator is None or (img.get("creator") or "") == creator)
        ]
        if order == "desc":
            expected.reverse()
        assert images == expected
        assert expected  # the catalog gives each filter something to find

    async def test_token_from_another_query(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession
    ) -> None:
        """A token presented with other filters or order is a 400; per_page may change."""
        first = await list_page(session, emulator, {"per_page": "10", "meta.status[eq]": "active"})
        token = first.json()["result"]["continuation_token"]
        assert token
        for params in (
            {"continuation_token": token},
            {"continuation_token": token, "meta.status[eq]": "active", "sort_order": "asc"},
            {"continuation_token": token, "meta.status[eq]": "pending"},
        ):
            reply = await list_page(session, emulator, params)
            assert reply.status == 400 and "different query" in reply.error[1]
        ok = await list_page(
            session,
            emulator,
            {"continuation_token": token, "meta.status[eq]": "active", "per_page": "50"},
        )
        assert ok.status == 200

    async def test_page_cap(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """page_cap serves fewer images than asked, and the walk still completes exactly."""
        async with emulator_factory(images=120, page_cap=25) as emu:
            images, pages = await walk(session, emu, [("per_page", "100")])
            assert pages == 5 and len(images) == 120 == len({i["id"] for i in images})


class TestStats:
    async def test_count(self, emulator: RunningEmulator, session: aiohttp.ClientSession) -> None:
        """Stats report the catalog size as current, below the allowance."""
        url = emulator.list_url.replace("/v2", "/v1/stats")
        body = (await get(session, url, headers=bearer(emulator.token))).json()
        assert body["success"] is True
        assert body["result"]["count"]["current"] == len(emulator.catalog)
        assert body["result"]["count"]["allowed"] >= len(emulator.catalog)


class TestBatchHost:
    async def test_batch_walk(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """A batch token reads the same pages on the batch host, outside the global limit."""
        async with emulator_factory(rate_quota=2, rate_window_s=60) as emu:
            reply = await get(
                session, emu.list_url.replace("/v2", "/v1/batch_token"), headers=bearer(emu.token)
            )
            result = reply.json()["result"]
            assert reply.status == 200 and result["expiresAt"].endswith("Z")
            batch_url = emu.batch_base_url + "/images/v2"
            images, pages = await walk(
                session,
                emu,
                [("per_page", "50"), ("sort_order", "asc")],
                url=batch_url,
                headers=bearer(result["token"]),
            )
            assert images == list(emu.catalog.iter_images())
            assert emu.counters.batch_requests == pages == 6
            assert emu.counters.throttled == 0  # 6 pages > quota 2: the batch host is not limited

    @pytest.mark.parametrize(
        ("status", "error"), [(403, (103, "forbidden endpoint")), (404, (7000, "No route"))]
    )
    async def test_refused_list(
        self,
        emulator_factory: EmulatorFactory,
        session: aiohttp.ClientSession,
        status: int,
        error: tuple[int, str],
    ) -> None:
        """`refuse_batch_list` makes the batch host refuse List V2, as reported from the
        field; the API host still serves it and still hands out batch tokens."""
        async with emulator_factory(refuse_batch_list=status) as emu:
            reply = await get(
                session, emu.list_url.replace("/v2", "/v1/batch_token"), headers=bearer(emu.token)
            )
            token = reply.json()["result"]["token"]
            refused = await get(session, emu.batch_base_url + "/images/v2", headers=bearer(token))
            assert refused.status == status
            code, message = refused.error
            assert code == error[0] and message.startswith(error[1])
            assert (await get(session, emu.list_url, headers=bearer(emu.token))).status == 200

    async def test_tokens_interchange(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession
    ) -> None:
        """A continuation token from the API host continues on the batch host."""
        token_reply = await get(
            session,
            emulator.list_url.replace("/v2", "/v1/batch_token"),
            headers=bearer(emulator.token),
        )
        batch_headers = bearer(token_reply.json()["result"]["token"])
        first = (await list_page(session, emulator, {"per_page": "10"})).json()["result"]
        second = await list_page(
            session,
            emulator,
            {"per_page": "10", "continuation_token": first["continuation_token"]},
            url=emulator.batch_base_url + "/images/v2",
            headers=batch_headers,
        )
        assert second.status == 200
        assert second.json()["result"]["images"][0] == emulator.catalog.image(
            len(emulator.catalog) - 11
        )

    async def test_expired_and_forged(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """An expired batch token is a 401; so are an API token and garbage on the batch host."""
        wall = FakeClock()
        async with emulator_factory(batch_token_ttl_s=60, wall=wall) as emu:
            reply = await get(
                session, emu.list_url.replace("/v2", "/v1/batch_token"), headers=bearer(emu.token)
            )
            token = reply.json()["result"]["token"]
            batch_url = emu.batch_base_url + "/images/v2"
            wall.now += 59
            assert (await get(session, batch_url, headers=bearer(token))).status == 200
            wall.now += 1
            expired = await get(session, batch_url, headers=bearer(token))
            assert expired.status == 401 and expired.error == (10000, "Batch token expired")
            for headers in (bearer(emu.token), bearer("garbage"), {}):
                assert (await get(session, batch_url, headers=headers)).status == 401

    async def test_disabled(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """allow_batch_tokens=False refuses the token endpoint with 403."""
        async with emulator_factory(allow_batch_tokens=False) as emu:
            reply = await get(
                session, emu.list_url.replace("/v2", "/v1/batch_token"), headers=bearer(emu.token)
            )
            assert reply.status == 403

    async def test_batch_rate(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """batch_rate limits requests per second per token with 429 + Retry-After."""
        clock = FakeClock()
        async with emulator_factory(batch_rate=3, clock=clock) as emu:
            reply = await get(
                session, emu.list_url.replace("/v2", "/v1/batch_token"), headers=bearer(emu.token)
            )
            headers = bearer(reply.json()["result"]["token"])
            batch_url = emu.batch_base_url + "/images/v2"
            statuses = [(await get(session, batch_url, headers=headers)).status for _ in range(4)]
            assert statuses == [200, 200, 200, 429]
            refused = await get(session, batch_url, headers=headers)
            assert refused.headers["Retry-After"] == "1"
            clock.now += 1
            assert (await get(session, batch_url, headers=headers)).status == 200


class TestRateLimit:
    async def test_quota_lockout_and_headers(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """Over the quota: 429 + Retry-After until the lockout ends; headers on every reply."""
        clock = FakeClock()
        async with emulator_factory(
            rate_quota=3, rate_window_s=10, lockout_s=20, clock=clock
        ) as emu:
            stats = emu.list_url.replace("/v2", "/v1/stats")
            replies = [await list_page(session, emu, {"per_page": "10"}) for _ in range(2)]
            replies.append(await get(session, stats, headers=bearer(emu.token)))  # counts too
            assert [r.status for r in replies] == [200, 200, 200]
            assert [r.headers["Ratelimit"] for r in replies] == [
                '"default";r=2;t=10',
                '"default";r=1;t=10',
                '"default";r=0;t=10',
            ]
            assert all(r.headers["Ratelimit-Policy"] == '"burst";q=3;w=10' for r in replies)
            assert all("Retry-After" not in r.headers for r in replies)
            throttled = await list_page(session, emu)
            assert throttled.status == 429 and throttled.headers["Retry-After"] == "20"
            assert throttled.error[0] == 10429
            clock.now += 15
            still = await list_page(session, emu)
            assert still.status == 429 and still.headers["Retry-After"] == "5"
            clock.now += 5
            assert (await list_page(session, emu)).status == 200
            assert emu.counters.throttled == 2 == emu.counters.by_status[429]

    async def test_bad_request_counts_and_carries_headers(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """A 400 still spends quota and carries the headers; a 401 spends none."""
        async with emulator_factory(rate_quota=5, rate_window_s=60, clock=FakeClock()) as emu:
            bad = await list_page(session, emu, {"per_page": "1"})
            assert bad.status == 400 and bad.headers["Ratelimit"] == '"default";r=4;t=60'
            assert (await get(session, emu.list_url)).status == 401
            assert (await list_page(session, emu)).headers["Ratelimit"] == '"default";r=3;t=60'

    async def test_no_headers_without_quota(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession
    ) -> None:
        """With no quota configured, no rate-limit headers are sent."""
        reply = await list_page(session, emulator)
        assert "Ratelimit" not in reply.headers and "Ratelimit-Policy" not in reply.headers
