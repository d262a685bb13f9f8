"""Every tie order the reference allows, through the real CLI over loopback (issue 20).

The reference sorts List V2 by upload time and says nothing of the images sharing an instant.
The emulator serves each order (`tie_order`: id, id-desc, same, hash); a catalog of 1,000 with
a bulk import of 400 on one instant, 25 per page, so the tie spans 16 pages and both cursors
meet inside it. Each export is compared with the emulator's catalog exactly, and "out of
order" stays 0: a still catalog served by upload time never goes back.
"""

from __future__ import annotations

import math
import signal
import subprocess
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from exporter.emulator import EmulatorSettings, RunningEmulator, run_emulator
from exporter.emulator.ties import TIE_ORDERS
from tests.helpers import PYTHON, emulator_env, image_row, snapshot_rows

EmulatorFactory = Callable[..., AbstractAsyncContextManager[RunningEmulator]]
DATE = "2026-12-02"
IMAGES, TIE, PER_PAGE = 1000, 400, 25
MODES = ["single", "both", "batch"]


def truth(emu: RunningEmulator) -> dict[str, dict[str, Any]]:
    return {image["id"]: image_row(image, emu.account_id) for image in emu.catalog.iter_images()}


class Cli:
    """`cf-images-export export` runs of DATE against an in-process emulator."""

    def __init__(self, emu: RunningEmulator, tmp: Path, mode: str) -> None:
        self.emu, self.tmp, self.out = emu, tmp, tmp / "out"
        walk = f'mode = "{"single" if mode == "single" else "both"}"\n'
        if mode == "batch":
            walk += f'batch_api = true\nbatch_base_url = "{emu.batch_base_url}"\n'
        self.config = f"[request]\nper_page = {PER_PAGE}\n[parquet]\npart_rows = 50\n[walk]\n"
        self.config += walk
        self.env = emulator_env(emu)

    def command(self, quota: int | None = None) -> list[str]:
        """The command line; `quota`: requests the run may send before it blocks (an hour)."""
        path = self.tmp / f"run-{quota}.toml"
        extra = f"quota = {quota}\nwindow_s = 3600\nmargin = 1.0\n" if quota else ""
        path.write_text(self.config + extra)
        args = ["--config", str(path), "--output", str(self.out), "--snapshot-date", DATE]
        return [PYTHON, "-m", "exporter", "export", *args, "--resume"]

    async def run(self) -> subprocess.CompletedProcess[bytes]:
        return await anyio.run_process(self.command(), env=self.env, check=False)

    def manifest(self) -> dict[str, Any]:
        path = self.out / f"snapshot_date={DATE}" / "_manifest.json"
        data: dict[str, Any] = orjson.loads(path.read_bytes())
        return data

    def checkpoint_path(self) -> Path | None:
        found = list(self.out.glob(".staging/*/_checkpoint.json"))
        return found[0] if found else None

    def checkpoint(self) -> dict[str, Any]:
        path = self.checkpoint_path()
        try:
            data = orjson.loads(path.read_bytes()) if path is not None else {}
        except (OSError, orjson.JSONDecodeError):  # replaced while read
            return {}
        return data if isinstance(data, dict) else {}

    def assert_exact(self, result: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert snapshot_rows(self.out, DATE) == truth(self.emu)  # refuses an id twice
        manifest = self.manifest()
        counts = manifest["counts"]
        assert (counts["out_of_order"], counts["duplicates_dropped"]) == (0, 0)
        assert manifest["api_count"] == counts["rows"] == IMAGES
        assert manifest["normalize"]["warnings"] == []
        return manifest


def mid_tie(state: dict[str, Any]) -> bool:
    """True when a checkpointed cursor stands inside the bulk tie (a page of it or more)."""
    sides = (state.get("walker_state") or {}).get("sides", [])
    return any(PER_PAGE <= len(side.get("tie_ids", ())) < TIE for side in sides)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ties", TIE_ORDERS)
async def test_every_tie_order_exports_the_catalog_exactly(
    emulator_factory: EmulatorFactory, tmp_path: Path, ties: str, mode: str
) -> None:
    async with emulator_factory(images=IMAGES, seed=8, tie_group=TIE, tie_order=ties) as emu:
        cli = Cli(emu, tmp_path, mode)
        cli.assert_exact(await cli.run())
        # The catalog once between the cursors, and the tie once more at most (both ends
        # meeting inside it), and a page each cursor had requested when the walk ended.
        assert emu.counters.pages <= math.ceil((IMAGES + TIE) / PER_PAGE) + 2


@pytest.mark.parametrize(
    ("mode", "rejected"),
    [("single", False), ("both", False), ("both", True), ("batch", True)],
)
@pytest.mark.parametrize("ties", TIE_ORDERS)
async def test_killed_inside_the_tie_then_resumed_is_exact(
    emulator_factory: EmulatorFactory, tmp_path: Path, ties: str, mode: str, rejected: bool
) -> None:
    """SIGKILL once a checkpoint stands inside the tie; resume (with the stored tokens, or
    with tokens the API rejects: the cursors replay from the start and skip, inside the tie,
    the ids the checkpoint says were served): every image exactly once."""
    async with emulator_factory(images=IMAGES, seed=9, tie_group=TIE, tie_order=ties) as emu:
        cli = Cli(emu, tmp_path, mode)
        # A quota enough to enter the tie, not to finish it.
        await kill_inside_the_tie(cli, quota=16 if mode == "single" else 24)
        path = cli.checkpoint_path()
        assert path is not None
        if rejected:
            data = orjson.loads(path.read_bytes())
            for side in data["walker_state"]["sides"]:
                for key in ("token", "entry"):  # a resume starts from the entry token
                    if side.get(key):
                        side[key] = "Zm9yZ2VkLXRva2Vu"  # forged: the API answers 400
            path.write_bytes(orjson.dumps(data))
        result = await cli.run()
        cli.assert_exact(result)
        assert b"resuming run" in result.stderr
        assert (b"restarting it from the beginning" in result.stderr) == rejected


async def kill_inside_the_tie(cli: Cli, quota: int) -> None:
    """Run `cli` until a checkpoint stands inside the bulk tie, then SIGKILL it."""
    async with await anyio.open_process(
        cli.command(quota), env=cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as process:
        with anyio.fail_after(60):
            while not mid_tie(cli.checkpoint()):
                assert process.returncode is None, "the run ended before the tie"
                await anyio.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        await process.wait()


@pytest.mark.parametrize("mode", ["single", "both"])
@pytest.mark.parametrize(("before", "after"), [("hash", "id-desc"), ("id", "same")])
async def test_resumed_after_the_api_reordered_the_tie_is_exact(
    tmp_path: Path, mode: str, before: str, after: str
) -> None:
    """The API may order an instant's images differently after the run was killed (the
    reference promises no order inside an instant): the resumed cursors re-enter the tie
    from the page where it began and export every image exactly once (found by a new user:
    resuming from the stored tokens lost 17% of a bulk import, exit 0)."""
    settings = EmulatorSettings(images=IMAGES, seed=10, tie_group=TIE, tie_order=before)
    async with run_emulator(settings) as emu:
        cli = Cli(emu, tmp_path, mode)
        await kill_inside_the_tie(cli, quota=16 if mode == "single" else 24)
        port = emu.port
    reordered = EmulatorSettings(images=IMAGES, seed=10, tie_group=TIE, tie_order=after)
    async with run_emulator(reordered, port=port) as emu:  # the same base URL: a resume
        cli.emu = emu
        result = await cli.run()
        assert b"resuming run" in result.stderr
        cli.assert_exact(result)
