"""Metadata filter parsing, limits and matching, with literal data."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.api.filters import (
    MetaFilter,
    matches,
    parse_filter,
    parse_filter_param,
    parse_number,
    validate_filters,
)
from exporter.errors import FilterError


class TestParseFilter:
    @pytest.mark.parametrize(
        ("expr", "expected"),
        [
            pytest.param(
                "meta.status[eq]=active",
                MetaFilter(("status",), "eq", None, ("active",)),
                id="eq-untyped",
            ),
            pytest.param(
                "meta.status[eq:string]=active",
                MetaFilter(("status",), "eq", "string", ("active",)),
                id="eq-string",
            ),
            pytest.param(
                "meta.priority[eq:number]=5",
                MetaFilter(("priority",), "eq", "number", ("5",)),
                id="eq-number",
            ),
            pytest.param(
                "meta.enabled[eq:boolean]=true",
                MetaFilter(("enabled",), "eq", "boolean", ("true",)),
                id="eq-boolean",
            ),
            pytest.param(
                "meta.region[in]=us-east|us-west|eu-west",
                MetaFilter(("region",), "in", None, ("us-east", "us-west", "eu-west")),
                id="in-pipes",
            ),
            pytest.param(
                "meta.ratings[in:number]=4|5",
                MetaFilter(("ratings",), "in", "number", ("4", "5")),
                id="in-number",
            ),
            pytest.param(
                "meta.priority[gte:number]=1",
                MetaFilter(("priority",), "gte", "number", ("1",)),
                id="gte-number",
            ),
            pytest.param(
                "meta.score[lt]=-2.5e3",
                MetaFilter(("score",), "lt", None, ("-2.5e3",)),
                id="lt-untyped-exponent",
            ),
            pytest.param(
                "meta.a.b.c.d.e[eq]=x",
                MetaFilter(("a", "b", "c", "d", "e"), "eq", None, ("x",)),
                id="five-levels",
            ),
            pytest.param(
                "meta.note[eq]=a=b",
                MetaFilter(("note",), "eq", None, ("a=b",)),
                id="value-with-equals",
            ),
            pytest.param(
                "meta.note[eq]=", MetaFilter(("note",), "eq", None, ("",)), id="empty-value"
            ),
        ],
    )
    def test_parses(self, expr: str, expected: MetaFilter) -> None:
        """A valid expression becomes the filter it spells and prints back unchanged."""
        parsed = parse_filter(expr)
        assert parsed == expected
        assert str(parsed) == expr

    @pytest.mark.parametrize(
        ("expr", "message"),
        [
            pytest.param(
                "meta.status[not-eq]=x",
                "Unsupported metadata filter operator: 'not-eq'",
                id="unknown-op",
            ),
            pytest.param(
                "meta.status[gt:string]=x",
                "Unsupported metadata filter operator: 'gt:string'",
                id="range-string",
            ),
            pytest.param(
                "meta.status[in:boolean]=true",
                "Unsupported metadata filter operator: 'in:boolean'",
                id="in-boolean",
            ),
            pytest.param(
                "meta.status[eq:]=x", "Unsupported metadata filter operator: 'eq:'", id="empty-kind"
            ),
            pytest.param(
                "meta.a.b.c.d.e.f[eq]=x",
                "Metadata filter nesting too deep: 6 levels in 'meta.a.b.c.d.e.f[eq]', "
                "maximum 5 allowed",
                id="six-levels",
            ),
            pytest.param(
                "meta.x[in]=1|2|3|4|5|6|7|8|9|10|11",
                "Too many values for metadata filter 'meta.x[in]': 11 provided, maximum 10 allowed",
                id="eleven-in-values",
            ),
            pytest.param(
                "meta.x[gt]=abc",
                "Invalid numeric value for metadata filter 'meta.x[gt]': 'abc'",
                id="range-not-number",
            ),
            pytest.param(
                "meta.x[eq:number]=nan",
                "Invalid numeric value for metadata filter 'meta.x[eq:number]': 'nan'",
                id="nan",
            ),
            pytest.param(
                "meta.x[gte]=1_000",
                "Invalid numeric value for metadata filter 'meta.x[gte]': '1_000'",
                id="underscore",
            ),
            pytest.param(
                "meta.x[lt:number]=\u0661\u0662",
                "Invalid numeric value for metadata filter 'meta.x[lt:number]': '\u0661\u0662'",
                id="arabic-indic-digits",
            ),
            pytest.param(
                "meta.x[gt]=1e999",
                "Invalid numeric value for metadata filter 'meta.x[gt]': '1e999'",
                id="overflows-to-inf",
            ),
            pytest.param(
                "meta.x[eq:number]=+5",
                "Invalid numeric value for metadata filter 'meta.x[eq:number]': '+5'",
                id="plus-sign",
            ),
            pytest.param(
                "meta.x[in:number]=1|two",
                "Invalid numeric value for metadata filter 'meta.x[in:number]': 'two'",
                id="in-number-word",
            ),
            pytest.param(
                "meta.x[eq:boolean]=yes",
                "Invalid boolean value for metadata filter 'meta.x[eq:boolean]': 'yes', "
                "expected true or false",
                id="boolean-yes",
            ),
            pytest.param(
                "status=active",
                "Invalid metadata filter: 'status=active', expected meta.<field>[<op>]=<value>",
                id="no-brackets",
            ),
            pytest.param(
                "meta.[eq]=x", "Invalid metadata filter field: 'meta.[eq]'", id="empty-path"
            ),
            pytest.param(
                "meta.a..b[eq]=x", "Invalid metadata filter field: 'meta.a..b[eq]'", id="empty-seg"
            ),
        ],
    )
    def test_rejects(self, expr: str, message: str) -> None:
        """An invalid expression raises FilterError whose reason names the problem."""
        with pytest.raises(FilterError) as info:
            parse_filter(expr)
        assert info.value.reason == message
        assert info.value.exit_code == 2

    def test_param_form_matches_cli_form(self) -> None:
        """A query parameter pair parses to the same filter as the CLI expression."""
        assert parse_filter_param("meta.region.name[eq]", "eu-west") == parse_filter(
            "meta.region.name[eq]=eu-west"
        )

    def test_param_name_with_kind(self) -> None:
        """param_name and param_value rebuild the query parameter."""
        f = parse_filter("meta.r[in:string]=a|b")
        assert (f.param_name, f.param_value) == ("meta.r[in:string]", "a|b")


class TestValidateFilters:
    def test_five_is_fine(self) -> None:
        """Five filters are the documented maximum."""
        validate_filters([parse_filter(f"meta.k{i}[eq]=v") for i in range(5)])

    def test_six_is_too_many(self) -> None:
        """Six filters fail with the API's example message."""
        with pytest.raises(FilterError) as info:
            validate_filters([parse_filter(f"meta.k{i}[eq]=v") for i in range(6)])
        assert info.value.reason == "Too many metadata filters: 6 provided, maximum 5 allowed"

    def test_checks_hand_built_filters(self) -> None:
        """A filter built without the parser is still checked."""
        with pytest.raises(FilterError, match="Invalid numeric value"):
            validate_filters([MetaFilter(("p",), "gte", None, ("high",))])


