"""The nasty profile: the benchmark catalog is as nasty as issue 12 measured, and scales."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import aiohttp
import orjson
import pytest

from exporter.emulator import Catalog, EmulatorSettings, build_catalog
from exporter.emulator.extras import LISTED
from exporter.emulator.listing import page_body, served_order
from tests.emulator.helpers import EmulatorFactory, walk

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture(scope="module")
def nasty() -> Catalog:
    return build_catalog(20_000, seed=3, profile="nasty")


def _leaf_paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in _leaf_paths(v, (*prefix, k))]
    return [prefix]


class TestNastyProfile:
    def test_deterministic(self) -> None:
        """The same seed gives the same bytes; another seed another catalog."""
        first = build_catalog(2000, seed=5, profile="nasty")
        second = build_catalog(2000, seed=5, profile="nasty")
        assert list(first.blobs) == list(second.blobs)
        assert list(first.blobs) != list(build_catalog(2000, seed=6, profile="nasty").blobs)

    def test_order_and_shape(self, nasty: Catalog) -> None:
        """Keys ascend strictly and match the images; every image has the API's fields."""
        images = list(nasty.iter_images())
        assert list(nasty.keys) == sorted(set(nasty.keys))
        assert [img["id"] for img in images] == [key[1] for key in nasty.keys]
        for image in images:
            assert RFC3339_MS.match(image["uploaded"])
            assert set(image) & LISTED - {"creator", "meta"} == {
                "id", "filename", "requireSignedURLs", "uploaded", "variants"
            }  # fmt: skip
            assert all(image["id"] in url for url in image["variants"])
            assert len(image["filename"]) <= 255

    def test_fields_the_reference_does_not_list(self, nasty: Catalog) -> None:
        """The nasty catalog carries extra top-level fields after the listed ones: an int
        beyond 2**31, a bool, an object whose score is an int or a float, a null."""
        extras = [
            {k: v for k, v in image.items() if k not in LISTED} for image in nasty.iter_images()
        ]
        assert 0.7 <= sum("sizeBytes" in e for e in extras) / len(extras) <= 0.8
        assert min(e["sizeBytes"] for e in extras if "sizeBytes" in e) > 2**31
        assert {type(e["draft"]) for e in extras if "draft" in e} == {bool}
        scores = {type(e["labels"]["score"]) for e in extras if "labels" in e}
        assert scores == {int, float}
        assert any("deprecated" in e and e["deprecated"] is None for e in extras)
        assert not any("reviewed" in e for e in extras)  # only once a night edits them
        assert any(not e for e in extras)
        blob = nasty.blob(0)
        image = orjson.loads(blob)
        listed = [k for k in image if k in LISTED]
        assert list(image)[: len(listed)] == listed  # spliced after the listed fields

    def test_big_meta_share(self, nasty: Catalog) -> None:
        """About 12% of images carry meta of 990..1024 bytes; none exceeds the API's 1024."""
        sizes = [len(orjson.dumps(img["meta"])) for img in nasty.iter_images() if "meta" in img]
        assert max(sizes) <= 1024
        share = sum(size >= 990 for size in sizes) / len(nasty)
        assert 0.10 <= share <= 0.14

    def test_meta_columns(self, nasty: Catalog) -> None:
        """About 40 distinct flattened meta columns, with type conflicts and hostile keys."""
        paths: set[tuple[str, ...]] = set()
        priority_types: set[str] = set()
        for image in nasty.iter_images():
            meta = image.get("meta") or {}
            paths.update(_leaf_paths(meta))
            if "priority" in meta:
                priority_types.add(type(meta["priority"]).__name__)
        assert len(paths) >= 38
        assert {("a.b",), ("a", "b"), ("Status",), ("status",), ("",)} <= paths
        assert {"int", "float", "str", "bool"} <= priority_types
        assert max(len(p) for p in paths) == 6

    def test_tie_groups(self) -> None:
        """5% of the images on one instant, and the bulk import on another."""
        catalog = build_catalog(10_000, seed=2, profile="nasty", tie_group=1500)
        ties = sorted(count for _, count in Counter(catalog.uploaded).most_common(2))
        assert 500 <= ties[0] < 520  # a neighbour's zero step may join the group
        assert 1500 <= ties[1] < 1520

    def test_unique_ids_and_meta(self, nasty: Catalog) -> None:
        """Ids are unique (some custom, with slashes), and no two images share their meta."""
        images = list(nasty.iter_images())
        assert len({img["id"] for img in images}) == len(images)
        assert sum("/" in img["id"] for img in images) > len(images) // 12
        metas = [orjson.dumps(img["meta"]) for img in images if img.get("meta")]
        assert len(set(metas)) == len(metas)

    def test_page_body_is_valid_json(self, nasty: Catalog) -> None:
        """A served page decodes to the catalog's images."""
        body = orjson.loads(page_body(nasty.blobs, range(100, 300), None))
        assert body["result"]["images"] == [nasty.image(i) for i in range(100, 300)]


class TestClassicTieGroup:
    def test_bulk_import_in_classic(self) -> None:
        """`tie_group` also puts a bulk import on one instant in the classic catalog."""
        catalog = build_catalog(3000, seed=2, tie_group=700)
        assert Counter(catalog.uploaded).most_common(1)[0][1] >= 700
        assert list(catalog.keys) == sorted(set(catalog.keys))


async def test_served_walk_is_exact(
    emulator_factory: EmulatorFactory, session: aiohttp.ClientSession
) -> None:
    """Both orders walk the nasty catalog exactly over HTTP, through its tie groups, ties in
    the profile's order (a hash of the id, another in desc)."""
    async with emulator_factory(images=3000, profile="nasty", tie_group=400) as emu:
        ties = emu.account().ties
        assert ties.name == "hash"
        asc, _ = await walk(session, emu, [("sort_order", "asc"), ("per_page", "100")])
        desc, _ = await walk(session, emu, [("per_page", "10")])
        for order, served in (("asc", asc), ("desc", desc)):
            truth = served_order(emu.catalog, order, ties)
            assert served == [emu.catalog.image(p) for p in truth]
        assert [i["id"] for i in desc] != [i["id"] for i in asc][::-1]
        assert emu.settings == EmulatorSettings(images=3000, profile="nasty", tie_group=400)
