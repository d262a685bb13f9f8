"""Injected faults: deterministic from the seed, each kind observable by a client."""

from __future__ import annotations

import time

import aiohttp
import orjson
import pytest

from exporter.emulator.faults import FaultPlan
from exporter.emulator.settings import FAULT_KINDS

from .helpers import EmulatorFactory, bearer, get, list_page


class TestFaultPlan:
    def test_deterministic(self) -> None:
        """The same seed fails the same requests with the same kinds."""
        first, second = FaultPlan(5, 0.3, FAULT_KINDS), FaultPlan(5, 0.3, FAULT_KINDS)
        draws = [first.next_fault() for _ in range(200)]
        assert draws == [second.next_fault() for _ in range(200)]
        assert draws != [FaultPlan(6, 0.3, FAULT_KINDS).next_fault() for _ in range(200)]

    def test_rate_and_kinds(self) -> None:
        """About `rate` of the requests fail, spread over every chosen kind."""
        plan = FaultPlan(1, 0.25, {"500", "reset"})
        faults = [plan.next_fault() for _ in range(4000)]
        failed = [f for f in faults if f is not None]
        assert 800 < len(failed) < 1200
        assert set(failed) == {"500", "reset"}

    def test_off(self) -> None:
        """Rate 0 never fails."""
        plan = FaultPlan(1, 0.0, FAULT_KINDS)
        assert {plan.next_fault() for _ in range(100)} == {None}


async def _first_reply(
    emulator_factory: EmulatorFactory, session: aiohttp.ClientSession, kind: str, **extra: float
) -> tuple[int, str, bytes]:
    async with emulator_factory(images=50, fault_rate=1.0, fault_kinds={kind}, **extra) as emu:
        reply = await list_page(session, emu, {"per_page": "10"})
        assert emu.counters.faults[kind] == 1
        assert emu.counters.pages == (1 if kind == "slow" else 0)  # only slow serves a page
        return reply.status, reply.headers["Content-Type"], reply.body


class TestFaultKinds:
    @pytest.mark.parametrize(("kind", "status"), [("500", 500), ("503", 503)])
    async def test_json_errors(
        self,
        emulator_factory: EmulatorFactory,
        session: aiohttp.ClientSession,
        kind: str,
        status: int,
    ) -> None:
        """500 and 503 are failure envelopes."""
        got, content_type, body = await _first_reply(emulator_factory, session, kind)
        assert got == status and content_type == "application/json"
        assert orjson.loads(body)["success"] is False

    async def test_bad_gateway_html(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """502 comes with an HTML page, not JSON."""
        status, content_type, body = await _first_reply(emulator_factory, session, "502_html")
        assert (status, content_type) == (502, "text/html")
        assert body.startswith(b"<!DOCTYPE html>")
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(body)

    async def test_truncated(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """A 200 whose complete HTTP body is half a JSON document."""
        status, content_type, body = await _first_reply(emulator_factory, session, "truncated")
        assert (status, content_type) == (200, "application/json")
        assert body.startswith(b'{"result":{"images":[')
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(body)

    async def test_reset(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """Headers and part of the body arrive, then the connection drops."""
        async with emulator_factory(images=50, fault_rate=1.0, fault_kinds={"reset"}) as emu:
            headers = {"Authorization": f"Bearer {emu.token}"}
            async with session.get(emu.list_url, headers=headers) as response:
                assert response.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):
                    await response.read()
            assert emu.counters.faults["reset"] == 1

    async def test_slow(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """A slow reply is a normal page after slow_s."""
        started = time.monotonic()
        status, _, body = await _first_reply(emulator_factory, session, "slow", slow_s=0.3)
        assert time.monotonic() - started >= 0.3
        assert status == 200 and len(orjson.loads(body)["result"]["images"]) == 10

    async def test_latency(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """latency_s delays every page."""
        async with emulator_factory(images=50, latency_s=0.1) as emu:
            started = time.monotonic()
            for _ in range(2):
                assert (await list_page(session, emu, {"per_page": "10"})).status == 200
            assert time.monotonic() - started >= 0.2

    async def test_latency_everywhere(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """latency_s delays /stats too (the API has a round trip on every route);
        stats_latency_s sets /stats's own delay."""
        for settings, least, most in (
            ({"latency_s": 0.2}, 0.2, 10.0),
            ({"latency_s": 0.2, "stats_latency_s": 0.0}, 0.0, 0.2),
            ({"stats_latency_s": 0.3}, 0.3, 10.0),
        ):
            async with emulator_factory(images=50, **settings) as emu:
                url = emu.list_url.removesuffix("/images/v2") + "/images/v1/stats"
                started = time.monotonic()
                reply = await get(session, url, headers=bearer(emu.token))
                took = time.monotonic() - started
                assert reply.status == 200 and reply.json()["result"]["count"]["current"] == 50
                assert least <= took < most, settings

    async def test_connect_latency_delays_a_connection_s_first_reply(
        self, emulator_factory: EmulatorFactory
    ) -> None:
        """connect_latency_s: a new connection's first reply waits (its handshakes), the next
        replies on it do not; the emulator counts the connections."""
        async with emulator_factory(images=50, connect_latency_s=0.3) as emu:
            async with aiohttp.ClientSession() as session:
                took = []
                for _ in range(3):
                    started = time.monotonic()
                    assert (await list_page(session, emu, {"per_page": "10"})).status == 200
                    took.append(time.monotonic() - started)
            async with aiohttp.ClientSession() as other:
                assert (await list_page(other, emu, {"per_page": "10"})).status == 200
            assert took[0] >= 0.3 and max(took[1:]) < 0.3
            assert emu.counters.connections == 2

    async def test_same_seed_same_failures(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """Two emulators with one seed fail the same request sequence identically."""
        runs = []
        for _ in range(2):
            async with emulator_factory(
                images=50, fault_rate=0.5, fault_kinds={"500", "503"}, seed=9
            ) as emu:
                runs.append(
                    [(await list_page(session, emu, {"per_page": "10"})).status for _ in range(20)]
                )
        assert runs[0] == runs[1]
        assert {200, 500, 503} <= set(runs[0])
