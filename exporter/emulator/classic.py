"""The `classic` profile: the default catalog, deterministic and deliberately nasty.

Everything derives from `random.Random(seed)`, so the same (n, seed) gives the same bytes.
Each image is generated once and stored as its JSON bytes (orjson), indexed by its generation
number `gen`; `Catalog` orders them. Fine up to a few hundred thousand images (about 1.3 KB of
memory each); the `nasty` profile renders on demand and scales to millions.

Nastiness on purpose: `uploaded` ties (many images share a millisecond), custom ids with
slashes, unicode and 255-character filenames, creators null / "" / absent / set, meta absent
or `{}`, nested meta up to 6 levels, the same key with different JSON types across images,
keys with dots, spaces, upper case and unicode, keys colliding after naive flattening
(`{"a.b": 1}` beside `{"a": {"b": 2}}`, `Status` beside `status`), and meta near 1024 bytes.
Most images carry `status`, `priority` and `region.name` so filters have something to find.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from exporter.emulator.render import EPOCH_MS, Image, bulk_range, format_uploaded

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


class ClassicProfile:
    """The original catalog: each image generated once, eagerly, kept as JSON bytes by gen."""

    name = "classic"

    def __init__(self, n: int, seed: int, tie_group: int = 0) -> None:
        rng = random.Random(seed)
        rand = rng.random
        self.seed = seed
        self._ids: list[str] = []
        self._blobs: list[bytes] = []
        self._uploaded = array("q")
        self._extra: dict[int, tuple[str, Image]] = {}
        bulk = bulk_range(n, tie_group)
        now = EPOCH_MS
        stamps: dict[int, str] = {}
        for i in range(n):
            step = STEPS[int(rand() * len(STEPS))]
            if i not in bulk or i == bulk.start:
                now += step
            image_id = _image_id(rng, i)
            image = _image(rng, i, image_id, _uploaded_text(now, stamps))
            self._ids.append(image_id)
            self._uploaded.append(now)
            # Copy: orjson's result keeps a ~4 KiB buffer, which would multiply the memory by ten.
            self._blobs.append(bytes(memoryview(orjson.dumps(image))))

    def __len__(self) -> int:
        return len(self._blobs)

    def base_uploaded(self, gen: int) -> int:
        """Return the upload instant (ms) of a generated image; non-decreasing in `gen`."""
        return self._uploaded[gen]

    def image_id(self, gen: int) -> str:
        """Return the id of image `gen` (any gen: later ones are uploads)."""
        if gen < len(self._ids):
            return self._ids[gen]
        return self._later(gen)[0]

    def render(self, gen: int, uploaded_ms: int) -> bytes:
        """Return the JSON bytes of image `gen` as uploaded at `uploaded_ms`."""
        if gen < len(self._blobs) and uploaded_ms == self._uploaded[gen]:
            return self._blobs[gen]
        if gen < len(self._blobs):
            image = orjson.loads(self._blobs[gen])
        else:
            image = dict(self._later(gen)[1])
        image["uploaded"] = format_uploaded(uploaded_ms)
        return orjson.dumps(image)

    def _later(self, gen: int) -> tuple[str, Image]:
        """Return the id and image of an upload after the build, from its own seeded stream."""
        found = self._extra.get(gen)
        if found is None:
            rng = random.Random(f"classic-upload:{self.seed}:{gen}")
            image_id = _image_id(rng, gen)
            found = self._extra[gen] = (image_id, _image(rng, gen, image_id, ""))
        return found


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
