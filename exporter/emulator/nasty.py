"""The `nasty` profile: the benchmark catalog, rendered on demand so it scales to millions.

At least as nasty as the catalog the figures in docs/PERFORMANCE.md were measured on, on purpose:

* meta close to the API's 1024-byte limit on ~12% of images (990..1024 bytes of JSON);
* about 40 distinct flattened meta columns, with type conflicts (`priority` an int, a float,
  a numeric string or a bool; `score` every JSON type), hostile keys (dots, spaces, case
  collisions, unicode, the empty key), flattening collisions and six levels of nesting;
* 5% of the images on one `uploaded` instant (one tie group a third of the way in), plus
  `tie_group` images of a bulk import on another instant (two thirds of the way in); served
  ties by a seeded hash of the id by default (`exporter.emulator.ties`);
* the classic catalog's other traits: custom ids with slashes, unicode and 255-character
  filenames, creators null / "" / absent / set, meta absent or `{}`.

Nothing per image is stored but its upload instant: image `gen` is a pure function of
(seed, gen), drawn with `mix()` hashes (a `random.Random` per image would cost 13 us). Meta
comes from a pool of 4096 pre-encoded objects, each made unique per image by a leading `seq`
key, so no two images share a `meta_json`.
"""

from __future__ import annotations

import random
from array import array
from typing import Any

import orjson

from exporter.emulator.render import EPOCH_MS, bulk_range, format_uploaded, mix

TIE_SHARE = 0.05  # of the images on the one big `uploaded` instant
META_POOL = 4096
BIG_META_SHARE = 0.12
STEPS = (0, 0, 0, 0, 0, 1, 1, 7, 250, 1000, 60_000, 3_600_000)
DELIVERY_HASH = "Zm9vYmFyLWVtdWxhdG9y"
CREATORS = (*(f"user-{k:03d}" for k in range(25)), "svc/importer", "Zoë")
FILENAMES = (
    "IMG_{i:06d}.jpg",
    "photo-{i}.png",
    "café crème {i}.webp",
    "写真_{i}.jpeg",
    "emoji 🎉 {i}.gif",
    "dir/like/name-{i}.png",
    "UPPER_{i}.JPG",
)
STATUSES = ("active", "active", "active", "pending", "deleted", "flagged", "archived")
REGIONS = ("eu-west", "us-east", "us-west", "ap-south", "eu-central")
TEXT = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789 -_.,;:!? éüñ中文ß"


class NastyProfile:
    """Images of the nasty catalog, each rendered from (seed, gen) when served."""

    name = "nasty"

    def __init__(self, n: int, seed: int, tie_group: int = 0) -> None:
        self.seed = seed
        self._salt = mix(seed * 0x100000001B3 + 0x6E61737479)
        self._meta = _meta_pool(random.Random(f"nasty-meta:{seed}"))
        self._uploaded = _instants(n, self._salt, tie_group)

    def __len__(self) -> int:
        return len(self._uploaded)

    def base_uploaded(self, gen: int) -> int:
        """Return the upload instant (ms) of a generated image; non-decreasing in `gen`."""
        return self._uploaded[gen]

    def image_id(self, gen: int) -> str:
        """Return a UUID-like id, or (1 in 8) a custom id with slashes; unique through `gen`."""
        return _image_id(mix(self._salt ^ gen), gen).decode()

    def render(self, gen: int, uploaded_ms: int) -> bytes:
        """Return the JSON bytes of image `gen` as uploaded at `uploaded_ms`."""
        h = mix(self._salt ^ gen)
        image_id = _image_id(h, gen)
        minute, rest = divmod(uploaded_ms, 60_000)
        prefix = _MINUTES.get(minute)
        if prefix is None:
            prefix = _minute_prefix(minute)
        second, millis = divmod(rest, 1000)
        filename = _filename(h, gen)
        creator = _CREATORS[(h >> 8) & 0xFF]
        signed = b"true" if (h >> 40) % 5 == 0 else b"false"
        meta = self._meta[(h >> 24) % META_POOL]
        if meta is None:
            return _NO_META % (
                image_id,
                filename,
                creator,
                signed,
                prefix,
                second,
                millis,
                image_id,
                image_id,
            )
        if not meta:
            return _EMPTY_META % (
                image_id,
                filename,
                creator,
                signed,
                prefix,
                second,
                millis,
                image_id,
                image_id,
            )
        return _META % (
            image_id,
            filename,
            creator,
            gen,
            meta,
            signed,
            prefix,
            second,
            millis,
            image_id,
            image_id,
        )


