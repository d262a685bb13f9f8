"""Cursors over List V2: one cursor, or asc + desc from both ends meeting in the middle.

The order. List V2 serves images by `uploaded`, ties by `id` (as the emulator does; a token
is a cursor, "the next page starts after the last sort key served", DESIGN "Live catalogs"),
ascending for asc and descending for desc. An image's key `(uploaded, id)` is unique, so a
cursor's position, the furthest key it has served, says what it has seen: every image that
existed while the cursor passed, up to its position. A live catalog does not move positions:
an edit keeps the key, and an upload or a deletion only adds or removes keys that a cursor
has not reached yet (it may or may not be exported) or has passed (it is not).

Both ends (issue 3, item 5). asc emits an image when its key lies below desc's position, desc
when above asc's; the merge takes pages one at a time, in any interleaving. Invariants:
- Exactly once: the first cursor to serve an image emits it. The other has not reached that
  key then, so the key lies strictly on the emitting side of the other's position; once
  served, it lies at or behind the emitter's position, which the second cursor's rule excludes.
- Complete: the walk ends when a cursor ends (it served every key) or reaches the other's
  position (asc served all keys up to its position, desc all from its own): every image
  present for the whole walk was served by one of them, and so emitted.
- Bounded (issue 12, item 2): nothing is held back, whatever the ties. A cursor's state is its
  token and position, a few hundred bytes of JSON; a bulk import of 100,000 images on one
  instant costs no memory and no checkpoint bytes.

Misbehaving pages. A cursor remembers the ids of its last pages (two at least, and at least
`recent_ids` ids) and its floor, the position before them: every image it served beyond the
floor is remembered. An image a page serves at or behind the position is then
- a repeat when its id is remembered (or an id served again under a new key): dropped,
  counted `duplicates_dropped`;
- late when its key lies beyond the floor: never served before, so it is kept by the same
  rule as any image, counted `out_of_order`;
- otherwise undecidable in bounded memory: CursorError, never a silent duplicate.
An API that ordered ties by something other than the id would show here as late images.

Resume. `state()` holds tokens, positions and counts. A resumed cursor's floor is its
position. A token the API rejects on resume (400) restarts that cursor from the beginning in
replay: it skips, silently, every key up to its position (exported before the restart).
"""

from __future__ import annotations

import logging
import math
import operator
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio

from exporter.auth import Credentials
from exporter.client import ApiClient
from exporter.errors import ConfigError, CursorError, ExporterError, ResponseError
from exporter.options import RECENT_IDS, WalkOptions
from exporter.pagination import Image, ListRequest, Page, SortOrder, uploaded_key
from exporter.ratelimit import Pacer
from exporter.stats import RunStats
from exporter.tasks import FirstErrorGroup

log = logging.getLogger("exporter.walker")

STATE_VERSION = 2  # 1 held ties and edge ids (unbounded); 2 positions
Key = tuple[datetime, str]  # (uploaded, id): the List V2 order, unique per image


def make_client(
    base_url: str,
    account_id: str,
    credentials: Credentials,
    options: WalkOptions,
    stats: RunStats,
    pacer: Pacer | None = None,
) -> ApiClient:
    """Return the run's client (enter it with `async with`).

    Its pacer is `pacer` when given (shared by a fleet's accounts of one credential), else its
    own, sized from `options`.
    """
    return ApiClient(
        base_url,
        account_id,
        credentials,
        stats=stats,
        retry=options.retry_policy(),
        pacer=pacer or Pacer(options.quota, options.window_s, options.margin),
        batch_base_url=options.batch_base_url,
        connect_timeout_s=options.connect_timeout_s,
        read_timeout_s=options.read_timeout_s,
    )


@dataclass(frozen=True)
class Chunk:
    """Images safe to write (never re-sent), and the state to checkpoint once they are."""

    images: list[Image]
    state: dict[str, Any]
    pages: int


# -- the pure merge ----------------------------------------------------------------------------


@dataclass
class _Recent:
    """The ids of a cursor's last pages (at least two, at least `limit` ids) and its floor.

    Every image the cursor served beyond `floor` (in its order) is in `ids`: a page leaves
    only when enough later pages hold `limit` ids, and the floor becomes the position after
    it. An image at or behind the floor may have been served by a page that has left.
    """

    limit: int
    floor: Key | None = None
    ids: set[str] = field(default_factory=set)
    pages: deque[tuple[list[str], Key | None]] = field(default_factory=deque)
    count: int = 0

    def add(self, ids: list[str], position: Key | None) -> None:
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
    """A page's images a cursor served for the first time, with their keys (same order).

    `ordered`: the keys run strictly in the cursor's order, so those beyond any mark in that
    order are a prefix.
    """

    keys: list[Key]
    images: list[Image]
    ordered: bool


