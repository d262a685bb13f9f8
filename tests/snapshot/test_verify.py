"""verify_snapshot (`inspect`): a published snapshot against its manifest."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from exporter.errors import IntegrityError
from exporter.snapshot.manifest import (
    ManifestError,
    decode_manifest,
    published_run_id,
    read_manifest,
)
from exporter.snapshot.verify import verify_snapshot
from exporter.store import LocalStore
from exporter.store.layout import ROOT
from exporter.store.layout import snapshot_name as snapshot_dir
from tests.helpers import run_cli
from tests.snapshot.test_manifest import DATE, publish


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

    @pytest.mark.parametrize(
        "raw",
        [
            pytest.param(b"{not json", id="not-json"),
            pytest.param(b"[1, 2]", id="not-an-object"),
            pytest.param(b'{"started_at": "a", "finished_at": "b"}', id="no-date"),
            pytest.param(
                b'{"snapshot_date": "d", "started_at": "a", "finished_at": "b", "files": {}}',
                id="files-not-a-list",
            ),
            pytest.param(
                b'{"snapshot_date": "d", "started_at": "a", "finished_at": "b",'
                b' "files": [{"path": "p", "rows": 1, "bytes": 2}]}',
                id="file-without-sha256",
            ),
        ],
    )
    def test_a_malformed_manifest_is_not_read(self, raw: bytes, tmp_path: Path) -> None:
        """Not a manifest: ManifestError; a reader skips it as unsealed; `inspect` reports it
        as damage (exit 7, one line, no traceback)."""
        with pytest.raises(ManifestError):
            decode_manifest(raw)
        snapshot = tmp_path / snapshot_dir(DATE)
        snapshot.mkdir()
        (snapshot / "_manifest.json").write_bytes(raw)
        (snapshot / "_SUCCESS").write_bytes(b"")
        assert read_manifest(LocalStore(tmp_path), snapshot_dir(DATE)) is None
        with pytest.raises(IntegrityError, match=r"_manifest\.json is not (JSON|a manifest)"):
            verify_snapshot(snapshot)
        result = run_cli(["inspect", str(tmp_path)])
        assert result.returncode == 7 and "Traceback" not in result.stderr, result.stderr
        (line,) = [line for line in result.stderr.splitlines() if "error:" in line]
        assert "_manifest.json is not" in line
