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
_TEAMS = tuple(orjson.dumps(team) for team in TEAMS)
_SALT = 0x6578747261  # "extra"


def extra_members(seed: int, gen: int, version: int) -> bytes:
    """Return the extra fields image `gen` carries at `version` of its `extra` edits, as JSON
    object members (`"k":v,...`; b"" for none), formatted directly: this runs per image
    served, and a dict through orjson cost the nasty catalog ~30% of its render rate."""
    h = mix((seed << 20) ^ gen ^ _SALT)
    parts = []
    if h & 3:
        parts.append(b'"sizeBytes":%d' % (2**31 + (h >> 2) % 2**40 + 7_919 * version))
    elif version:
        parts.append(b'"sizeBytes":%d' % (2**32 + version))
    if (h >> 9) % 3 == 0:
        parts.append(b'"draft":true' if (h >> 8) & 1 else b'"draft":false')
    if (h >> 24) % 5 == 0:
        score = (h >> 16) % 100
        text = b"%d.5" % score if score & 1 else b"%d" % score  # an int or a float
        parts.append(b'"labels":{"team":%s,"score":%s}' % (_TEAMS[(h >> 12) % 4], text))
    if (h >> 32) % 7 == 0:
        parts.append(b'"deprecated":null')
    if version:
        parts.append(b'"reviewed":{"by":"editor-%d","round":%d}' % ((gen + version) % 13, version))
    return b",".join(parts)


def splice(blob: bytes, members: bytes) -> bytes:
    """Return an image's JSON bytes with `members` appended as its last top-level members."""
    if not members:
        return blob
    return blob[:-1] + b"," + members + b"}"


def extras_of(image: Image) -> dict[str, Any] | None:
    """Return an image's fields the reference does not list (None when it has none)."""
    found = {key: value for key, value in image.items() if key not in LISTED}
    return found or None
