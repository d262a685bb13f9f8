"""The seeded catalog: deterministic, ordered, and as nasty as promised."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import orjson
import pytest

from exporter.emulator import Catalog, build_catalog

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return build_catalog(4000, seed=7)


def _leaf_paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in _leaf_paths(v, (*prefix, k))]
    return [(prefix, node)]


class TestDeterminism:
    def test_same_seed_same_bytes(self) -> None:
        """Two builds with one seed are byte-identical."""
        first, second = build_catalog(500, seed=3), build_catalog(500, seed=3)
        assert list(first.blobs) == list(second.blobs)
        assert list(first.keys) == list(second.keys)

    def test_other_seed_other_catalog(self) -> None:
        """Another seed gives another catalog."""
        assert list(build_catalog(500, seed=3).blobs) != list(build_catalog(500, seed=4).blobs)

    def test_prefix_stable(self) -> None:
        """A bigger catalog of the same seed extends the smaller one's generation."""
        small = {orjson.loads(b)["id"] for b in build_catalog(200, seed=5).blobs}
        big = {orjson.loads(b)["id"] for b in build_catalog(400, seed=5).blobs}
        assert small <= big


class TestOrder:
    def test_sorted_by_uploaded_then_id(self, catalog: Catalog) -> None:
        """Keys ascend strictly by (uploaded, id) and match each image's own fields."""
        images = list(catalog.iter_images())
        assert len(images) == len(catalog) == 4000
        assert list(catalog.keys) == sorted(catalog.keys)
        assert len(set(catalog.keys)) == len(catalog)
        assert [img["id"] for img in images] == [key[1] for key in catalog.keys]
        assert [img["uploaded"] for img in images] == sorted(img["uploaded"] for img in images)

    def test_many_ties(self, catalog: Catalog) -> None:
        """Many images share an upload millisecond, some in groups of five or more."""
        ties = Counter(key[0] for key in catalog.keys)
        tied = sum(count for count in ties.values() if count > 1)
        assert tied > len(catalog) // 3
        assert max(ties.values()) >= 5


class TestShape:
    def test_api_fields(self, catalog: Catalog) -> None:
        """Every image has the API's fields, uploaded with milliseconds and Z."""
        for image in catalog.iter_images():
            assert {"id", "filename", "requireSignedURLs", "uploaded", "variants"} <= set(image)
            assert set(image) <= {"id", "filename", "creator", "meta", "requireSignedURLs",
                                  "uploaded", "variants"}  # fmt: skip
            assert RFC3339_MS.match(image["uploaded"])
            assert all(image["id"] in url for url in image["variants"])
            assert len(image["filename"]) <= 255

    def test_meta_within_api_limit(self, catalog: Catalog) -> None:
        """Meta never exceeds 1024 bytes, and some images come within 40 bytes of it."""
        sizes = [len(orjson.dumps(img["meta"])) for img in catalog.iter_images() if "meta" in img]
        assert max(sizes) <= 1024
        assert sum(size >= 984 for size in sizes) >= 5


class TestNastiness:
    def test_creators(self, catalog: Catalog) -> None:
        """Creators are absent, null, empty, and set."""
        kinds = Counter(
            "absent" if "creator" not in img else repr(img["creator"])[:5]
            for img in catalog.iter_images()
        )
        assert kinds["absent"] and kinds["None"] and kinds["''"]
        assert sum(kinds.values()) - kinds["absent"] - kinds["None"] - kinds["''"] > 100

    def test_meta_presence(self, catalog: Catalog) -> None:
        """Meta is sometimes absent and sometimes an empty object."""
        images = list(catalog.iter_images())
        assert any("meta" not in img for img in images)
        assert any(img.get("meta") == {} for img in images)

    def test_ids_and_filenames(self, catalog: Catalog) -> None:
        """Custom ids contain slashes; filenames contain non-ASCII text."""
        images = list(catalog.iter_images())
        assert sum("/" in img["id"] for img in images) > 100
        assert sum(not img["filename"].isascii() for img in images) > 100

    def test_type_conflicts(self, catalog: Catalog) -> None:
        """One key holds every JSON type across images; priority is not always an int."""
        score_types = {
            type(img["meta"]["score"]).__name__
            for img in catalog.iter_images()
            if "score" in img.get("meta", {})
        }
        assert score_types == {"int", "float", "str", "bool", "list", "dict", "NoneType"}
        priority_types = {
            type(img["meta"]["priority"]).__name__
            for img in catalog.iter_images()
            if "priority" in img.get("meta", {})
        }
        assert {"int", "float", "str", "bool"} <= priority_types

    def test_hostile_keys(self, catalog: Catalog) -> None:
        """Keys with dots, spaces, upper case and unicode, and flattening collisions, exist."""
        keys = {k for img in catalog.iter_images() for k in img.get("meta", {})}
        assert {"a.b", "a", "with space", "UPPER", "ключ", "Status", "status"} <= keys
        both = [
            img["meta"]
            for img in catalog.iter_images()
            if "a.b" in img.get("meta", {}) and "a" in img["meta"]
        ]
        assert both and isinstance(both[0]["a"], dict) and "b" in both[0]["a"]

    def test_depth(self, catalog: Catalog) -> None:
        """Meta nests to five levels, and a little beyond."""
        depths = {
            len(path)
            for img in catalog.iter_images()
            for path, _ in _leaf_paths(img.get("meta", {}))
        }
        assert {5, 6} <= depths

    def test_common_fields_for_filters(self, catalog: Catalog) -> None:
        """Most images carry status, priority and region.name."""
        common = [
            img
            for img in catalog.iter_images()
            if {"status", "priority"} <= set(img.get("meta", {}))
            and isinstance(img["meta"].get("region"), dict)
        ]
        assert len(common) > len(catalog) // 2
