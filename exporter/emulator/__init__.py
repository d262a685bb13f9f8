"""A local Cloudflare Images API (List V2, stats, batch host) with a nasty seeded catalog.

Use `async with run_emulator(EmulatorSettings(...)) as emu:` and point a client at
`emu.base_url`; `serve()` is the blocking form behind `cf-images-export emulator`.
"""

from exporter.emulator.app import Counters, create_app
from exporter.emulator.catalog import Catalog, build_catalog
from exporter.emulator.server import RunningEmulator, describe, run_emulator, serve
from exporter.emulator.settings import (
    FAULT_KINDS,
    EmulatorSettings,
    add_emulator_arguments,
    settings_from_args,
)

__all__ = [
    "FAULT_KINDS",
    "Catalog",
    "Counters",
    "EmulatorSettings",
    "RunningEmulator",
    "add_emulator_arguments",
    "build_catalog",
    "create_app",
    "describe",
    "run_emulator",
    "serve",
    "settings_from_args",
]
