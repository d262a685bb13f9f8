"""Manifest: built from plain values, read and written back byte for byte, found by date."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from exporter import __version__
from exporter.changes.change_set import ChangeSet, build_changes_manifest
from exporter.options import ChangeOptions
from exporter.sinks import PartFile, SinkOptions, open_sink
from exporter.snapshot.manifest import (
    NEW_UPLOADS,
    Drift,
    Findings,
    Manifest,
    NewUploads,
    UploadedBounds,
    build_manifest,
    decode_manifest,
    encode_manifest,
    misplaced,
    previous_manifest,
    sealed_directories,
    sealed_manifests,
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


def manifest_for(files: list[PartFile], **changes: Any) -> Manifest:
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
        built = manifest_for(
            files, api_count=5, previous_snapshot="2026-11-26", drift=drift,
            uploaded={"min": "2026-11-27T01:00:00Z", "max": "2026-11-27T01:04:00Z"},
        )  # fmt: skip
        manifest = orjson.loads(encode_manifest(built))
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
        assert b"s3cret" not in encode_manifest(built)

    def test_filtered_exports_have_no_api_count(self) -> None:
        manifest = manifest_for([])
        assert (manifest.api_count, manifest.complete) == (None, None)
        assert b'"api_count": null' in encode_manifest(manifest)

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


class TestPreviousManifest:
    async def test_newest_sealed_snapshot_before_the_date(self, tmp_path: Path) -> None:
        await publish(tmp_path, ("parquet",), run_id="a", date="2026-11-25")
        await publish(tmp_path, ("parquet",), run_id="b", date="2026-11-26")
        await publish(tmp_path, ("parquet",), run_id="c", date="2026-11-27")
        (tmp_path / snapshot_dir("2026-11-26") / "_SUCCESS").unlink()  # not sealed: skipped
        found = previous_manifest(tmp_path, "2026-11-27")
        assert found is not None and found.run_id == "a"
        assert list(found.schema) == COLUMNS  # seeds the next run's column plan as is
        assert previous_manifest(tmp_path, "2026-11-25") is None


PART = PartFile(path="part-00000-run1.parquet", rows=5, bytes=10, sha256="a" * 64,
                schema_fingerprint="x", format="parquet")  # fmt: skip
FINDINGS = {"anomalies": 1, "capped_values": 2, "capped_keys": [["k"]], "warnings": ["w"]}
SNAPSHOT_KEYS = ["format_version", "exporter_version", "run_id", "snapshot_date", "account_id",
                 "request", "started_at", "finished_at", "counts", "api_count", "complete",
                 "uploaded", "files", "schema", "drift", "normalize"]  # fmt: skip
CHANGES_KEYS = ["format_version", "kind", "exporter_version", "run_id", "snapshot_date",
                "previous_snapshot_date", "account_id", "request", "scope", "started_at",
                "finished_at", "counts", "previous_images", "removed_share",
                "max_removed_share", "accepted_removals", "files", "schema"]  # fmt: skip


def snapshot_manifest(**changes: Any) -> Manifest:
    return manifest_for([PART], api_count=5, findings=FINDINGS, **changes)


def batch_manifest() -> Manifest:
    plan = {"base_snapshot": DATE, "watermark": "2026-11-27T01:04:00Z", "lag_s": 600.0,
            "cutoff": "2026-11-27T00:54:00Z", "earlier_batches": ["b0"]}  # fmt: skip
    section = NewUploads.from_json({**plan, "batch": "b1", "base_run_id": "run-0"})
    return dataclasses.replace(snapshot_manifest(), kind=NEW_UPLOADS, new_uploads=section)


def changes_manifest() -> Manifest:
    result = ChangeSet(DATE, "2026-11-26", {"added": 3, "removed": 1, "changed": 1}, 7, None)
    scope = {"account_id": "acc", "creator": None, "filters": []}
    return build_changes_manifest(
        snapshot_manifest(), result, [PART], scope, ChangeOptions(), START, START
    )


def round_trip(raw: bytes) -> bytes:
    return encode_manifest(decode_manifest(raw))


class TestManifestJson:
    """`_manifest.json` <-> Manifest: each kind reads and writes back byte for byte."""

    @pytest.mark.parametrize(
        ("build", "keys"),
        [
            pytest.param(snapshot_manifest, SNAPSHOT_KEYS, id="snapshot"),
            pytest.param(batch_manifest, [*SNAPSHOT_KEYS, "kind", "new_uploads"], id="batch"),
            pytest.param(changes_manifest, CHANGES_KEYS, id="changes"),
        ],
    )
    def test_each_kind_round_trips_in_its_key_order(self, build: Any, keys: list[str]) -> None:
        """JSON -> Manifest -> JSON gives the same bytes, keys in the order each kind has."""
        raw = encode_manifest(build())
        assert list(orjson.loads(raw)) == keys
        assert round_trip(raw) == raw
        assert decode_manifest(raw) == build()  # nothing lost, nothing added on the way

    def test_the_changes_manifest_says_what_it_did(self) -> None:
        data = orjson.loads(encode_manifest(changes_manifest()))
        assert (data["kind"], data["previous_snapshot_date"]) == ("changes", "2026-11-26")
        assert data["counts"] == {"added": 3, "removed": 1, "changed": 1, "rows": 5}
        assert (data["previous_images"], data["removed_share"]) == (7, round(1 / 7, 6))
        assert data["scope"] == "every image of the account"
        assert data["files"][0]["format"] == "parquet"

    def test_the_extra_fields_caps_appear_only_when_reached(self) -> None:
        capped = {**FINDINGS, "capped_extra_values": 4, "capped_extra_keys": [["e"]]}
        raw = encode_manifest(manifest_for([PART], findings=capped))
        assert list(orjson.loads(raw)["normalize"]) == [
            "anomalies", "capped_values", "capped_keys", "capped_extra_values",
            "capped_extra_keys", "warnings",
        ]  # fmt: skip
        assert round_trip(raw) == raw
        assert "capped_extra_values" not in orjson.loads(encode_manifest(snapshot_manifest()))

    def test_unknown_keys_survive_a_read(self) -> None:
        """A newer version's keys, at the top and in any section, are kept and written back."""
        data = orjson.loads(encode_manifest(batch_manifest()))
        data["lineage"] = {"parent": "x"}
        data["files"][0]["crc32c"] = "abc"
        data["normalize"]["truncated"] = 2
        data["drift"]["since"] = "2026-11-01"
        data["uploaded"]["median"] = None
        data["new_uploads"]["pages"] = 3
        raw = orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"
        manifest = decode_manifest(raw)
        assert manifest.extra == {"lineage": {"parent": "x"}}
        assert manifest.files[0].extra == {"crc32c": "abc"}
        assert manifest.findings.extra == {"truncated": 2}
        assert manifest.new_uploads is not None and manifest.new_uploads.extra == {"pages": 3}
        assert round_trip(raw) == raw  # each unknown key was last in its object

    def test_missing_sections_read_as_empty(self) -> None:
        """An older or smaller manifest: every optional section reads as its empty default."""
        manifest = decode_manifest(
            b'{"snapshot_date": "2026-11-27", "started_at": "a", "finished_at": "b",'
            b' "drift": null, "uploaded": null}'
        )
        assert (manifest.files, manifest.schema, manifest.counts, manifest.request) == (
            (), (), {}, {},
        )  # fmt: skip
        assert (manifest.drift, manifest.findings) == (Drift(), Findings())
        assert (manifest.uploaded.min, manifest.uploaded.max, manifest.rows) == (None, None, 0)
        assert (manifest.run_id, manifest.kind, manifest.new_uploads) == (None, None, None)


