"""Checkpoint: request fingerprints without secrets, atomic replace, round trip, isolation."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from exporter.errors import SinkError
from exporter.sinks import PartFile
from exporter.snapshot.checkpoint import (
    Checkpoint,
    committing_runs,
    discard_run,
    load_checkpoint,
    redact_request,
    request_fingerprint,
    save_checkpoint,
    stale_staged_runs,
)
from exporter.store import LocalStore
from exporter.store.layout import ROOT, run_key

DATE = "2026-11-27"
REQUEST: dict[str, Any] = {
    "account_id": "acc",
    "filters": ["meta.status[eq]=active"],
    "creator": None,
    "sort_order": "desc",
    "per_page": 1000,
    "formats": ["parquet"],
}
PART = PartFile(path="part-00000.parquet", rows=10, bytes=1234, sha256="ab" * 32,
                schema_fingerprint="f" * 16, format="parquet")  # fmt: skip


def checkpoint(**changes: Any) -> Checkpoint:
    values: dict[str, Any] = {
        "request_fingerprint": request_fingerprint(REQUEST),
        "run_id": "run-1",
        "snapshot_date": DATE,
        "started_at": "2026-11-27T01:00:00Z",
        "walker_state": {"cursors": [{"token": "opaque==", "done": False}]},
        "normalizer_state": {"version": 1, "plan": {"columns": []}},
        "parts": {"parquet": [PART]},
        "counts": {"images": 10, "pages": 1},
    }
    values.update(changes)
    return Checkpoint(**values)


class TestFingerprint:
    def test_key_order_does_not_matter(self) -> None:
        assert request_fingerprint(REQUEST) == request_fingerprint(dict(reversed(REQUEST.items())))

    @pytest.mark.parametrize(
        "change",
        [
            pytest.param({"filters": ["meta.status[eq]=draft"]}, id="filter"),
            pytest.param({"sort_order": "asc"}, id="order"),
            pytest.param({"account_id": "other"}, id="account"),
            pytest.param({"formats": ["ndjson"]}, id="format"),
        ],
    )
    def test_a_different_request_has_a_different_fingerprint(self, change: dict[str, Any]) -> None:
        assert request_fingerprint({**REQUEST, **change}) != request_fingerprint(REQUEST)

    def test_secrets_never_count_nor_appear(self) -> None:
        """Rotating a token must not orphan a run; secrets are dropped at any depth."""
        with_secret = {**REQUEST, "api_token": "s3cret", "auth": {"API_KEY": "k", "x": 1}}
        other_secret = {**REQUEST, "api_token": "other", "auth": {"API_KEY": "j", "x": 1}}
        assert request_fingerprint(with_secret) == request_fingerprint(other_secret)
        assert "s3cret" not in repr(redact_request(with_secret))
        assert redact_request(with_secret)["auth"] == {"x": 1}


class TestCheckpointFile:
    def test_round_trip(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        saved = checkpoint()
        save_checkpoint(store, ROOT, saved)
        found = load_checkpoint(store, ROOT, saved.request_fingerprint, DATE)
        assert found.checkpoint == saved
        assert "resuming run run-1 after 10 images" == found.message
        assert (tmp_path / ROOT.checkpoint(saved.run_key)).exists()

    def test_each_save_replaces_the_file_atomically(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A save that dies before its rename leaves the previous checkpoint readable."""
        store = LocalStore(tmp_path)
        save_checkpoint(store, ROOT, checkpoint())

        def die(src: object, dst: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "replace", die)
        with pytest.raises(SinkError, match="no space left on device"):
            save_checkpoint(store, ROOT, checkpoint(counts={"images": 20}))
        monkeypatch.undo()
        found = load_checkpoint(store, ROOT, request_fingerprint(REQUEST), DATE).checkpoint
        assert found is not None and found.counts["images"] == 10
        assert os.listdir(tmp_path / ".staging" / found.run_key) == ["_checkpoint.json"]

    def test_nothing_to_resume_starts_afresh(self, tmp_path: Path) -> None:
        found = load_checkpoint(LocalStore(tmp_path), ROOT, request_fingerprint(REQUEST), DATE)
        assert found.checkpoint is None and "starting afresh" in found.message

    def test_another_request_never_finds_this_run(self, tmp_path: Path) -> None:
        """Staging is keyed by the fingerprint: a different request sees nothing to resume."""
        store = LocalStore(tmp_path)
        save_checkpoint(store, ROOT, checkpoint())
        other = request_fingerprint({**REQUEST, "sort_order": "asc"})
        assert load_checkpoint(store, ROOT, other, DATE).checkpoint is None

    def test_runs_staged_more_than_a_week_earlier_are_stale(self, tmp_path: Path) -> None:
        """Staging of dates more than 7 days before tonight is swept; recent ones are kept."""
        store = LocalStore(tmp_path)
        for key in ("2026-11-19-aaaa", "2026-11-20-bbbb", "2026-11-27-cccc", "notes"):
            store.make_dirs(f".staging/{key}")
        assert stale_staged_runs(store, ROOT, "2026-11-27") == ["2026-11-19-aaaa"]

    def test_runs_of_other_dates_left_between_files_and_sinks_are_found(
        self, tmp_path: Path
    ) -> None:
        """Only this request's runs of other dates whose phase is "committing" are pending."""
        store, mine = LocalStore(tmp_path), request_fingerprint(REQUEST)
        other = request_fingerprint({**REQUEST, "creator": "someone"})
        for date, fingerprint, phase in [
            ("2026-11-25", mine, "committing"),  # the one to complete
            ("2026-11-24", mine, "publishing"),  # files not published: --resume's job
            ("2026-11-23", other, "committing"),  # another request's
            (DATE, mine, "committing"),  # tonight's own run
        ]:
            run = checkpoint(snapshot_date=date, request_fingerprint=fingerprint, phase=phase)
            save_checkpoint(store, ROOT, run)
        found = committing_runs(store, ROOT, mine, DATE)
        assert [c.snapshot_date for c in found] == ["2026-11-25"]

    def test_a_foreign_checkpoint_under_our_key_is_refused(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        mine = request_fingerprint(REQUEST)
        foreign = checkpoint(request_fingerprint=mine[:16] + "0" * 48)  # same key prefix
        save_checkpoint(store, ROOT, foreign)
        found = load_checkpoint(store, ROOT, mine, DATE)
        assert found.checkpoint is None and "different request" in found.message

    def test_unreadable_checkpoint_starts_afresh_with_a_reason(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        key = run_key(request_fingerprint(REQUEST), DATE)
        store.write_atomic(ROOT.checkpoint(key), b"{not json")
        found = load_checkpoint(store, ROOT, request_fingerprint(REQUEST), DATE)
        assert found.checkpoint is None and "unreadable" in found.message

    def test_discard_removes_the_whole_run(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        saved = checkpoint()
        save_checkpoint(store, ROOT, saved)
        store.write_atomic(f"{ROOT.staged_snapshot(saved.run_key, DATE)}/part-00000.parquet", b"x")
        discard_run(store, ROOT, saved.run_key)
        assert os.listdir(tmp_path / ".staging") == []
