"""A third-party file sink, installed through the entry point group: its files enter the
manifest under its own format, and `inspect` counts their rows with its own counter."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import orjson
import pytest

from exporter.config import parse_config
from exporter.emulator import RunningEmulator
from exporter.run import pipeline
from exporter.sinks import ENTRY_POINT_GROUP
from exporter.snapshot.verify import verify_snapshot
from tests.helpers import clean_env, emulator_process, run_cli

DATE = "2026-11-27"
# One image per line after a header line, so counting newlines (what inspect did for any
# file it did not know) is off by one: only the sink's own counter gets the rows right.
PLUGIN = """
import orjson

from exporter.sinks import FileFormat, FilePartSink


def count_rows(raw):
    lines = 0
    while block := raw.read(1 << 16):
        lines += block.count(b"\\n")
    return max(lines - 1, 0)


CSV = FileFormat(".csv", count_rows)


class HeaderCsvSink(FilePartSink):
    name = "csvh"
    file_format = CSV
    file_formats = (CSV,)
    split_on_schema_change = False

    def _begin(self, writer, schema):
        self._out = writer
        writer.write(b"id,filename\\n")

    def _append(self, batch):
        ids, names = batch.column("id").to_pylist(), batch.column("filename").to_pylist()
        lines = (orjson.dumps(i) + b"," + orjson.dumps(n) + b"\\n" for i, n in zip(ids, names))
        self._out.write(b"".join(lines))

    def _end(self):
        self._out = None

    def _fingerprint(self, schema):
        return "csvh-v1"
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Install a distribution with a `csvh` sink entry point on sys.path; return its folder."""
    folder = tmp_path / "site"
    info = folder / "cf_csvh_sink-1.0.dist-info"
    info.mkdir(parents=True)
    (folder / "cf_csvh_sink.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cf-csvh-sink\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\ncsvh = cf_csvh_sink:HeaderCsvSink\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    return folder


async def test_inspect_verifies_a_plugin_sinks_files(
    plugin: Path, emulator: RunningEmulator, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    overrides = {
        "export.account_id": emulator.account_id,
        "export.base_url": emulator.base_url,
        "export.output": str(out),
        "export.formats": ["parquet", "csvh"],
        "request.per_page": 25,
        "parquet.part_rows": 50,
    }
    env = {"CLOUDFLARE_API_TOKEN": emulator.token}
    config = parse_config({}, env, overrides, today=dt.date.fromisoformat(DATE))
    await pipeline.export(config)
    snapshot = out / f"snapshot_date={DATE}"
    manifest = orjson.loads((snapshot / "_manifest.json").read_bytes())
    by_format: dict[str, int] = {}
    for entry in manifest["files"]:
        by_format[entry["format"]] = by_format.get(entry["format"], 0) + entry["rows"]
    assert by_format == {"parquet": len(emulator.catalog), "csv": len(emulator.catalog)}

    with_plugin = {**clean_env(), "PYTHONPATH": os.pathsep.join([str(plugin), os.getcwd()])}
    verified = run_cli(["inspect", str(out)], with_plugin)
    assert verified.returncode == 0, verified.stderr
    assert f"{len(emulator.catalog):,} images" in verified.stdout

    without = run_cli(["inspect", str(out)])  # the plugin is not installed there
    assert without.returncode == 7
    assert "no installed sink reads format 'csv'" in without.stderr

    # The counter is what inspect trusts: a manifest claiming one row more is caught.
    csv_entry = next(e for e in manifest["files"] if e["format"] == "csv")
    csv_entry["rows"] += 1
    (snapshot / "_manifest.json").write_bytes(orjson.dumps(manifest))
    report = verify_snapshot(snapshot, strict=False)
    rows = csv_entry["rows"]
    assert f"{csv_entry['path']}: {rows - 1} rows, manifest says {rows}" in report.problems


def test_a_plugin_only_export_publishes_each_night_without_a_change_set(
    plugin: Path, tmp_path: Path
) -> None:
    """No sink the diff reads wrote the nights: each publishes (exit 0) and says it has no
    change set, the next night does not fail on the last one, and the report renders."""
    out = tmp_path / "out"
    path = os.pathsep.join([str(plugin), os.getcwd()])
    with emulator_process(60, 5) as emu:
        env = emu.env(PYTHONPATH=path)
        for day in ("2026-11-27", "2026-11-28"):
            args = ["export", "--output", str(out), "--snapshot-date", day, "--format", "csvh"]
            night = run_cli(args, env)
            assert night.returncode == 0, night.stderr
            assert "none: no format the diff reads (parquet, ndjson, duckdb, delta)" in (
                night.stderr
            )
            assert "could not complete" not in night.stderr
            assert (out / f"snapshot_date={day}" / "_SUCCESS").exists()
            again = run_cli([*args, "--resume"], env)
            assert again.returncode == 0, again.stderr
        assert not (out / "changes").exists() or not list((out / "changes").iterdir())
        report = run_cli(["report", str(out)], env)
        assert report.returncode == 0, report.stderr
        page = (out / "report.html").read_text()
        assert 'data-figure="no-change-data"' in page
        # Parquet beside it: this night is readable, the one it follows is not.
        args = ["export", "--output", str(out), "--snapshot-date", "2026-11-29"]
        mixed = run_cli([*args, "--format", "csvh", "--format", "parquet"], env)
        assert mixed.returncode == 0, mixed.stderr
        assert "none: snapshot 2026-11-28 has no format the diff reads" in mixed.stderr


def test_new_uploads_refuse_nights_they_cannot_read_before_any_request(
    plugin: Path, tmp_path: Path
) -> None:
    """A batch leaves out the ids of D and of D's earlier batches, so it must read them: after
    a plugin-only snapshot, `--new-uploads` refuses (exit 2, one line, before any request:
    nothing listens at its base URL), as it does a batch no later batch could read; with
    Parquet it publishes."""
    out = tmp_path / "out"
    path = os.pathsep.join([str(plugin), os.getcwd()])
    with emulator_process(60, 5) as emu:
        env = emu.env(PYTHONPATH=path)
        args = ["export", "--output", str(out), "--snapshot-date", DATE]
        assert run_cli([*args, "--format", "csvh"], env).returncode == 0
        nowhere = {**env, "CLOUDFLARE_BASE_URL": "http://127.0.0.1:9/client/v4"}  # a request: 4
        batch = run_cli(
            ["export", "--output", str(out), "--new-uploads", "--format", "csvh"], nowhere
        )
        assert batch.returncode == 2, batch.stderr
        assert batch.stderr.splitlines() == [
            "cf-images-export: error: --new-uploads: snapshot 2026-11-27 has no format the diff "
            "reads (parquet, ndjson, duckdb, delta); a batch must read it to leave out the "
            "images already in it"
        ]
        assert not (out / "new_uploads").exists()

        readable = tmp_path / "readable"
        args = ["export", "--output", str(readable), "--snapshot-date", DATE]
        assert run_cli([*args, "--format", "parquet"], env).returncode == 0
        new_uploads = ["export", "--output", str(readable), "--new-uploads"]
        unreadable = run_cli([*new_uploads, "--format", "csvh"], env)
        assert unreadable.returncode == 2, unreadable.stderr
        assert "this batch would have no format a later batch reads" in unreadable.stderr
        assert run_cli([*new_uploads, "--format", "parquet"], env).returncode == 0
