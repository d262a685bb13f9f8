"""Field edits of an image, packed in one int (`spec`), and how two versions differ.

A spec holds one 8-bit version per editable field (`FIELDS`, the names of DESIGN's
`changed_fields`); version 0 is the image as generated. Version v of a field is a pure
function of (seed, gen, v), so any image at any night renders the same bytes again. The edits
are nasty on purpose: a creator edited to null where it was absent (no change), `priority`
edited from 1 to 1.0 to "1" to true (each a change: JSON types are kept), a meta whose keys
are only reordered (no change), meta edited to `{}` and removed.

One more version, `extra`, counts edits of the fields the reference does not list; those
fields are spliced in when a catalog renders with `extras` on (see `extras`), so
`apply_edits` leaves them alone.

`changed_fields(before, after)` is the truth: it compares rendered images under DESIGN's
rules ("Decisions for change data"), so a no-op edit is never recorded as a change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from exporter.emulator.extras import extras_of
from exporter.emulator.render import Image

FIELDS = ("filename", "creator", "require_signed_urls", "variants", "meta")
EXTRA = "extra"  # the version of the extra fields (see `extras`), edited only when served
_SLOTS = (*FIELDS, EXTRA)  # a spec's bytes, in this order
COMPARED = ("filename", "creator", "require_signed_urls", "uploaded", "variants", "meta", EXTRA)
_API_NAME = {"require_signed_urls": "requireSignedURLs"}
_ABSENT = object()


def field_version(spec: int, field: str) -> int:
    """Return how many times `field` was edited (mod 256) in a spec."""
    return (spec >> (8 * _SLOTS.index(field))) & 0xFF


def bump(spec: int, field: str) -> int:
    """Return the spec with one more edit of `field` (wrapping past 255 to 1, never to 0)."""
    shift = 8 * _SLOTS.index(field)
    version = ((spec >> shift) & 0xFF) % 255 + 1
    return (spec & ~(0xFF << shift)) | (version << shift)


def apply_edits(blob: bytes, seed: int, gen: int, spec: int) -> bytes:
    """Return the JSON bytes of an image after the edits a spec names."""
    image = orjson.loads(blob)
    for field in FIELDS:
        version = field_version(spec, field)
        if version:
            _EDITORS[field](image, gen, version)
    return orjson.dumps(image)


def _filename(image: Image, gen: int, version: int) -> None:
    image["filename"] = f"edited-v{version}-{image['filename']}"[:255]


def _creator(image: Image, gen: int, version: int) -> None:
    kind = ("set", "empty", "set", "null", "set", "absent")[(gen + version) % 6]
    _put_before(image, "creator", "meta" if "meta" in image else "requireSignedURLs", None)
    if kind == "absent":
        del image["creator"]
    elif kind == "set":
        image["creator"] = f"editor-{(gen + version) % 97}"
    else:
        image["creator"] = "" if kind == "empty" else None


def _signed(image: Image, gen: int, version: int) -> None:
    if version % 2:
        image["requireSignedURLs"] = not image["requireSignedURLs"]


def _variants(image: Image, gen: int, version: int) -> None:
    base = image["variants"][0].rsplit("/", 1)[0]
    image["variants"] = [*image["variants"], f"{base}/w{100 * version}"]


def _meta(image: Image, gen: int, version: int) -> None:
    step = (version - 1) % 8
    meta = image.get("meta")
    base: dict[str, Any] = dict(meta) if isinstance(meta, dict) else {}
    if step == 5:
        new: dict[str, Any] | None = {}
    elif step == 6:
        new = None
    elif step == 7:
        new = {**base, "edited": version}
    else:
        priority = (1, 1.0, 1.0, "1", True)[step]
        new = {**base, "priority": priority}
        if step == 2:  # the keys of step 1 in reverse order: not a change
            new = dict(reversed(list(new.items())))
    if new is None:
        image.pop("meta", None)
    else:
        _put_before(image, "meta", "requireSignedURLs", new)


def _put_before(image: Image, key: str, before: str, value: Any) -> None:
    """Set `key`, inserting it before `before` when new, to keep the API's field order."""
    if key in image:
        image[key] = value
        return
    items = list(image.items())
    at = next((i for i, (k, _) in enumerate(items) if k == before), len(items))
    items.insert(at, (key, value))
    image.clear()
    image.update(items)


_EDITORS: dict[str, Callable[[Image, int, int], None]] = {
    "filename": _filename,
    "creator": _creator,
    "require_signed_urls": _signed,
    "variants": _variants,
    "meta": _meta,
}


def changed_fields(before: Image, after: Image) -> tuple[str, ...]:
    """Return the fields (DESIGN's names) whose values differ, as a warehouse compares them.

    `creator` absent equals null, `""` differs; `meta` absent equals null, `{}` differs, and
    compares as a JSON value with types kept and key order ignored; so does `extra`, the
    image's fields the reference does not list, as one object (none: null).
    """
    return tuple(f for f in COMPARED if _comparable(before, f) != _comparable(after, f))


def _comparable(image: Image, field: str) -> Any:
    if field == EXTRA:
        return orjson.dumps(extras_of(image), option=orjson.OPT_SORT_KEYS)
    value = image.get(_API_NAME.get(field, field))
    if field == "meta":
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return value
