"""A third-party sink keeping derived tables (`TableKeeper`), installed through the entry point
group: through the real CLI it is handed each published change set and each batch of new
uploads, exactly as published, with no built-in sink's name anywhere in the path."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio.to_thread
import orjson
import pytest

from exporter.emulator import RunningEmulator
from exporter.sinks import ENTRY_POINT_GROUP
from exporter.store.layout import ROOT
from tests.helpers import clean_env, query_rows, run_cli

EmulatorFactory = Callable[..., AbstractAsyncContextManager[RunningEmulator]]
D, NEXT = "2026-03-01", "2026-03-02"
LOG = "keeper.jsonl"  # what the plugin was handed, one JSON line per call, under OUT

# Stages its own parts (one id a line, never in the snapshot) like the DuckDB sink, and logs
# every hook call with what it read from the store: the ids of a batch's staged parts, the
# rows of a published change set.
PLUGIN = """
import orjson
import pyarrow.parquet as pq

from exporter.sinks import FileFormat, FilePartSink

IDS = FileFormat(".ids", lambda raw: sum(1 for _ in raw))


class KeeperSink(FilePartSink):
    name = "keeper"
    file_format = IDS
    file_formats = ()
    split_on_schema_change = False

    def _begin(self, writer, schema):
        self._out = writer

    def _append(self, batch):
        self._out.write("".join(i + "\\n" for i in batch.column("id").to_pylist()).encode())

    def _end(self):
        self._out = None

    async def finish(self, final_schema, conform):
        await super().finish(final_schema, conform)
        return []

    def load_changes(self, changes):
        rows = {}
        for path in changes.paths:
            with changes.store.open_read(path) as raw:
                for row in pq.read_table(raw).to_pylist():
                    rows[row["id"]] = row["change"]
        self._log(changes.store, call="load_changes", date=changes.snapshot_date,
                  run_id=changes.run_id, directory=changes.directory, rows=rows,
                  schema=changes.schema.names)

    def load_new_uploads(self, publication):
        ids = []
        for part in publication.parts:
            path = publication.directory + "/" + part.path
            with publication.store.open_read(path) as raw:
                ids += raw.read().decode().split()
        self._log(publication.store, call="load_new_uploads", date=publication.snapshot_date,
                  batch=publication.batch, ids=sorted(ids))

    def drop_new_uploads(self, store, layout, snapshot_date, batches):
        self._log(store, call="drop_new_uploads", date=snapshot_date, batches=list(batches))

    def _log(self, store, **entry):
        with open(store.local_path("keeper.jsonl"), "ab") as out:
            out.write(orjson.dumps(entry) + b"\\n")
"""


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    """Install a distribution with a `keeper` sink entry point; return its folder."""
    folder = tmp_path / "site"
    info = folder / "cf_keeper_sink-1.0.dist-info"
    info.mkdir(parents=True)
    (folder / "cf_keeper_sink.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cf-keeper-sink\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nkeeper = cf_keeper_sink:KeeperSink\n"
    )
    return folder


def calls(out: Path) -> list[dict[str, Any]]:
    path = out / LOG
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def published_changes(out: Path, date: str) -> dict[str, str]:
    parts = out / ROOT.changes(date) / "*.parquet"
    rows = query_rows(f"SELECT id, change FROM read_parquet('{parts}')")
    return {str(row["id"]): str(row["change"]) for row in rows}


async def test_a_plugin_table_keeper_gets_every_change_set_and_batch(
    plugin: Path, emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    async with emulator_factory(images=120, seed=33) as emu:
        env = {**clean_env(), "PYTHONPATH": os.pathsep.join([str(plugin), os.getcwd()])}
        env.update(CLOUDFLARE_API_TOKEN=emu.token, CLOUDFLARE_ACCOUNT_ID=emu.account_id)
        env.update(CLOUDFLARE_BASE_URL=emu.base_url)
        common = ["--output", str(out), "--per-page", "20"]
        common += ["--format", "parquet", "--format", "keeper"]

        async def export(*args: str) -> None:
            argv = ["export", *common, *args]
            done = await anyio.to_thread.run_sync(lambda: run_cli(argv, env))
            assert done.returncode == 0, done.stderr

        await export("--snapshot-date", D)
        catalog = {str(image["id"]) for image in emu.catalog.iter_images()}
        [first] = calls(out)
        manifest = orjson.loads((out / ROOT.snapshot(D) / "_manifest.json").read_bytes())
        assert first["call"] == "load_changes" and first["date"] == D
        assert first["run_id"] == manifest["run_id"]
        assert first["directory"] == ROOT.changes(D)
        assert first["rows"] == dict.fromkeys(sorted(catalog), "added")
        assert first["rows"] == published_changes(out, D)
        assert "changed_fields" in first["schema"]

        burst = emu.account().uploads.add(7)["added"]
        uploaded = sorted(str(image["id"]) for image in burst)
        await export("--new-uploads", "--snapshot-date", NEXT)
        [batch] = sorted((out / ROOT.new_uploads(D)).glob("batch=*"))
        [_, loaded] = calls(out)
        assert loaded == {
            "call": "load_new_uploads",
            "date": D,
            "batch": batch.name.removeprefix("batch="),
            "ids": uploaded,
        }

        # The next night's change step runs in a fresh process (the handoff): the plugin is
        # found again from the night's request and gets the uploads as `added`.
        await export("--snapshot-date", NEXT)
        [*_, last] = calls(out)
        assert last["call"] == "load_changes" and last["date"] == NEXT
        assert last["rows"] == dict.fromkeys(uploaded, "added")
        assert last["rows"] == published_changes(out, NEXT)
