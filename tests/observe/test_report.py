"""`report`: the HTML page of OUT through the real CLI, its numbers against the manifests and
the emulator's catalog, and the page opened in a headless Chromium with the network cut.

Outputs are exported over loopback from the emulator: two nights of a classic catalog (Parquet
and NDJSON), one night of the nasty profile written as NDJSON only (hostile keys and values,
read through `meta_json`), a night of a catalog whose images carry fields the API added
followed by two batches of new uploads (Parquet, and NDJSON only), a fleet of three accounts
(one with a batch of new uploads), and an empty OUT.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from exporter.emulator import build_catalog
from exporter.emulator.nights import NightPlan, catalog_at_night
from exporter.observe.report.queries import (
    AccountFigures,
    Batch,
    Catalog,
    ChangeNight,
    MetaColumn,
    Night,
    Report,
    json_pointer,
)
from exporter.observe.report.render import moment, render
from exporter.transform.schema import display_path
from tests.browser import find_browser, load_page
from tests.helpers import ROOT, emulator_process, run_cli

IMAGES, SEED = 1_200, 5
DATES = ("2026-03-01", "2026-03-02")
NASTY_IMAGES = 4_000  # reading each meta column's own JSON pointer overran the cap at this size
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


# -- reading the page ------------------------------------------------------------------------


class Page(HTMLParser):
    """The parts of the page the tests read: tables by `data-table`, figures by
    `data-figure`, per account (`data-account`), in document order."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.accounts: list[str] = []
        self.tables: dict[str, dict[str, list[list[str]]]] = {}  # account -> name -> rows
        self.figures: dict[str, dict[str, str]] = {}
        self.order: list[str] = []  # "accounts" table and account sections, as they come
        self._account = ""
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self._whole: str | None = None
        self._figure: str | None = None
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if "data-account" in named:
            self._account = str(named["data-account"])
            self.accounts.append(self._account)
            self.order.append(f"account:{self._account}")
        if tag == "table" and "data-table" in named:
            name = str(named["data-table"])
            self._table = []
            self.tables.setdefault(self._account, {}).setdefault(name, [])
            self._table_name = name
            if name == "accounts":
                self.order.append("accounts")
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
            self._whole = named.get("title")  # a cut cell's whole text
        elif "data-figure" in named:
            self._figure, self._text = str(named["data-figure"]), []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self._table[-1].append(self._whole or "".join(self._cell))
            self._cell = None
        elif tag == "table" and self._table is not None:
            rows = self.tables[self._account][self._table_name]
            rows.extend(self._table[1:])  # without the header row
            self._table = None
        elif tag == "b" and self._figure is not None:
            self.figures.setdefault(self._account, {})[self._figure] = "".join(self._text)
            self._figure = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._figure is not None:
            self._text.append(data)


def count(text: str) -> int:
    return int(text.replace(",", "").lstrip("+\N{MINUS SIGN}"))


def manifests(out: Path, kind: str = "") -> list[dict[str, Any]]:
    base = out / "changes" if kind == "changes" else out
    return [
        orjson.loads(path.read_bytes())
        for path in sorted(base.glob("snapshot_date=*/_manifest.json"))
    ]


def report(out: Path, *extra: str) -> str:
    result = run_cli(["report", str(out), *extra])
    assert result.returncode == 0, result.stderr
    written = Path(result.stdout.strip())
    assert written == (Path(extra[1]) if extra else out / "report.html")
    return written.read_text(encoding="utf-8")


def add_uploads(emu: Any, count: int, account: str = "") -> list[dict[str, Any]]:
    """Add `count` uploads to an account of the emulator process; return them as served."""
    root = emu.base_url.removesuffix("/client/v4")
    url = f"{root}/_emulator/accounts/{account or emu.account_id}/uploads?count={count}"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10) as reply:
        added: list[dict[str, Any]] = orjson.loads(reply.read())["result"]["added"]
    return added


def batch_manifests(out: Path, date: str) -> list[dict[str, Any]]:
    """Return the manifests of the batches of new uploads following `date`, oldest first."""
    found = sorted((out / "new_uploads" / f"snapshot_date={date}").glob("batch=*/_manifest.json"))
    loaded = [orjson.loads(path.read_bytes()) for path in found]
    return sorted(loaded, key=lambda m: str(m["finished_at"]))  # names tie within a second


def export(out: Path, date: str, emu: Any, *formats: str) -> None:
    args = ["export", "--output", str(out), "--snapshot-date", date, "-q"]
    for fmt in formats or ("parquet",):
        args += ["--format", fmt]
    result = run_cli(args, env=emu.env())
    assert result.returncode == 0, result.stderr


