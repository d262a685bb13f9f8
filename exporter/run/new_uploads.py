"""The pure plan of one batch of new uploads (DESIGN "New uploads between snapshots").

Base and watermark. D is the latest published snapshot of the request; the watermark W is the
newest `uploaded` in D's manifest and in the manifests of D's published batches. The batch
takes every image with `uploaded >= cutoff = W - lag` whose id is in neither D nor an earlier
batch of D: uploads listed late (a direct upload that becomes listable after images uploaded
later than it) are caught when their `uploaded` is within `lag` of the watermark; older ones
wait for the next snapshot.

The walk (`BatchWalk`) is one desc cursor from the newest image, fed page by page:
- Stop by instant. A desc cursor serves every instant at or after the cutoff before any
  instant before it, so once a page's last image lies before the cutoff, every image at or
  after it has been served, whatever order the API gives the images of one instant (which it
  never promised, DESIGN "What the API leaves unsaid"). That page's images at or after the
  cutoff still count; the walk sends no further request.
- De-duplicate by id. `known` holds the ids of D and of earlier batches uploaded at or after
  the cutoff (the caller reads only those, so memory follows the lag window, not the catalog),
  and the walk adds every id it takes: an id served twice (a cursor may repeat one) is
  dropped, counted in `repeats`.
- Requests: about `new images / per_page + 1`.

`state()` is JSON (plan, token, ids taken) for the checkpoint; `BatchWalk.from_state` resumes
the cursor after the last page whose images are in committed parts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from exporter.api.pagination import Image, Page, uploaded_key

if TYPE_CHECKING:
    from exporter.snapshot.manifest import Manifest

STATE_KIND = "new_uploads"


@dataclass(frozen=True)
class BatchPlan:
    """What one batch follows: base snapshot D, its watermark W, the lag, the earlier batches."""

    base: str  # D, the snapshot date
    watermark: dt.datetime
    lag_s: float
    batches: tuple[str, ...] = ()  # D's published batches, oldest first

    @property
    def cutoff(self) -> dt.datetime:
        """Return `W - lag`: the oldest `uploaded` this batch takes."""
        return self.watermark - dt.timedelta(seconds=self.lag_s)

    def describe(self) -> dict[str, Any]:
        """Return the plan as JSON-ready data (the manifest, `--dry-run`, the log)."""
        return {
            "base_snapshot": self.base,
            "watermark": _rfc3339(self.watermark),
            "lag_s": self.lag_s,
            "cutoff": _rfc3339(self.cutoff),
            "earlier_batches": list(self.batches),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BatchPlan:
        return cls(
            base=str(data["base_snapshot"]),
            watermark=_parse(str(data["watermark"])),
            lag_s=float(data["lag_s"]),
            batches=tuple(str(b) for b in data.get("earlier_batches", [])),
        )


def watermark(manifests: Iterable[Manifest]) -> dt.datetime | None:
    """Return the newest `uploaded.max` among manifests (D's and its batches'), None if none."""
    found = [_parse(m.uploaded.max) for m in manifests if m.uploaded.max]
    return max(found, default=None)


def plan_batch(base: Manifest, batches: Sequence[Manifest], lag_s: float) -> BatchPlan:
    """Return the plan of the next batch after snapshot `base` and its published `batches`.

    An empty snapshot has no watermark: every image of the catalog is then a new upload
    (the cutoff is the earliest instant there is).
    """
    mark = watermark([base, *batches])
    if mark is None:
        mark = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=lag_s)
    names = tuple(b.new_uploads.batch if b.new_uploads else "" for b in batches)
    return BatchPlan(base.snapshot_date, mark, lag_s, names)


@dataclass
class BatchWalk:
    """One desc cursor's progress over the lag window: token, ids taken, whether it is done."""

    plan: BatchPlan
    known: set[str] = field(repr=False)
    token: str | None = None
    done: bool = False
    taken: set[str] = field(default_factory=set, repr=False)
    repeats: int = 0

    def feed(self, page: Page, url: str = "") -> list[Image]:
        """Return the page's new uploads; advance the cursor; stop past the cutoff."""
        cutoff, new = self.plan.cutoff, []
        for image in page.images:
            if uploaded_key(image, url) < cutoff:
                continue
            image_id = str(image.get("id"))
            if image_id in self.taken:
                self.repeats += 1
            elif image_id not in self.known:
                self.taken.add(image_id)
                new.append(image)
        self.token = page.next_token
        past = bool(page.images) and uploaded_key(page.images[-1], url) < cutoff
        self.done = past or page.next_token is None
        return new

    def state(self) -> dict[str, Any]:
        """Return the checkpointable state: the plan, the cursor, the ids taken so far."""
        return {
            "kind": STATE_KIND,
            "plan": self.plan.describe(),
            "token": self.token,
            "done": self.done,
            "taken": sorted(self.taken),
            "repeats": self.repeats,
        }

    @classmethod
    def from_state(cls, data: Mapping[str, Any], known: set[str]) -> BatchWalk:
        if data.get("kind") != STATE_KIND:
            raise ValueError("not the state of a new-uploads walk")
        return cls(
            plan=BatchPlan.from_dict(data["plan"]),
            known=known,
            token=data.get("token"),
            done=bool(data.get("done")),
            taken=set(data.get("taken", [])),
            repeats=int(data.get("repeats", 0)),
        )


def _parse(text: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
