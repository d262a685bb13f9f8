"""What an export asks for: the request that defines "the same export", and the dry-run plan."""

from __future__ import annotations

import posixpath
from typing import Any
from urllib.parse import urlencode

from exporter.api.pagination import SortOrder
from exporter.api.redact import redact_text
from exporter.config import ExportConfig
from exporter.store.layout import ROOT


def describe_request(config: ExportConfig) -> dict[str, Any]:
    """Return what defines "the same export" for resume: no secrets, no dates, no paths.

    The options declared with `fingerprint=` (exporter/options.py), as the run resolved them.
    """
    described = config.fingerprinted()
    if config.request.sort_order is not None:
        described["walk"] = "single"  # an ordered request walks one cursor, whatever walk.mode
    return described


def is_unfiltered(config: ExportConfig) -> bool:
    """True when the export lists the whole catalog, so the API's count must match it."""
    return not config.request.filters and config.request.creator is None


def dry_run_plan(config: ExportConfig) -> dict[str, Any]:
    """Return the resolved plan and the first requests an export would send (secrets masked)."""
    base = (
        config.walk.batch_base_url + "/images/v2"
        if config.walk.batch_api
        else (f"{config.base_url}/accounts/{config.account_id}/images/v2")
    )
    orders: list[SortOrder] = ["asc", "desc"]
    if not config.walk.both_ends(config.request):
        orders = [config.request.sort_order or "desc"]
    account_url = f"{config.base_url}/accounts/{config.account_id}"
    requests = [f"GET {account_url}/images/v1/stats"] if is_unfiltered(config) else []
    if config.walk.batch_api:
        requests.append(f"GET {account_url}/images/v1/batch_token")
    requests += [f"GET {base}?{urlencode(config.request.params(o, None))}" for o in orders]
    requests = [redact_text(line) for line in requests]
    output = posixpath.join(config.output, ROOT.snapshot(config.snapshot_date.isoformat()))
    return {"plan": config.plan(), "requests": requests, "publishes": output}


__all__ = ["describe_request", "dry_run_plan", "is_unfiltered"]