# -- outputs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """Two nights of a classic catalog (Parquet + NDJSON), and the account id."""
    out = tmp_path_factory.mktemp("report-nights") / "out"
    for night, date in enumerate(DATES):
        with emulator_process(IMAGES, SEED, "--night", str(night)) as emu:
            export(out, date, emu, "parquet", "ndjson")
            account = emu.account_id
    yield out, account


@pytest.fixture(scope="module")
def nasty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """One night of the nasty profile, written as NDJSON only."""
    out = tmp_path_factory.mktemp("report-nasty") / "out"
    with emulator_process(NASTY_IMAGES, 3, "--profile", "nasty") as emu:
        export(out, DATES[0], emu, "ndjson")
        yield out, emu.account_id


class TestTwoNights:
    def test_the_numbers_shown_equal_the_manifests(self, nights: tuple[Path, str]) -> None:
        """Headline, nights table and changes are the manifests' figures, newest first."""
        out, account = nights
        page = Page(report(out))
        snapshots, changes = manifests(out), manifests(out, "changes")
        latest, change = snapshots[-1], changes[-1]
        figures = page.figures[account]
        assert count(figures["images"]) == latest["counts"]["rows"]
        assert figures["snapshot-date"] == DATES[1]
        assert count(figures["requests"]) == latest["counts"]["requests"]
        assert count(figures["throttled"]) == latest["counts"]["throttled"]
        for kind in ("added", "removed", "changed"):
            assert count(figures[kind]) == change["counts"][kind]
        rows = page.tables[account]["nights"]
        assert [(r[0], count(r[1])) for r in rows] == [
            (m["snapshot_date"], m["counts"]["rows"]) for m in reversed(snapshots)
        ]
        assert [count(c) for c in rows[0][2:5]] == [
            change["counts"][k] for k in ("added", "removed", "changed")
        ]

    def test_the_catalog_figures_equal_the_emulators(self, nights: tuple[Path, str]) -> None:
        """Uploads, creators, signed URLs and meta coverage equal night 1's catalog."""
        out, account = nights
        catalog, _ = catalog_at_night(build_catalog(IMAGES, SEED), 1, NightPlan())
        images = list(catalog.iter_images())
        page = Page(report(out))
        tables, figures = page.tables[account], page.figures[account]
        assert sum(count(n) for _, n in tables["uploads"]) == len(images)
        creators: dict[str, int] = {}
        for image in images:
            if image.get("creator") is not None:
                creators[image["creator"]] = creators.get(image["creator"], 0) + 1
        top = sorted(creators.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
        shown = [(c if c != "(empty)" else "", count(n)) for c, n, _ in tables["creators"]]
        assert shown == top
        no_creator = sum(1 for i in images if i.get("creator") is None)
        assert count(figures["no-creator"]) == no_creator
        signed = sum(1 for i in images if i.get("requireSignedURLs"))
        assert figures["signed"] == f"{signed / len(images):.1%}"
        coverage = {row[0]: count(row[2]) for row in tables["meta"]}
        for path, images_with in coverage.items():
            keys = json.loads(path) if path.startswith("[") else path.split(".")
            truth = sum(1 for i in images if _at(i.get("meta"), keys) is not None)
            assert images_with == truth, path

    def test_output_flag_writes_elsewhere(self, nights: tuple[Path, str], tmp_path: Path) -> None:
        """`--output FILE` writes the page there and prints its path."""
        out, _ = nights
        html = report(out, "--output", str(tmp_path / "page.html"))
        assert "<svg" in html


def _at(meta: Any, keys: list[str], depth: int = 5) -> Any:
    """Return the cell `normalize` makes of a meta path: null where it is missing, null, or
    an object above the flatten depth (flattened further)."""
    for key in keys:
        if not isinstance(meta, dict):
            return None
        meta = meta.get(key)
    return None if isinstance(meta, dict) and len(keys) < depth else meta


def test_a_single_ndjson_night_of_hostile_meta(nasty: tuple[Path, str]) -> None:
    """NDJSON only: meta read from `meta_json` and the fields the API added from `extra_json`
    by JSON pointer equal the catalog, under the memory cap; every user string is escaped (no
    tag but the page's own)."""
    out, account = nasty
    html = report(out)
    page = Page(html)
    assert [r[0] for r in page.tables[account]["nights"]] == [DATES[0]]
    images = list(build_catalog(NASTY_IMAGES, 3, profile="nasty").iter_images())
    coverage = {row[0]: count(row[2]) for row in page.tables[account]["meta"]}
    assert coverage, "the nasty profile has meta"
    for path, images_with in coverage.items():
        keys = json.loads(path) if path.startswith("[") else path.split(".")
        assert images_with == sum(1 for i in images if _at(i.get("meta"), keys) is not None), path
    extra = {row[0]: count(row[2]) for row in page.tables[account]["extra"]}
    assert extra, "the nasty profile has fields the API added"
    for path, images_with in extra.items():
        keys = json.loads(path) if path.startswith("[") else path.split(".")
        assert images_with == sum(1 for i in images if _at(i, keys) is not None), path
    assert_self_contained(html)


UPLOADS = (7, 12)  # two bursts of uploads after the latest night, one batch each
EXTRA = NightPlan(churn=0.05)  # night 1 edits fields the API added: a new one appears


@pytest.fixture(scope="module", params=["parquet", "ndjson"])
def uploads_out(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, str, list[dict[str, Any]]]]:
    """Two nights of a catalog whose images carry fields the API added, a batch of new uploads
    after each burst (one after night 0, the `UPLOADS` after night 1); the output, the account
    and night 1's uploads as the emulator served them."""
    fmt = str(request.param)
    out = tmp_path_factory.mktemp(f"report-uploads-{fmt}") / "out"
    args = ["export", "--output", str(out), "--format", fmt, "--new-uploads", "-q"]
    for night, (date, bursts) in enumerate([(DATES[0], (3,)), (DATES[1], UPLOADS)]):
        flags = ("--extra-fields", "--night", str(night), "--churn", str(EXTRA.churn))
        with emulator_process(300, 17, *flags) as emu:
            export(out, date, emu, fmt)
            uploaded: list[dict[str, Any]] = []  # night 1's are the ones kept
            for burst in bursts:
                uploaded += add_uploads(emu, burst)
                result = run_cli([*args, "--snapshot-date", "2026-03-03"], env=emu.env())
                assert result.returncode == 0, result.stderr
    assert len(batch_manifests(out, DATES[0])) == 1, "night 0's batch, not on the page"
    yield out, emu.account_id, uploaded


