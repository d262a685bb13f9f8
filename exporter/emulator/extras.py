"""Top-level fields the reference does not list, as the API may add them at any time.

With `extra_fields` on (the default of the `nasty` profile), images carry fields beyond the
seven the reference lists (`LISTED`), spliced in after them. What an image carries is a pure
function of (seed, gen, version), version being the `extra` edit count of its spec:

* version 0 (as generated): `sizeBytes` (beyond 2**31, on 3 in 4 images), `draft` (a bool,
  on 1 in 3), `labels` (an object; its `score` an int or a float, a type conflict to widen),
  `deprecated` (null, on 1 in 7: kept in `extra_json`, types no column);
* version v >= 1 (an edit of some night): `sizeBytes` changes and `reviewed` appears
  (`{"by": ..., "round": v}`), a field nobody saw before the first night that edits `extra`
  (night 1 of the default plan): drift must name it that night.

An image with none of them (version 0, 1 in 4 with no `sizeBytes` and no other draw) is
sent with the listed fields only.
"""

from __future__ import annotations

from typing import Any

import orjson

from exporter.emulator.render import Image, mix

# The fields the reference lists (List V2's image object); any other is an extra.
LISTED = frozenset(
    {"id", "filename", "creator", "meta", "requireSignedURLs", "uploaded", "variants"}
)
TEAMS = ("search", "growth", "Zoë's team", "ops")
_SALT = 0x6578747261  # "extra"


def extra_fields(seed: int, gen: int, version: int) -> dict[str, Any]:
    """Return the extra fields image `gen` carries at `version` of its `extra` edits."""
    h = mix((seed << 20) ^ gen ^ _SALT)
    fields: dict[str, Any] = {}
    if h & 3:
        fields["sizeBytes"] = 2**31 + (h >> 2) % 2**40 + 7_919 * version
    elif version:
        fields["sizeBytes"] = 2**32 + version
    if (h >> 9) % 3 == 0:
        fields["draft"] = bool((h >> 8) & 1)
    if (h >> 24) % 5 == 0:
        score = (h >> 16) % 100
        labels: dict[str, Any] = {"team": TEAMS[(h >> 12) % 4]}
        labels["score"] = score + 0.5 if score & 1 else score
        fields["labels"] = labels
    if (h >> 32) % 7 == 0:
        fields["deprecated"] = None
    if version:
        fields["reviewed"] = {"by": f"editor-{(gen + version) % 13}", "round": version}
    return fields


def splice(blob: bytes, fields: dict[str, Any]) -> bytes:
    """Return an image's JSON bytes with `fields` appended as its last top-level members."""
    if not fields:
        return blob
    return blob[:-1] + b"," + orjson.dumps(fields)[1:]


def extras_of(image: Image) -> dict[str, Any] | None:
    """Return an image's fields the reference does not list (None when it has none)."""
    found = {key: value for key, value in image.items() if key not in LISTED}
    return found or None
