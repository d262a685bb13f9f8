"""Run counters shared by the walker, the pipeline and the progress display."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RunStats:
    """Mutable counters of one export run; the manifest and the summary read them."""

    images: int = 0
    pages: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0  # HTTP 429 replies received
    waits: int = 0  # pauses the pacer or a Retry-After imposed
    wait_seconds: float = 0.0
    anomalies: int = 0  # values the normalizer could not parse (kept raw, counted)
    current_wait: str = ""  # why the walker is waiting now, for the progress bar
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Return the counters as plain JSON-ready data (the manifest's `counts`)."""
        data = asdict(self)
        data.pop("current_wait")
        data.pop("extra")
        data.update(self.extra)
        return data
