"""Cursors over List V2: one cursor, or asc + desc from both ends meeting in the middle.

Both-ends walk (issue 3, item 5). The asc cursor has seen every image with `uploaded` below
its largest value `a`; the desc cursor every image above its smallest value `d`. While
`a <= d`, an asc image below `a` and a desc image above `d` can never be claimed by the other
cursor, so they stream out at once; only the ties at each cursor's edge are held back. Once
`a > d` the two cover everything: asc keeps what lies at or below `d` (and below its own
edge), desc the rest. When `a == d`, the desc cursor stops ("freezes") and asc walks on alone
up to that point, emitting ties immediately; the walker also freezes desc when held ties would
exceed `hold_cap`, which keeps memory bounded on catalogs of huge tie groups. A cursor that
reaches its end first has seen everything, less what the other one already emitted.

The merge (`Merge`) is pure and resumable: `state()` is JSON-ready and holds, per cursor, the
next token, the edge value with the ids seen at it, and the held-back images. A token the API
rejects on resume (400) restarts that cursor from the start; the edge skips what was seen.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import anyio

from exporter.auth import Credentials
from exporter.client import ApiClient
from exporter.errors import ConfigError, CursorError, ExporterError, ResponseError
from exporter.options import WalkOptions
from exporter.pagination import Image, ListRequest, Page, SortOrder, uploaded_key
from exporter.ratelimit import Pacer
from exporter.stats import RunStats
from exporter.tasks import FirstErrorGroup

log = logging.getLogger("exporter.walker")

STATE_VERSION = 1


def make_client(
    base_url: str,
    account_id: str,
    credentials: Credentials,
    options: WalkOptions,
    stats: RunStats,
) -> ApiClient:
    """Return the run's client, its pacer sized from `options` (enter it with `async with`)."""
    return ApiClient(
        base_url,
        account_id,
        credentials,
        stats=stats,
        retry=options.retry_policy(),
        pacer=Pacer(options.quota, options.window_s, options.margin),
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
class Side:
    """One cursor's progress: next token, edge (extreme `uploaded` seen) and held ties."""

    order: SortOrder
    token: str | None = None
    started: bool = False
    ended: bool = False
    stopped: bool = False  # no more pages wanted (frozen desc, or the walk is over)
    edge: datetime | None = None
    edge_text: str | None = None
    edge_ids: set[str] = field(default_factory=set)  # every id seen at the edge
    held: list[Image] = field(default_factory=list)
    replay: bool = False  # restarted from the beginning: skip what lies before the edge

    def beyond(self, key: datetime, edge: datetime) -> bool:
        """Return True when `key` comes after `edge` in this cursor's order."""
        return key > edge if self.order == "asc" else key < edge

    def accept(self, images: Sequence[Image], url: str) -> list[tuple[datetime, Image]]:
        """Return the page's new images with their keys; advance the edge; check the order.

        Runs once per image on the event loop, so the edge lives in locals for the page and
        a run of images sharing one `uploaded` text (ties) is parsed once.
        """
        fresh: list[tuple[datetime, Image]] = []
        asc = self.order == "asc"
        edge, edge_ids = self.edge, self.edge_ids
        text: Any = None
        key: datetime | None = None
        try:
            for image in images:
                if key is None or image.get("uploaded") != text:
                    key = uploaded_key(image, url)
                    text = image["uploaded"]
                if edge is not None and key != edge:
                    if key < edge if asc else key > edge:
                        if self.replay:
                            continue  # seen before the restart
                        raise CursorError(url, f"{self.order} cursor went back to {text}")
                    self.replay = False
                    edge, edge_ids = key, set()
                    self.edge_text = text
                elif edge is None:
                    self.replay = False
                    edge, edge_ids = key, set()
                    self.edge_text = text
                elif image["id"] in edge_ids:
                    continue  # a restarted cursor passing the edge again, or a repeated tie
                edge_ids.add(image["id"])
                fresh.append((key, image))
        finally:
            self.edge, self.edge_ids = edge, edge_ids
        return fresh

    def state(self) -> dict[str, Any]:
        """Return this cursor's JSON-ready state."""
        return {
            "order": self.order,
            "token": self.token,
            "started": self.started,
            "ended": self.ended,
            "stopped": self.stopped,
            "edge": self.edge_text,
            "edge_ids": sorted(self.edge_ids),
            "held": list(self.held),
            "replay": self.replay,
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any]) -> Side:
        """Return a cursor restored from `state()`."""
        edge_text = data.get("edge")
        side = cls(
            order=data["order"],
            token=data.get("token"),
            started=bool(data.get("started")),
            ended=bool(data.get("ended")),
            stopped=bool(data.get("stopped")),
            edge_text=edge_text,
            edge_ids=set(data.get("edge_ids", ())),
            held=list(data.get("held", ())),
            replay=bool(data.get("replay")),
        )
        if edge_text is not None:
            side.edge = uploaded_key({"uploaded": edge_text})
        return side


def _key(image: Image) -> datetime:
    return uploaded_key(image)


