"""List V2 query rules and page selection, without HTTP."""

from __future__ import annotations

import pytest

from exporter.api.filters import parse_filter
from exporter.emulator import build_catalog
from exporter.emulator.catalog import OrderKey
from exporter.emulator.listing import (
    ListQuery,
    QueryError,
    ViewCache,
    image_selected,
    parse_list_query,
    select_page,
)

CATALOG = build_catalog(700, seed=11)


class TestParseListQuery:
    def test_defaults(self) -> None:
        """No parameters: 1000 per page, newest first, no creator, no filters."""
        assert parse_list_query([]) == ListQuery(per_page=1000, sort_order="desc")

    def test_everything(self) -> None:
        """Every documented parameter is read; unknown ones are ignored."""
        query = parse_list_query(
            [
                ("per_page", "10000"),
                ("sort_order", "asc"),
                ("creator", ""),
                ("meta.status[eq]", "active"),
                ("meta.priority[gte:number]", "3"),
                ("continuation_token", "abc"),
                ("unknown", "x"),
            ]
        )
        assert query == ListQuery(
            per_page=10000,
            sort_order="asc",
            creator="",
            filters=(
                parse_filter("meta.status[eq]=active"),
                parse_filter("meta.priority[gte:number]=3"),
            ),
            continuation_token="abc",
        )

    @pytest.mark.parametrize("text", ["10", "10.0", "1e3", "10000"])
    def test_per_page_accepted(self, text: str) -> None:
        """per_page is a number in 10..10000 (the spec types it `number`)."""
        assert parse_list_query([("per_page", text)]).per_page == int(float(text))

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            pytest.param([("per_page", "9")], "Invalid per_page: '9'", id="per-page-low"),
            pytest.param([("per_page", "10001")], "Invalid per_page: '10001'", id="per-page-high"),
            pytest.param([("per_page", "10.5")], "Invalid per_page: '10.5'", id="per-page-frac"),
            pytest.param([("per_page", "ten")], "Invalid per_page: 'ten'", id="per-page-word"),
            pytest.param([("per_page", "nan")], "Invalid per_page: 'nan'", id="per-page-nan"),
            pytest.param([("per_page", "1_000")], "Invalid per_page: '1_000'", id="underscore"),
            pytest.param([("per_page", "\u0661\u0660\u0660")], "Invalid per_page", id="arabic"),
            pytest.param([("per_page", "1e999")], "Invalid per_page: '1e999'", id="inf"),
            pytest.param([("per_page", "+100")], "Invalid per_page: '+100'", id="plus"),
            pytest.param([("meta", "foo")], "Invalid metadata filter: 'meta'", id="meta-bare"),
            pytest.param(
                [("metadata[eq]", "x")], "Invalid metadata filter: 'metadata[eq]'", id="metadata"
            ),
            pytest.param(
                [("meta.p[gt]", "1e999")], "Invalid numeric value for metadata filter", id="gt-inf"
            ),
            pytest.param([("sort_order", "ASC")], "Invalid sort_order: 'ASC'", id="sort-case"),
            pytest.param(
                [("meta.s[not-eq]", "x")],
                "Unsupported metadata filter operator: 'not-eq'",
                id="operator",
            ),
            pytest.param(
                [(f"meta.k{i}[eq]", "v") for i in range(6)],
                "Too many metadata filters: 6 provided, maximum 5 allowed",
                id="six-filters",
            ),
            pytest.param(
                [("meta.a.b.c.d.e.f[eq]", "v")], "Metadata filter nesting too deep", id="depth"
            ),
            pytest.param([("meta.r[in]", "|".join("abcdefghijk"))], "Too many values", id="in-11"),
            pytest.param([("meta.p[lt]", "low")], "Invalid numeric value", id="range-text"),
            pytest.param([("meta.e[eq:boolean]", "1")], "Invalid boolean value", id="boolean"),
        ],
    )
    def test_rejected(self, params: list[tuple[str, str]], message: str) -> None:
        """Each violation raises QueryError whose message names the problem."""
        with pytest.raises(QueryError) as info:
            parse_list_query(params)
        assert str(info.value).startswith(message)


class TestCreator:
    @pytest.mark.parametrize(
        ("image", "creator", "expected"),
        [
            pytest.param({}, "", True, id="absent-is-unset"),
            pytest.param({"creator": None}, "", True, id="null-is-unset"),
            pytest.param({"creator": ""}, "", True, id="empty-is-unset"),
            pytest.param({"creator": "u1"}, "", False, id="set-is-not-unset"),
            pytest.param({"creator": "u1"}, "u1", True, id="exact"),
            pytest.param({"creator": "U1"}, "u1", False, id="case-sensitive"),
            pytest.param({}, None, True, id="no-creator-filter"),
        ],
    )
    def test_creator(self, image: dict[str, str], creator: str | None, expected: bool) -> None:
        """creator="" selects images whose creator is not set (null, absent or "")."""
        assert image_selected(image, creator, ()) is expected


def _walk(view: list[int] | range, order: str, size: int) -> list[OrderKey]:
    keys = CATALOG.keys
    served: list[OrderKey] = []
    after: OrderKey | None = None
    while True:
        assert len(served) <= len(keys), "the walk loops"
        page = select_page(keys, view, order, size, after)
        served.extend(keys[p] for p in page.positions)
        assert len(page.positions) <= size
        if page.next_key is None:
            return served
        assert page.next_key == served[-1]
        after = page.next_key


class TestSelectPage:
    @pytest.mark.parametrize("size", [1, 7, 10, 699, 700, 701])
    @pytest.mark.parametrize("order", ["asc", "desc"])
    def test_walk_is_exact(self, order: str, size: int) -> None:
        """Walking yields every image once, in order, ties broken by id, both directions."""
        served = _walk(range(len(CATALOG)), order, size)
        expected = sorted(CATALOG.keys, reverse=order == "desc")
        assert served == expected

    @pytest.mark.parametrize("order", ["asc", "desc"])
    def test_filtered_walk_is_exact(self, order: str) -> None:
        """A filtered view walks exactly its own images."""
        query = parse_list_query([("meta.status[eq]", "active"), ("sort_order", order)])
        view = list(ViewCache(CATALOG).positions(query))
        assert 0 < len(view) < len(CATALOG)
        served = _walk(view, order, 13)
        assert served == sorted((CATALOG.keys[p] for p in view), reverse=order == "desc")

    def test_last_page_has_no_token(self) -> None:
        """A walk whose size divides the catalog ends without an empty extra page."""
        page = select_page(CATALOG.keys, range(700), "asc", 700, None)
        assert len(page.positions) == 700 and page.next_key is None

    def test_empty_view(self) -> None:
        """No match: one empty page, no token."""
        page = select_page(CATALOG.keys, [], "desc", 10, None)
        assert len(page.positions) == 0 and page.next_key is None


class TestViewCache:
    def test_views_are_cached(self) -> None:
        """The second identical query reuses the computed view."""
        cache = ViewCache(CATALOG, size=1)
        query = parse_list_query([("creator", "")])
        assert not cache.is_cached(query)
        first = cache.positions(query)
        assert cache.is_cached(query) and cache.positions(query) is first
        cache.positions(parse_list_query([("creator", "user-001")]))
        assert not cache.is_cached(query)  # evicted: size 1