META: dict[str, Any] = {
    "status": "active",
    "priority": 5,
    "ratio": 2.5,
    "flag": True,
    "numtext": "5",
    "nothing": None,
    "tags": ["a", "b"],
    "region": {"name": "eu-west", "zone": {"n": 3}},
    "a.b": 1,
    "a": {"b": 2},
}


class TestMatches:
    @pytest.mark.parametrize(
        ("expr", "expected"),
        [
            pytest.param("meta.status[eq]=active", True, id="eq-string"),
            pytest.param("meta.status[eq]=Active", False, id="eq-case-sensitive"),
            pytest.param("meta.status[eq:number]=1", False, id="eq-number-on-string"),
            pytest.param("meta.priority[eq]=5", True, id="eq-untyped-number"),
            pytest.param("meta.priority[eq]=5.0", True, id="eq-untyped-number-float-text"),
            pytest.param("meta.priority[eq:string]=5", False, id="eq-string-on-number"),
            pytest.param("meta.numtext[eq]=5", True, id="eq-untyped-numeric-string"),
            pytest.param("meta.numtext[eq]=5.0", False, id="eq-untyped-string-exact-text"),
            pytest.param("meta.numtext[eq:number]=5", False, id="eq-number-on-numeric-string"),
            pytest.param("meta.flag[eq:boolean]=true", True, id="eq-boolean"),
            pytest.param("meta.flag[eq]=true", True, id="eq-untyped-boolean"),
            pytest.param("meta.flag[eq:number]=1", False, id="bool-is-not-number"),
            pytest.param("meta.flag[gte]=1", False, id="bool-not-in-range"),
            pytest.param("meta.nothing[eq]=null", False, id="null-never"),
            pytest.param("meta.tags[eq]=a", False, id="list-never"),
            pytest.param("meta.region[eq]=eu-west", False, id="object-never"),
            pytest.param("meta.region.name[eq]=eu-west", True, id="nested"),
            pytest.param("meta.region.zone.n[gt:number]=2", True, id="nested-range"),
            pytest.param("meta.missing[eq]=x", False, id="missing"),
            pytest.param("meta.status.deeper[eq]=x", False, id="path-through-string"),
            pytest.param("meta.a.b[eq:number]=2", True, id="dotted-key-not-addressed"),
            pytest.param("meta.a.b[eq:number]=1", False, id="dotted-key-shadowed"),
            pytest.param("meta.priority[in]=1|5|9", True, id="in-untyped"),
            pytest.param("meta.priority[in:number]=1|9", False, id="in-number-miss"),
            pytest.param("meta.status[in:string]=pending|active", True, id="in-string"),
            pytest.param("meta.ratio[gt]=2", True, id="gt-float"),
            pytest.param("meta.ratio[gte:number]=2.5", True, id="gte-equal"),
            pytest.param("meta.ratio[lt]=2.5", False, id="lt-equal"),
            pytest.param("meta.ratio[lte]=2.5", True, id="lte-equal"),
            pytest.param("meta.numtext[gt]=1", False, id="range-skips-strings"),
        ],
    )
    def test_matches(self, expr: str, expected: bool) -> None:
        """Matching follows the module doc's typed and untyped rules."""
        assert matches(parse_filter(expr), META) is expected

    @pytest.mark.parametrize("meta", [None, {}], ids=["absent", "empty"])
    def test_no_meta_never_matches(self, meta: dict[str, Any] | None) -> None:
        """An image without meta matches no filter."""
        assert not matches(parse_filter("meta.status[eq]=active"), meta)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("5", 5, id="int"),
        pytest.param("-0.5", -0.5, id="float"),
        pytest.param("1e3", 1000.0, id="exponent"),
        pytest.param("12345678901234567890", 12345678901234567890, id="big-int-exact"),
    ],
)
def test_parse_number(text: str, expected: float) -> None:
    """Numbers keep integer precision when the text is integral."""
    assert parse_number(text) == expected
    assert type(parse_number(text)) is type(expected)