def test_new_uploads_shown_equal_the_batch_manifests(
    uploads_out: tuple[Path, str, list[dict[str, Any]]],
) -> None:
    """The headline counts the latest snapshot's batches and the batches table lists them,
    newest first, with their manifests' figures; they hold exactly the emulator's uploads."""
    out, account, uploaded = uploads_out
    page = Page(report(out))
    batches = batch_manifests(out, DATES[1])
    assert len(batches) == len(UPLOADS)
    figures = page.figures[account]
    assert count(figures["new-uploads"]) == sum(b["counts"]["rows"] for b in batches)
    assert count(figures["new-uploads"]) == len(uploaded) == sum(UPLOADS)
    assert count(figures["batches"]) == len(batches)
    assert figures["newest-batch"] == moment(batches[-1]["finished_at"])[11:]
    assert page.tables[account]["batches"] == [
        [
            b["new_uploads"]["batch"],
            str(b["counts"]["rows"]),
            moment(b["uploaded"]["min"]),
            moment(b["uploaded"]["max"]),
            moment(b["finished_at"]),
        ]
        for b in reversed(batches)
    ]
    newest = max(image["uploaded"] for image in uploaded)
    assert moment(batches[-1]["uploaded"]["max"]) == moment(newest)
    assert count(figures["images"]) == manifests(out)[-1]["counts"]["rows"], "the snapshot's"


