"""List V2 pages: parsing the envelope, building the query, catching a stuck cursor."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from exporter.api.filters import parse_filter
from exporter.api.pagination import (
    ListRequest,
    Page,
    check_account_id,
    check_progress,
    parse_page,
    uploaded_key,
)
from exporter.errors import ConfigError, CursorError, FilterError, PageFormatError


def envelope(images: list[dict[str, Any]], token: Any = None, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"images": images}
    if token is not ...:
        result["continuation_token"] = token
    return {"success": True, "errors": [], "messages": [], "result": result, **extra}


IMG = {"id": "a/b", "uploaded": "2024-01-01T00:00:00.000Z"}


class TestParsePage:
    def test_images_and_token(self) -> None:
        """result.images and result.continuation_token become a Page."""
        page = parse_page(orjson.dumps(envelope([IMG], "tok")))
        assert page == Page(images=[IMG], next_token="tok")

    @pytest.mark.parametrize("token", [None, "", ...], ids=["null", "empty", "absent"])
    def test_null_empty_or_absent_token_ends_the_walk(self, token: Any) -> None:
        """A null, empty or absent token means there is no next page."""
        assert parse_page(envelope([IMG], token)).next_token is None

    def test_opaque_long_token_kept_as_is(self) -> None:
        """Tokens are never length-checked (the spec's own example breaks its maxLength)."""
        token = "iD0bxlWFSVUWsDHbzIqvDkgBW4otifAAuGXLz1n8BQA" * 3
        assert parse_page(envelope([], token)).next_token == token

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b"{not json", id="invalid-json"),
            pytest.param(b"[]", id="not-object"),
            pytest.param({"success": True, "result": None}, id="no-result"),
            pytest.param({"success": True, "result": {"images": {}}}, id="images-not-list"),
            pytest.param(envelope([{"filename": "x"}]), id="image-without-id"),
            pytest.param(envelope([IMG], 5), id="token-not-string"),
            pytest.param(
                {"success": False, "errors": [{"code": 5400, "message": "bad"}], "result": None},
                id="success-false",
            ),
        ],
    )
    def test_not_a_page(self, body: Any) -> None:
        """A body that is not a List V2 page raises PageFormatError (exit 4)."""
        with pytest.raises(PageFormatError) as info:
            parse_page(body, "https://x/images/v2")
        assert info.value.url == "https://x/images/v2"
        assert info.value.exit_code == 4


class TestListRequest:
    def test_params_carry_every_option(self) -> None:
        """per_page, sort_order, creator, each filter and the token become query params."""
        request = ListRequest(
            per_page=50,
            creator="",
            filters=(parse_filter("meta.status[in]=a|b"), parse_filter("meta.n[gte:number]=2")),
        )
        assert request.params("asc", "T") == [
            ("per_page", "50"),
            ("sort_order", "asc"),
            ("creator", ""),
            ("meta.status[in]", "a|b"),
            ("meta.n[gte:number]", "2"),
            ("continuation_token", "T"),
        ]
        assert request.params(None, None) == [
            ("per_page", "50"),
            ("creator", ""),
            ("meta.status[in]", "a|b"),
            ("meta.n[gte:number]", "2"),
        ]

    @pytest.mark.parametrize("per_page", [9, 10_001, 0, True])
    def test_per_page_outside_api_limits(self, per_page: int) -> None:
        """per_page must be 10..10000 (the API's own limits): ConfigError before any request."""
        with pytest.raises(ConfigError) as info:
            ListRequest(per_page=per_page).validate()
        assert info.value.key == "per_page"

    @pytest.mark.parametrize("per_page", [10, 1000, 10_000])
    def test_per_page_within_limits(self, per_page: int) -> None:
        ListRequest(per_page=per_page).validate()

    def test_too_many_filters(self) -> None:
        """Six filters break the API's limit of five: FilterError, exit 2."""
        filters = tuple(parse_filter(f"meta.k{i}[eq]=v") for i in range(6))
        with pytest.raises(FilterError) as info:
            ListRequest(filters=filters).validate()
        assert info.value.exit_code == 2


class TestCheckProgress:
    def test_same_token_twice_is_a_cursor_error(self) -> None:
        """A reply whose token equals the token sent would loop forever."""
        with pytest.raises(CursorError):
            check_progress("u", "T", Page([IMG], "T"), None)

    def test_same_page_twice_is_a_cursor_error(self) -> None:
        """The same non-empty page twice in a row is an error, even under a new token."""
        ids = check_progress("u", None, Page([IMG], "T1"), None)
        with pytest.raises(CursorError):
            check_progress("u", "T1", Page([IMG], "T2"), ids)

    def test_progress_returns_ids(self) -> None:
        ids = check_progress("u", None, Page([IMG], "T1"), None)
        assert check_progress("u", "T1", Page([{"id": "z"}], None), ids) == ["z"]


class TestUploadedKey:
    def test_z_and_offset_forms_compare_as_instants(self) -> None:
        """`Z`, offsets and fraction lengths compare by instant, not as text."""
        a = uploaded_key({"uploaded": "2024-01-01T00:00:00.5Z"})
        b = uploaded_key({"uploaded": "2024-01-01T01:00:00.500+01:00"})
        assert a == b == datetime(2024, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)

    @pytest.mark.parametrize("value", [None, 5, "yesterday"])
    def test_bad_uploaded(self, value: Any) -> None:
        with pytest.raises(PageFormatError):
            uploaded_key({"id": "x", "uploaded": value})


class TestCheckAccountId:
    @pytest.mark.parametrize("value", ["0123456789abcdef0123456789abcdef", "acc", "A_b-9"])
    def test_what_the_reference_allows_passes(self, value: str) -> None:
        """Up to 32 characters of a URL-safe path segment: the reference promises no more."""
        assert check_account_id(value) == value

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            pytest.param("", "empty", id="empty"),
            pytest.param("f" * 33, "33 characters", id="33"),
            pytest.param("ab/cd", "holds '/'", id="slash"),
            pytest.param("ab\tcd", "a space or control character", id="tab"),
            pytest.param("abé", "holds 'é'", id="non-ascii"),
        ],
    )
    def test_what_it_rules_out_says_the_shape(self, value: str, problem: str) -> None:
        """The message names the problem and the expected shape, never the value itself."""
        with pytest.raises(ValueError, match="32 hex digits") as info:
            check_account_id(value)
        assert problem in str(info.value)
        assert "f" * 33 not in str(info.value)
