"""Tie orders: every order of the images sharing an instant the reference allows, served as
cursors (a token places the next page, even after the image it names was deleted)."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence

import pytest

from exporter.emulator import build_catalog
from exporter.emulator.catalog import Catalog
from exporter.emulator.listing import select_catalog_page
from exporter.emulator.render import OrderKey
from exporter.emulator.settings import (
    AccountSettings,
    EmulatorSettings,
    add_emulator_arguments,
    settings_from_args,
)
from exporter.emulator.ties import TIE_ORDERS, TieOrder
from exporter.errors import ConfigError


def walk(
    catalog: Catalog, view: Sequence[int], order: str, size: int, ties: TieOrder
) -> list[OrderKey]:
    """Return every key a cursor serves, page after page, resuming after each page's key."""
    served: list[OrderKey] = []
    after = None
    while True:
        page = select_catalog_page(catalog, view, order, size, after, ties)
        served += [catalog.key(p) for p in page.positions]
        if page.next_key is None:
            return served
        assert page.next_key == served[-1]  # the token names the last image served
        after = page.next_key


def expected(catalog: Catalog, order: str, ties: TieOrder) -> list[OrderKey]:
    """Sorted by `uploaded` in the cursor's direction, ties by ascending rank."""
    keys = list(catalog.keys)
    sign = 1 if order == "asc" else -1
    return sorted(keys, key=lambda k: (sign * k[0], ties.rank(order, k[1])))


CATALOG = build_catalog(600, seed=3, tie_group=150)  # one tie of 150 and smaller ones


@pytest.mark.parametrize("name", TIE_ORDERS)
@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_a_cursor_serves_every_image_once_ties_in_the_order_named(
    name: str, order: str, size: int
) -> None:
    ties = TieOrder(name, seed=5)
    served = walk(CATALOG, range(len(CATALOG)), order, size, ties)
    assert served == expected(CATALOG, order, ties)


def test_the_orders_differ_as_named() -> None:
    """Inside the big tie: id is asc by id and desc its reverse; id-desc the opposite; same
    id ascending both ways; hash neither, and its desc is not the reverse of its asc."""
    bulk = Counter(k[0] for k in CATALOG.keys).most_common(1)[0][0]
    tie = [k[1] for k in CATALOG.keys if k[0] == bulk]
    assert len(tie) >= 150

    def inside(name: str, order: str, seed: int = 5) -> list[str]:
        served = walk(CATALOG, range(len(CATALOG)), order, 10, TieOrder(name, seed=seed))
        members = set(tie)
        return [key[1] for key in served if key[1] in members]

    ascending = sorted(tie)
    assert inside("id", "asc") == ascending and inside("id", "desc") == ascending[::-1]
    assert inside("id-desc", "asc") == ascending[::-1] and inside("id-desc", "desc") == ascending
    assert inside("same", "asc") == inside("same", "desc") == ascending
    hashed_asc, hashed_desc = inside("hash", "asc"), inside("hash", "desc")
    assert ascending not in (hashed_asc, hashed_asc[::-1], hashed_desc)
    assert hashed_desc != hashed_asc[::-1]
    assert hashed_asc != inside("hash", "asc", seed=6)  # another seed (night), another order


@pytest.mark.parametrize("name", ["hash", "id-desc", "same"])
def test_a_token_whose_image_was_deleted_still_places_the_next_page(name: str) -> None:
    catalog = CATALOG.copy()
    ties = TieOrder(name, seed=5)
    first = select_catalog_page(catalog, range(len(catalog)), "desc", 200, None, ties)
    assert first.next_key is not None
    rest_before = walk_from(catalog, first.next_key, ties)
    catalog.remove([catalog.position_of(first.next_key[1], first.next_key[0]) or 0])
    assert walk_from(catalog, first.next_key, ties) == rest_before


def walk_from(catalog: Catalog, after: OrderKey, ties: TieOrder) -> list[OrderKey]:
    served: list[OrderKey] = []
    key: OrderKey | None = after
    while key is not None:
        page = select_catalog_page(catalog, range(len(catalog)), "desc", 33, key, ties)
        served += [catalog.key(p) for p in page.positions]
        key = page.next_key
    return served


def test_a_filtered_view_is_served_in_the_tie_order() -> None:
    view = list(range(0, len(CATALOG), 3))
    ties = TieOrder("hash", seed=5)
    served = walk(CATALOG, view, "asc", 17, ties)
    assert sorted(served) == sorted(CATALOG.keys[p] for p in view)
    assert served == sorted(served, key=lambda k: (k[0], ties.rank("asc", k[1])))


def test_settings_default_by_profile_and_refuse_unknown_orders() -> None:
    assert EmulatorSettings().primary().ties == "id"
    assert EmulatorSettings(profile="nasty").primary().ties == "hash"
    assert EmulatorSettings(profile="nasty", tie_order="same").primary().ties == "same"
    with pytest.raises(ConfigError, match="tie_order"):
        AccountSettings(account_id="a", token="t", tie_order="random")


def test_the_flags_reach_the_settings() -> None:
    parser = argparse.ArgumentParser()
    add_emulator_arguments(parser)
    settings = settings_from_args(parser.parse_args(["--tie-order", "id-desc", "--drafts", "2"]))
    assert (settings.primary().ties, settings.drafts) == ("id-desc", 2)
    assert settings_from_args(parser.parse_args(["--profile", "nasty"])).primary().ties == "hash"
    with pytest.raises(SystemExit):
        parser.parse_args(["--tie-order", "random"])
