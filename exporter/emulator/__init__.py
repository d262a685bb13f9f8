"""A local Cloudflare Images API (List V2, stats, batch host) with a nasty seeded catalog.

Use `async with run_emulator(EmulatorSettings(...)) as emu:` and point a client at
`emu.base_url`; `serve()` is the blocking form behind `cf-images-export emulator`.

The Python API other tests use (every knob is an `EmulatorSettings` field and a CLI flag):

* Catalogs: `build_catalog(n, seed, profile="classic"|"nasty", tie_group=N)`; `emu.catalog`
  (`keys`, `blobs`, `image(i)`, `iter_images()`). `profile="nasty"` is the benchmark catalog
  (~1 KB meta on 12%, ~40 meta columns, 5% on one instant), fine at millions of images.
* Ties: `tie_order="id"|"id-desc"|"same"|"hash"` (None: the profile's, nasty: hash) orders the
  images sharing an instant; `emu.ties` / `emu.account(id).ties` rank them, and
  `listing.served_order(catalog, sort_order, ties)` is a cursor's whole order (the truth).
* Counts: `drafts=N` makes `/stats` count N images no listing shows.
* Fields the reference does not list: `extra_fields=True` (default: on with the nasty
  profile; `build_catalog(..., extras=True)`): `sizeBytes`, `draft`, `labels`, `deprecated`,
  and `reviewed` from the first night that edits them (`emulator.extras`).
* Batch host refusing List V2: `refuse_batch_list=403` (code 103 "forbidden endpoint") or 404.
* Pages: `page_cap` (default 1000, Cloudflare's "up to 1000 results per page"; None: per_page),
  `short_pages=True` (every page a seeded 1..size images).
* Live mode: `live_every=K, live_mutations=M` (every K list requests, M uploads, deletions or
  edits); `emu.live` is the truth (`stable_ids()`, `versions(id)`, `uploaded`, `deleted`,
  `edited`, `to_json()`), also at `GET /_emulator/accounts/{id}/live`.
* Uploads between walks: `emu.account().uploads.add(count, late=, ties=, lateness_s=)` adds
  images now (late ones listable only from the next `add`); `.record` is their truth, also at
  `POST`/`GET /_emulator/accounts/{id}/uploads`.
* Misbehaviour: `disorder_every=N` (every Nth page out of order), `repeat_every=N` (every Nth
  page after a token repeats its cursor's image); `emu.counters.misbehaved` counts them.
* Accounts: `accounts=(AccountSettings(account_id=..., token=..., images=..., seed=...), ...)`
  served besides the primary one; `emu.account(id)` gives its `list_url`, `token`, `catalog`
  and `live_record()`. Accounts sharing a credential share one rate-limit budget.
"""

from exporter.emulator.app import Counters, create_app
from exporter.emulator.catalog import Catalog, build_catalog
from exporter.emulator.live import LiveRecord
from exporter.emulator.server import (
    RunningEmulator,
    ServedAccount,
    describe,
    run_emulator,
    serve,
)
from exporter.emulator.settings import (
    FAULT_KINDS,
    AccountSettings,
    EmulatorSettings,
    add_emulator_arguments,
    settings_from_args,
)

__all__ = [
    "FAULT_KINDS",
    "AccountSettings",
    "Catalog",
    "Counters",
    "EmulatorSettings",
    "LiveRecord",
    "RunningEmulator",
    "ServedAccount",
    "add_emulator_arguments",
    "build_catalog",
    "create_app",
    "describe",
    "run_emulator",
    "serve",
    "settings_from_args",
]
