"""List V2 semantics without I/O: query rules, the filtered view, and one page of it.

Rules (OpenAPI extract): `per_page` a JSON number, integral, 10..10000 (default 1000);
`sort_order` asc|desc (default desc); `creator` exact, where `creator=""` selects images whose
creator is not set (null, absent, or ""); metadata filters as in `exporter.api.filters`. Other
unknown parameters are ignored, as Cloudflare's API does, except names starting with `meta`
that are not a valid filter (`meta=foo`, `metadata[eq]=x`): those are refused, a deliberate
difference, so that a mistyped filter never lists the whole catalog unnoticed (what Cloudflare
answers is not documented). Violations raise QueryError, answered 400 code 5400.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from exporter.api.filters import (
    MetaFilter,
    is_json_number,
    matches,
    parse_filter_param,
    validate_filters,
)
from exporter.emulator.catalog import Catalog
from exporter.emulator.render import OrderKey
from exporter.emulator.ties import TieOrder, select_tied_page
from exporter.emulator.tokens import query_fingerprint
from exporter.errors import FilterError

DEFAULT_PER_PAGE = 1000
MIN_PER_PAGE = 10
MAX_PER_PAGE = 10000
SORT_ORDERS = ("asc", "desc")


class QueryError(ValueError):
    """A List V2 query the API would refuse; the message names the problem."""


@dataclass(frozen=True)
class ListQuery:
    """A validated List V2 query."""

    per_page: int = DEFAULT_PER_PAGE
    sort_order: str = "desc"
    creator: str | None = None
    filters: tuple[MetaFilter, ...] = ()
    continuation_token: str | None = None

    @property
    def fingerprint(self) -> bytes:
        """Return what a continuation token must match (everything but per_page)."""
        return query_fingerprint(self.sort_order, self.creator, [str(f) for f in self.filters])


def parse_list_query(params: Iterable[tuple[str, str]]) -> ListQuery:
    """Return the query of a request's parameters; the first of repeated plain ones wins."""
    plain: dict[str, str] = {}
    filters: list[MetaFilter] = []
    for name, value in params:
        if name.startswith("meta"):  # meta=, metadata[eq]= too: a typo must not list all
            try:
                filters.append(parse_filter_param(name, value))
            except FilterError as exc:
                raise QueryError(exc.reason) from exc
        else:
            plain.setdefault(name, value)
    try:
        validate_filters(filters)
    except FilterError as exc:
        raise QueryError(exc.reason) from exc
    return ListQuery(
        per_page=_per_page(plain.get("per_page")),
        sort_order=_sort_order(plain.get("sort_order")),
        creator=plain.get("creator"),
        filters=tuple(filters),
        continuation_token=plain.get("continuation_token") or None,
    )


def _per_page(text: str | None) -> int:
    if text is None:
        return DEFAULT_PER_PAGE
    # A JSON number (the spec types it `number`): Python's float() would also take "1_000",
    # Arabic-Indic digits, "inf" and "1e999".
    value = float(text) if is_json_number(text) else float("nan")
    if not value.is_integer() or not MIN_PER_PAGE <= value <= MAX_PER_PAGE:
        raise QueryError(
            f"Invalid per_page: {text!r}, must be a whole number between "
            f"{MIN_PER_PAGE} and {MAX_PER_PAGE}"
        )
    return int(value)


def _sort_order(text: str | None) -> str:
    if text is None:
        return "desc"
    if text not in SORT_ORDERS:
        raise QueryError(f"Invalid sort_order: {text!r}, must be one of asc, desc")
    return text


def image_selected(
    image: dict[str, Any], creator: str | None, filters: Sequence[MetaFilter]
) -> bool:
    """Return whether one image passes the creator and metadata filters."""
    if creator is not None:
        actual = image.get("creator")
        if (actual or "") != creator:
            return False
    meta = image.get("meta")
    return all(matches(f, meta) for f in filters)


