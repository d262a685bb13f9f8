"""The official `cloudflare` SDK, pointed at the emulator, as a real client."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import cloudflare
import pytest
from cloudflare import AsyncCloudflare

from exporter.emulator import RunningEmulator

from .helpers import EmulatorFactory


def _client(emu: RunningEmulator, token: str | None = None) -> AsyncCloudflare:
    return AsyncCloudflare(
        api_token=token or emu.token, base_url=emu.base_url, max_retries=0, timeout=10
    )


async def _walk(
    client: AsyncCloudflare,
    emu: RunningEmulator,
    extra_query: dict[str, str] | None = None,
    **kw: Any,
) -> list[dict[str, Any]]:
    """Follow continuation_token with the SDK; return every image as API JSON."""
    images: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(len(emu.catalog) + 1):  # bounded: a token loop fails instead of hanging
        page = await client.images.v2.list(
            account_id=emu.account_id, continuation_token=token, extra_query=extra_query, **kw
        )
        images.extend(image.to_dict(mode="python") for image in page.images or [])
        token = page.continuation_token
        if token is None:
            return images
    raise AssertionError("the continuation tokens loop")


def _api_json(image: dict[str, Any]) -> dict[str, Any]:
    """Return an image as the SDK models it: uploaded as a datetime."""
    return {**image, "uploaded": datetime.fromisoformat(image["uploaded"])}


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_walk_every_image_once(emulator: RunningEmulator, order: str) -> None:
    """The SDK walks all pages by continuation_token and gets each image exactly once."""
    async with _client(emulator) as client:
        images = await _walk(client, emulator, per_page=40, sort_order=order)
    expected = [_api_json(img) for img in emulator.catalog.iter_images()]
    if order == "desc":
        expected.reverse()
    assert [img["id"] for img in images] == [img["id"] for img in expected]
    assert images == expected


async def test_walk_with_filters_and_creator(emulator: RunningEmulator) -> None:
    """Meta filters travel through extra_query; creator through the SDK's own argument."""
    query = {"meta.status[in]": "active|pending", "meta.priority[gte:number]": "2"}
    async with _client(emulator) as client:
        images = await _walk(client, emulator, query, per_page=10, creator="user-003")
    expected = [
        img["id"]
        for img in emulator.catalog.iter_images()
        if img.get("creator") == "user-003"
        and img.get("meta", {}).get("status") in ("active", "pending")
        and type(img["meta"].get("priority")) in (int, float)
        and img["meta"]["priority"] >= 2
    ]
    assert expected
    assert [image["id"] for image in images] == expected[::-1]


async def test_sdk_drops_empty_creator(emulator: RunningEmulator) -> None:
    """SDK 5.9.0 omits empty query values, so creator="" (unset creators) reaches no server.

    A finding, not an emulator feature: the exporter's own client must send `creator=`.
    """
    async with _client(emulator) as client:
        page = await client.images.v2.list(
            account_id=emulator.account_id, creator="", per_page=10000
        )
    assert len(page.images or []) == len(emulator.catalog)  # unfiltered


async def test_stats(emulator: RunningEmulator) -> None:
    """images.v1.stats.get reads the current count."""
    async with _client(emulator) as client:
        stats = await client.images.v1.stats.get(account_id=emulator.account_id)
    assert stats.count is not None and stats.count.current == len(emulator.catalog)


async def test_bad_token(emulator: RunningEmulator) -> None:
    """A wrong token raises AuthenticationError carrying code 10000."""
    async with _client(emulator, token="wrong") as client:
        with pytest.raises(cloudflare.AuthenticationError) as info:
            await client.images.v2.list(account_id=emulator.account_id)
    assert info.value.status_code == 401
    assert "Authentication error" in str(info.value)


async def test_other_account(emulator: RunningEmulator) -> None:
    """Another account raises PermissionDeniedError."""
    async with _client(emulator) as client:
        with pytest.raises(cloudflare.PermissionDeniedError):
            await client.images.v2.list(account_id="f" * 32)


async def test_bad_filter(emulator: RunningEmulator) -> None:
    """A bad filter raises BadRequestError whose message is the API's."""
    async with _client(emulator) as client:
        with pytest.raises(cloudflare.BadRequestError) as info:
            await client.images.v2.list(
                account_id=emulator.account_id, extra_query={"meta.status[not-eq]": "x"}
            )
    assert info.value.status_code == 400
    assert "Unsupported metadata filter operator: 'not-eq'" in str(info.value)


async def test_rate_limited(emulator_factory: EmulatorFactory) -> None:
    """Over the quota the SDK raises RateLimitError and sees Retry-After."""
    async with emulator_factory(rate_quota=1, rate_window_s=60, lockout_s=30) as emu:
        async with _client(emu) as client:
            await client.images.v2.list(account_id=emu.account_id, per_page=10)
            with pytest.raises(cloudflare.RateLimitError) as info:
                await client.images.v2.list(account_id=emu.account_id, per_page=10)
    assert info.value.response.headers["Retry-After"] == "30"
