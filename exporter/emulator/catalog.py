"""A deterministic, deliberately nasty image catalog, pre-encoded for fast page serving.

Everything derives from `random.Random(seed)`, so the same (n, seed) gives the same bytes.
Images are kept sorted by the List V2 order key (uploaded, id) ascending; descending order is
the exact reverse. Each image is stored as its JSON bytes (orjson), so a page is a join.

Nastiness on purpose: `uploaded` ties (many images share a millisecond), custom ids with
slashes, unicode and 255-character filenames, creators null / "" / absent / set, meta absent
or `{}`, nested meta up to 6 levels, the same key with different JSON types across images,
keys with dots, spaces, upper case and unicode, keys colliding after naive flattening
(`{"a.b": 1}` beside `{"a": {"b": 2}}`, `Status` beside `status`), and meta near 1024 bytes.
Most images carry `status`, `priority` and `region.name` so filters have something to find.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

Image = dict[str, Any]
OrderKey = tuple[int, str]

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DELIVERY_HASH = "Zm9vYmFyLWVtdWxhdG9y"
VARIANTS = ("public", "thumbnail")
STATUSES = ("active", "active", "active", "pending", "deleted", "flagged", "archived")
REGIONS = ("eu-west", "us-east", "us-west", "ap-south", "eu-central")
# Millisecond steps between consecutive uploads: zeros make ties, big ones spread the days.
STEPS = (0, 0, 0, 0, 0, 1, 1, 7, 250, 1000, 60_000, 3_600_000)
CREATORS = (*(f"user-{k:03d}" for k in range(25)), "svc/importer", "Zoë")
FILENAME_SHAPES = (
    "IMG_{i:06d}.jpg",
    "photo-{i}.png",
    "café crème {i}.webp",
    "写真_{i}.jpeg",
    "emoji 🎉 {i}.gif",
    "dir/like/name-{i}.png",
    "UPPER_{i}.JPG",
)


@dataclass(frozen=True)
class Catalog:
    """An immutable catalog in (uploaded, id) ascending order, each image as JSON bytes."""

    keys: Sequence[OrderKey]
    blobs: Sequence[bytes]
    seed: int

    def __len__(self) -> int:
        return len(self.blobs)

    def iter_images(self) -> Iterator[Image]:
        """Yield every image dict, ascending, exactly as the API returns it."""
        for blob in self.blobs:
            yield orjson.loads(blob)

    def image(self, index: int) -> Image:
        """Return the image at an ascending position."""
        result: Image = orjson.loads(self.blobs[index])
        return result

    def position_after(self, key: OrderKey) -> int:
        """Return the ascending index of the first image whose key sorts after `key`."""
        return bisect.bisect_right(self.keys, key)

    def position_before(self, key: OrderKey) -> int:
        """Return one past the ascending index of the last image whose key sorts before `key`."""
        return bisect.bisect_left(self.keys, key)


def build_catalog(n: int, seed: int = 1) -> Catalog:
    """Return a catalog of `n` images generated deterministically from `seed`."""
    rng = random.Random(seed)
    rand = rng.random
    rows: list[tuple[int, str, bytes]] = []
    now = EPOCH_MS
    stamps: dict[int, str] = {}
    for i in range(n):
        now += STEPS[int(rand() * len(STEPS))]
        image_id = _image_id(rng, i)
        image = _image(rng, i, image_id, _uploaded_text(now, stamps))
        # Copy: orjson's result keeps a ~4 KiB buffer, which would multiply the memory by ten.
        rows.append((now, image_id, bytes(memoryview(orjson.dumps(image)))))
    rows.sort(key=lambda row: (row[0], row[1]))
    return Catalog(
        keys=[(row[0], row[1]) for row in rows],
        blobs=[row[2] for row in rows],
        seed=seed,
    )


def _uploaded_text(ms: int, cache: dict[int, str]) -> str:
    """Return RFC 3339 with milliseconds and Z; the seconds prefix is cached (ties share it)."""
    seconds, millis = divmod(ms, 1000)
    prefix = cache.get(seconds)
    if prefix is None:
        prefix = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cache.clear()  # timestamps only grow: one live entry is enough
        cache[seconds] = prefix
    return f"{prefix}.{millis:03d}Z"


def _image_id(rng: random.Random, i: int) -> str:
    """Return a UUID-like id, or (1 in 8) a custom id with slashes; unique through `i`."""
    if rng.random() < 0.125:
        shape = int(rng.random() * 3)
        if shape == 0:
            return f"users/{int(rng.random() * 500)}/avatar-{i}"
        if shape == 1:
            return f"shop/items/{i}/main"
        return f"folder with space/{i}"
    h = f"{rng.getrandbits(96):024x}{i:08x}"  # the index keeps ids unique
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _image(rng: random.Random, i: int, image_id: str, uploaded: str) -> Image:
    """Return one image dict in the API's field order, creator and meta sometimes absent."""
    image: Image = {"id": image_id, "filename": _filename(rng, i)}
    creator_roll = rng.random()
    if creator_roll < 0.1:
        image["creator"] = None
    elif creator_roll < 0.15:
        image["creator"] = ""
    elif creator_roll < 0.6:
        image["creator"] = _pick(rng, CREATORS)
    # else: the creator key is absent, as for images uploaded before the field existed
    meta = _meta(rng, i)
    if meta is not None:
        image["meta"] = meta
    image["requireSignedURLs"] = rng.random() < 0.2
    image["uploaded"] = uploaded
    base = f"https://imagedelivery.net/{DELIVERY_HASH}/{image_id}/"
    image["variants"] = [base + name for name in VARIANTS]
    return image


