"""Run counters shared by the walker, the pipeline and the progress display."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Fields that are no counter: neither in the manifest's `counts` nor in a checkpoint's.
NOT_COUNTS = (
    "current_wait",
    "batch_refusal",
    "extra",
    "committed_images",
    "committed_pages",
    "publishing",
    "concluding",
    "began",
)


@dataclass
class RunStats:
    """Mutable counters of one export run; the manifest and the summary read them.

    Each counter has one writer, named beside it, so nothing is counted twice; `restore` only
    reloads a checkpoint's counts before a resumed run goes on.
    """

    images: int = 0  # pipeline: rows written
    pages: int = 0  # pipeline: pages written
    requests: int = 0  # client: requests sent
    retries: int = 0  # client: attempts retried
    throttled: int = 0  # client: HTTP 429 replies received
    waits: int = 0  # client: pauses before a request (pacer hold-off, a 429's Retry-After)
    wait_seconds: float = 0.0  # client: their length
    anomalies: int = 0  # pipeline, from the normalizer: values it could not parse (kept raw)
    out_of_order: int = 0  # walker: images a page served behind their cursor's position (kept)
    duplicates_dropped: int = 0  # walker: ids a cursor served again (dropped)
    batch_fallback: int = 0  # client: 1 once the batch host refused List V2 (account API used)
    batch_refusal: str = ""  # client: the batch host's reply that refused it, for the warning
    current_wait: str = ""  # client: why a request is waiting now, for the progress bar
    # pipeline: images and pages in committed parts (the checkpoint keeps them), for the
    # line of a stopped run; a restored checkpoint's counts are all committed.
    committed_images: int = 0
    committed_pages: int = 0
    # pipeline: where the run publishes, once its checkpoint says it is sealed ("publishing" or
    # "committing"): a stop then leaves a publication for `--resume` to finish, not a walk.
    publishing: str | None = None
    # pipeline: the change step began: a stop no longer cancels the run, which has only that
    # step (a thread no cancel interrupts) and dropping its staging left: it finishes instead.
    concluding: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # pipeline: `api_count`
    # when this process began the run (time.monotonic()): a resumed run's summary reports the
    # time processes worked, not the hours between a kill and `--resume`
    began: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, Any]:
        """Return the counters as plain JSON-ready data (the manifest's `counts`)."""
        data = asdict(self)
        for name in NOT_COUNTS:
            data.pop(name)
        data.update(self.extra)
        return data

    def restore(self, counts: Mapping[str, Any]) -> None:
        """Set every counter from `as_dict()` output (a checkpoint's counts); missing ones: 0."""
        for spec in fields(self):
            if spec.name not in NOT_COUNTS:
                kind = float if isinstance(spec.default, float) else int
                setattr(self, spec.name, kind(counts.get(spec.name, 0)))
        self.committed_images, self.committed_pages = self.images, self.pages
