"""The report's figures as one HTML page: inline CSS, inline SVG charts, tables, no script.

Read top-down, the page answers "is my catalog healthy, and what changed": a fleet's table of
accounts first; then per account the headline of the last night (and its warnings), the nights
and their changes, the new uploads since, uploads over time, meta and the fields the API added,
creators and variants. Every chart has its numbers
in a table beside it. Every text that comes from OUT (meta keys and values, creators, account
ids, warnings) is escaped here or in `svg`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from exporter.observe.report import svg
from exporter.observe.report.queries import AccountFigures, Catalog, DriftEntry, MetaColumn, Report

NONE = "\N{EN DASH}"  # an empty cell
MINUS = "\N{MINUS SIGN}"
CHART_META_COLUMNS = 30  # the coverage chart shows the most covered; the table has them all
CELL_CHARS = 60  # a longer text in a table cell is cut (whole in the cell's title)

CSS = """
:root { --ink:#1a202c; --muted:#5a6577; --line:#d8dee8; --card:#f5f7fa; }
* { box-sizing:border-box; }
body { font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink);
  margin:0 auto; max-width:1180px; padding:24px 28px 48px; }
h1 { font-size:1.6em; margin:0 0 4px; } h2 { font-size:1.3em; margin:36px 0 8px;
  border-bottom:2px solid var(--ink); padding-bottom:4px; }
h3 { font-size:1.05em; margin:22px 0 6px; } p.sub, .muted { color:var(--muted); }
.cards { display:grid; grid-template-columns:repeat(auto-fill,minmax(170px,1fr)); gap:10px;
  margin:10px 0; }