_HEAD = b'{"id":"%s","filename":%s%s'
_TAIL = (
    b',"requireSignedURLs":%s,"uploaded":"%s%02d.%03dZ","variants":['
    b'"https://imagedelivery.net/' + DELIVERY_HASH.encode() + b'/%s/public",'
    b'"https://imagedelivery.net/' + DELIVERY_HASH.encode() + b'/%s/thumbnail"]}'
)
_META = _HEAD + b',"meta":{"seq":%d,%s' + _TAIL  # the pool's object minus its "{"
_EMPTY_META = _HEAD + b',"meta":{}' + _TAIL
_NO_META = _HEAD + _TAIL
# The creator part by one byte of the hash: null 10%, "" 5%, set 45%, absent 40%.
_CREATORS = tuple(
    b',"creator":null'
    if b < 26
    else b',"creator":""'
    if b < 38
    else b',"creator":' + orjson.dumps(CREATORS[b % len(CREATORS)])
    if b < 154
    else b""
    for b in range(256)
)
_FILENAMES = tuple(orjson.dumps(shape).replace(b"{i:06d}", b"%06d").replace(b"{i}", b"%d")
                   for shape in FILENAMES)  # fmt: skip
_MINUTES: dict[int, bytes] = {}


def _minute_prefix(minute: int) -> bytes:
    """Return `YYYY-MM-DDTHH:MM:` of a minute since the epoch, cached (neighbours share it)."""
    if len(_MINUTES) > 4096:
        _MINUTES.clear()
    prefix = _MINUTES[minute] = format_uploaded(minute * 60_000)[:-7].encode()
    return prefix


def _image_id(h: int, gen: int) -> bytes:
    """Return the id as bytes: UUID-like, or (1 in 8) custom with slashes; unique by `gen`."""
    if h & 7 == 0:
        shape = (h >> 3) % 3
        if shape == 0:
            return b"users/%d/avatar-%d" % ((h >> 8) % 500, gen)
        if shape == 1:
            return b"shop/items/%d/main" % gen
        return b"folder with space/%d" % gen
    return _UUID % (h >> 32, (h >> 16) & 0xFFFF, h & 0xFFFF, 0x8000 | gen >> 48, gen & _LOW48)


_UUID = b"%08x-%04x-%04x-%04x-%012x"
_LOW48 = (1 << 48) - 1


