"""Manifest: built from plain values; a published snapshot verified against it (inspect)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from exporter import __version__
from exporter.errors import IntegrityError
from exporter.sinks import PartFile, SinkOptions, open_sink
from exporter.snapshot.manifest import (
    UploadedBounds,
    build_manifest,
    encode_manifest,
    previous_manifest,
    published_run_id,
    verify_snapshot,
)
from exporter.store import LocalStore, seal
from exporter.store.layout import ROOT
from exporter.store.layout import snapshot_name as snapshot_dir

DATE = "2026-11-27"
START = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
SCHEMA = pa.schema(
    [
        ("account_id", pa.string()),
        ("id", pa.string()),
        ("uploaded", pa.timestamp("us", tz="UTC")),
        ("meta_json", pa.string()),
        ("meta__n", pa.int64()),
    ]
)
COLUMNS = [
    {"name": "id", "type": "string", "path": None},
    {"name": "meta__n", "type": "int64", "path": ["n"]},
]


def batch(start: int, rows: int) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array(["acc"] * rows),
            pa.array([f"img/{n}" for n in range(start, start + rows)]),
            pa.array([START + timedelta(minutes=n) for n in range(start, start + rows)]),
            pa.array([orjson.dumps({"n": n}).decode() for n in range(start, start + rows)]),
            pa.array(list(range(start, start + rows)), pa.int64()),
        ],
        schema=SCHEMA,
    )


def manifest_for(files: list[PartFile], **changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "run_id": "run-1",
        "snapshot_date": DATE,
        "account_id": "acc",
        "request": {"filters": ["meta.n[gt]=1"], "per_page": 100, "api_token": "s3cret"},
        "started_at": START,
        "finished_at": START + timedelta(minutes=3, microseconds=5),
        "counts": {"images": sum(f.rows for f in files), "pages": 3, "retries": 1},
        "files": files,
        "columns": COLUMNS,
    }
    values.update(changes)
    return build_manifest(**values)


async def publish(
    root: Path, formats: tuple[str, ...], run_id: str = "run-1", date: str = DATE
) -> Path:
    """Export 250 rows through real sinks into staging, seal and publish: the glue in small."""
    store = LocalStore(root)
    staged = ROOT.staged_snapshot(f"{date}-key", date)
    options = SinkOptions(part_rows=100, ndjson_gzip=True)
    sinks = [open_sink(name, options) for name in formats]
    for sink in sinks:
        await sink.open(store, staged, SCHEMA)
    bounds = UploadedBounds()
    for start in range(0, 250, 50):
        page = batch(start, 50)
        bounds.update(page)
        for sink in sinks:
            await sink.write(page)
            if sink.should_rotate():
                await sink.commit_part()
    files = [f for sink in sinks for f in await sink.finish(SCHEMA, lambda b: b)]
    manifest = manifest_for(files, run_id=run_id, snapshot_date=date, uploaded=bounds.as_dict())
    seal(store, staged, encode_manifest(manifest))
    store.publish(staged, snapshot_dir(date), grace_seconds=0)
    return root / snapshot_dir(date)


class TestBuildManifest:
    def test_carries_everything_design_lists(self) -> None:
        files = [PartFile(path="part-00000.parquet", rows=5, bytes=10, sha256="a" * 64,
                          schema_fingerprint="x", format="parquet")]  # fmt: skip
        drift = [{"change": "added", "column": "meta__n", "from": None, "to": "int64"}]
        manifest = manifest_for(
            files, api_count=5, previous_snapshot="2026-11-26", drift=drift,
            uploaded={"min": "2026-11-27T01:00:00Z", "max": "2026-11-27T01:04:00Z"},
        )  # fmt: skip
        assert manifest["format_version"] == 1
        assert manifest["exporter_version"] == __version__
        assert (manifest["run_id"], manifest["snapshot_date"], manifest["account_id"]) == (
            "run-1", DATE, "acc",
        )  # fmt: skip
        assert manifest["request"] == {"filters": ["meta.n[gt]=1"], "per_page": 100}
        assert manifest["started_at"] == "2026-11-27T01:00:00Z"
        assert manifest["finished_at"] == "2026-11-27T01:03:00.000005Z"
        assert manifest["counts"] == {"images": 5, "pages": 3, "retries": 1, "rows": 5}
        assert (manifest["api_count"], manifest["complete"]) == (5, True)
        assert manifest["files"] == [
            {"path": "part-00000.parquet", "format": "parquet", "rows": 5, "bytes": 10,
             "sha256": "a" * 64},
        ]  # fmt: skip
        assert manifest["schema"] == COLUMNS
        assert manifest["drift"] == {"previous_snapshot": "2026-11-26", "changes": drift}
        assert manifest["uploaded"]["max"] == "2026-11-27T01:04:00Z"
        assert b"s3cret" not in encode_manifest(manifest)

    def test_filtered_exports_have_no_api_count(self) -> None:
        manifest = manifest_for([])
        assert (manifest["api_count"], manifest["complete"]) == (None, None)

    def test_formats_must_agree_on_rows(self) -> None:
        files = [
            PartFile(
                path="part-00000.parquet",
                rows=5,
                bytes=1,
                sha256="",
                schema_fingerprint="",
                format="parquet",
            ),
            PartFile(
                path="part-00000.ndjson",
                rows=4,
                bytes=1,
                sha256="",
                schema_fingerprint="",
                format="ndjson",
            ),
        ]
        with pytest.raises(ValueError, match="disagree"):
            manifest_for(files)

    def test_uploaded_bounds_span_all_batches(self) -> None:
        bounds = UploadedBounds()
        for start in (50, 0, 20):
            bounds.update(batch(start, 10))
        assert bounds.as_dict() == {"min": "2026-11-27T01:00:00Z", "max": "2026-11-27T01:59:00Z"}


class TestVerifySnapshot:
    async def test_a_published_snapshot_verifies(self, tmp_path: Path) -> None:
        snapshot = await publish(tmp_path, ("parquet", "ndjson"))
        report = verify_snapshot(snapshot)
        assert report.ok and report.files == 6 and report.rows == 250
        assert verify_snapshot(tmp_path).directory == snapshot.name  # root: newest date
        assert published_run_id(LocalStore(tmp_path), ROOT.snapshot(DATE)) == "run-1"

    async def test_a_flipped_byte_is_an_integrity_error(self, tmp_path: Path) -> None:
        snapshot = await publish(tmp_path, ("parquet",))
        part = snapshot / "part-00001.parquet"
        data = bytearray(part.read_bytes())
        data[len(data) // 2] ^= 0x01
        part.write_bytes(bytes(data))
        with pytest.raises(IntegrityError, match=r"part-00001\.parquet: sha256") as caught:
            verify_snapshot(snapshot)
        assert caught.value.exit_code == 7

    async def test_missing_extra_and_unsealed_are_reported(self, tmp_path: Path) -> None:
        snapshot = await publish(tmp_path, ("ndjson",))
        (snapshot / "part-00000.ndjson.gz").unlink()
        (snapshot / "part-00009.ndjson.gz").write_bytes(b"")
        (snapshot / "_SUCCESS").unlink()
        report = verify_snapshot(snapshot, strict=False)
        assert report.problems == [
            "no _SUCCESS: the snapshot was never completed",
            "part-00000.ndjson.gz: missing",
            "part-00009.ndjson.gz: not in the manifest",
        ]
        with pytest.raises(IntegrityError, match=r"\(and 2 more\)"):
            verify_snapshot(snapshot)

    async def test_row_count_mismatch_is_reported(self, tmp_path: Path) -> None:
        snapshot = await publish(tmp_path, ("parquet",))
        manifest = orjson.loads((snapshot / "_manifest.json").read_bytes())
        manifest["files"][0]["rows"] += 1
        (snapshot / "_manifest.json").write_bytes(orjson.dumps(manifest))
        problems = verify_snapshot(snapshot, strict=False).problems
        assert "part-00000.parquet: 100 rows, manifest says 101" in problems
        assert "parquet files hold 251 rows, counts say 250" in problems

    def test_no_snapshot_at_all(self, tmp_path: Path) -> None:
        with pytest.raises(IntegrityError, match="no snapshot_date"):
            verify_snapshot(tmp_path)


class TestPreviousManifest:
    async def test_newest_sealed_snapshot_before_the_date(self, tmp_path: Path) -> None:
        await publish(tmp_path, ("parquet",), run_id="a", date="2026-11-25")
        await publish(tmp_path, ("parquet",), run_id="b", date="2026-11-26")
        await publish(tmp_path, ("parquet",), run_id="c", date="2026-11-27")
        (tmp_path / snapshot_dir("2026-11-26") / "_SUCCESS").unlink()  # not sealed: skipped
        found = previous_manifest(tmp_path, "2026-11-27")
        assert found is not None and found["run_id"] == "a"
        assert found["schema"] == COLUMNS  # seeds the next run's column plan as is
        assert previous_manifest(tmp_path, "2026-11-25") is None