class TestSealedManifests:
    async def test_one_walk_oldest_or_newest_first_before_a_date(self, tmp_path: Path) -> None:
        """The one lookup behind the previous night, the last success and the neighbours."""
        for run_id, date in (("a", "2026-11-25"), ("b", "2026-11-26"), ("c", "2026-11-27")):
            await publish(tmp_path, ("parquet",), run_id=run_id, date=date)
        (tmp_path / snapshot_dir("2026-11-26") / "_SUCCESS").unlink()
        store = LocalStore(tmp_path)
        assert [m.run_id for m in sealed_manifests(store)] == ["a", "c"]
        assert [m.run_id for m in sealed_manifests(store, newest_first=True)] == ["c", "a"]
        assert [m.run_id for m in sealed_manifests(store, before="2026-11-27")] == ["a"]
        assert list(sealed_manifests(store, before="2026-11-25")) == []

    async def test_a_directory_moved_by_hand_is_not_a_night(self, tmp_path: Path) -> None:
        """A directory whose manifest names another date is skipped (its files would be read
        where that date says), but is still listed with its own date for who must flag it."""
        for run_id, date in (("a", "2026-11-25"), ("b", "2026-11-27")):
            await publish(tmp_path, ("parquet",), run_id=run_id, date=date)
        (tmp_path / snapshot_dir("2026-11-27")).rename(tmp_path / snapshot_dir("2026-11-26"))
        store = LocalStore(tmp_path)
        assert [m.run_id for m in sealed_manifests(store)] == ["a"]
        previous = previous_manifest(store, "2026-11-28")
        assert previous is not None and previous.run_id == "a"
        found = [(d, m.run_id, misplaced(d, m)) for d, m in sealed_directories(store)]
        assert found == [
            ("2026-11-25", "a", None),
            ("2026-11-26", "b", "its manifest is of 2026-11-27 (moved by hand?): move it back "
             "to snapshot_date=2026-11-27"),
        ]  # fmt: skip
