"""Every emulator reply shape and parameter rule, checked against the OpenAPI copy.

`tests/contract/openapi.json` is a structure-only copy of the extract (see its README). Three
contradictions inside the spec are relaxed, and `TestSpecContradictions` proves each still exists.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from exporter.emulator import RunningEmulator

from .helpers import EmulatorFactory, Reply, bearer, get, list_page

SPEC_PATH = Path(__file__).parent.parent / "contract" / "openapi.json"
SPEC: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
SCHEMAS = SPEC["components"]["schemas"]
LIST_V2 = SPEC["paths"]["/accounts/{account_id}/images/v2"]["get"]
PARAMS = {p["name"]: p for p in LIST_V2["parameters"]}
# Spec contradictions relaxed for validation (each proven in TestSpecContradictions):
RELAXED_MAX_LENGTH = ("images_image_identifier", "images_images_list_continuation_token")


def _to_json_schema(node: Any) -> Any:
    """Return OpenAPI 3.0 schema text as JSON Schema: `nullable: true` becomes `| null`."""
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {k: _to_json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        return {"anyOf": [converted, {"type": "null"}]}
    return converted


def _validator(schema_name: str) -> Draft202012Validator:
    relaxed = copy.deepcopy(SPEC)
    for name in RELAXED_MAX_LENGTH:
        relaxed["components"]["schemas"][name].pop("maxLength")
    doc = _to_json_schema(relaxed)
    registry: Registry[Any] = Registry().with_resource(
        "urn:cf-images", Resource.from_contents(doc, default_specification=DRAFT202012)
    )
    return Draft202012Validator(
        {"$ref": f"urn:cf-images#/components/schemas/{schema_name}"},
        registry=registry,
        format_checker=FormatChecker(),
    )


PAGE = _validator("images_images_list_response_v2")
FAILURE = _validator("images_api-response-common-failure")
SINGLE = _validator("images_api-response-single")


def _assert_valid(validator: Draft202012Validator, reply: Reply) -> None:
    errors = sorted(validator.iter_errors(reply.json()), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def test_copy_is_a_valid_openapi_document() -> None:
    """The structure-only copy still passes openapi-spec-validator."""
    validate_spec(SPEC)


class TestSpecContradictions:
    def test_identifier_max_length_vs_uuid_ids(self) -> None:
        """Image ids are 36-character UUIDs (the spec's own example), over maxLength 32."""
        schema = SCHEMAS["images_image_identifier"]
        assert len(schema["example"]) == 36 > schema["maxLength"] == 32

    def test_token_max_length_vs_example(self) -> None:
        """The token's own example is 43 characters, over its maxLength 32."""
        schema = SCHEMAS["images_images_list_continuation_token"]
        assert len(schema["example"]) == 43 > schema["maxLength"] == 32

    def test_failure_schema_is_unsatisfiable(self) -> None:
        """The 4XX schema ANDs success=[true] with success=[false]; no body can pass."""
        refs = [
            part["$ref"]
            for part in LIST_V2["responses"]["4XX"]["content"]["application/json"]["schema"][
                "allOf"
            ]
        ]
        common = SCHEMAS["images_api-response-common"]["properties"]["success"]["enum"]
        failure = SCHEMAS["images_api-response-common-failure"]["properties"]["success"]["enum"]
        assert refs[-1].endswith("images_api-response-common-failure")
        assert (common, failure) == ([True], [False])


class TestResponses:
    @pytest.mark.parametrize("order", ["asc", "desc"])
    async def test_every_page(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession, order: str
    ) -> None:
        """Every page of a full walk, with every image of the catalog, matches the schema."""
        token: str | None = None
        seen = 0
        for _ in range(len(emulator.catalog)):  # bounded: a token loop fails, never hangs
            params = {"per_page": "25", "sort_order": order}
            if token:
                params["continuation_token"] = token
            reply = await list_page(session, emulator, params)
            _assert_valid(PAGE, reply)
            result = reply.json()["result"]
            seen += len(result["images"])
            token = result["continuation_token"]
            if token is None:
                break
        assert token is None and seen == len(emulator.catalog)

    async def test_empty_filtered_page(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession
    ) -> None:
        """A page with no match is still a valid list response with a null token."""
        reply = await list_page(session, emulator, {"meta.status[eq]": "no-such-status"})
        _assert_valid(PAGE, reply)
        assert reply.json()["result"] == {"images": [], "continuation_token": None}

    async def test_stats_and_batch_token(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession
    ) -> None:
        """Stats and batch_token replies are single-result envelopes (not in the extract)."""
        for path in ("/v1/stats", "/v1/batch_token"):
            url = emulator.list_url.replace("/v2", path)
            _assert_valid(SINGLE, await get(session, url, headers=bearer(emulator.token)))

    async def test_errors(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """400, 401, 403, 404, 429, 500 and 503 bodies are failure envelopes."""
        async with emulator_factory(images=30, rate_quota=6, rate_window_s=60) as emu:
            replies = [
                await list_page(session, emu, {"per_page": "5"}),
                await get(session, emu.list_url),
                await get(
                    session,
                    emu.list_url.replace(emu.account_id, "0" * 32),
                    headers=bearer(emu.token),
                ),
                await get(session, emu.base_url + "/nowhere", headers=bearer(emu.token)),
            ]
            for _ in range(6):
                replies.append(await list_page(session, emu))
        async with emulator_factory(images=30, fault_rate=1.0, fault_kinds={"500", "503"}) as emu:
            for _ in range(8):
                replies.append(await list_page(session, emu))
        statuses = {reply.status for reply in replies}
        assert {400, 401, 403, 404, 429, 500, 503} <= statuses
        for reply in replies:
            if reply.status != 200:
                _assert_valid(FAILURE, reply)


class TestParameterRules:
    async def test_per_page_bounds(
        self, emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
    ) -> None:
        """per_page minimum, maximum and default are the spec's."""
        schema = PARAMS["per_page"]["schema"]
        low, high, default = schema["minimum"], schema["maximum"], schema["default"]
        async with emulator_factory(images=default + 5) as emu:
            for value, status in ((low - 1, 400), (low, 200), (high, 200), (high + 1, 400)):
                reply = await list_page(session, emu, {"per_page": str(value)})
                assert reply.status == status, value
            page = (await list_page(session, emu)).json()["result"]
            assert len(page["images"]) == default and page["continuation_token"]
            small = (await list_page(session, emu, {"per_page": str(low)})).json()["result"]
            assert len(small["images"]) == low

    async def test_sort_order_enum(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession
    ) -> None:
        """Each enum value is accepted, the default is the spec's, anything else is a 400."""
        schema = PARAMS["sort_order"]["schema"]
        pages = {}
        for value in schema["enum"]:
            reply = await list_page(session, emulator, {"sort_order": value, "per_page": "10"})
            pages[value] = reply.json()["result"]["images"]
        default = (await list_page(session, emulator, {"per_page": "10"})).json()["result"][
            "images"
        ]
        assert (
            default
            == pages[schema["default"]]
            != pages["asc" if schema["default"] == "desc" else "desc"]
        )
        assert (await list_page(session, emulator, {"sort_order": "random"})).status == 400

    async def test_creator_empty_means_unset(
        self, emulator: RunningEmulator, session: aiohttp.ClientSession
    ) -> None:
        """creator="" ("images where creator field is not set") returns no set creator."""
        reply = await list_page(session, emulator, {"creator": "", "per_page": "10000"})
        images = reply.json()["result"]["images"]
        assert images and all(not img.get("creator") for img in images)


async def test_pages_with_extra_fields_match_the_schema(
    emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    """Fields the reference does not list leave every page valid: the image schema does not
    forbid additional properties, and the API may add fields at any time."""
    async with emulator_factory(images=120, extra_fields=True, night=1) as emu:
        token: str | None = None
        extras = 0
        for _ in range(10):
            params = {"per_page": "50", **({"continuation_token": token} if token else {})}
            reply = await list_page(session, emu, params)
            _assert_valid(PAGE, reply)
            result = reply.json()["result"]
            extras += sum("sizeBytes" in image for image in result["images"])
            token = result["continuation_token"]
            if token is None:
                break
        assert token is None and extras > 0