def test_fields_the_api_added_are_apart_from_meta(
    uploads_out: tuple[Path, str, list[dict[str, Any]]],
) -> None:
    """The `extra__` columns have their own table (none in meta's), one row per column of the
    manifest, with the coverage of the snapshot's images (Parquet columns, or `extra_json` by
    JSON pointer); their drift has its own table too."""
    out, account, _ = uploads_out
    page = Page(report(out))
    schema = manifests(out)[-1]["schema"]
    extra = {display_path(c["path"]): c["type"] for c in schema if c["name"].startswith("extra__")}
    meta = {display_path(c["path"]) for c in schema if c["name"].startswith("meta__")}
    assert extra, "the emulator's --extra-fields adds top-level fields"
    tables = page.tables[account]
    assert {row[0]: row[1] for row in tables["extra"]} == extra
    assert {row[0] for row in tables["meta"]} == meta
    catalog, _ = catalog_at_night(build_catalog(300, 17, extras=True), 1, EXTRA)
    images = list(catalog.iter_images())
    for row in tables["extra"]:
        keys = json.loads(row[0]) if row[0].startswith("[") else row[0].split(".")
        truth = sum(1 for i in images if _at(i, keys) is not None)
        assert count(row[2]) == truth, row
    drift = [
        (m["snapshot_date"], d["change"], display_path(d["path"]), d["column"])
        for m in reversed(manifests(out))
        for d in reversed(m["drift"]["changes"])
    ]
    extra_drift = [d[:3] for d in drift if d[3].startswith("extra__")]
    assert extra_drift, "night 1 adds a field"
    assert [tuple(r[:3]) for r in tables["extra-drift"]] == extra_drift
    meta_drift = [d[:3] for d in drift if not d[3].startswith("extra__")]
    assert [tuple(r[:3]) for r in tables.get("drift", [])] == meta_drift


def test_no_extra_fields_no_part_for_them(nights: tuple[Path, str]) -> None:
    """A catalog without fields the API added: no such table, no heading."""
    out, account = nights
    html = report(out)
    assert "extra" not in Page(html).tables[account]
    assert "Fields the API added" not in html and "New uploads since" not in html


def test_a_duckdb_only_output(tmp_path: Path) -> None:
    """Nothing but the DuckDB sink's table: the page reads it, and its figures equal the
    catalog's."""
    out = tmp_path / "out"
    with emulator_process(300, 9) as emu:
        export(out, DATES[0], emu, "duckdb")
        account = emu.account_id
    images = list(build_catalog(300, 9).iter_images())
    page = Page(report(out))
    assert count(page.figures[account]["images"]) == len(images)
    assert count(page.figures[account]["no-creator"]) == sum(
        1 for i in images if i.get("creator") is None
    )
    coverage = {row[0]: count(row[2]) for row in page.tables[account]["meta"]}
    assert coverage
    for path, images_with in coverage.items():
        keys = json.loads(path) if path.startswith("[") else path.split(".")
        assert images_with == sum(1 for i in images if _at(i.get("meta"), keys) is not None), path


def test_an_unreadable_snapshot_is_one_line_and_exit_7(tmp_path: Path) -> None:
    """A part DuckDB cannot read: exit 7 (as `inspect`), one line naming the night."""
    out = tmp_path / "out"
    with emulator_process(200, 4) as emu:
        export(out, DATES[0], emu)
    (part,) = (out / f"snapshot_date={DATES[0]}").glob("*.parquet")
    part.write_bytes(b"not parquet")
    result = run_cli(["report", str(out)])
    assert result.returncode == 7
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"cf-images-export: error: snapshot {DATES[0]}: DuckDB cannot read")


@pytest.mark.parametrize(
    ("dates", "changes", "unfinished", "shown"),
    [
        pytest.param([], [], [], "nothing published", id="nothing"),
        pytest.param([DATES[0]], [DATES[0]], [], "published (exit 0)", id="first-night"),
        pytest.param(list(DATES), list(DATES), [], "published (exit 0)", id="published"),
        pytest.param(
            list(DATES), [DATES[0]], [], "published; changes withheld (exit 9)", id="withheld"
        ),
        pytest.param(
            list(DATES),
            list(DATES),
            [DATES[1]],
            f"unfinished run of {DATES[1]} (resume it)",
            id="unfinished",
        ),
    ],
)
def test_what_the_last_run_left(
    dates: list[str], changes: list[str], unfinished: list[str], shown: str
) -> None:
    """OUT keeps no exit code: the fleet table says what the last run left behind."""
    nights = [Night(d, 1, d, d, 0, 0, 0, 0, True, ()) for d in dates]
    sets = [ChangeNight(d, None, 0, 0, 0) for d in changes]
    assert AccountFigures("a", nights, sets, [], None, unfinished).last_run == shown