def _instants(n: int, salt: int, tie_group: int) -> array[int]:
    """Return the upload instants by gen: seeded steps, the 5% tie group and the bulk import."""
    bulk = bulk_range(n, tie_group)
    ties = int(n * TIE_SHARE)
    tied = range(n // 3, n // 3 + ties) if not bulk or bulk.start >= n // 3 + ties else range(0)
    instants = array("q", bytes(8 * n))
    now = EPOCH_MS
    steps = len(STEPS)
    for gen in range(n):
        if not ((gen in bulk and gen != bulk.start) or (gen in tied and gen != tied.start)):
            now += STEPS[mix(salt + gen) % steps]
        instants[gen] = now
    return instants


def _filename(h: int, gen: int) -> bytes:
    """Return the filename as JSON text: one of the shapes, or (1 in 500) 255 characters."""
    if (h >> 44) % 500 == 0:
        return orjson.dumps((f"long-{gen}-" + "ä" * 255)[:255])
    return _FILENAMES[(h >> 48) % len(_FILENAMES)] % gen


def _meta_pool(rng: random.Random) -> list[bytes | None]:
    """Return the pool of metas: absent (None), `{}` (b""), else JSON minus its leading "{"."""
    pool: list[bytes | None] = []
    for index in range(META_POOL):
        roll = rng.random()
        if roll < 0.06:
            pool.append(None)
        elif roll < 0.09:
            pool.append(b"")  # renders as {}
        elif roll < 0.09 + BIG_META_SHARE:
            pool.append(_near_limit(rng, index)[1:])
        else:
            pool.append(orjson.dumps(_ordinary(rng, index))[1:])
    return pool


def _common(rng: random.Random) -> dict[str, Any]:
    priority: Any = int(rng.random() * 10)
    if rng.random() < 0.08:
        priority = rng.choice((2.5, "5", True, 7.0))
    return {
        "status": rng.choice(STATUSES),
        "priority": priority,
        "region": {"name": rng.choice(REGIONS), "zone": 1 + int(rng.random() * 3)},
    }


def _ordinary(rng: random.Random, index: int) -> dict[str, Any]:
    """Return a common meta, often with optional groups, sometimes with a nasty shape."""
    meta = _common(rng)
    if rng.random() < 0.3:
        meta["ratings"] = 1 + int(rng.random() * 5)
    if rng.random() < 0.3:
        meta["camera"] = {
            "make": rng.choice(("Canon", "Nikon", "Sony", "Fujifilm")),
            "model": f"M{int(rng.random() * 90)}",
            "iso": rng.choice((100, 200, 400, 800, 3200)),
            "exposure": rng.choice((0.004, 0.008, 0.0166, 1 / 3)),
        }
    if rng.random() < 0.2:
        meta["geo"] = {
            "lat": round(rng.uniform(-90, 90), 6),
            "lon": round(rng.uniform(-180, 180), 6),
        }
    if rng.random() < 0.2:
        meta["tags"] = [rng.choice(("a", "b", "sale", "新", "x y")) for _ in range(3)]
    if rng.random() < 0.15:
        meta["license"] = rng.choice(("cc-by", "cc0", "proprietary"))
    if rng.random() < 0.4:
        meta["width"], meta["height"] = rng.choice(((1920, 1080), (800, 600), (4000, 3000)))
    if rng.random() < 0.35:
        meta.update(rng.choice(SHAPES)(rng, index))
    return meta


def _near_limit(rng: random.Random, index: int) -> bytes:
    """Return a meta whose JSON, with a `seq` of up to 7 digits, is 990..1024 bytes."""
    meta = _common(rng)
    meta["tags"] = ["import", f"batch-{index}"]
    meta["description"] = ""
    room = 1008 - len(orjson.dumps(meta)) - int(rng.random() * 24)
    text = "".join(rng.choices(TEXT, k=room))
    while len(text.encode()) > room:
        text = text[:-1]
    meta["description"] = text
    return orjson.dumps(meta)


def _type_conflict(rng: random.Random, i: int) -> dict[str, Any]:
    choices: tuple[Any, ...] = (i, i + 0.5, f"s{i}", i % 2 == 0, [i, "x", None], {"nested": i})
    return {"score": rng.choice((*choices, None))}


def _weird_keys(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "with space": f"v{i}",
        "UPPER": True,
        "ключ": "значение",
        "emoji🔑": "✓",
        "Status": rng.choice(("Active", "DELETED")),
        "": "empty key",
    }


def _flatten_collision(rng: random.Random, i: int) -> dict[str, Any]:
    return {"a.b": i, "a": {"b": -i, "c": "x"}, "a__b": "dunder", "A": {"B": 0.25}}


def _deep(rng: random.Random, i: int) -> dict[str, Any]:
    level4: dict[str, Any] = {"l5": f"deep-{i}"}
    if rng.random() < 0.5:
        level4["l5x"] = {"l6": i}
    return {"l1": {"l2": {"l3": {"l4": level4}}}}


def _numbers(rng: random.Random, i: int) -> dict[str, Any]:
    return {
        "big": 2**53 + i,
        "negative": -int(rng.random() * 10**6),
        "tiny": 1e-300,
        "ratio": rng.random(),
        "enabled": rng.random() < 0.5,
    }


SHAPES = (_type_conflict, _weird_keys, _flatten_collision, _deep, _numbers)