class ViewCache:
    """Ascending catalog positions selected by (creator, filters), computed once per query."""

    def __init__(self, catalog: Catalog, size: int = 32) -> None:
        self._catalog = catalog
        self._size = size
        self._views: OrderedDict[tuple[Any, ...], Sequence[int]] = OrderedDict()

    def positions(self, query: ListQuery) -> Sequence[int]:
        """Return the ascending positions of the images the query selects."""
        if query.creator is None and not query.filters:
            return range(len(self._catalog))
        cache_key = (self._catalog.revision, query.creator, query.filters)
        view = self._views.get(cache_key)
        if view is None:
            needles = _needles(query)
            view = [
                position
                for position, blob in enumerate(self._catalog.blobs)
                if all(needle in blob for needle in needles)
                and image_selected(orjson.loads(blob), query.creator, query.filters)
            ]
            self._views[cache_key] = view
            while len(self._views) > self._size:
                self._views.popitem(last=False)
        else:
            self._views.move_to_end(cache_key)
        return view

    def is_cached(self, query: ListQuery) -> bool:
        """Return whether `positions` answers without scanning the catalog."""
        no_scan = query.creator is None and not query.filters
        return no_scan or (self._catalog.revision, query.creator, query.filters) in self._views


def _needles(query: ListQuery) -> list[bytes]:
    """Return byte strings every selected image's JSON must contain: a cheap pre-filter.

    orjson writes a key as `"key":` with no spaces, so an image lacking that text cannot hold
    the key; decoding (the expensive part of a scan) is skipped for it.
    """
    needles = {orjson.dumps(segment) + b":" for f in query.filters for segment in f.path}
    if query.creator:
        needles.add(b'"creator":' + orjson.dumps(query.creator))
    return sorted(needles)


@dataclass(frozen=True)
class PageSlice:
    """The positions one page serves, in served order, and the key to resume after."""

    positions: Sequence[int]
    next_key: OrderKey | None


def select_page(
    keys: Sequence[OrderKey],
    view: Sequence[int],
    sort_order: str,
    size: int,
    after: OrderKey | None,
) -> PageSlice:
    """Return the next `size` positions of `view` after `after` in `sort_order`."""

    def key_of(position: int) -> OrderKey:
        return keys[position]

    if sort_order == "asc":
        start = 0 if after is None else bisect.bisect_right(view, after, key=key_of)
        chunk = view[start : start + size]
        more = start + size < len(view)
    else:
        end = len(view) if after is None else bisect.bisect_left(view, after, key=key_of)
        low = max(0, end - size)
        chunk = view[low:end][::-1]
        more = low > 0
    next_key = keys[chunk[-1]] if more and len(chunk) > 0 else None
    return PageSlice(positions=chunk, next_key=next_key)


def select_catalog_page(
    catalog: Catalog,
    view: Sequence[int],
    sort_order: str,
    size: int,
    after: OrderKey | None,
    ties: TieOrder,
) -> PageSlice:
    """Return the next page of `view` after `after`, ties in `ties`' order."""
    if ties.classic:  # the catalog's own order: plain slices
        return select_page(catalog.keys, view, sort_order, size, after)
    profile, gens = catalog.profile, catalog.gens

    def image_id(position: int) -> str:
        return profile.image_id(gens[position])

    positions, more = select_tied_page(
        catalog.uploaded, image_id, view, sort_order, size, after, ties, catalog.revision
    )
    next_key = catalog.key(positions[-1]) if more and positions else None
    return PageSlice(positions=positions, next_key=next_key)


def served_order(catalog: Catalog, sort_order: str, ties: TieOrder) -> list[int]:
    """Return every position of the catalog in the order a cursor serves them (a truth for
    tests: the paged walk must agree)."""
    sign = 1 if sort_order == "asc" else -1
    uploaded, keys = catalog.uploaded, catalog.keys
    return sorted(
        range(len(catalog)),
        key=lambda p: (sign * uploaded[p], ties.rank(sort_order, keys[p][1])),
    )


def page_body(blobs: Sequence[bytes], positions: Sequence[int], token: str | None) -> bytes:
    """Return a List V2 success envelope whose images are pre-encoded blobs."""
    return envelope([blobs[position] for position in positions], token)


def envelope(images: Sequence[bytes], token: str | None) -> bytes:
    """Return a List V2 success envelope around the JSON bytes of a page's images."""
    token_json = b"null" if token is None else orjson.dumps(token)
    return (
        b'{"result":{"images":['
        + b",".join(images)
        + b'],"continuation_token":'
        + token_json
        + b'},"success":true,"errors":[],"messages":[]}'
    )