class Merge:
    """The pure both-ends (or single-cursor) merge: feed pages, get the images to emit."""

    def __init__(self, sides: Sequence[Side], *, hold_cap: int = 20_000) -> None:
        self.sides = {side.order: side for side in sides}
        self.both = len(sides) == 2
        self.hold_cap = hold_cap
        self.frozen = False  # desc stopped; asc covers everything up to `limit`
        self.limit: datetime | None = None  # None while frozen: no upper limit
        self.limit_text: str | None = None
        self.done = False

    @classmethod
    def start(cls, orders: Sequence[SortOrder], *, hold_cap: int = 20_000) -> Merge:
        """Return a fresh merge over cursors of these orders."""
        return cls([Side(order) for order in orders], hold_cap=hold_cap)

    def state(self) -> dict[str, Any]:
        """Return the JSON-ready resume state."""
        return {
            "version": STATE_VERSION,
            "both": self.both,
            "sides": [side.state() for side in self.sides.values()],
            "frozen": self.frozen,
            "limit": self.limit_text,
            "done": self.done,
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any], *, hold_cap: int = 20_000) -> Merge:
        """Return a merge restored from `state()`; ConfigError if it is not one."""
        if not isinstance(data, Mapping) or data.get("version") != STATE_VERSION:
            raise ConfigError("checkpoint", "walker state of an unknown version")
        merge = cls([Side.from_state(s) for s in data["sides"]], hold_cap=hold_cap)
        merge.frozen = bool(data.get("frozen"))
        merge.limit_text = data.get("limit")
        if merge.limit_text is not None:
            merge.limit = uploaded_key({"uploaded": merge.limit_text})
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
        side.replay = side.edge is not None

    def feed(self, order: SortOrder, page: Page, url: str = "") -> list[Image]:
        """Take one page of cursor `order`; return the images that are now final."""
        side = self.sides[order]
        if self.done or side.stopped:
            return []  # a page prefetched before this cursor was stopped
        fresh = side.accept(page.images, url)
        side.started = True
        side.token = page.next_token
        side.ended = page.next_token is None
        if not self.both:
            self.done = side.ended
            return [image for _, image in fresh]
        out = self._feed_asc(side, fresh) if order == "asc" else self._feed_desc(side, fresh)
        if not self.done and not self.frozen:
            if len(self.sides["asc"].held) + len(self.sides["desc"].held) > self.hold_cap:
                out.extend(self._freeze())
        if self.done:
            for s in self.sides.values():
                s.stopped, s.held = True, []
        return out

    def _feed_asc(self, asc: Side, fresh: list[tuple[datetime, Image]]) -> list[Image]:
        desc = self.sides["desc"]
        if self.frozen:
            out = [img for key, img in fresh if self.limit is None or key <= self.limit]
            self.done = asc.ended or len(out) < len(fresh)
            return out
        candidates = [(_key(img), img) for img in asc.held] + fresh
        a, d = asc.edge, desc.edge if desc.started else None
        if asc.ended or (a is not None and d is not None and a > d):
            # asc has seen all up to its end (or past d): it takes what desc has not emitted.
            self.done = True
            return [img for key, img in candidates if d is None or key <= d]
        if a is not None and a == d:
            asc.held = [img for _, img in candidates]
            return self._freeze()
        asc.held = [img for key, img in candidates if key == a]
        return [img for key, img in candidates if key != a]

    def _feed_desc(self, desc: Side, fresh: list[tuple[datetime, Image]]) -> list[Image]:
        asc = self.sides["asc"]
        candidates = [(_key(img), img) for img in desc.held] + fresh
        d, a = desc.edge, asc.edge if asc.started else None
        if desc.ended or (a is not None and d is not None and d < a):
            # asc emitted exactly what lies below a; desc holds everything else.
            self.done = True
            return [img for key, img in candidates if a is None or key >= a]
        if d is not None and d == a:
            out = [img for key, img in candidates if key != d]
            desc.held = []
            return out + self._freeze()
        desc.held = [img for key, img in candidates if key == d]
        return [img for key, img in candidates if key != d]

    def _freeze(self) -> list[Image]:
        """Stop desc at its edge; asc covers the rest up to it. Return asc's held ties."""
        asc, desc = self.sides["asc"], self.sides["desc"]
        self.frozen = True
        self.limit, self.limit_text = (desc.edge, desc.edge_text) if desc.started else (None, None)
        desc.stopped, desc.held = True, []  # its ties lie at the limit: asc will cover them
        out, asc.held = asc.held, []
        log.debug("desc cursor stopped at %s; asc continues alone", self.limit_text)
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
        if self._state is not None:
            return Merge.from_state(self._state, hold_cap=self.options.hold_cap)
        if self.options.both_ends(self.request):
            return Merge.start(("asc", "desc"), hold_cap=self.options.hold_cap)
        # One cursor; an unordered single walk asks for desc, the API's default, explicitly.
        return Merge.start((self.request.sort_order or "desc",), hold_cap=self.options.hold_cap)

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Yield a chunk per page, with its final images and the state to checkpoint after.

        Close it with `contextlib.aclosing` when not iterating to the end: pages are fetched
        by background tasks while the consumer works.
        """
        self.request.validate()
        self.options.validate()
        merge = self._merge()
        if merge.done:
            return
        # Unbounded stream: `_Budget` bounds it, in pages and images, before each request.
        send, receive = anyio.create_memory_object_stream[_Event](math.inf)
        budget = _Budget(self.options.prefetch, self.options.prefetch_images)
        # Fetchers send their errors as events; a consumer closing the generator cancels them.
        async with FirstErrorGroup() as tg, receive:
            scopes = {
                side.order: self._start(tg, side, send.clone(), budget) for side in merge.wanted()
            }
            send.close()
            async for order, page, error in receive:
                if page is not None:
                    budget.take(len(page.images))
                if isinstance(error, _Restart):
                    merge.restart(order)
                    continue
                if error is not None:
                    tg.fail(error)
                    break
                assert page is not None
                try:
                    images = merge.feed(order, page, self.client.base_url)
                except ExporterError as exc:  # a page out of order, without an uploaded time
                    tg.fail(exc)
                    break
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
    """Pages requested but not yet taken by the consumer, shared by the cursors.

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