class Tags(HTMLParser):
    """Every start tag of a page with its attribute names, and the text of its <style>."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, set[str]]] = []
        self.css: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name for name, _ in attrs}))

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1][0] == "style":
            self.css.append(data)


def assert_self_contained(html: str) -> None:
    """Only the page's own tags (a user's markup is text), no attribute that loads or runs
    anything, no CSS import or url()."""
    page = Tags(html)
    allowed = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p"}
    allowed |= {"section", "div", "b", "span", "table", "thead", "tbody", "tr", "th", "td"}
    allowed |= {"figure", "figcaption", "svg", "desc", "rect", "line", "text", "polyline"}
    allowed |= {"circle", "code"}
    assert {tag for tag, _ in page.tags} <= allowed
    for tag, names in page.tags:
        loads = {"src", "href", "xlink:href", "style", "srcset", "action"} & names
        assert not loads and not any(n.startswith("on") for n in names), (tag, names)
    css = "".join(page.css)
    assert "url(" not in css and "@import" not in css and css


def test_every_user_string_is_escaped() -> None:
    """A creator, meta key, value and account id holding markup show as text."""
    instant = "2026-03-01T00:00:00Z"
    night = Night(DATES[0], 1, instant, instant, 1, 1, 0, 0, True, (HOSTILE,))
    catalog = Catalog(
        date=DATES[0],
        images=1,
        uploads=[(HOSTILE, 1)],
        uploads_by="day",
        no_upload_time=0,
        meta=[MetaColumn(HOSTILE, HOSTILE, "string", 1, 1.0, 1)],
        extra=[MetaColumn("extra__x", HOSTILE, "string", 1, 1.0, 1)],
        top_values=[(HOSTILE, [(HOSTILE, 1)])],
        without_meta=0,
        creators=[(HOSTILE, 1)],
        creators_distinct=1,
        no_creator=0,
        signed=0,
        variants=[("1", 1)],
    )
    batch = Batch(HOSTILE, 1, instant, instant, instant)
    account = AccountFigures(HOSTILE, [night], [], [], catalog, [], [batch])
    html = render(Report(HOSTILE, "now", [account], fleet=True))
    assert HOSTILE not in html
    assert "&lt;script&gt;" in html
    assert_self_contained(html)


def test_json_pointer_escapes_slash_and_tilde() -> None:
    """RFC 6901: `~` is `~0`, `/` is `~1`, and an empty key is an empty segment."""
    assert json_pointer(["a/b", "c~d", ""]) == "/a~1b/c~0d/"


class TestEmpty:
    def test_an_empty_out_gets_a_page_saying_so(self, tmp_path: Path) -> None:
        """No snapshot yet: exit 0 and a page that says nothing was exported."""
        html = report(tmp_path)
        assert "Nothing has been exported here yet" in html
        assert_self_contained(html)

    def test_a_missing_out_is_a_usage_error(self, tmp_path: Path) -> None:
        result = run_cli(["report", str(tmp_path / "nope")])
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"cf-images-export: error: no such output directory: {tmp_path / 'nope'}"
        ]


FLEET_NEW_UPLOADS = 5  # added to the first account after the fleet's night
FLEET_SIZES = {"01" + "cd" * 15: (40, 11), "02" + "cd" * 15: (75, 12)}


@pytest.fixture(scope="module")
def fleet_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    """A fleet of three accounts exported by `fleet`."""
    directory = tmp_path_factory.mktemp("report-fleet")
    lines = []
    for ident, (size, seed) in FLEET_SIZES.items():
        lines += ["[[account]]", f'account_id = "{ident}"', f'token = "t-{ident}"']
        lines += [f"images = {size}", f"seed = {seed}", ""]
    (directory / "emulator.toml").write_text("\n".join(lines))
    out = directory / "out"
    with emulator_process(30, 7, "--accounts-file", str(directory / "emulator.toml")) as emu:
        ids = sorted([emu.account_id, *FLEET_SIZES])
        tokens = {emu.account_id: emu.token, **{i: f"t-{i}" for i in FLEET_SIZES}}
        accounts = directory / "accounts.toml"
        accounts.write_text(
            "".join(f'[[account]]\nid = "{i}"\ntoken_env = "TOK_{n}"\n' for n, i in enumerate(ids))
        )
        env = emu.env(**{f"TOK_{n}": tokens[i] for n, i in enumerate(ids)})
        args = ["fleet", "--accounts", str(accounts), "--output", str(out), "-q"]
        result = run_cli([*args, "--snapshot-date", DATES[0]], env=env)
        assert result.returncode == 0, result.stderr
        add_uploads(emu, FLEET_NEW_UPLOADS, ids[0])
        result = run_cli([*args, "--new-uploads", "--snapshot-date", DATES[1]], env=env)
        assert result.returncode == 0, result.stderr
    yield out, ids


def test_a_fleet_page_starts_with_its_accounts(fleet_out: tuple[Path, list[str]]) -> None:
    """The accounts table comes first, one row per account with its manifest's figures,
    then one section per account."""
    out, ids = fleet_out
    page = Page(report(out))
    assert page.order == ["accounts", *(f"account:{i}" for i in ids)]
    rows = page.tables[""]["accounts"]
    expected = []
    for ident in ids:
        (manifest,) = manifests(out / f"account_id={ident}")
        expected.append((ident, manifest["counts"]["rows"], manifest["snapshot_date"]))
    assert [(r[0], count(r[1]), r[2]) for r in rows] == expected
    assert {r[4] for r in rows} == {"published (exit 0)"}
    assert {r[5] for r in rows} == {"\N{EN DASH}"}, "a first night's change set is no change"
    new_uploads = [
        sum(b["counts"]["rows"] for b in batch_manifests(out / f"account_id={i}", DATES[0]))
        for i in ids
    ]
    assert new_uploads == [FLEET_NEW_UPLOADS] + [0] * (len(ids) - 1)
    assert [r[8] for r in rows] == [str(n) if n else "\N{EN DASH}" for n in new_uploads]


# -- in a browser ----------------------------------------------------------------------------

PROBE = """JSON.stringify({
  charts: Array.from(document.querySelectorAll('svg.chart')).map(s => {
    const box = s.getBoundingClientRect();
    return {width: box.width, height: box.height, title: s.querySelector('title').textContent,
            desc: s.querySelector('desc').textContent,
            shapes: s.querySelectorAll('rect, circle, polyline').length};
  }),
  figures: Object.fromEntries(Array.from(document.querySelectorAll('[data-account]'))
    .map(s => [s.dataset.account, Object.fromEntries(Array.from(
      s.querySelectorAll('[data-figure]')).map(c => [c.dataset.figure,
                                                    c.querySelector('b').textContent]))])),
  scripts: document.scripts.length,
  overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
})"""


@pytest.mark.parametrize("output", ["nights", "fleet_out"])
async def test_the_page_in_a_browser_offline(output: str, request: pytest.FixtureRequest) -> None:
    """Chromium, network cut: the page loads nothing else, logs no error, fits a 1280 px
    window, draws every chart with a title and a text alternative, and shows the manifests'
    numbers (new uploads too); each screenshot is kept as .pytest_cache/report-<output>.png.

    The fleet's small catalogs have a 200-character meta value among their top values."""
    browser = find_browser()
    if browser is None:
        reason = "no headless Chromium (apt-get install chromium-headless-shell)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI must run the browser test")
        pytest.skip(reason)
    out = request.getfixturevalue(output)[0]
    html = report(out)
    loaded = await load_page(browser, (out / "report.html").as_uri(), PROBE, height=1000)
    shot = ROOT / ".pytest_cache" / f"report-{output}.png"
    shot.parent.mkdir(exist_ok=True)
    shot.write_bytes(loaded.screenshot)
    print(f"screenshot: {shot}")
    assert loaded.requests == [(out / "report.html").as_uri()]
    assert loaded.errors == [] and loaded.console == []
    probe = json.loads(loaded.probe)
    assert probe["scripts"] == 0
    assert probe["overflow"] <= 0, "wider than a 1280 px window"
    charts = probe["charts"]
    assert len(charts) == html.count('<svg class="chart"') >= 6
    for chart in charts:
        assert chart["width"] > 300 and chart["height"] > 100, chart
        assert chart["title"] and chart["desc"] != "no data" and chart["shapes"] > 0, chart
    shown = {a: count(figures["images"]) for a, figures in probe["figures"].items()}
    latest = {}
    for manifest_path in sorted(out.glob("**/snapshot_date=*/_manifest.json")):
        if "changes" not in manifest_path.parts:
            manifest = orjson.loads(manifest_path.read_bytes())
            latest[manifest["account_id"]] = manifest["counts"]["rows"]
    assert shown == latest
    new_uploads: dict[str, int] = {}
    for manifest_path in sorted(out.glob("**/new_uploads/snapshot_date=*/batch=*/_manifest.json")):
        manifest = orjson.loads(manifest_path.read_bytes())
        new_uploads[manifest["account_id"]] = (
            new_uploads.get(manifest["account_id"], 0) + manifest["counts"]["rows"]
        )
    shown_new = {
        a: count(figures["new-uploads"])
        for a, figures in probe["figures"].items()
        if "new-uploads" in figures
    }
    assert shown_new == new_uploads and (output != "fleet_out" or new_uploads)
    assert loaded.screenshot.startswith(b"\x89PNG") and len(loaded.screenshot) > 50_000
