"""What an export asks for: the request that defines "the same export", and the dry-run plan."""

from __future__ import annotations

import dataclasses
import posixpath
from typing import Any
from urllib.parse import urlencode

from exporter.api.pagination import SortOrder
from exporter.api.redact import redact_text
from exporter.changes.change_set import change_scope
from exporter.config import ExportConfig
from exporter.options import WalkOptions
from exporter.snapshot.checkpoint import request_fingerprint
from exporter.snapshot.manifest import Manifest
from exporter.store.layout import ROOT, run_key


def describe_request(config: ExportConfig) -> dict[str, Any]:
    """Return what defines "the same export" for resume: no secrets, no dates, no paths.

    The options declared with `fingerprint=` (exporter/options.py), as the run resolved them.
    """
    described = config.fingerprinted()
    if config.request.sort_order is not None:
        described["walk"] = "single"  # an ordered request walks one cursor, whatever walk.mode
    return described


def lock_key(config: ExportConfig, snapshot_date: str, *, new_uploads: bool = False) -> str:
    """Return the key of the run lock (`Layout.lock`) of this request on a date.

    Keyed by what the request is (`change_scope`: account, creator, filters), not by how it
    is walked or written (page size, order, formats), so any two runs of one request and date
    exclude each other (exit 8), while each stages under its own run key. A batch's own lock
    (`new_uploads`) is apart from the nightly locks it also takes.
    """
    scope = {**change_scope(describe_request(config)), "new_uploads": new_uploads}
    return run_key(request_fingerprint(scope), snapshot_date)


def is_unfiltered(config: ExportConfig) -> bool:
    """True when the export lists the whole catalog, so the API's count must match it."""
    return not config.request.filters and config.request.creator is None


def walk_options(config: ExportConfig, previous: Manifest | None) -> WalkOptions:
    """Return the walk's options: one cursor where "auto" meets a catalog that last night
    (`previous`, the latest earlier manifest) fit in fewer than two pages (same account,
    creator and filters).

    From both ends such a catalog takes two requests, one from each end, which serve most of
    its images twice: twice the API's data and the normalizing, a small account's largest
    cost in a fleet. One cursor takes as many requests for it. A resumed walk keeps the
    cursors its checkpoint names, whatever this returns.
    """
    walk, request = config.walk, config.request
    if walk.mode != "auto" or previous is None or request.sort_order is not None:
        return walk
    if change_scope(previous.request) != change_scope(describe_request(config)):
        return walk
    if int(previous.counts.get("rows", 2 * request.per_page)) >= 2 * request.per_page:
        return walk
    return dataclasses.replace(walk, mode="single")


def dry_run_plan(config: ExportConfig, previous: Manifest | None = None) -> dict[str, Any]:
    """Return the resolved plan and the first requests an export would send (secrets masked).

    `previous` is the latest earlier manifest in the output (None: none), which decides
    whether `--walk auto` walks one cursor or both ends, as the run will.
    """
    base = (
        config.walk.batch_base_url + "/images/v2"
        if config.walk.batch_api
        else (f"{config.base_url}/accounts/{config.account_id}/images/v2")
    )
    walk = walk_options(config, previous)
    orders: list[SortOrder] = ["asc", "desc"]
    if not walk.both_ends(config.request):
        orders = [config.request.sort_order or "desc"]
    account_url = f"{config.base_url}/accounts/{config.account_id}"
    requests = [f"GET {account_url}/images/v1/stats"] if is_unfiltered(config) else []
    if config.walk.batch_api:
        requests.append(f"GET {account_url}/images/v1/batch_token")
    requests += [f"GET {base}?{urlencode(config.request.params(o, None))}" for o in orders]
    requests = [redact_text(line) for line in requests]
    output = posixpath.join(config.output, ROOT.snapshot(config.snapshot_date.isoformat()))
    return {
        "plan": config.plan(),
        "walk": _describe_walk(config, walk, previous),
        "requests": requests,
        "publishes": output,
    }


def _describe_walk(config: ExportConfig, walk: WalkOptions, previous: Manifest | None) -> str:
    """Return what the walk will do, and why, in the plan's words."""
    if walk.both_ends(config.request):
        return "both ends at once (an asc and a desc cursor)"
    order = config.request.sort_order or "desc"
    if config.request.sort_order is not None:
        return f"one cursor, {order} (request.sort_order)"
    if config.walk.mode == "single":
        return f"one cursor, {order} (walk.mode single)"
    assert previous is not None
    rows = int(previous.counts["rows"])
    return (
        f"one cursor, {order}: the previous night ({previous.snapshot_date}) held "
        f"{rows:,} images, under two pages of {config.request.per_page:,}"
    )


__all__ = ["describe_request", "dry_run_plan", "is_unfiltered", "walk_options"]