.card { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:8px 12px; }
.card b { display:block; font-size:1.3em; }
.card span { color:var(--muted); font-size:.85em; }
.ok { color:#276749; } .bad { color:#c53030; }
.warn { overflow-wrap:anywhere; background:#fffaf0; border-left:4px solid #dd6b20;
  padding:6px 12px; margin:8px 0; }
.row { display:grid; grid-template-columns:minmax(0,3fr) minmax(0,2fr); gap:20px;
  align-items:start; }
.pair { display:grid; grid-template-columns:minmax(0,1fr) minmax(0,1fr); gap:20px; }
figure { margin:6px 0; } figcaption { color:var(--muted); font-size:.85em; }
svg.chart { width:100%; height:auto; display:block; font-size:12px; }
svg .tick { fill:var(--muted); font-size:13px; } svg .grid { stroke:var(--line); }
svg .line { fill:none; stroke:#2b6cb0; stroke-width:2; }
.s0 { fill:#2b6cb0; } .s1 { fill:#dd6b20; } .s2 { fill:#805ad5; } .s3 { fill:#38a169; }
.added { fill:#38a169; } .removed { fill:#e53e3e; } .changed { fill:#d69e2e; }
table { border-collapse:collapse; font-size:.88em; margin:4px 0 8px; }
th, td { border-bottom:1px solid var(--line); padding:3px 8px; text-align:left;
  vertical-align:top; overflow-wrap:break-word; }
th { background:var(--card); } td.n, th.n { text-align:right; font-variant-numeric:tabular-nums;
  white-space:nowrap; }
.scroll { max-height:360px; overflow:auto; }
.cols { columns:3 220px; column-gap:18px; }
.cols table { width:100%; break-inside:avoid; table-layout:fixed; }
.cols td, .cols th { overflow-wrap:anywhere; } .cols .n { width:6.5em; }
.empty { font-size:1.1em; background:var(--card); padding:16px; border-radius:6px; }
@media (max-width: 800px) { .row, .pair { grid-template-columns:1fr; } }
@media print {
  body { font-size:10pt; max-width:none; padding:0; }
  h2 { break-before:auto; break-after:avoid; } h3 { break-after:avoid; }
  figure, .cards { break-inside:avoid; } .scroll { max-height:none; overflow:visible; }
  .long { columns:4 140px; column-gap:14px; } .long table { width:100%; }
  .card, th { background:none; }
}
"""


def e(value: object) -> str:
    """Return a value as escaped HTML text."""
    return escape(str(value))


def n(value: int | float) -> str:
    return svg.number(value)


def pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else NONE


def moment(instant: str) -> str:
    """Return an RFC 3339 instant as `2026-12-06 09:36 UTC`."""
    return f"{instant[:10]} {instant[11:16]} UTC"


def latest_date(a: AccountFigures) -> str | None:
    return a.latest.date if a.latest else None


def duration(seconds: float) -> str:
    """Return seconds as `1h 02m`, `3m 04s` or `5.2 s`."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m {int(seconds % 60):02d}s"
    return f"{seconds:.1f} s"


def cell(tag: str, value: object, numeric: bool) -> str:
    """Return one table cell; a text past CELL_CHARS is cut, whole in its `title`.

    An unbreakable user string (a 1 KB meta value) would otherwise widen the page.
    """
    text = str(value)
    klass = ' class="n"' if numeric else ""
    if len(text) <= CELL_CHARS:
        return f"<{tag}{klass}>{e(text)}</{tag}>"
    shown = text[: CELL_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return f'<{tag}{klass} title="{e(text)}">{e(shown)}</{tag}>'


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    numeric: Sequence[int] = (),
    *,
    name: str = "",
) -> str:
    """Return an HTML table; the columns in `numeric` are right-aligned.

    `name` becomes `data-table`, which tests (and scrapers) find the table by.
    """
    head = "".join(cell("th", h, i in numeric) for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(cell("td", v, i in numeric) for i, v in enumerate(row)) + "</tr>"
        for row in rows
    )
    named = f' data-table="{e(name)}"' if name else ""
    return f"<table{named}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(chart: str, caption: str) -> str:
    return f"<figure>{chart}<figcaption>{e(caption)}</figcaption></figure>"


def card(value: object, label: str, css: str = "", *, name: str = "") -> str:
    """Return one headline figure; `name` becomes `data-figure`."""
    klass = f' class="{css}"' if css else ""
    named = f' data-figure="{e(name)}"' if name else ""
    return f'<div class="card"{named}><b{klass}>{e(value)}</b><span>{e(label)}</span></div>'


# -- sections --------------------------------------------------------------------------------


def fleet_table(report: Report) -> str:
    rows = []
    for a in report.accounts:
        latest, change = a.latest, (a.changes[-1] if a.changes else None)
        if change is not None and (change.previous_date is None or change.date != latest_date(a)):
            change = None  # a first night's change set lists every image as added
        rows.append(
            (
                a.account_id,
                n(latest.images) if latest else NONE,
                latest.date if latest else NONE,
                moment(latest.finished_at) if latest else NONE,
                a.last_run,
                n(change.added) if change else NONE,
                n(change.removed) if change else NONE,
                n(change.changed) if change else NONE,
                n(a.new_uploads) if a.batches else NONE,
                len(latest.warnings) if latest else 0,
            )
        )
    headers = ("account", "images", "snapshot", "last success", "last run", "added", "removed")
    more = ("changed", "new uploads", "warnings")
    return (
        '<section id="accounts"><h2>Accounts</h2>'
        + table((*headers, *more), rows, numeric=(1, 5, 6, 7, 8, 9), name="accounts")
        + "</section>"
    )


def headline(a: AccountFigures) -> str:
    latest = a.latest
    assert latest is not None
    complete = {True: "yes", False: "no", None: "filtered"}[latest.complete]
    cards = [
        card(n(latest.images), "images", name="images"),
        card(latest.date, "snapshot date", name="snapshot-date"),
        card(moment(latest.finished_at)[11:], f"last success, {latest.finished_at[:10]}"),
        card(duration(latest.duration_s), "duration"),
        card(n(latest.requests), "requests", name="requests"),
        card(
            n(latest.throttled), "429 replies", "bad" if latest.throttled else "", name="throttled"
        ),
        card(len(latest.warnings), "warnings", "bad" if latest.warnings else "ok", name="warnings"),
        card(complete, "complete (API count)", "bad" if latest.complete is False else ""),
    ]
    change = a.changes[-1] if a.changes and a.changes[-1].date == latest.date else None
    if change is not None and change.previous_date:
        cards += [
            card(f"+{n(change.added)}", f"added since {change.previous_date}", name="added"),
            card(f"{MINUS}{n(change.removed)}", "removed", name="removed"),
            card(n(change.changed), "changed", name="changed"),
        ]
    if a.batches:
        newest = a.batches[-1].finished_at
        cards += [
            card(f"+{n(a.new_uploads)}", f"new uploads since {latest.date}", name="new-uploads"),
            card(len(a.batches), "batches of new uploads", name="batches"),
            card(moment(newest)[11:], f"newest batch, {newest[:10]}", name="newest-batch"),
        ]
    run_css = "ok" if a.last_run.startswith("published (") else "bad"
    cards.append(card(a.last_run, "last run", run_css))
    warnings = "".join(f'<div class="warn">{e(w)}</div>' for w in latest.warnings)
    return f'<div class="cards">{"".join(cards)}</div>{warnings}'


def nights_section(a: AccountFigures) -> str:
    dates = [night.date for night in a.nights]
    images = [night.images for night in a.nights]
    grown = svg.line("Images per night", dates, images, "images")
    by_date = {c.date: c for c in a.changes}
    changes = [by_date.get(d) for d in dates]
    kinds = ("added", "removed", "changed")
    series = [(k, [getattr(c, k) if c and c.previous_date else 0 for c in changes]) for k in kinds]
    if any(c and c.previous_date for c in changes):
        stacked = figure(
            svg.stacked_bars("Changes per night by kind", dates, series, "images", classes=kinds),
            "changes against the night before (a first night has none)",
        )
    else:
        stacked = '<p class="muted">No change set against an earlier night yet.</p>'

    rows = [
        (
            night.date,
            n(night.images),
            n(c.added) if c and c.previous_date else NONE,
            n(c.removed) if c and c.previous_date else NONE,
            n(c.changed) if c and c.previous_date else NONE,
            duration(night.duration_s),
            n(night.requests),
            n(night.throttled),
            len(night.warnings),
        )
        for night, c in zip(a.nights, changes, strict=True)
    ]
    headers = ("night", "images", "added", "removed", "changed", "duration", "requests", "429s")
    return (
        "<h3>The catalog over the nights</h3>"
        '<div class="pair">'
        + figure(grown, "images in each published snapshot")
        + stacked
        + '</div><div class="scroll">'
        + table(
            (*headers, "warnings"), reversed(rows), numeric=(1, 2, 3, 4, 6, 7, 8), name="nights"
        )
        + "</div>"
    )


def batches_section(a: AccountFigures) -> str:
    """Return the table of the latest snapshot's batches of new uploads, newest first."""
    assert a.latest is not None
    rows = [
        (
            b.name,
            n(b.images),
            moment(b.oldest) if b.oldest else NONE,
            moment(b.newest) if b.newest else NONE,
            moment(b.finished_at),
        )
        for b in reversed(a.batches)
    ]
    headers = ("batch", "images", "oldest uploaded", "newest uploaded", "published")
    return (
        f"<h3>New uploads since snapshot {e(a.latest.date)} (export --new-uploads)</h3>"
        + '<div class="scroll">'
        + table(headers, rows, numeric=(1,), name="batches")
        + "</div>"
    )


def uploads_section(c: Catalog) -> str:
    labels = [k for k, _ in c.uploads]
    values = [v for _, v in c.uploads]
    chart = svg.bars(f"Uploads per {c.uploads_by}", labels, values, "images")
    note = f" {n(c.no_upload_time)} images have no upload time." if c.no_upload_time else ""
    return (
        f"<h3>Uploads over time (per {e(c.uploads_by)}, snapshot {e(c.date)})</h3>"
        + '<div class="row"><div>'
        + figure(chart, f"images of the latest snapshot by upload {c.uploads_by}.{note}")
        + '</div><div class="scroll long">'
        + table(
            (c.uploads_by, "images"),
            [(k, n(v)) for k, v in c.uploads],
            numeric=(1,),
            name="uploads",
        )
        + "</div></div>"
    )


def columns_table(first: str, columns: Sequence[MetaColumn], *, name: str) -> str:
    """Return the table of meta (or extra) columns: path, type, coverage, distinct values."""
    rows = [
        (
            m.path,
            m.type,
            n(m.images),
            f"{m.share:.1%}",
            NONE if m.distinct is None else n(m.distinct),
        )
        for m in columns
    ]
    headers = (first, "type", "images", "coverage", "distinct ≈")
    return table(headers, rows, numeric=(2, 3, 4), name=name)


def meta_section(a: AccountFigures, c: Catalog) -> str:
    parts = ["<h3>Meta</h3>"]
    with_meta = c.images - c.without_meta
    parts.append(
        '<div class="cards">'
        + card(len(c.meta), "meta columns")
        + card(pct(with_meta, c.images), "images with meta")
        + card(n(c.without_meta), "images without meta", name="without-meta")
        + "</div>"
    )
    if c.meta:
        shown = c.meta[:CHART_META_COLUMNS]
        chart = svg.hbars(
            "Meta key coverage (share of images with a value)",
            [m.path for m in shown],
            [m.share for m in shown],
            "share",
            top=1.0,
        )
        more = (
            f" ({len(shown)} of {len(c.meta)}; all in the table)"
            if len(c.meta) > len(shown)
            else ""
        )
        parts.append(
            '<div class="row"><div>'
            + figure(chart, f"coverage of each meta key, most covered first{more}")
            + '</div><div class="scroll">'
            + columns_table("key", c.meta, name="meta")
            + "</div></div>"
        )
    else:
        parts.append('<p class="muted">No meta key in this snapshot.</p>')
    if c.top_values:
        parts.append('<h3>Top values of low-cardinality keys</h3><div class="cols">')
        for path, values in c.top_values:
            parts.append(
                table(
                    (path, "images"),
                    [(v, n(k)) for v, k in values],
                    numeric=(1,),
                    name="top-values",
                )
            )
        parts.append("</div>")
    parts.append("<h3>Type drift over the nights</h3>")
    parts.append(
        drift_table([d for d in a.drift if not d.extra], name="drift")
        or '<p class="muted">No column was added, widened or removed.</p>'
    )
    extra_drift = drift_table([d for d in a.drift if d.extra], name="extra-drift")
    if extra_drift:
        extra_drift = '<p class="muted">Their columns added, widened or removed:</p>' + extra_drift
    if c.extra or extra_drift:
        parts.append(
            "<h3>Fields the API added</h3>"
            '<p class="muted">Top-level fields the API reference does not list, kept in '
            "<code>extra_json</code> and as <code>extra__</code> columns.</p>"
            + (columns_table("field", c.extra, name="extra") if c.extra else "")
            + extra_drift
        )
    return "".join(parts)


def drift_table(drift: Sequence[DriftEntry], *, name: str) -> str:
    """Return the table of column changes over the nights, newest first ("" when none)."""
    if not drift:
        return ""
    rows = [
        (d.date, d.change, d.path, d.type_from or NONE, d.type_to or NONE, d.reason)
        for d in reversed(drift)
    ]
    headers = ("night", "change", "key", "from", "to", "reason")
    return '<div class="scroll">' + table(headers, rows, name=name) + "</div>"


def creators_section(c: Catalog) -> str:
    chart = svg.hbars(
        f"Top {len(c.creators)} creators",
        [k or "(empty)" for k, _ in c.creators],
        [v for _, v in c.creators],
        "images",
    )
    variants = svg.bars(
        "Variants per image", [k for k, _ in c.variants], [v for _, v in c.variants], "images"
    )
    cards = (
        card(n(c.creators_distinct), "creators ≈")
        + card(
            n(c.no_creator),
            f"images without a creator ({pct(c.no_creator, c.images)})",
            name="no-creator",
        )
        + card(pct(c.signed, c.images), f"signed URLs ({n(c.signed)} images)", name="signed")
    )
    rows = [(k or "(empty)", n(v), pct(v, c.images)) for k, v in c.creators]
    return (
        "<h3>Creators, signed URLs and variants</h3>"
        + f'<div class="cards">{cards}</div>'
        + '<div class="row"><div>'
        + (figure(chart, "images per creator, the 20 largest") if c.creators else "")
        + '</div><div class="scroll">'
        + table(("creator", "images", "share"), rows, numeric=(1, 2), name="creators")
        + "</div></div>"
        + '<div class="row"><div>'
        + figure(variants, "images by their number of variants")
        + "</div><div>"
        + table(
            ("variants", "images"),
            [(k, n(v)) for k, v in c.variants],
            numeric=(1,),
            name="variants",
        )
        + "</div></div>"
    )


def account_section(a: AccountFigures, fleet: bool) -> str:
    title = f"Account {a.account_id}" if fleet else f"Catalog of account {a.account_id}"
    anchor = f"account-{a.account_id}"
    parts = [f'<section id="{e(anchor)}" data-account="{e(a.account_id)}"><h2>{e(title)}</h2>']
    if a.latest is None:
        parts.append(f'<p class="empty">No snapshot published yet. {e(a.last_run)}.</p>')
    else:
        parts.append(headline(a))
        parts.append(nights_section(a))
        if a.batches:
            parts.append(batches_section(a))
        if a.catalog is None:  # written only by a sink DuckDB does not read (a plugin's)
            parts.append(
                '<p class="muted" data-figure="no-change-data">The latest snapshot is in no '
                "format the report reads: no catalog figures, and no change data.</p>"
            )
        else:
            parts.append(uploads_section(a.catalog))
            parts.append(meta_section(a, a.catalog))
            parts.append(creators_section(a.catalog))
    parts.append("</section>")
    return "".join(parts)


def render(report: Report) -> str:
    """Return the whole page."""
    nights = sum(len(a.nights) for a in report.accounts)
    what = f"{len(report.accounts)} accounts" if report.fleet else "one account"
    body = [
        "<header><h1>Cloudflare Images catalog</h1>",
        f'<p class="sub">{e(report.out)} · {e(what)}, {n(nights)} published snapshot(s) · '
        f"generated {e(report.generated_at)}</p></header>",
    ]
    if nights == 0:
        body.append(
            '<p class="empty">Nothing has been exported here yet: no published '
            "<code>snapshot_date=*</code> directory. The page fills in after the first "
            "<code>cf-images-export export</code> (or <code>fleet</code>) to this output.</p>"
        )
    if report.fleet:
        body.append(fleet_table(report))
    if nights:
        body += [account_section(a, report.fleet) for a in report.accounts]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Catalog report · {e(report.out)}</title><style>{CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
