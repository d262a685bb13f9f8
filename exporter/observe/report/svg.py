"""Small inline SVG charts: vertical bars, stacked bars, a line, horizontal bars.

Each chart is one `<svg role="img">` with a `<title>` and a `<desc>` (its text alternative,
which names every value) and no script, font or reference outside itself; colours come from
the page's CSS classes (`s0`..`s3`), so a printed page and a screen share one palette. Every
text is escaped here, whatever its origin: meta keys and creators come from users.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from html import escape

_ids = itertools.count(1)
WIDTH = 720
RIGHT = 32  # room for half of the last x label
LABEL_CHARS = 28  # horizontal bars: a longer label is cut (the table beside it is whole)


def number(value: float) -> str:
    """Return a count with thousands separators, a fraction with at most 3 decimals."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}".rstrip("0")


def compact(value: float) -> str:
    """Return an axis label: 950, 2.5k, 1M, 1.5M."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return number(value)


def _nice_max(value: float) -> float:
    """Return the axis top: 1, 2, 2.5 or 5 times a power of ten, at least `value`."""
    if value <= 0:
        return 1.0
    power = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1.0
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)  # pragma: no cover


def _short(text: str, limit: int = LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _frame(title: str, desc: str, height: int, body: list[str]) -> str:
    n = next(_ids)
    return (
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {height}" '
        f'aria-labelledby="c{n}t c{n}d">'
        f'<title id="c{n}t">{escape(title)}</title><desc id="c{n}d">{escape(desc)}</desc>'
        + "".join(body)
        + "</svg>"
    )


def describe(labels: Sequence[str], values: Sequence[float], unit: str) -> str:
    """Return the text alternative of one series: every label with its value."""
    if not labels:
        return "no data"
    return "; ".join(
        f"{label}: {number(v)} {unit}" for label, v in zip(labels, values, strict=True)
    )


def _axis(top: float, x0: int, y0: int, plot_h: int) -> list[str]:
    parts = []
    for share in (0, 0.5, 1):
        y = y0 - share * plot_h
        x1, x2 = x0, WIDTH - RIGHT
        parts.append(f'<line class="grid" x1="{x1}" x2="{x2}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(compact(top * share))}</text>"
        )
    return parts


def _x_labels(labels: Sequence[str], xs: Sequence[float], y: int) -> list[str]:
    """Return at most ~10 x labels, evenly thinned, always the first and the last."""
    if not labels:
        return []
    every = max(1, -(-len(labels) // 10))
    keep = set(range(0, len(labels), every))
    last = len(labels) - 1
    if last not in keep:  # the last label replaces a kept one too close to it
        keep = {i for i in keep if last - i >= every} | {last}
    return [
        f'<text class="tick" x="{xs[i]:.1f}" y="{y}" text-anchor="middle">'
        f"{escape(labels[i])}</text>"
        for i in sorted(keep)
    ]


def stacked_bars(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    unit: str,
    *,
    classes: Sequence[str] = ("s0", "s1", "s2", "s3"),
) -> str:
    """Return vertical bars, one per label, each stacking the series' values (a legend below).

    One series is a plain bar chart; `classes` colour the series in turn.
    """
    height, x0, top_pad, bottom = 240, 64, 12, 46 if len(series) > 1 else 28
    y0, plot_h = height - bottom, height - bottom - top_pad
    totals = [sum(s[1][i] for s in series) for i in range(len(labels))]
    top = _nice_max(max(totals, default=0))
    slot = (WIDTH - RIGHT - x0) / max(1, len(labels))
    bar = max(1.0, min(40.0, slot * 0.7))
    body = _axis(top, x0, y0, plot_h)
    xs = [x0 + slot * (i + 0.5) for i in range(len(labels))]
    for i, x in enumerate(xs):
        base = 0.0
        for k, (name, values) in enumerate(series):
            value = values[i]
            if value <= 0:
                continue
            h, y = value / top * plot_h, y0 - (base + value) / top * plot_h
            css = classes[k % len(classes)]
            body.append(
                f'<rect class="{css}" x="{x - bar / 2:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}"><title>{escape(labels[i])}: {number(value)} '
                f"{escape(name)}</title></rect>"
            )
            base += value
    body += _x_labels(labels, xs, y0 + 16)
    if len(series) > 1:
        x = x0
        for k, (name, _) in enumerate(series):
            css = classes[k % len(classes)]
            body.append(f'<rect class="{css}" x="{x}" y="{height - 14}" width="10" height="10"/>')
            body.append(f'<text class="tick" x="{x + 14}" y="{height - 5}">{escape(name)}</text>')
            x += 24 + 8 * len(name)
    desc = " | ".join(f"{name}: {describe(labels, values, unit)}" for name, values in series)
    return _frame(title, desc, height, body)


def bars(title: str, labels: Sequence[str], values: Sequence[float], unit: str) -> str:
    """Return a vertical bar chart of one series."""
    return stacked_bars(title, labels, [(unit, values)], unit)


def line(title: str, labels: Sequence[str], values: Sequence[float], unit: str) -> str:
    """Return a line with a dot per label, its axis from 0 (a catalog's size over nights)."""
    height, x0, top_pad, bottom = 220, 64, 12, 28
    y0, plot_h = height - bottom, height - bottom - top_pad
    top = _nice_max(max(values, default=0))
    slot = (WIDTH - RIGHT - x0) / max(1, len(labels))
    xs = [x0 + slot * (i + 0.5) for i in range(len(labels))]
    ys = [y0 - v / top * plot_h for v in values]
    body = _axis(top, x0, y0, plot_h)
    if len(xs) > 1:
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
        body.append(f'<polyline class="line s0" points="{points}"/>')
    for label, x, y, v in zip(labels, xs, ys, values, strict=True):
        body.append(
            f'<circle class="s0" cx="{x:.1f}" cy="{y:.1f}" r="3.5">'
            f"<title>{escape(label)}: {number(v)} {escape(unit)}</title></circle>"
        )
    body += _x_labels(labels, xs, y0 + 16)
    return _frame(title, describe(labels, values, unit), height, body)


def hbars(
    title: str, labels: Sequence[str], values: Sequence[float], unit: str, *, top: float = 0
) -> str:
    """Return horizontal bars, one row per label, the value written at each bar's end.

    `top` fixes the scale (1.0 for shares); by default it is the largest value.
    """
    row, x0, right = 20, 210, 90
    height = max(1, len(labels)) * row + 8
    top = top or max(values, default=0) or 1.0
    body = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 4 + i * row
        w = max(0.0, value / top * (WIDTH - x0 - right))
        shown = f"{value:.1%}" if unit == "share" else number(value)
        body.append(
            f'<text class="tick" x="{x0 - 8}" y="{y + 14}" text-anchor="end">'
            f"{escape(_short(label))}</text>"
            f'<rect class="s0" x="{x0}" y="{y + 3}" width="{w:.1f}" height="{row - 6}">'
            f"<title>{escape(label)}: {shown}</title></rect>"
            f'<text class="tick" x="{x0 + w + 6:.1f}" y="{y + 14}">{shown}</text>'
        )
    if unit == "share":
        desc = "; ".join(f"{label}: {v:.1%}" for label, v in zip(labels, values, strict=True))
    else:
        desc = describe(labels, values, unit)
    return _frame(title, desc or "no data", height, body)
