"""The walker: the pure both-ends merge on simulated cursors, then the async plumbing."""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from exporter.api.pagination import Image, ListRequest, Page, SortOrder
from exporter.errors import ConfigError, CursorError, ExporterError, ResponseError
from exporter.stats import RunStats
from exporter.walk.walker import Chunk, Merge, Side, Walker, WalkOptions


def make_catalog(n: int, distinct: int, rng: random.Random) -> list[Image]:
    """n images over `distinct` upload instants: few instants make heavy ties."""
    seconds = sorted(rng.randrange(distinct) for _ in range(n))
    return [
        {"id": f"img-{rng.getrandbits(40):010x}-{i}", "uploaded": stamp(s)}
        for i, s in enumerate(seconds)
    ]


def stamp(second: int) -> str:
    return (START + timedelta(seconds=second)).isoformat()


START = datetime(2024, 1, 1, tzinfo=UTC)
Rank = Callable[[str], Any]  # a tie order: images of one instant are served by ascending rank


def id_desc(image_id: str) -> tuple[int, ...]:
    """Rank ids in descending order (a longer id after its prefix)."""
    return (*(-ord(c) for c in image_id), 1)


def hashed(salt: int) -> Rank:
    """Rank ids by a salted hash: an order unrelated to the ids."""
    return lambda image_id: hashlib.blake2b(image_id.encode(), salt=bytes([salt])).digest()


def ident(image_id: str) -> str:
    return image_id


# How images sharing an instant are ordered, (asc, desc): every order the API may choose.
TIE_ORDERS: dict[str, tuple[Rank, Rank]] = {
    "id": (ident, id_desc),  # the emulator's classic order
    "id-desc": (id_desc, ident),
    "same": (ident, ident),  # id ascending in both sort orders
    "hash": (hashed(1), hashed(2)),  # unrelated orders in asc and desc
}


class Source:
    """A live List V2: sorted by `uploaded`, ties in the order `ties` ranks them per cursor,
    tokens that are cursors (the last sort position served).

    The catalog may change between any two pages (`upload`, `delete`, `edit`): a page is cut
    from the catalog as it is when asked for, as the API does.
    """

    def __init__(
        self,
        catalog: list[Image],
        per_page: int,
        empty_tail: bool = False,
        ties: str | tuple[Rank, Rank] = "id",
        sizes: random.Random | None = None,
    ) -> None:
        self.images: dict[str, Image] = {}
        ranks = TIE_ORDERS[ties] if isinstance(ties, str) else ties
        self.ranks = dict(zip(("asc", "desc"), ranks, strict=True))
        self.keys: dict[str, list[tuple[Any, ...]]] = {"asc": [], "desc": []}
        self.per_page = per_page
        self.sizes = sizes  # draws each page's size in 1..per_page when given
        self.empty_tail = empty_tail  # a token after the last image; an empty page then
        self.requests = 0
        self.tokens: dict[str, tuple[Any, ...]] = {}
        for image in catalog:
            self.upload(image)

    def _key(self, order: str, image: Image) -> tuple[Any, ...]:
        """The cursor's sort key: it serves ascending keys."""
        moment = datetime.fromisoformat(image["uploaded"]).timestamp()
        return (moment if order == "asc" else -moment, self.ranks[order](image["id"]), image["id"])

    def upload(self, image: Image) -> None:
        self.images[image["id"]] = image
        for order, keys in self.keys.items():
            bisect.insort(keys, self._key(order, image))

    def delete(self, image_id: str) -> None:
        image = self.images.pop(image_id)
        for order, keys in self.keys.items():
            keys.remove(self._key(order, image))

    def edit(self, image_id: str) -> None:
        image = self.images[image_id]
        self.images[image_id] = {
            **image,
            "meta": {"version": image.get("meta", {}).get("version", 0) + 1},
        }

    def page(self, order: str, token: str | None) -> Page:
        self.requests += 1
        if token == "bad":
            raise ResponseError("u", 400, 5400, "Invalid continuation_token")
        if token == "end":
            return Page(images=[], next_token=None)
        keys = self.keys[order]
        start = 0 if token is None else bisect.bisect_right(keys, self.tokens[token])
        size = self.per_page if self.sizes is None else self.sizes.randrange(1, self.per_page + 1)
        served = keys[start : start + size]
        images = [self.images[key[-1]] for key in served]
        if start + len(served) < len(keys) and served:
            token = f"{order}-{len(self.tokens)}"
            self.tokens[token] = served[-1]
            return Page(images=images, next_token=token)
        return Page(images=images, next_token="end" if self.empty_tail and served else None)


