"""LocalStore: durable writes, atomic replace, publication that no reader catches half done."""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import threading
import time
from pathlib import Path

import orjson
import pytest

import exporter.store.local as store_module
from exporter.errors import ConfigError, SinkError
from exporter.store import LocalStore, open_store, seal
from exporter.store.layout import snapshot_name as snapshot_dir

DATE = "2026-11-27"
OTHER = "2026-11-26"


def stage(store: LocalStore, run: str, parts: int, date: str = DATE) -> str:
    """Write a sealed staged snapshot of `parts` small files whose content names `run`."""
    staged = f".staging/{run}/{snapshot_dir(date)}"
    names = [f"part-{n:05d}.parquet" for n in range(parts)]
    for name in names:
        with store.open_write(f"{staged}/{name}") as out:
            out.write(f"{run}:{name}".encode())
    seal(store, staged, orjson.dumps({"run": run, "files": names}))
    return staged


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


class TestFiles:
    def test_open_write_reports_size_and_sha256(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        with store.open_write("a/b/file.bin") as out:
            out.write(b"hello ")
            out.write(memoryview(b"world"))
        data = (tmp_path / "a/b/file.bin").read_bytes()
        assert data == b"hello world"
        assert (out.bytes_written, out.hexdigest()) == (11, hashlib.sha256(data).hexdigest())

    def test_write_atomic_replaces_and_leaves_no_temp(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        store.write_atomic("x/state.json", b"one")
        store.write_atomic("x/state.json", b"two")
        assert store.read_bytes("x/state.json") == b"two"
        assert os.listdir(tmp_path / "x") == ["state.json"]
        assert store.read_bytes("x/missing") is None

    def test_failed_replace_keeps_the_old_content(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A crash between writing the temp file and the rename leaves the old file whole."""
        store = LocalStore(tmp_path)
        store.write_atomic("state.json", b"old")

        def fail(src: object, dst: object) -> None:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "replace", fail)
        with pytest.raises(SinkError, match=r"cannot write .*state\.json"):
            store.write_atomic("state.json", b"new")
        monkeypatch.undo()
        assert store.read_bytes("state.json") == b"old"
        assert os.listdir(tmp_path) == ["state.json"]

    @pytest.mark.parametrize(
        ("code", "text"),
        [
            pytest.param(errno.ENOSPC, "no space left on device", id="disk-full"),
            pytest.param(errno.EACCES, "permission denied", id="permission"),
            pytest.param(errno.EROFS, "read-only file system", id="read-only"),
        ],
    )
    def test_os_errors_become_one_line_sink_errors(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, text: str
    ) -> None:
        store = LocalStore(tmp_path)

        def refuse(*args: object, **kwargs: object) -> None:
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(store_module, "open", refuse, raising=False)
        with pytest.raises(SinkError, match=text) as caught:
            store.write_atomic("f", b"x")
        assert caught.value.exit_code == 5 and "\n" not in str(caught.value)

    def test_paths_stay_inside_the_root(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="inside the root"):
            LocalStore(tmp_path).write_atomic("../escape", b"x")

    def test_unknown_uri_schemes_are_refused(self, tmp_path: Path) -> None:
        """An output scheme no store serves is a config error; file:// is a local directory."""
        with pytest.raises(ConfigError, match="ftp:// outputs are not supported"):
            open_store("ftp://host/x")
        assert open_store(f"file://{tmp_path}").root == str(tmp_path)


class TestPublish:
    def test_first_publish_moves_the_staged_directory(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        staged = stage(store, "r1", 2)
        store.publish(staged, snapshot_dir(DATE))
        assert sorted(os.listdir(tmp_path / f"snapshot_date={DATE}")) == [
            "_SUCCESS", "_manifest.json", "part-00000.parquet", "part-00001.parquet",
        ]  # fmt: skip
        assert not (tmp_path / staged).exists()

    def test_republish_replaces_the_date_and_leaves_other_dates(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        store.publish(stage(store, "old", 1, OTHER), snapshot_dir(OTHER))
        store.publish(stage(store, "r1", 3), snapshot_dir(DATE))
        other = tree(tmp_path / f"snapshot_date={OTHER}")
        store.publish(stage(store, "r2", 1), snapshot_dir(DATE), grace_seconds=0)
        published = tree(tmp_path / f"snapshot_date={DATE}")
        assert published["part-00000.parquet"] == b"r2:part-00000.parquet"
        assert set(published) == {"_SUCCESS", "_manifest.json", "part-00000.parquet"}
        assert tree(tmp_path / f"snapshot_date={OTHER}") == other
        assert not (tmp_path / ".staging/r2" / snapshot_dir(DATE)).exists()

    def test_unsealed_directory_is_never_published(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        staged = stage(store, "r1", 1)
        (tmp_path / staged / "_SUCCESS").unlink()
        with pytest.raises(SinkError, match="no _SUCCESS"):
            store.publish(staged, snapshot_dir(DATE))
        assert not (tmp_path / snapshot_dir(DATE)).exists()

    def test_two_step_fallback_without_rename_exchange(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Where RENAME_EXCHANGE is missing, the result is the same, old snapshot removed."""
        monkeypatch.setattr(store_module, "_exchange", lambda a, b: False)
        store = LocalStore(tmp_path)
        store.publish(stage(store, "r1", 2), snapshot_dir(DATE))
        store.publish(stage(store, "r2", 1), snapshot_dir(DATE), grace_seconds=0)
        assert tree(tmp_path / snapshot_dir(DATE))["part-00000.parquet"] == (
            b"r2:part-00000.parquet"
        )
        assert not list((tmp_path / ".staging").rglob("part-*"))

    def test_vanished_staging_directory_is_a_sink_error(self, tmp_path: Path) -> None:
        store = LocalStore(tmp_path)
        store.publish(stage(store, "r1", 1), snapshot_dir(DATE))
        before = tree(tmp_path / snapshot_dir(DATE))
        staged = stage(store, "r2", 2)
        store.delete_tree(".staging/r2")
        with pytest.raises(SinkError):
            store.publish(staged, snapshot_dir(DATE))
        assert tree(tmp_path / snapshot_dir(DATE)) == before

    def test_read_only_output_leaves_the_published_snapshot(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """EROFS at publication: SinkError, and yesterday's and today's snapshots are intact."""
        store = LocalStore(tmp_path)
        store.publish(stage(store, "r1", 2), snapshot_dir(DATE))
        before = tree(tmp_path / snapshot_dir(DATE))
        staged = stage(store, "r2", 1)

        def read_only(*args: object, **kwargs: object) -> None:
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(os, "rename", read_only)
        monkeypatch.setattr(store_module, "_exchange", read_only)
        with pytest.raises(SinkError, match=r"cannot publish .*read-only file system"):
            store.publish(staged, snapshot_dir(DATE))
        monkeypatch.undo()
        assert tree(tmp_path / snapshot_dir(DATE)) == before
        assert (tmp_path / staged / "_SUCCESS").exists()  # kept for --resume

    def test_concurrent_reader_never_sees_partial_or_mixed_snapshots(self, tmp_path: Path) -> None:
        """A reader globbing OUT/snapshot_date=*/* during 12 re-publishes sees whole runs only.

        Runs have 1, 2 or 3 parts, so a glob mixing two runs shows a wrong set of names; the
        reader also reads each listed file through one directory handle and checks that every
        file and the manifest name the same run.
        """
        store = LocalStore(tmp_path)
        store.publish(stage(store, "old", 1, OTHER), snapshot_dir(OTHER))
        other = tree(tmp_path / snapshot_dir(OTHER))
        store.publish(stage(store, "run0", 1), snapshot_dir(DATE))
        valid = {
            frozenset({"_SUCCESS", "_manifest.json", *(f"part-{n:05d}.parquet" for n in range(k))})
            for k in (1, 2, 3)
        }
        problems: list[str] = []
        observed = {"glob": 0, "content": 0}
        stop = threading.Event()

        def read_once() -> None:
            names: dict[str, set[str]] = {}
            for path in glob.glob(str(tmp_path / "snapshot_date=*" / "*")):
                parent, name = os.path.split(path)
                names.setdefault(os.path.basename(parent), set()).add(name)
            if set(names) != {snapshot_dir(OTHER), snapshot_dir(DATE)}:
                problems.append(f"dates seen: {sorted(names)}")
            elif frozenset(names[snapshot_dir(DATE)]) not in valid:
                problems.append(f"partial or mixed listing: {sorted(names[snapshot_dir(DATE)])}")
            observed["glob"] += 1
            fd = os.open(tmp_path / snapshot_dir(DATE), os.O_RDONLY | os.O_DIRECTORY)
            try:
                listing = os.listdir(fd)
                manifest = orjson.loads(_read_at(fd, "_manifest.json"))
                runs = {_read_at(fd, n).split(b":")[0] for n in listing if n.startswith("part-")}
            except FileNotFoundError:
                return  # an old directory deleted after its grace period: not an observation
            finally:
                os.close(fd)
            if runs != {manifest["run"].encode()} or sorted(manifest["files"]) != sorted(
                n for n in listing if n.startswith("part-")
            ):
                problems.append(f"mixed content: {runs} vs manifest {manifest}")
            observed["content"] += 1

        def reader() -> None:
            while not stop.is_set():
                read_once()

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for run in range(1, 13):
                seen = observed["content"]
                store.publish(
                    stage(store, f"run{run}", 1 + run % 3), snapshot_dir(DATE), grace_seconds=0.05
                )
                # Two reads between publishes, at any speed: the counts below are guaranteed.
                deadline = time.monotonic() + 60  # a hang guard only
                while observed["content"] < seen + 2 and not problems:
                    assert time.monotonic() < deadline, "the reader stopped reading"
                    time.sleep(0.001)
        finally:
            stop.set()
            thread.join()
        assert problems == []
        assert observed["glob"] > 20 and observed["content"] > 20
        assert tree(tmp_path / snapshot_dir(OTHER)) == other
        final = orjson.loads((tmp_path / snapshot_dir(DATE) / "_manifest.json").read_bytes())
        assert final["run"] == "run12"


def _read_at(fd: int, name: str) -> bytes:
    handle = os.open(name, os.O_RDONLY, dir_fd=fd)
    try:
        return os.read(handle, 1 << 16)
    finally:
        os.close(handle)