@dataclass
class Side:
    """One cursor's progress: next token and position (the furthest key it has served)."""

    order: SortOrder
    token: str | None = None
    started: bool = False
    ended: bool = False
    stopped: bool = False  # no more pages wanted (the walk is over)
    position: Key | None = None
    position_text: str | None = None  # `uploaded` of the position, as the API wrote it
    replay: bool = False  # restarted from the beginning: skip up to the position, silently
    out_of_order: int = 0  # images served behind the position, never served before: kept
    duplicates_dropped: int = 0  # ids this cursor served again: dropped
    recent: _Recent = field(default_factory=lambda: _Recent(RECENT_IDS))

    def beyond(self, key: Key, mark: Key) -> bool:
        """Return True when `key` comes after `mark` in this cursor's order."""
        return key > mark if self.order == "asc" else key < mark

    def accept(self, images: Sequence[Image], url: str) -> Accepted:
        """Return the page's images this cursor serves for the first time, with their keys.

        A page in strict order beyond the position, with no id seen before (every page of an
        API that keeps its promise) is taken whole by `_in_order`, in C loops; any other
        page, image by image. CursorError for an image behind the floor that the recent ids
        cannot place.
        """
        accepted = None if self.replay else self._in_order(images)
        return accepted if accepted is not None else self._one_by_one(images, url)

    def _in_order(self, images: Sequence[Image]) -> Accepted | None:
        """Take a page whose keys run strictly in this cursor's order from beyond its
        position, with no id served before (none remembered, none twice): None otherwise.

        What `_one_by_one` would do with such a page, image for image (each is beyond the
        position when it comes, each id fresh), without a Python step per image: `uploaded`
        is parsed once per distinct text, and the checks are C loops over the page's lists.
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
        keys = list(zip(map(instant.__getitem__, texts), ids, strict=True))
        ahead = operator.lt if self.order == "asc" else operator.gt
        try:
            # Adjacent pairs only, so a naive `uploaded` beside an aware one raises TypeError:
            # in order, the page is all aware (checked on its first key) or all naive.
            if keys[0][0].tzinfo is None or not all(map(ahead, keys, keys[1:])):
                return None
            if self.position is not None and not ahead(self.position, keys[0]):
                return None
        except TypeError:
            return None
        recent = self.recent
        if len(set(ids)) != len(ids) or not recent.ids.isdisjoint(ids):
            return None
        self.position, self.position_text = keys[-1], texts[-1]
        recent.add(ids, self.position)
        return Accepted(keys, list(images), ordered=True)

    def _one_by_one(self, images: Sequence[Image], url: str) -> Accepted:
        """Take any page image by image: repeats dropped, late images kept, or CursorError.

        The position lives in locals for the page, and a run of images sharing one
        `uploaded` text (a tie) is parsed once.
        """
        keys: list[Key] = []
        fresh: list[Image] = []
        served: list[str] = []
        asc = self.order == "asc"
        position, position_text = self.position, self.position_text
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
                key = (instant, image_id)
                if position is None or (key > position if asc else key < position):
                    self.replay = False
                    if image_id in recent or image_id in page_ids:
                        self.duplicates_dropped += 1  # an id served again, under a new key
                        continue
                    position, position_text = key, text
                elif self.replay:
                    continue  # exported before the restart
                elif image_id in recent or image_id in page_ids:
                    self.duplicates_dropped += 1
                    continue
                elif floor is None or (key > floor if asc else key < floor):
                    self.out_of_order += 1  # never served: every id beyond the floor is known
                else:
                    raise CursorError(
                        url,
                        f"the {self.order} cursor went back to {text} ({image_id!r}), further "
                        "than the walker remembers; it cannot tell whether that image was "
                        "exported already",
                    )
                page_ids.add(image_id)
                served.append(image_id)
                keys.append(key)
                fresh.append(image)
        finally:
            self.position, self.position_text = position, position_text
            self.recent.add(served, position)
        return Accepted(keys, fresh, ordered=False)

    def state(self) -> dict[str, Any]:
        """Return this cursor's JSON-ready state (a few hundred bytes, whatever the ties)."""
        return {
            "order": self.order,
            "token": self.token,
            "started": self.started,
            "ended": self.ended,
            "stopped": self.stopped,
            "position": None if self.position is None else [self.position_text, self.position[1]],
            "replay": self.replay,
            "out_of_order": self.out_of_order,
            "duplicates_dropped": self.duplicates_dropped,
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any], recent_ids: int = RECENT_IDS) -> Side:
        """Return a cursor restored from `state()`; its floor is its position."""
        side = cls(
            order=data["order"],
            token=data.get("token"),
            started=bool(data.get("started")),
            ended=bool(data.get("ended")),
            stopped=bool(data.get("stopped")),
            replay=bool(data.get("replay")),
            out_of_order=int(data.get("out_of_order", 0)),
            duplicates_dropped=int(data.get("duplicates_dropped", 0)),
            recent=_Recent(recent_ids),
        )
        position = data.get("position")
        if position is not None:
            text, image_id = position
            side.position = (uploaded_key({"uploaded": text}), image_id)
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
        return {
            "version": STATE_VERSION,
            "both": self.both,
            "sides": [side.state() for side in self.sides.values()],
            "done": self.done,
        }

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

    def feed(self, order: SortOrder, page: Page, url: str = "") -> list[Image]:
        """Take one page of cursor `order`; return the images that are now final."""
        side = self.sides[order]
        if self.done or side.stopped:
            return []  # a page prefetched before the walk ended
        fresh = side.accept(page.images, url)
        side.started = True
        side.token = page.next_token
        side.ended = page.next_token is None
        other = self.sides["desc" if order == "asc" else "asc"] if self.both else None
        mark = other.position if other is not None else None
        if other is None or mark is None:  # one cursor, or the other has served nothing yet
            out = fresh.images
        elif fresh.ordered and (not fresh.keys or other.beyond(fresh.keys[-1], mark)):
            out = fresh.images  # in order, and its last key not reached: none is
        else:  # what the other cursor has not reached; it never will emit these
            pairs = zip(fresh.keys, fresh.images, strict=True)
            out = [image for key, image in pairs if other.beyond(key, mark)]
        met = (
            mark is not None and side.position is not None and not side.beyond(mark, side.position)
        )
        if side.ended or met:
            self.done = True
            for s in self.sides.values():
                s.stopped = True
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
            return Merge.from_state(self._state, recent_ids=recent)
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
                    yield Chunk(images=images, state=merge.state(), pages=1)
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
