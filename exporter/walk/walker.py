"""Cursors over List V2: one cursor, or asc + desc from both ends meeting in the middle.

What the walker relies on (DESIGN "What the API leaves unsaid", README "What we rely on from
the API"): a cursor serves images sorted by `uploaded` (ascending for asc, descending for
desc), and its token resumes it where it stopped. Nothing more. The order of the images that
share one `uploaded` instant (a tie; a bulk import puts 100,000 on one) is never assumed: it
may differ between asc and desc and from one walk to the next; only one cursor's own order is
taken as consistent. So a cursor's position is an instant, never an id: `position` is the
`uploaded` of the furthest image it served and `tie_ids` the ids it served at that instant.
A cursor has served every image present while it passed at instants behind its position,
and exactly `tie_ids` at its position. A live catalog does not move instants: an edit keeps
the image's `uploaded`, an upload or a deletion adds or removes an image a cursor has not
reached yet (it may or may not be exported) or has passed (it is not).

Both ends: two cursors fetch at once and meet, so a walk that waits on page latency takes about
half the wall time of one cursor (README "Performance"). The merge takes pages one at a time,
in any interleaving. A cursor S serving an image (t, id), the other cursor O at instant o: S
emits it when O has not reached t (t lies strictly beyond o in O's order), or t == o and id is
not in O's `tie_ids`.
Invariants:
- Exactly once: the first cursor to serve an image emits it. O has not served it then (its
  rule above says so); once S served it, t is S's position with id in S's `tie_ids`, or lies
  behind S's position, and O's rule excludes both.
- Complete: the walk ends when a cursor ends (it served every image), or when S's position
  goes strictly beyond O's: S then served instant o whole (in its own consistent order) and
  everything before it, O everything after o. Both cursors inside one instant is not an end:
  one of them (the one that served fewer of its ids) stops there, and the other finishes
  the instant alone, skipping what the stopped one served, until it crosses or ends. With
  unrelated orders in asc and desc, each cursor must serve the whole instant in its own
  order: a walk meeting inside a tie reads up to that tie's size more.
- Bounded: a cursor's state is its token, instant and the ids of one instant: memory and
  checkpoint bytes grow with the largest tie group (~20 MB resident while a cursor crosses
  the nasty catalog's 150,000 tied images, ~6 MB of checkpoint), never with the catalog.

Misbehaving pages. A cursor remembers the ids of its last pages (two at least, and at least
`recent_ids` ids) and its floor, the position before them: every image it served at an
instant strictly beyond the floor is remembered; `tie_ids` holds every id served at the
position, and `previous_ids` every id served at the position before (a page that swaps two
images across the floor's instant stays decidable). An image a page serves is then
- a repeat when its id is remembered (in `tie_ids`, the recent ids, or this page): dropped,
  counted `duplicates_dropped`;
- else, at the position or beyond it: new, kept (ties come in any order);
- else (behind the position: the page goes back in `uploaded`) late when its instant lies
  strictly beyond the floor or is the previous position: never served before, kept, counted
  `out_of_order`;
- otherwise undecidable in bounded memory: CursorError, never a silent duplicate.

Resume. `state()` holds tokens, positions, tie ids, entries and counts. A resumed cursor's
floor is its position, and it starts again from its entry (the token of the page on which its
position's instant first appeared) in replay: the order inside that instant may have changed
while the run was down, so the stored token alone could skip part of it. Replay skips,
silently, every image behind the position and, at the position, every id in `tie_ids`
(exported before); beyond, the walk goes on as usual. A token the API rejects on resume (400)
restarts that cursor from the beginning, in replay too.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio

from exporter.api.auth import Credentials
from exporter.api.client import ApiClient, ConnectionPool
from exporter.api.pacing import Pacer
from exporter.api.pagination import Image, ListRequest, Page, SortOrder, uploaded_key
from exporter.errors import ConfigError, CursorError, ExporterError, ResponseError
from exporter.options import RECENT_IDS, WalkOptions
from exporter.stats import RunStats
from exporter.tasks import FirstErrorGroup

log = logging.getLogger("exporter.walker")

# 1 held ties and edge ids (unbounded); 2 positions (uploaded, id); 3 instants and tie ids
STATE_VERSION = 3


def make_client(
    base_url: str,
    account_id: str,
    credentials: Credentials,
    options: WalkOptions,
    stats: RunStats,
    pacer: Pacer | None = None,
    pool: ConnectionPool | None = None,
) -> ApiClient:
    """Return the run's client (enter it with `async with`).

    Its pacer is `pacer` when given (shared by a fleet's accounts of one credential), else its
    own, sized from `options`; its connections come from `pool` when given (a fleet's).
    """
    return ApiClient(
        base_url,
        account_id,
        credentials,
        stats=stats,
        retry=options.retry_policy(),
        pacer=pacer or Pacer(options.quota, options.window_s, options.margin),
        pool=pool,
        batch_base_url=options.batch_base_url,
        connect_timeout_s=options.connect_timeout_s,
        read_timeout_s=options.read_timeout_s,
    )


@dataclass(frozen=True)
class Chunk:
    """Images safe to write (never re-sent), and the state to checkpoint once they are.

    `state` builds that state when a checkpoint is taken (in the walk's thread), not for
    every page: a cursor inside a bulk import's instant holds up to its size of tie ids, and
    copying them for each page of it cost ~10 MB of peak RSS at 150,000 tied images.
    """

    images: list[Image]
    state: Callable[[], dict[str, Any]]
    pages: int

    @classmethod
    def built(cls, images: list[Image], state: dict[str, Any], pages: int) -> Chunk:
        """Return a chunk whose state is built already (a walk whose state is small)."""
        return cls(images, lambda: state, pages)


# -- the pure merge ----------------------------------------------------------------------------


@dataclass
class _Recent:
    """The ids of a cursor's last pages (at least two, at least `limit` ids) and its floor.

    Every image the cursor served at an instant strictly beyond `floor` (in its order) is in
    `ids`: a page leaves only when enough later pages hold `limit` ids, and the floor becomes
    the position after it. An image at or behind the floor may have been served by a page
    that has left.
    """

    limit: int
    floor: datetime | None = None
    ids: set[str] = field(default_factory=set)
    pages: deque[tuple[list[str], datetime | None]] = field(default_factory=deque)
    count: int = 0

    def add(self, ids: list[str], position: datetime | None) -> None:
        """Remember a page's served ids and the position after it; forget what is old."""
        self.ids.update(ids)
        self.pages.append((ids, position))
        self.count += len(ids)
        while len(self.pages) > 2 and self.count - len(self.pages[0][0]) >= self.limit:
            old, self.floor = self.pages.popleft()
            self.count -= len(old)
            self.ids.difference_update(old)


_ID = operator.itemgetter("id")
_UPLOADED = operator.itemgetter("uploaded")


@dataclass(frozen=True)
class Accepted:
    """A page's images a cursor served for the first time, with their instants (same order).

    `ordered`: the instants never go back in the cursor's order, so those strictly behind
    any mark in the other cursor's order are a prefix.
    """

    instants: list[datetime]
    images: list[Image]
    ordered: bool


@dataclass
class Side:
    """One cursor's progress: next token, position (an instant) and the ids served there."""

    order: SortOrder
    token: str | None = None
    started: bool = False
    ended: bool = False
    stopped: bool = False  # no more pages wanted (the walk is over)
    position: datetime | None = None  # `uploaded` of the furthest image served
    position_text: str | None = None  # the same, as the API wrote it
    # The ids served at `position`, in the order served: only ever added to, or replaced by
    # a new dict at a new position, so the first n of them are the tie ids as of n served.
    tie_ids: dict[str, None] = field(default_factory=dict)
    entry: str | None = None  # the token of the page where `position` first appeared
    previous: datetime | None = None  # the position before `position`, and its tie ids
    previous_ids: dict[str, None] = field(default_factory=dict)
    replay: bool = False  # restarted from the beginning: skip what was served, silently
    out_of_order: int = 0  # images served behind the position, never served before: kept
    duplicates_dropped: int = 0  # ids this cursor served again: dropped
    recent: _Recent = field(default_factory=lambda: _Recent(RECENT_IDS))

    @property
    def ahead(self) -> Callable[[datetime, datetime], bool]:
        """Return `ahead(a, b)`: True when instant `a` comes strictly after `b` in this order."""
        return operator.gt if self.order == "asc" else operator.lt

    def accept(self, images: Sequence[Image], url: str) -> Accepted:
        """Return the page's images this cursor serves for the first time, with their instants.

        A page whose instants never go back, from the position on, with no id seen before
        (every page of an API that keeps its promise) is taken whole by `_in_order`, in C
        loops; any other page, image by image. CursorError for an image behind the floor
        that the recent ids cannot place.
        """
        accepted = None if self.replay else self._in_order(images)
        return accepted if accepted is not None else self._one_by_one(images, url)

    def _in_order(self, images: Sequence[Image]) -> Accepted | None:
        """Take a page whose instants never go back in this cursor's order, starting at or
        beyond its position, with no id served before (none remembered, none twice): None
        otherwise.

        What `_one_by_one` would do with such a page, image for image, without a Python step
        per image: `uploaded` is parsed once per distinct text, and the checks are C loops
        over the page's lists.
        """
        if not images:
            return None
        try:
            texts = list(map(_UPLOADED, images))
            distinct = dict.fromkeys(texts)  # a tie's text once; TypeError if not hashable
            instant = dict(zip(distinct, map(datetime.fromisoformat, distinct), strict=True))
        except (KeyError, TypeError, ValueError):
            return None  # the image by image walk names the image and what is wrong
        ids = list(map(_ID, images))
        instants = list(map(instant.__getitem__, texts))
        behind = operator.lt if self.order == "asc" else operator.gt
        first, last = instants[0], instants[-1]
        try:
            # Adjacent pairs only, so a naive `uploaded` beside an aware one raises TypeError:
            # in order, the page is all aware (checked on its first instant) or all naive.
            if first.tzinfo is None or any(map(behind, instants[1:], instants)):
                return None
            if self.position is not None and behind(first, self.position):
                return None
        except TypeError:
            return None
        recent = self.recent
        if len(set(ids)) != len(ids) or not recent.ids.isdisjoint(ids):
            return None
        if not self.tie_ids.keys().isdisjoint(ids):
            return None
        if last == self.position:
            self.tie_ids.update(dict.fromkeys(ids))
        else:
            run = instants.index(last)  # where the run of the last instant starts
            if run:  # the run before it: the previous position
                before = instants[run - 1]
                start = instants.index(before)
                if before == self.position:
                    self.tie_ids.update(dict.fromkeys(ids[start:run]))
                    self.previous, self.previous_ids = before, self.tie_ids
                else:
                    self.previous, self.previous_ids = before, dict.fromkeys(ids[start:run])
            elif self.position is not None:
                self.previous, self.previous_ids = self.position, self.tie_ids
            self.tie_ids = dict.fromkeys(ids[run:])
            self.position, self.position_text = last, texts[run]
        recent.add(ids, self.position)
        return Accepted(instants, list(images), ordered=True)

    def _one_by_one(self, images: Sequence[Image], url: str) -> Accepted:
        """Take any page image by image: repeats dropped, late images kept, or CursorError.

        The position lives in locals for the page, and a run of images sharing one
        `uploaded` text (a tie) is parsed once.
        """
        instants: list[datetime] = []
        fresh: list[Image] = []
        served: list[str] = []
        ahead = self.ahead
        position, position_text, ties = self.position, self.position_text, self.tie_ids
        previous, previous_ids = self.previous, self.previous_ids
        recent, floor = self.recent.ids, self.recent.floor
        page_ids: set[str] = set()
        text: Any = None
        instant: datetime | None = None
        try:
            for image in images:
                if instant is None or image.get("uploaded") != text:
                    instant = uploaded_key(image, url)
                    text = image["uploaded"]
                image_id = image["id"]
                seen = (
                    image_id in ties
                    or image_id in recent
                    or image_id in page_ids
                    or (instant == previous and image_id in previous_ids)
                )
                if position is None or ahead(instant, position):
                    self.replay = False
                    if seen:
                        self.duplicates_dropped += 1  # an id served again, at a new instant
                        continue
                    if position is not None:
                        previous, previous_ids = position, ties
                    position, position_text, ties = instant, text, {image_id: None}
                elif self.replay and (instant != position or image_id in ties):
                    continue  # exported before the restart
                elif seen:
                    self.duplicates_dropped += 1
                    continue
                elif instant == position:
                    ties[image_id] = None  # one more of the tie, in whatever order it comes
                elif floor is None or ahead(instant, floor) or instant == previous:
                    self.out_of_order += 1  # never served: every id served there is known
                else:
                    raise CursorError(
                        url,
                        f"the {self.order} cursor went back to {text} ({image_id!r}), further "
                        "than the walker remembers; it cannot tell whether that image was "
                        "exported already",
                    )
                page_ids.add(image_id)
                served.append(image_id)
                instants.append(instant)
                fresh.append(image)
        finally:
            self.position, self.position_text, self.tie_ids = position, position_text, ties
            self.previous, self.previous_ids = previous, previous_ids
            self.recent.add(served, position)
        return Accepted(instants, fresh, ordered=False)

    def state(self) -> dict[str, Any]:
        """Return this cursor's JSON-ready state (its tie ids grow with the largest tie)."""
        return self.frozen_state()()

    def frozen_state(self) -> Callable[[], dict[str, Any]]:
        """Return a call that builds `state()` as of now, at any later time, without copying
        the tie ids now: they are the first ones of `tie_ids` (see there)."""
        state = {
            "order": self.order,
            "token": self.token,
            "started": self.started,
            "ended": self.ended,
            "stopped": self.stopped,
            "position": self.position_text,
            "tie_ids": None,
            "entry": self.entry,
            "replay": self.replay,
            "out_of_order": self.out_of_order,
            "duplicates_dropped": self.duplicates_dropped,
        }
        ties, served = self.tie_ids, len(self.tie_ids)

        def build() -> dict[str, Any]:
            return {**state, "tie_ids": list(itertools.islice(ties, served))}

        return build

    @classmethod
    def from_state(cls, data: Mapping[str, Any], recent_ids: int = RECENT_IDS) -> Side:
        """Return a cursor restored from `state()`; its floor is its position."""
        side = cls(
            order=data["order"],
            token=data.get("token"),
            started=bool(data.get("started")),
            ended=bool(data.get("ended")),
            stopped=bool(data.get("stopped")),
            tie_ids=dict.fromkeys(data.get("tie_ids", ())),
            entry=data.get("entry"),
            replay=bool(data.get("replay")),
            out_of_order=int(data.get("out_of_order", 0)),
            duplicates_dropped=int(data.get("duplicates_dropped", 0)),
            recent=_Recent(recent_ids),
        )
        text = data.get("position")
        if text is not None:
            side.position = uploaded_key({"uploaded": text})
            side.position_text = text
            side.recent.floor = side.position
        return side


class Merge:
    """The pure both-ends (or single-cursor) merge: feed pages, get the images to emit."""

    def __init__(self, sides: Sequence[Side]) -> None:
        self.sides = {side.order: side for side in sides}
        self.both = len(sides) == 2
        self.done = False

    @classmethod
    def start(cls, orders: Sequence[SortOrder], *, recent_ids: int = RECENT_IDS) -> Merge:
        """Return a fresh merge over cursors of these orders."""
        return cls([Side(order, recent=_Recent(recent_ids)) for order in orders])

    @property
    def out_of_order(self) -> int:
        """Images served behind their cursor's position, never served before (kept)."""
        return sum(side.out_of_order for side in self.sides.values())

    @property
    def duplicates_dropped(self) -> int:
        """Ids a cursor served a second time (dropped)."""
        return sum(side.duplicates_dropped for side in self.sides.values())

    def state(self) -> dict[str, Any]:
        """Return the JSON-ready resume state."""
        return self.frozen_state()()

    def frozen_state(self) -> Callable[[], dict[str, Any]]:
        """Return a call that builds `state()` as of now, at any later time (`Chunk.state`)."""
        sides = [side.frozen_state() for side in self.sides.values()]
        both, done = self.both, self.done

        def build() -> dict[str, Any]:
            return {
                "version": STATE_VERSION,
                "both": both,
                "sides": [side() for side in sides],
                "done": done,
            }

        return build

    @classmethod
    def from_state(cls, data: Mapping[str, Any], *, recent_ids: int = RECENT_IDS) -> Merge:
        """Return a merge restored from `state()`; ConfigError if it is not one."""
        if not isinstance(data, Mapping) or data.get("version") != STATE_VERSION:
            raise ConfigError("checkpoint", "walker state of an unknown version")
        merge = cls([Side.from_state(s, recent_ids) for s in data["sides"]])
        merge.done = bool(data.get("done"))
        return merge

    def wanted(self) -> list[Side]:
        """Return the cursors that still need pages."""
        if self.done:
            return []
        return [s for s in self.sides.values() if not s.ended and not s.stopped]

    def restart(self, order: SortOrder) -> None:
        """Note that a cursor's stored token was rejected and it restarts from the start."""
        side = self.sides[order]
        side.token = None
        side.replay = side.position is not None

    def reenter(self) -> None:
        """Resume each cursor from the page where its position's instant began, in replay.

        A token resumes its cursor's order, but the order inside one instant is the API's
        choice and may differ after a pause (a kill, a deploy): continuing from the stored
        token would then skip the images of that instant the new order puts before it. From
        the entry page, the cursor skips what it served (instants behind its position, its
        `tie_ids` at it) and serves the rest of the instant whatever the order: one page more
        per cursor for an ordinary instant, the pages of the tie for a bulk import.
        """
        for side in self.wanted():
            if side.position is not None and side.started:
                side.token, side.replay = side.entry, True

    def feed(self, order: SortOrder, page: Page, url: str = "") -> list[Image]:
        """Take one page of cursor `order`; return the images that are now final."""
        side = self.sides[order]
        if self.done or side.stopped:
            return []  # a page prefetched before the walk ended
        entered, position = side.token, side.position
        fresh = side.accept(page.images, url)
        if side.position != position:  # a new instant first appeared on this page
            side.entry = entered
        side.started = True
        side.token = page.next_token
        side.ended = page.next_token is None
        other = self.sides["desc" if order == "asc" else "asc"] if self.both else None
        mark = other.position if other is not None else None
        if other is None or mark is None:  # one cursor, or the other has served nothing yet
            out = fresh.images
        else:
            unreached = other.ahead  # (t, mark): the other cursor has not reached t
            if fresh.ordered and (not fresh.instants or unreached(fresh.instants[-1], mark)):
                out = fresh.images  # in order, and its last instant not reached: none is
            else:  # what the other cursor has not served; it never will emit these
                ties = other.tie_ids
                pairs = zip(fresh.instants, fresh.images, strict=True)
                out = [
                    image
                    for instant, image in pairs
                    if unreached(instant, mark) or (instant == mark and image["id"] not in ties)
                ]
        crossed = mark is not None and side.position is not None and side.ahead(side.position, mark)
        if side.ended or crossed:
            self.done = True
            for s in self.sides.values():
                s.stopped = True
        elif other is not None and side.position == mark and not other.stopped:
            # Both inside one instant: one cursor finishes it alone (see the module docstring).
            fewer = other if len(other.tie_ids) < len(side.tie_ids) else side
            fewer.stopped = True
        return out


# -- the async walk ---------------------------------------------------------------------------

_Event = tuple[SortOrder, Page | None, Exception | None]


class Walker:
    """Stream the images of one request as chunks, each image exactly once, resumable."""

    def __init__(
        self,
        client: ApiClient,
        request: ListRequest,
        options: WalkOptions,
        stats: RunStats,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        self.client = client
        self.request = request
        self.options = options
        self.stats = stats
        self._state = state

    def _merge(self) -> Merge:
        recent = self.options.recent_ids
        if self._state is not None:
            merge = Merge.from_state(self._state, recent_ids=recent)
            merge.reenter()
            return merge
        if self.options.both_ends(self.request):
            return Merge.start(("asc", "desc"), recent_ids=recent)
        # One cursor; an unordered single walk asks for desc, the API's default, explicitly.
        return Merge.start((self.request.sort_order or "desc",), recent_ids=recent)

    def _count(self, merge: Merge) -> None:
        """Copy the merge's counts of misbehaving pages to the run's stats (their one writer)."""
        self.stats.out_of_order = merge.out_of_order
        self.stats.duplicates_dropped = merge.duplicates_dropped

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Yield a chunk per page, with its final images and the state to checkpoint after.

        Close it with `contextlib.aclosing` when not iterating to the end: pages are fetched
        by background tasks while the consumer works.
        """
        self.request.validate()
        self.options.validate()
        merge = self._merge()
        self._count(merge)
        if merge.done:
            return
        # Unbounded stream: `_Budget` bounds it, in pages and images, before each request.
        send, receive = anyio.create_memory_object_stream[_Event](math.inf)
        # One read-ahead per cursor: with a shared one, a cursor whose page waited for the
        # consumer (busy normalizing the other cursor's page) sent its next request late.
        budgets = {
            side.order: _Budget(self.options.prefetch, self.options.prefetch_images)
            for side in merge.wanted()
        }
        # Fetchers send their errors as events; a consumer closing the generator cancels them.
        async with FirstErrorGroup() as tg, receive:
            scopes = {
                side.order: self._start(tg, side, send.clone(), budgets[side.order])
                for side in merge.wanted()
            }
            send.close()
            async for order, page, error in receive:
                if page is not None:
                    budgets[order].take(len(page.images))
                if isinstance(error, _Restart):
                    merge.restart(order)
                    continue
                if error is not None:
                    tg.fail(error)
                    break
                assert page is not None
                try:
                    images = merge.feed(order, page, self.client.base_url)
                except ExporterError as exc:  # a page the walker cannot place, no uploaded time
                    tg.fail(exc)
                    break
                self._count(merge)
                for side in merge.sides.values():
                    if side.stopped and side.order in scopes:
                        scopes.pop(side.order).cancel()
                try:
                    yield Chunk(images=images, state=merge.frozen_state(), pages=1)
                except GeneratorExit:
                    tg.cancel_scope.cancel()
                    return
                if merge.done:
                    break
            tg.cancel_scope.cancel()

    def _start(
        self,
        tg: FirstErrorGroup,
        side: Side,
        send: anyio.abc.ObjectSendStream[_Event],
        budget: _Budget,
    ) -> anyio.CancelScope:
        scope = anyio.CancelScope()
        tg.start_soon(self._cursor, scope, side.order, side.token, send, budget)
        return scope

    async def _cursor(
        self,
        scope: anyio.CancelScope,
        order: SortOrder,
        token: str | None,
        send: anyio.abc.ObjectSendStream[_Event],
        budget: _Budget,
    ) -> None:
        """Fetch one cursor's pages into `send`; errors travel the stream, not the group."""
        with scope:
            async with send:
                try:
                    await self._pump(order, token, send, budget)
                except anyio.get_cancelled_exc_class():
                    raise
                except Exception as exc:
                    await send.send((order, None, exc))

    async def _pump(
        self,
        order: SortOrder,
        token: str | None,
        send: anyio.abc.ObjectSendStream[_Event],
        budget: _Budget,
    ) -> None:
        try:
            await self._fetch(order, token, send, budget, resumed=token is not None)
            return
        except _Rejected as exc:
            log.warning(
                "the API rejected the stored continuation token of the %s cursor (%s); "
                "restarting it from the beginning and skipping the images already exported",
                order,
                exc.error,
            )
        await send.send((order, None, _Restart()))
        await self._fetch(order, None, send, budget, resumed=False)

    async def _fetch(
        self,
        order: SortOrder,
        token: str | None,
        send: anyio.abc.ObjectSendStream[_Event],
        budget: _Budget,
        *,
        resumed: bool,
    ) -> None:
        """Send one cursor's pages from `token`, reserving room in `budget` before each request.

        _Rejected when `resumed` and the API refuses the stored token (400) on the first page.
        """
        expected = self.request.per_page
        await budget.reserve(expected)
        pages = self.client.iter_pages(self.request, order, token, batch=self.options.batch_api)
        try:
            async for page in pages:
                resumed = False
                budget.arrived(expected, len(page.images))
                await send.send((order, page, None))
                if page.next_token is not None:
                    await budget.reserve(expected)  # before the next request, not after it
        except ResponseError as exc:
            if not (resumed and exc.status == 400):
                raise
            budget.release(expected)
            raise _Rejected(exc) from None


class _Budget:
    """One cursor's pages requested but not yet taken by the consumer.

    A cursor reserves room (a page, and `per_page` images until the reply says how many)
    before each request, and waits while the buffer is at either limit; an empty buffer
    always has room, so pages larger than the image limit still flow, one at a time.
    """

    def __init__(self, pages: int, images: int) -> None:
        self.max_pages, self.max_images = pages, images
        self.pages = self.images = 0
        self._changed = anyio.Event()

    async def reserve(self, expected: int) -> None:
        """Wait until the buffer is below both limits (or empty); count a page requested."""
        while self.pages and (self.pages >= self.max_pages or self.images >= self.max_images):
            await self._changed.wait()
        self.pages += 1
        self.images += expected

    def arrived(self, expected: int, count: int) -> None:
        """Correct a reservation of `expected` images to the `count` the page holds."""
        self.images += count - expected

    def release(self, expected: int) -> None:
        """Give back a reservation whose request brought no page."""
        self.arrived(expected, 0)
        self.take(0)

    def take(self, count: int) -> None:
        """Count a page of `count` images out (the consumer has it); wake waiting cursors."""
        self.pages -= 1
        self.images -= count
        self._changed.set()
        self._changed = anyio.Event()


class _Rejected(Exception):
    """The API refused a stored continuation token on a resumed cursor's first page."""

    def __init__(self, error: ResponseError) -> None:
        super().__init__(str(error))
        self.error = error


class _Restart(Exception):
    """Marker event: the cursor restarted from the beginning (its token was rejected)."""


__all__ = ["Chunk", "ListRequest", "Merge", "WalkOptions", "Walker", "make_client"]