def drive(
    merge: Merge,
    source: Source,
    rng: random.Random,
    steps: int | None = None,
    churn: Callable[[], None] | None = None,
) -> list[Image]:
    """Feed pages in a random interleaving, plus stale pages of stopped cursors."""
    out: list[Image] = []
    while (sides := merge.wanted()) and steps != 0:
        side = rng.choice(sides)
        page = source.page(side.order, side.token)
        out.extend(merge.feed(side.order, page))
        if churn is not None:
            churn()
        if rng.random() < 0.2:  # a page prefetched before the walk ended arrives late
            for other in merge.sides.values():
                if other.stopped and other.token is not None:
                    assert merge.feed(other.order, source.page(other.order, other.token)) == []
        for s in merge.sides.values():  # what a cursor remembers stays bounded
            assert len(s.recent.ids) <= max(s.recent.limit, 2 * source.per_page) + source.per_page
        steps = None if steps is None else steps - 1
    return out


def ids(images: list[Image]) -> Counter[str]:
    return Counter(img["id"] for img in images)


CASES = [
    pytest.param(0, 5, 10, id="empty"),
    pytest.param(1, 5, 10, id="one-image"),
    pytest.param(10, 5, 10, id="one-full-page"),
    pytest.param(7, 3, 10, id="one-short-page"),
    pytest.param(200, 1, 10, id="all-one-instant"),
    pytest.param(200, 3, 10, id="three-instants"),
    pytest.param(300, 40, 10, id="heavy-ties"),
    pytest.param(300, 10_000, 10, id="few-ties"),
    pytest.param(123, 20, 17, id="odd-sizes"),
]