def _pick(rng: random.Random, seq: Sequence[Any]) -> Any:
    """Return a random element; 3x cheaper than Random.choice, which matters at 1M images."""
    return seq[int(rng.random() * len(seq))]


def _filename(rng: random.Random, i: int) -> str:
    if rng.random() < 0.002:
        return (f"long-{i}-" + "ä" * 255)[:255]
    shape: str = _pick(rng, FILENAME_SHAPES)
    return shape.format(i=i)


def _meta(rng: random.Random, i: int) -> dict[str, Any] | None:
    """Return the meta of one image: usually the common shape, sometimes a nasty one."""
    roll = rng.random()
    if roll < 0.08:
        return None
    if roll < 0.12:
        return {}
    meta = _common_meta(rng)
    if roll < 0.70:
        return meta
    nasty = NASTY_SHAPES[int(rng.random() * len(NASTY_SHAPES))]
    meta.update(nasty(rng, i))
    return meta


def _common_meta(rng: random.Random) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "status": _pick(rng, STATUSES),
        "priority": int(rng.random() * 10),
        "region": {"name": _pick(rng, REGIONS), "zone": 1 + int(rng.random() * 3)},
    }
    if rng.random() < 0.3:
        meta["ratings"] = 1 + int(rng.random() * 5)
    return meta


def _type_conflict(rng: random.Random, i: int) -> Mapping[str, Any]:
    """The same keys with every JSON type, and `priority` as float, text or bool."""
    choices: tuple[Any, ...] = (
        i,
        i + 0.5,
        f"s{i}",
        i % 2 == 0,
        [i, "x", None],
        {"nested": i},
        None,
    )
    priority: tuple[Any, ...] = (2.5, "5", True, None, [1, 2])
    return {"score": _pick(rng, choices), "priority": _pick(rng, priority)}


def _weird_keys(rng: random.Random, i: int) -> Mapping[str, Any]:
    return {
        "with space": f"v{i}",
        "UPPER": True,
        "ключ": "значение",
        "emoji🔑": "✓",
        "Status": _pick(rng, ("Active", "DELETED")),  # collides with status, case folded
        "": "empty key",
    }


def _flatten_collision(rng: random.Random, i: int) -> Mapping[str, Any]:
    return {"a.b": i, "a": {"b": -i, "c": "x"}, "a__b": "dunder", "A": {"B": 0.25}}


def _deep(rng: random.Random, i: int) -> Mapping[str, Any]:
    """Five levels (the filter limit), and half the time a sixth level beside it."""
    level4: dict[str, Any] = {"l5": f"deep-{i}"}
    if rng.random() < 0.5:
        level4["l5x"] = {"l6": i}  # one level past the filters' reach
    return {"l1": {"l2": {"l3": {"l4": level4}}}}


def _near_limit(rng: random.Random, i: int) -> Mapping[str, Any]:
    """Meta whose whole JSON encoding lands between 990 and 1024 bytes."""
    return {"blob": "x" * (880 + int(rng.random() * 20)), "note": f"near-limit-{i}"}


def _numbers(rng: random.Random, i: int) -> Mapping[str, Any]:
    return {
        "big": 2**53 + i,
        "negative": -int(rng.random() * 10**6),
        "tiny": 1e-300,
        "ratio": rng.random(),
        "enabled": rng.random() < 0.5,
    }


NASTY_SHAPES = (_type_conflict, _weird_keys, _flatten_collision, _deep, _near_limit, _numbers)
