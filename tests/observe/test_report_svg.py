"""The report's SVG charts: pure functions of labels and values."""

from __future__ import annotations

import itertools
import re

import pytest

from exporter.observe.report import svg


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        pytest.param(0, "0", id="zero"),
        pytest.param(950, "950", id="units"),
        pytest.param(2_500, "2.5k", id="thousands"),
        pytest.param(1_000_000, "1M", id="million"),
        pytest.param(1_500_000, "1.5M", id="millions"),
    ],
)
def test_axis_labels_are_compact(value: float, shown: str) -> None:
    assert svg.compact(value) == shown


@pytest.mark.parametrize(
    ("value", "top"), [(0, 1), (7, 10), (1_212, 2_000), (2_400, 2_500), (3_000_000, 5_000_000)]
)
def test_the_axis_top_is_a_round_number_at_least_the_value(value: float, top: float) -> None:
    assert svg._nice_max(value) == top


def test_x_labels_are_thinned_and_the_last_is_kept_apart() -> None:
    """At most ~11 labels; the last one shown, never right beside the one before it."""
    labels = [f"m{i}" for i in range(111)]
    chart = svg.bars("t", labels, [1] * 111, "images")
    shown = re.findall(r'text-anchor="middle">(m\d+)<', chart)
    assert shown[-1] == "m110" and len(shown) <= 11
    indexes = [int(s[1:]) for s in shown]
    assert min(b - a for a, b in itertools.pairwise(indexes)) >= 12


def test_every_chart_has_a_title_and_a_text_alternative_with_every_value() -> None:
    charts = [
        svg.bars("Uploads", ["2024-01", "2024-02"], [3, 4], "images"),
        svg.line("Nights", ["d1", "d2"], [10, 12], "images"),
        svg.stacked_bars("Changes", ["d2"], [("added", [2]), ("removed", [1])], "images"),
        svg.hbars("Coverage", ["a", "b"], [0.5, 0.25], "share", top=1.0),
    ]
    for chart in charts:
        assert re.search(r"<title id=\"c\d+t\">\w+</title>", chart)
    assert "2024-01: 3 images; 2024-02: 4 images" in charts[0]
    assert "d2: 2 images" in charts[2] and "d2: 1 images" in charts[2]
    assert "a: 50.0%; b: 25.0%" in charts[3]


def test_labels_are_escaped() -> None:
    chart = svg.hbars("<b>", ["<script>x</script>"], [1], "images")
    assert "<script>" not in chart and "&lt;script&gt;" in chart and "<b>" not in chart