def spoil(
    page: list[Image],
    rng: random.Random,
    order: SortOrder,
    served: list[Image],
    position: datetime | None,
) -> list[Image]:
    """Return `page` with one misbehaviour; several keep the page in order (a fast path
    that trusted order alone would take them whole)."""
    step = timedelta(milliseconds=500 if order == "asc" else -500)

    def after(image: Image) -> str:  # half a second later in the cursor's order
        return (datetime.fromisoformat(image["uploaded"]) + step).isoformat()

    def fits(i: int) -> bool:  # a key half a second after page[i] sorts before page[i + 1]
        return i == len(page) - 1 or page[i]["uploaded"] != page[i + 1]["uploaded"]

    kind = rng.randrange(9)
    i = rng.randrange(len(page))
    if kind == 0 and len(page) > 1:  # two images swapped
        i = min(i, len(page) - 2)
        page[i], page[i + 1] = page[i + 1], page[i]
    elif kind == 1 and served:  # an image served before, in order under a new key
        if fits(i):
            page.insert(i + 1, {**rng.choice(served), "uploaded": after(page[i])})
    elif kind == 2 and served:  # an image served before, under its own key
        page.insert(i, dict(rng.choice(served)))
    elif kind == 3 and position is not None:  # a late image: fresh, just behind the position
        late = {"id": f"late-{rng.getrandbits(32)}", "uploaded": (position - step).isoformat()}
        page.insert(0, late)
    elif kind == 4 and fits(i):  # one id twice in the page, in order
        page.insert(i + 1, {**page[rng.randrange(i + 1)], "uploaded": after(page[i])})
    elif kind == 5:  # the same instant written another way (still in order)
        instant = datetime.fromisoformat(page[i]["uploaded"]).astimezone(UTC)
        page[i] = {**page[i], "uploaded": instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
    elif kind == 6:  # no zone on any image of the page (UTC, says the contract)
        page = [{**img, "uploaded": img["uploaded"].replace("+00:00", "")} for img in page]
    elif kind == 7:  # no zone on one image
        page[i] = {**page[i], "uploaded": page[i]["uploaded"].replace("+00:00", "")}
    elif kind == 8:  # a broken `uploaded`
        page[i] = {**page[i], "uploaded": rng.choice([None, "yesterday", 7, ["x"]])}
    return page


class TestMerge:
    @pytest.mark.parametrize(("n", "distinct", "per_page"), CASES)
    @pytest.mark.parametrize("seed", range(6))
    @pytest.mark.parametrize("ties", TIE_ORDERS)
    def test_both_ends_emit_each_image_once(
        self, n: int, distinct: int, per_page: int, seed: int, ties: str
    ) -> None:
        """Whatever the interleaving and the tie order, the union is the catalog, once each."""
        rng = random.Random(seed)
        catalog = make_catalog(n, distinct, rng)
        source = Source(catalog, per_page, empty_tail=seed % 2 == 1, ties=ties)
        merge = Merge.start(("asc", "desc"), recent_ids=20)
        assert ids(drive(merge, source, rng)) == ids(catalog)
        assert merge.done
        assert merge.out_of_order == merge.duplicates_dropped == 0

    @pytest.mark.parametrize("ties", TIE_ORDERS)
    def test_a_state_built_later_is_the_state_as_of_its_page(self, ties: str) -> None:
        """`Chunk.state` is built when a checkpoint is taken, pages later: it must name
        exactly what was served up to its page (a resume skips those tie ids as exported),
        never ids of the same tie served after it."""
        rng = random.Random(5)
        catalog = make_catalog(400, 6, rng)  # ties of ~70 images over pages of 10
        source = Source(catalog, 10, ties=ties, sizes=random.Random(1))
        merge = Merge.start(("asc", "desc"), recent_ids=20)
        built_then, built_later = [], []
        while sides := merge.wanted():
            side = rng.choice(sides)
            merge.feed(side.order, source.page(side.order, side.token))
            built_then.append(json.dumps(merge.state()))
            built_later.append(merge.frozen_state())
        assert len(built_later) > 20
        assert [json.dumps(build()) for build in built_later] == built_then

    def test_both_ends_read_no_more_pages_than_one_cursor(self) -> None:
        """Two cursors meeting in the middle read the catalog once between them (+1 page)."""
        rng = random.Random(3)
        catalog = make_catalog(1000, 100_000, rng)
        source = Source(catalog, 10)
        merge = Merge.start(("asc", "desc"))
        out: list[Image] = []
        while sides := merge.wanted():
            side = rng.choice(sides)
            out.extend(merge.feed(side.order, source.page(side.order, side.token)))
        assert ids(out) == ids(catalog)
        assert source.requests <= 100 + 1

    @pytest.mark.parametrize("order", ["asc", "desc"])
    def test_single_cursor_emits_every_page_at_once(self, order: SortOrder) -> None:
        rng = random.Random(1)
        catalog = make_catalog(95, 4, rng)
        source = Source(catalog, 10)
        merge = Merge.start((order,))
        page = source.page(order, None)
        assert merge.feed(order, page) == page.images  # nothing held back
        assert ids(page.images + drive(merge, source, rng)) == ids(catalog)

    @pytest.mark.parametrize("both", [True, False], ids=["both", "single"])
    def test_a_bulk_import_on_one_instant_is_bounded_by_the_tie(self, both: bool) -> None:
        """100,000 images on one `uploaded` instant, ties by a hash: exact, nothing held,
        memory and checkpoints bounded by the tie's ids."""
        rng = random.Random(5)
        catalog = [{"id": f"bulk-{i:06d}", "uploaded": stamp(7)} for i in range(100_000)]
        catalog += make_catalog(3000, 5000, rng)  # and ordinary images around it
        source = Source(catalog, 1000, ties="hash")
        merge = Merge.start(("asc", "desc") if both else ("desc",), recent_ids=2000)
        out: list[Image] = []
        largest = 0
        while sides := merge.wanted():
            side = rng.choice(sides)
            out.extend(merge.feed(side.order, source.page(side.order, side.token)))
            largest = max(largest, len(json.dumps(merge.state())))
            for s in merge.sides.values():
                assert len(s.recent.ids) <= 2000 + 1000
        assert ids(out) == ids(catalog)
        assert merge.out_of_order == merge.duplicates_dropped == 0
        # The tie's ids ("bulk-000001", ), once per cursor at most, and a few hundred bytes.
        assert largest < len(merge.sides) * 100_000 * 15 + 1500

    @pytest.mark.parametrize("seed", range(8))
    @pytest.mark.parametrize("both", [True, False], ids=["both", "single"])
    @pytest.mark.parametrize("ties", TIE_ORDERS)
    def test_resume_from_any_state(self, seed: int, both: bool, ties: str) -> None:
        """A JSON round-tripped state continues with every image exactly once."""
        rng = random.Random(seed)
        catalog = make_catalog(250, 30, rng)
        source = Source(catalog, 10, ties=ties)
        merge = Merge.start(("asc", "desc") if both else ("desc",), recent_ids=40)
        first = drive(merge, source, rng, steps=rng.randrange(1, 20))
        state = json.loads(json.dumps(merge.state()))
        resumed = Merge.from_state(state, recent_ids=40)
        rest = drive(resumed, source, rng)
        assert ids(first + rest) == ids(catalog)

    @pytest.mark.parametrize("seed", range(8))
    @pytest.mark.parametrize("both", [True, False], ids=["both", "single"])
    @pytest.mark.parametrize("ties", TIE_ORDERS)
    def test_resume_with_rejected_tokens_restarts_and_deduplicates(
        self, seed: int, both: bool, ties: str
    ) -> None:
        """Cursors restarted from the beginning skip what was already emitted."""
        rng = random.Random(100 + seed)
        catalog = make_catalog(250, 25, rng)
        source = Source(catalog, 10, ties=ties)
        merge = Merge.start(("asc", "desc") if both else ("asc",), recent_ids=40)
        first = drive(merge, source, rng, steps=rng.randrange(1, 20))
        resumed = Merge.from_state(json.loads(json.dumps(merge.state())), recent_ids=40)
        for side in resumed.wanted():
            resumed.restart(side.order)
        rest = drive(resumed, source, rng)
        assert ids(first + rest) == ids(catalog)
        assert resumed.out_of_order == resumed.duplicates_dropped == 0

    @pytest.mark.parametrize("seed", range(12))
    @pytest.mark.parametrize("mode", ["both", "asc", "desc"])
    @pytest.mark.parametrize("ties", TIE_ORDERS)
    def test_live_catalog(self, seed: int, mode: str, ties: str) -> None:
        """Uploads, deletions and edits between pages: no id twice; every image present for
        the whole walk exactly once, in either version; others may or may not appear."""
        rng = random.Random(seed)
        catalog = make_catalog(400, rng.choice([5, 40, 400]), rng)
        source = Source(catalog, rng.choice([10, 17, 50]), ties=ties)
        versions = {img["id"]: [img] for img in catalog}
        touched: set[str] = set()  # uploaded or deleted during the walk
        rate = rng.choice([0.2, 1.0, 3.0])  # changes per page
        serial = iter(range(10**6))

        def churn() -> None:
            for _ in range(int(rate) + (rng.random() < rate % 1)):
                kind = rng.random()
                if kind < 0.4:  # an upload: now (the top), or into an old instant (an import)
                    second = 10**6 if rng.random() < 0.5 else rng.randrange(400)
                    image = {"id": f"new-{next(serial)}", "uploaded": stamp(second)}
                    source.upload(image)
                    touched.add(image["id"])
                elif kind < 0.7 and source.images:
                    victim = rng.choice(sorted(source.images))
                    source.delete(victim)
                    touched.add(victim)
                elif source.images:
                    victim = rng.choice(sorted(source.images))
                    source.edit(victim)
                    versions.setdefault(victim, []).append(source.images[victim])

        orders: tuple[SortOrder, ...] = ("asc", "desc") if mode == "both" else (mode,)  # type: ignore[assignment]
        merge = Merge.start(orders, recent_ids=30)
        out = drive(merge, source, rng, churn=churn)
        counted = ids(out)
        assert max(counted.values(), default=1) == 1  # no id twice
        stable = {i for i in versions if i not in touched}
        assert stable <= set(counted)  # every image present for the whole walk
        for image in out:
            if image["id"] in stable:
                assert image in versions[image["id"]]  # in one of its versions
        assert merge.out_of_order == merge.duplicates_dropped == 0

    def test_a_repeated_id_is_dropped_and_counted(self) -> None:
        """A page that starts with the last image of the one before: dropped, counted."""
        rng = random.Random(2)
        catalog = make_catalog(40, 40, rng)
        source = Source(catalog, 10)
        merge = Merge.start(("asc",))
        first = source.page("asc", None)
        second = source.page("asc", first.next_token)
        out = merge.feed("asc", first)
        out += merge.feed("asc", Page([first.images[-1], *second.images], second.next_token))
        out += merge.feed("asc", Page([second.images[3]], second.next_token))  # within a page
        out += drive(merge, source, rng)
        assert ids(out) == ids(catalog)
        assert merge.duplicates_dropped == 2 and merge.out_of_order == 0
        assert merge.state()["sides"][0]["duplicates_dropped"] == 2

    @pytest.mark.parametrize("both", [True, False], ids=["both", "single"])
    def test_a_page_out_of_order_is_kept_once_and_counted(self, both: bool) -> None:
        """Two images swapped across a page boundary: each emitted once, counted late."""
        rng = random.Random(4)
        catalog = make_catalog(200, 200, rng)
        source = Source(catalog, 10)
        merge = Merge.start(("asc", "desc") if both else ("asc",), recent_ids=20)
        first = source.page("asc", None)
        second = source.page("asc", first.next_token)
        swapped_first = Page([*first.images[:-1], second.images[0]], first.next_token)
        swapped_second = Page([first.images[-1], *second.images[1:]], second.next_token)
        out = merge.feed("asc", swapped_first) + merge.feed("asc", swapped_second)
        out += drive(merge, source, rng)
        assert ids(out) == ids(catalog)
        assert merge.out_of_order == 1 and merge.duplicates_dropped == 0

    def test_going_back_beyond_what_is_remembered_is_a_cursor_error(self) -> None:
        """An image behind the floor may have been exported already: an error, not a guess."""
        rng = random.Random(1)
        source = Source(make_catalog(100, 100, rng), 10)
        merge = Merge.start(("asc",), recent_ids=10)
        pages = []
        while len(pages) < 5:
            pages.append(source.page("asc", pages[-1].next_token if pages else None))
            merge.feed("asc", pages[-1])
        back = {"id": "never-seen", "uploaded": pages[0].images[0]["uploaded"]}
        with pytest.raises(CursorError, match="went back"):
            merge.feed("asc", Page([back], "t"))

    @pytest.mark.parametrize("order", ["asc", "desc"])
    @pytest.mark.parametrize("seed", range(40))
    def test_a_page_taken_whole_ends_as_image_by_image(self, order: SortOrder, seed: int) -> None:
        """Pages in order with fresh ids are taken whole; every page, taken either way, leaves
        the same images, keys, position, counts and remembered ids (or the same error)."""
        rng = random.Random(seed)
        catalog = make_catalog(800, rng.choice([3, 60, 6000]), rng)
        shuffle = {img["id"]: rng.random() for img in catalog}  # ties in any order
        catalog.sort(key=lambda img: (img["uploaded"], shuffle[img["id"]]), reverse=order == "desc")
        whole, single = Side(order), Side(order)
        single._in_order = lambda images: None  # type: ignore[method-assign]
        taken_whole = fed = at = 0
        while at < len(catalog):
            size = rng.randrange(1, 40)
            page = [dict(img) for img in catalog[at : at + size]]
            served = catalog[max(0, at - 60) : at]
            at += size
            if rng.random() < 0.5:
                page = spoil(page, rng, order, served, single.position)
            outcomes: list[tuple[Any, Any]] = []
            for side in (whole, single):
                try:
                    got = side.accept(page, "u")
                    outcomes.append((got.images, got.instants))
                    taken_whole += side is whole and got.ordered
                except ExporterError as exc:
                    outcomes.append((type(exc), str(exc)))
            assert outcomes[0] == outcomes[1]
            if isinstance(outcomes[0][0], type):
                break  # an error: the walk stops here
            names = ("position", "position_text", "tie_ids", "previous", "previous_ids")
            for name in (*names, "out_of_order", "duplicates_dropped"):
                assert getattr(whole, name) == getattr(single, name), name
            assert whole.recent.ids == single.recent.ids
            assert whole.recent.floor == single.recent.floor
            fed += 1
        assert taken_whole > 0 or fed < 5

    @pytest.mark.parametrize("seed", range(150))
    def test_exact_under_any_tie_order_page_sizes_misbehaviour_and_resume(self, seed: int) -> None:
        """Each cursor's own tie order drawn at random, page sizes at random, the cursor's
        last image repeated, two images swapped, a resume from a JSON state or a restart of
        every cursor (a rejected token) after any page: each image exactly once; "out of
        order" counts only pages that go back in `uploaded`."""
        rng = random.Random(seed)
        catalog = make_catalog(rng.randrange(1, 300), rng.choice([1, 2, 5, 30, 300]), rng)
        ranks = (rng.choice(list(TIE_ORDERS.values()))[0], rng.choice(list(TIE_ORDERS.values()))[1])
        source = Source(
            catalog,
            rng.choice([10, 17, 40]),
            empty_tail=rng.random() < 0.3,
            ties=ranks,
            sizes=rng if rng.random() < 0.5 else None,
        )
        orders: tuple[SortOrder, ...] = rng.choice([("asc", "desc"), ("asc",), ("desc",)])
        recent = rng.choice([10, 40])
        merge = Merge.start(orders, recent_ids=recent)
        out: list[Image] = []
        last: dict[str, Image] = {}
        went_back = repeats = 0
        while sides := merge.wanted():
            side = rng.choice(sides)
            page = source.page(side.order, side.token)
            images = list(page.images)
            if images and side.order in last and rng.random() < 0.15:
                images.insert(0, last[side.order])  # the cursor's last image again
                repeats += 1
            if len(images) >= 2 and rng.random() < 0.15:
                images[0], images[1] = images[1], images[0]
                went_back += images[0]["uploaded"] != images[1]["uploaded"]
            if page.images:
                last[side.order] = page.images[-1]
            out += merge.feed(side.order, Page(images, page.next_token))
            draw = rng.random()
            if draw < 0.3:
                merge = Merge.from_state(json.loads(json.dumps(merge.state())), recent_ids=recent)
            if draw < 0.1:
                for restarted in merge.wanted():
                    merge.restart(restarted.order)
                    last.pop(restarted.order, None)
        assert ids(out) == ids(catalog)
        assert merge.out_of_order <= went_back
        assert merge.duplicates_dropped <= repeats  # a replay skips silently

    @pytest.mark.parametrize("ties", TIE_ORDERS)
    def test_cursors_meeting_inside_one_instant_leave_it_to_one(self, ties: str) -> None:
        """Both cursors inside one instant: one stops, the other finishes it alone, so the
        tie is read about once, not by both cursors in full."""
        rng = random.Random(7)
        catalog = [{"id": f"t-{i:03d}", "uploaded": stamp(5)} for i in range(200)]
        source = Source(catalog, 10, ties=ties)
        merge = Merge.start(("asc", "desc"))
        out: list[Image] = []
        while sides := merge.wanted():
            side = rng.choice(sides)
            out += merge.feed(side.order, source.page(side.order, side.token))
        assert ids(out) == ids(catalog)
        assert source.requests <= 200 // 10 + 2

    def test_a_swap_inside_a_tie_is_not_out_of_order(self) -> None:
        """Images of one instant in another order than the page before suggests: no count."""
        catalog = [{"id": f"t-{i:02d}", "uploaded": stamp(5)} for i in range(30)]
        catalog += [{"id": f"u-{i:02d}", "uploaded": stamp(6 + i)} for i in range(10)]
        source = Source(catalog, 10, ties="hash")
        merge = Merge.start(("asc",))
        out: list[Image] = []
        while merge.wanted():
            page = source.page("asc", merge.sides["asc"].token)
            out += merge.feed("asc", Page(page.images[::-1], page.next_token))  # reversed
        assert ids(out) == ids(catalog)
        assert merge.out_of_order == 9  # the last page: ten instants reversed, nine go back
        assert merge.duplicates_dropped == 0

    def test_unknown_state_version(self) -> None:
        with pytest.raises(ConfigError):
            Merge.from_state({"version": 99, "sides": []})


# -- the async walker, on a fake client ----------------------------------------------------


class FakeClient:
    """iter_pages() over a Source, with a little latency so cursors interleave."""

    base_url = "fake://api"

    def __init__(self, source: Source, fail_after: int | None = None) -> None:
        self.source = source
        self.fail_after = fail_after
        self.calls: list[tuple[str | None, str | None]] = []

    async def iter_pages(
        self,
        request: ListRequest,
        sort_order: SortOrder | None,
        token: str | None = None,
        *,
        batch: bool = False,
    ) -> AsyncIterator[Page]:
        while True:
            self.calls.append((sort_order, token))
            if self.fail_after is not None and len(self.calls) > self.fail_after:
                raise ResponseError("fake://api", 404, 7003, "No route for the URI")
            await anyio.sleep(0.001 * (1 + len(self.calls) % 3))
            page = self.source.page(sort_order or "desc", token)
            yield page
            if page.next_token is None:
                return
            token = page.next_token


def walker(client: FakeClient, state: dict[str, Any] | None = None, **opts: Any) -> Walker:
    request = ListRequest(per_page=10, sort_order=opts.pop("sort_order", None))
    return Walker(client, request, WalkOptions(**opts), RunStats(), state)  # type: ignore[arg-type]


async def collect(w: Walker, limit: int | None = None) -> list[Chunk]:
    chunks: list[Chunk] = []
    async with aclosing(w.chunks()) as stream:
        async for chunk in stream:
            chunks.append(chunk)
            if limit is not None and len(chunks) >= limit:
                break
    return chunks


def all_images(chunks: list[Chunk]) -> list[Image]:
    return [img for chunk in chunks for img in chunk.images]


class TestWalker:
    @pytest.mark.parametrize("mode", ["auto", "both", "single"])
    async def test_every_image_once(self, mode: str) -> None:
        rng = random.Random(2)
        catalog = make_catalog(333, 40, rng)
        client = FakeClient(Source(catalog, 10))
        chunks = await collect(walker(client, mode=mode))
        assert ids(all_images(chunks)) == ids(catalog)
        orders = {order for order, _ in client.calls}
        assert orders == ({"desc"} if mode == "single" else {"asc", "desc"})
        assert all(chunk.pages == 1 for chunk in chunks)
        json.dumps(chunks[-1].state())  # JSON-ready

    async def test_sort_order_means_one_cursor(self) -> None:
        rng = random.Random(2)
        catalog = make_catalog(50, 40, rng)
        client = FakeClient(Source(catalog, 10))
        chunks = await collect(walker(client, sort_order="asc"))
        assert [img["id"] for img in all_images(chunks)] == [
            key[-1] for key in client.source.keys["asc"]
        ]

    @pytest.mark.parametrize("cut", [1, 4, 9])
    async def test_resume_from_a_chunk_state(self, cut: int) -> None:
        """A new Walker from a chunk's state finishes with every image exactly once."""
        rng = random.Random(cut)
        catalog = make_catalog(300, 25, rng)
        source = Source(catalog, 10)
        first = await collect(walker(FakeClient(source)), limit=cut)
        rest = await collect(walker(FakeClient(source), state=first[-1].state()))
        assert ids(all_images(first) + all_images(rest)) == ids(catalog)

    async def test_rejected_token_restarts_with_a_warning(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A 400 on a stored token restarts that cursor, de-duplicates, and warns."""
        rng = random.Random(9)
        catalog = make_catalog(300, 25, rng)
        source = Source(catalog, 10)
        first = await collect(walker(FakeClient(source)), limit=6)
        state = json.loads(json.dumps(first[-1].state()))
        for side in state["sides"]:  # a resume starts from the entry token
            if side["entry"] is not None:
                side["entry"] = "bad"
        with caplog.at_level(logging.WARNING, logger="exporter.walker"):
            rest = await collect(walker(FakeClient(source), state=state))
        assert ids(all_images(first) + all_images(rest)) == ids(catalog)
        assert "rejected the stored continuation token" in caplog.text

    async def test_a_cursor_error_surfaces_as_itself(self) -> None:
        """A failing cursor raises its own error (never an ExceptionGroup) and stops the other."""
        rng = random.Random(1)
        client = FakeClient(Source(make_catalog(300, 50, rng), 10), fail_after=5)
        with pytest.raises(ResponseError) as info:
            await collect(walker(client))
        assert info.value.status == 404

    async def test_a_misbehaving_page_is_counted_in_the_stats(self) -> None:
        """Reversed images inside a page and a repeated id: exact, and counted in RunStats."""
        rng = random.Random(1)
        source = Source(make_catalog(300, 300, rng), 10)
        real = source.page
        served: list[Page] = []

        def misbehave(order: str, token: str | None) -> Page:
            page = real(order, token)
            if source.requests == 3:  # reversed: 9 images come behind the position
                page = Page(page.images[::-1], page.next_token)
            elif source.requests == 5:  # the previous page's last image again
                page = Page([served[-1].images[-1], *page.images], page.next_token)
            served.append(page)
            return page

        source.page = misbehave  # type: ignore[method-assign]
        w = walker(FakeClient(source), mode="single", sort_order="asc")
        chunks = await collect(w)
        assert ids(all_images(chunks)) == Counter(key[-1] for key in source.keys["asc"])
        assert (w.stats.out_of_order, w.stats.duplicates_dropped) == (9, 1)
        assert chunks[-1].state()["sides"][0]["out_of_order"] == 9

    async def test_an_image_from_far_back_surfaces_as_a_cursor_error(self) -> None:
        rng = random.Random(1)
        source = Source(make_catalog(300, 300, rng), 10)
        first = source.page("asc", None).images[0]
        real = source.page

        def far_back(order: str, token: str | None) -> Page:
            page = real(order, token)
            if source.requests == 8:
                return Page([{**first, "id": "unknown"}, *page.images], page.next_token)
            return page

        source.page = far_back  # type: ignore[method-assign]
        with pytest.raises(CursorError):
            await collect(
                walker(FakeClient(source), mode="single", sort_order="asc", recent_ids=10)
            )

    async def test_early_close_stops_the_fetchers(self) -> None:
        rng = random.Random(1)
        client = FakeClient(Source(make_catalog(500, 50, rng), 10))
        chunks = await collect(walker(client), limit=2)
        assert len(chunks) == 2
        calls = len(client.calls)
        await anyio.sleep(0.02)
        assert len(client.calls) == calls  # nothing keeps fetching in the background

    async def test_bad_request_fails_before_any_request(self) -> None:
        rng = random.Random(1)
        client = FakeClient(Source(make_catalog(5, 5, rng), 10))
        bad = Walker(client, ListRequest(per_page=5), WalkOptions(), RunStats())  # type: ignore[arg-type]
        with pytest.raises(ConfigError):
            await collect(bad)
        with pytest.raises(ConfigError):
            await collect(walker(client, mode="both", sort_order="asc"))
        assert client.calls == []

    async def test_finished_state_yields_nothing(self) -> None:
        rng = random.Random(1)
        source = Source(make_catalog(30, 5, rng), 10)
        chunks = await collect(walker(FakeClient(source)))
        assert chunks[-1].state()["done"]
        client = FakeClient(source)
        assert await collect(walker(client, state=chunks[-1].state())) == []
        assert client.calls == []
