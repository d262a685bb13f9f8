"""Snapshots straight into a bucket (issue 8): the pyarrow.fs store against a real S3 protocol
server (moto, loopback), and the CLI exporting the emulator's catalog into it."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from exporter.config import ExportConfig, parse_config
from exporter.emulator import RunningEmulator
from exporter.errors import ConfigError, SinkError
from exporter.run import pipeline
from exporter.store import open_store, seal
from exporter.store.bucket import (
    BucketUri,
    ObjectStore,
    describe_store_error,
    make_filesystem,
    manifest_files,
    parse_bucket_uri,
    s3_settings,
)
from exporter.store.layout import ROOT
from exporter.store.layout import snapshot_name as snapshot_dir
from tests.helpers import (
    PYTHON,
    EmulatorProcess,
    bucket_snapshot_rows,
    catalog_rows,
    emulator_process,
    exported_rows,
    run_cli,
)
from tests.s3_fixture import FaultPlan, S3Server, fault_proxy, s3_server

DATE = "2026-11-27"
IMAGES = 2000
SEED = 13
CONFIG = """
[export]
lock_lease_s = 1  # a killed run's successor takes its bucket lock over within a second
[request]
per_page = 40
[parquet]
part_rows = 200
"""
_names = itertools.count()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorProcess]:
    """The emulator of this module's exports (kills land in blocked runs, not by its speed)."""
    with emulator_process(IMAGES, SEED) as emulator:
        yield emulator


@pytest.fixture
def bucket(s3: S3Server) -> str:
    """A fresh, empty bucket for one test."""
    name = f"exports-{next(_names)}"
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def store(s3: S3Server, bucket: str) -> ObjectStore:
    return ObjectStore(s3.filesystem(), BucketUri("s3", bucket, "nightly"))


# -- pure parts -------------------------------------------------------------------------------


class TestUris:
    def test_bucket_and_prefix_are_split_and_normalised(self) -> None:
        assert parse_bucket_uri("s3://my-bucket/a//b/") == BucketUri("s3", "my-bucket", "a/b")
        assert parse_bucket_uri("gs://bkt").base == "bkt"
        assert str(parse_bucket_uri("gs://bkt/x/")) == "gs://bkt/x"

    @pytest.mark.parametrize(
        "uri",
        ["s3://", "s3://B/x", "s3://bkt/../x", "s3://bkt/x?endpoint_override=h", "ftp://bkt/x"],
    )
    def test_bad_uris_are_config_errors(self, uri: str) -> None:
        with pytest.raises(ConfigError):
            parse_bucket_uri(uri)

    def test_open_store_dispatch(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="ftp:// outputs are not supported"):
            open_store("ftp://host/x")
        with pytest.raises(ConfigError, match="valid bucket name"):
            open_store("s3://No_Such/x")  # rejected before any request
        assert open_store(str(tmp_path)).local_path("") == tmp_path

    def test_gs_uris_get_a_gcs_file_system(self) -> None:
        """Only the dispatch: no request is sent (tests/store/test_gcs.py sends them)."""
        fs = make_filesystem(parse_bucket_uri("gs://bkt/p"), environ={})
        assert isinstance(fs, pafs.GcsFileSystem)
        store = ObjectStore(fs, parse_bucket_uri("gs://bkt/p"))
        assert store.root == "gs://bkt/p" and store.local_path("x") is None

    def test_s3_with_endpoint_gets_an_s3_file_system(self) -> None:
        fs = make_filesystem(parse_bucket_uri("s3://bkt/p"), s3_endpoint="http://127.0.0.1:1")
        assert isinstance(fs, pafs.S3FileSystem)


class TestS3Settings:
    def test_flag_beats_the_environment(self) -> None:
        env = {"AWS_ENDPOINT_URL": "http://env:1", "AWS_REGION": "eu-west-3"}
        settings = s3_settings("http://127.0.0.1:9000", env)
        assert (settings.endpoint_override, settings.scheme) == ("127.0.0.1:9000", "http")
        assert settings.region == "eu-west-3"

    def test_service_specific_variable_beats_the_generic_one(self) -> None:
        env = {"AWS_ENDPOINT_URL": "http://generic:1", "AWS_ENDPOINT_URL_S3": "https://s3.x:2"}
        settings = s3_settings(None, env)
        assert (settings.endpoint_override, settings.scheme) == ("s3.x:2", "https")

    def test_no_endpoint_means_aws_and_a_bare_host_means_https(self) -> None:
        assert s3_settings(None, {"AWS_DEFAULT_REGION": "us-west-2"}).endpoint_override is None
        assert s3_settings(None, {"AWS_DEFAULT_REGION": "us-west-2"}).region == "us-west-2"
        assert s3_settings("minio:9000", {}).scheme == "https"

    @pytest.mark.parametrize("endpoint", ["ftp://h:1", "http://h:1/bucket", "http://"])
    def test_bad_endpoints_are_config_errors(self, endpoint: str) -> None:
        with pytest.raises(ConfigError, match=r"export\.s3_endpoint"):
            s3_settings(endpoint, {})


class TestErrorLines:
    @pytest.mark.parametrize(
        ("message", "reason"),
        [
            (
                "When initiating multiple part upload for key 'x' in bucket 'nob': AWS Error "
                "NO_SUCH_BUCKET during CreateMultipartUpload operation: The specified bucket "
                "does not exist",
                "the bucket does not exist",
            ),
            ("AWS Error ACCESS_DENIED during HeadBucket operation: Access Denied", "access denied"),
            ("AWS Error SLOW_DOWN during PutObject operation: Please reduce", "throttling"),
            ("[Errno 2] Path does not exist 'b/x'", "no such object"),
            ("something new\nsecond line", "something new"),
        ],
    )
    def test_sdk_messages_become_one_plain_reason(self, message: str, reason: str) -> None:
        line = describe_store_error(message)
        assert reason in line and "\n" not in line

    def test_manifest_files_stay_inside_the_snapshot(self) -> None:
        assert manifest_files(b'{"files": [{"path": "part-00000-ab.parquet"}]}') == [
            "part-00000-ab.parquet"
        ]
        for bad in (b'{"files": [{"path": "../x"}]}', b"not json", b'{"files": 3}'):
            with pytest.raises(SinkError):
                manifest_files(bad)


# -- the store against the S3 server --------------------------------------------------------


def stage(store: ObjectStore, run: str, parts: int) -> tuple[str, list[str]]:
    """Write a sealed snapshot of `parts` parts for `run` into staging; return it and names."""
    staged = f".staging/{DATE}-{run}/{snapshot_dir(DATE)}"
    names = [f"part-{i:05d}-{run}.parquet" for i in range(parts)]
    for name in names:
        store.write_atomic(f"{staged}/{name}", f"{run}:{name}".encode())
    manifest = {"run_id": run, "files": [{"path": n} for n in names]}
    seal(store, staged, orjson.dumps(manifest))
    return staged, names


class TestObjectStore:
    def test_files_round_trip(self, store: ObjectStore) -> None:
        assert store.read_bytes("a/b.txt") is None and not store.exists("a")
        store.write_atomic("a/b.txt", b"one")
        store.write_atomic("a/b.txt", b"two")
        with store.open_write("a/c.bin") as writer:
            writer.write(b"xyz")
        assert store.read_bytes("a/b.txt") == b"two" and store.size("a/c.bin") == 3
        assert store.list_dir("a") == ["b.txt", "c.bin"] and store.list_dir("nothing") == []
        assert store.exists("a") and store.exists("a/c.bin")
        store.replace("a/c.bin", "a/b.txt")
        assert store.read_bytes("a/b.txt") == b"xyz" and not store.exists("a/c.bin")
        with store.open_read("a/b.txt") as raw:
            assert raw.read() == b"xyz"
        store.delete("a/b.txt")
        store.delete("a/b.txt")  # deleting what is gone is fine
        store.write_atomic("t/x/y", b"1")
        store.delete_tree("t")
        store.delete_tree("a")
        store.delete_tree("never-there")
        assert store.list_dir("") == []
        with pytest.raises(ValueError, match="inside the root"):
            store.write_atomic("../escape", b"x")

    def test_large_files_stream_as_multipart_uploads(
        self, s3: S3Server, store: ObjectStore
    ) -> None:
        """12 MiB written in 256 KiB writes arrive as a multipart upload (ETag "...-N")."""
        data = random.Random(1).randbytes(12 * 1024 * 1024)
        with store.open_write("big.bin") as writer:
            for offset in range(0, len(data), 256 * 1024):
                writer.write(data[offset : offset + 256 * 1024])
        assert writer.hexdigest() == hashlib.sha256(data).hexdigest()
        etag = s3.objects(store.uri.bucket, "nightly/big.bin")["nightly/big.bin"]
        assert int(etag.strip('"').rsplit("-", 1)[1]) >= 2
        assert store.size("big.bin") == len(data)

    def test_a_failed_write_leaves_no_object(self, store: ObjectStore) -> None:
        with pytest.raises(RuntimeError), store.open_write("half.bin") as writer:
            writer.write(b"x" * 1000)
            raise RuntimeError("the sink failed")
        assert not store.exists("half.bin")

    def test_first_publish_copies_parts_then_manifest_then_success(
        self, store: ObjectStore
    ) -> None:
        staged, names = stage(store, "run1aaaa", 3)
        store.publish(staged, snapshot_dir(DATE), grace_seconds=0)
        published = snapshot_dir(DATE)
        assert store.list_dir(published) == sorted([*names, "_SUCCESS", "_manifest.json"])
        assert store.read_bytes(f"{published}/{names[0]}") == f"run1aaaa:{names[0]}".encode()

    def test_republish_replaces_every_part_of_the_date(self, store: ObjectStore) -> None:
        store.publish(stage(store, "run1aaaa", 3)[0], snapshot_dir(DATE), grace_seconds=0)
        published = snapshot_dir(DATE)
        store.write_atomic(f"{published}/part-00009-run1aaaa.parquet.tmp", b"left by a crash")
        store.write_atomic(f"{published}/extra/file", b"not the exporter's")
        staged, names = stage(store, "run2bbbb", 2)
        store.publish(staged, snapshot_dir(DATE), grace_seconds=0)
        assert store.list_dir(published) == sorted([*names, "_SUCCESS", "_manifest.json"])
        manifest = orjson.loads(store.read_bytes(f"{published}/_manifest.json") or b"")
        assert manifest["run_id"] == "run2bbbb"

    def test_a_killed_publish_hides_the_date_until_it_is_run_again(
        self, store: ObjectStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Killed after the copies: no `_SUCCESS` while old and new parts sit side by side;
        the same publish run again completes it and removes the old parts."""
        store.publish(stage(store, "run1aaaa", 3)[0], snapshot_dir(DATE), grace_seconds=0)
        staged, names = stage(store, "run2bbbb", 2)
        published = snapshot_dir(DATE)
        real = ObjectStore.write_atomic

        def killed(self: ObjectStore, path: str, data: bytes) -> None:
            if path == f"{published}/_manifest.json":
                raise SinkError("store", "killed")
            real(self, path, data)

        monkeypatch.setattr(ObjectStore, "write_atomic", killed)
        with pytest.raises(SinkError):
            store.publish(staged, snapshot_dir(DATE), grace_seconds=0)
        assert not store.exists(f"{published}/_SUCCESS")
        assert len(store.list_dir(published)) == 3 + 2 + 1  # old, new, old manifest
        monkeypatch.setattr(ObjectStore, "write_atomic", real)
        store.publish(staged, snapshot_dir(DATE), grace_seconds=0)
        assert store.list_dir(published) == sorted([*names, "_SUCCESS", "_manifest.json"])

    def test_unsealed_snapshots_are_never_published(self, store: ObjectStore) -> None:
        store.write_atomic("staged/part-00000-x.parquet", b"x")
        with pytest.raises(SinkError, match="not sealed"):
            store.publish("staged", snapshot_dir(DATE))
        assert store.list_dir(snapshot_dir(DATE)) == []

    def test_a_manifest_reader_never_sees_a_partial_snapshot(self, store: ObjectStore) -> None:
        """A reader that reads `_manifest.json` only when `_SUCCESS` exists, then exactly the
        files it lists, finds a complete snapshot on every read during five re-publishes."""
        published = snapshot_dir(DATE)
        store.publish(stage(store, "run0aaaa", 4)[0], snapshot_dir(DATE), grace_seconds=0)
        stop, seen, errors = threading.Event(), [], []

        def read() -> None:
            while not stop.is_set():
                if not store.exists(f"{published}/_SUCCESS"):
                    continue
                raw = store.read_bytes(f"{published}/_manifest.json")
                if raw is None:
                    errors.append("manifest missing while _SUCCESS exists")
                    continue
                manifest = orjson.loads(raw)
                bodies = [store.read_bytes(f"{published}/{n}") for n in manifest_files(raw)]
                if any(b is None for b in bodies):
                    errors.append("a listed part was missing")
                    continue
                runs = {(b or b"").split(b":")[0].decode() for b in bodies}
                seen.append((manifest["run_id"], len(bodies), runs))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            for run in range(1, 6):
                staged, _ = stage(store, f"run{run}bbbb", 4)
                store.publish(staged, snapshot_dir(DATE), grace_seconds=0.3)
        finally:
            stop.set()
            reader.join()
        assert seen and not errors
        assert all(runs == {run_id} and count == 4 for run_id, count, runs in seen)


# -- the CLI against the emulator and the S3 server -----------------------------------------


def export_args(uri: str, config: Path, *extra: str) -> list[str]:
    return ["export", "--config", str(config), "--output", uri, "--snapshot-date", DATE, *extra]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "bucket.toml"
    path.write_text(CONFIG)
    return path


def staged_objects(keys: dict[str, str]) -> list[str]:
    """Return the files left in staging (pyarrow keeps an empty `.staging/` marker key)."""
    return [k for k in keys if "/.staging/" in k and not k.endswith("/")]


def published_rows(s3: S3Server, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    return bucket_snapshot_rows(s3.filesystem(), f"{bucket}/{prefix}/{snapshot_dir(DATE)}")


def test_export_into_a_bucket_matches_the_catalog(
    s3: S3Server, emu: EmulatorProcess, bucket: str, config: Path
) -> None:
    """Parquet and NDJSON parts, manifest and `_SUCCESS` land under the prefix; the rows equal
    the emulator's catalog exactly; DuckDB queries the bucket through a pyarrow dataset."""
    uri = f"s3://{bucket}/nightly"
    result = run_cli(
        export_args(uri, config, "--format", "parquet", "--format", "ndjson"), emu.env(**s3.env())
    )
    assert result.returncode == 0, result.stderr
    assert f"{uri}/{snapshot_dir(DATE)}" in result.stderr  # the summary
    expected = catalog_rows(IMAGES, SEED, emu.account_id)
    assert published_rows(s3, bucket, "nightly") == expected
    keys = s3.objects(bucket)
    assert not staged_objects(keys), "staging was not cleaned up"
    ndjson = sorted(k for k in keys if k.endswith(".ndjson"))
    lines = []
    for key in ndjson:
        body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        lines += [orjson.loads(line) for line in body.splitlines()]
    assert exported_rows(lines) == expected
    snapshot = f"nightly/{ROOT.snapshot(DATE)}/"  # not the change set beside it
    parquet = sorted(
        f"{bucket}/{k}" for k in keys if k.startswith(snapshot) and k.endswith(".parquet")
    )
    dataset = pads.dataset(parquet, filesystem=s3.filesystem(), format="parquet")
    with duckdb.connect() as con:
        con.register("images", dataset)
        count = con.execute("SELECT count(*), count(DISTINCT id) FROM images").fetchone()
    assert count == (IMAGES, IMAGES)
    inspect = run_cli(["inspect", uri], emu.env(**s3.env()))
    assert inspect.returncode == 0, inspect.stderr
    assert f"{IMAGES:,} images" in inspect.stdout and "sha256 verified" in inspect.stdout
    page = run_cli(["report", uri], emu.env(**s3.env()))  # the page is written in the bucket
    assert page.returncode == 0, page.stderr
    assert page.stdout.strip() == f"{uri}/report.html"
    html = s3.client().get_object(Bucket=bucket, Key="nightly/report.html")["Body"].read()
    assert f'data-figure="images"><b>{IMAGES:,}</b>'.encode() in html


def test_rerun_of_the_same_date_replaces_the_snapshot(
    s3: S3Server, emu: EmulatorProcess, bucket: str, config: Path
) -> None:
    uri = f"s3://{bucket}/nightly"
    first = run_cli(export_args(uri, config), emu.env(**s3.env()))
    assert first.returncode == 0, first.stderr
    before = set(s3.objects(bucket))
    # the endpoint by flag this time, with no AWS_ENDPOINT_URL in the environment
    env = emu.env(**s3.env())
    del env["AWS_ENDPOINT_URL"]
    second = run_cli(export_args(uri, config, "--s3-endpoint", s3.endpoint), env)
    assert second.returncode == 0, second.stderr
    after = set(s3.objects(bucket))
    parts = {k for k in after if k.endswith(".parquet")}
    assert parts and not parts & before, "the previous run's parts were not all replaced"
    assert {k.rsplit("-", 1)[1] for k in parts} == {k.rsplit("-", 1)[1] for k in list(parts)[:1]}
    assert published_rows(s3, bucket, "nightly") == catalog_rows(IMAGES, SEED, emu.account_id)


def test_resume_after_sigkill_uses_the_checkpoint_in_the_bucket(
    s3: S3Server, emu: EmulatorProcess, bucket: str, config: Path
) -> None:
    """Kill the export four times, each just after a part of its own; the checkpoint is in the
    bucket (so any container can resume); a final --resume publishes every image exactly once.

    Each killed run may send 8 requests (`walk.quota` per an hour), a few parts of 100 rows
    and far from the 50 pages of the walk: it is blocked mid-walk when the kill lands, however
    fast or loaded this machine is."""
    uri = f"s3://{bucket}/nightly"
    base = CONFIG.replace("part_rows = 200", "part_rows = 100")
    config.write_text(base)
    gated = config.with_name("gated.toml")  # walk.quota is not part of the request's identity
    gated.write_text(base + "[walk]\nquota = 8\nwindow_s = 3600\nmargin = 1.0\n")
    rng = random.Random(8)
    for _ in range(4):
        before = checkpoint_etag(s3, bucket)
        process = subprocess.Popen(
            [PYTHON, "-m", "exporter", *export_args(uri, gated, "--resume")],
            env=emu.env(**s3.env()),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120  # a hang guard only: a part comes in seconds
        while checkpoint_etag(s3, bucket) == before:
            assert process.poll() is None, "the run exited before committing a part"
            assert time.monotonic() < deadline, "no part committed in 120 s"
            time.sleep(0.02)  # until this run has committed a part of its own
        time.sleep(rng.uniform(0.0, 0.15))
        assert process.poll() is None, "a blocked run cannot finish"
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert_success_means_complete(s3, bucket, "nightly")
    final = run_cli(export_args(uri, config, "--resume", "-v"), emu.env(**s3.env()))
    assert final.returncode == 0, final.stderr
    assert "resuming run" in final.stderr
    assert published_rows(s3, bucket, "nightly") == catalog_rows(IMAGES, SEED, emu.account_id)
    assert not staged_objects(s3.objects(bucket))


def assert_success_means_complete(s3: S3Server, bucket: str, prefix: str) -> None:
    """Where `D/_SUCCESS` exists, `D/` holds exactly the files its manifest lists."""
    base = f"{prefix}/{snapshot_dir(DATE)}/"
    keys = [k[len(base) :] for k in s3.objects(bucket, base) if not k.endswith("/")]
    if "_SUCCESS" in keys:
        body = s3.client().get_object(Bucket=bucket, Key=f"{base}_manifest.json")["Body"].read()
        listed = set(manifest_files(body)) | {"_SUCCESS", "_manifest.json"}
        assert set(keys) == listed


def checkpoint_etag(s3: S3Server, bucket: str) -> str | None:
    """Return the ETag of the run's checkpoint object in the bucket, None while there is none."""
    found = [e for k, e in s3.objects(bucket).items() if k.endswith("/_checkpoint.json")]
    return found[0] if found else None


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, stderr
    return errors[0]


def test_missing_bucket_fails_with_exit_5(s3: S3Server, emu: EmulatorProcess, config: Path) -> None:
    result = run_cli(export_args("s3://no-such-bucket/x", config), emu.env(**s3.env()))
    assert result.returncode == 5, result.stderr
    assert "the bucket does not exist" in one_error_line(result.stderr)


def test_access_denied_fails_with_exit_5_and_leaves_the_snapshot(
    s3: S3Server, emu: EmulatorProcess, bucket: str, config: Path
) -> None:
    """A user without S3 permissions gets one clear line, and the published snapshot of the
    same date is left exactly as it was."""
    uri = f"s3://{bucket}/nightly"
    first = run_cli(export_args(uri, config), emu.env(**s3.env()))
    assert first.returncode == 0, first.stderr
    before = s3.objects(bucket)
    iam = s3.iam()
    iam.create_user(UserName=f"reader-{bucket}")
    key = iam.create_access_key(UserName=f"reader-{bucket}")["AccessKey"]
    env = emu.env(
        **s3.env(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
    )
    with s3.iam_enforced():
        result = run_cli(export_args(uri, config), env)
    assert result.returncode == 5, result.stderr
    assert "access denied" in one_error_line(result.stderr)
    assert s3.objects(bucket) == before


def test_bad_endpoint_flag_is_a_usage_error(emu: EmulatorProcess, config: Path) -> None:
    result = run_cli(export_args("s3://bkt/x", config, "--s3-endpoint", "ftp://h:1"), emu.env())
    assert result.returncode == 2, result.stderr
    assert "export.s3_endpoint" in one_error_line(result.stderr)


def test_throttling_and_dropped_connections_are_retried(
    s3: S3Server, emu: EmulatorProcess, bucket: str, config: Path
) -> None:
    """Through a proxy that answers every sixth request with 503 SlowDown and drops the next
    connection without a reply, the export still publishes the whole catalog."""
    plan = FaultPlan(every=6)
    with fault_proxy(s3, plan) as endpoint:
        result = run_cli(
            export_args(f"s3://{bucket}/nightly", config, "--s3-endpoint", endpoint),
            emu.env(**s3.env()),
        )
    assert result.returncode == 0, result.stderr
    assert plan.throttled >= 10 and plan.dropped >= 10, plan
    assert published_rows(s3, bucket, "nightly") == catalog_rows(IMAGES, SEED, emu.account_id)


class Crash(Exception):
    """Stands in for a kill at a chosen instant."""


async def test_a_run_killed_while_publishing_is_completed_by_resume(
    s3: S3Server,
    bucket: str,
    emulator: RunningEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A re-run of date D killed after copying its parts (old and new parts side by side, no
    `_SUCCESS`): --resume finishes the publication without fetching a page again."""
    for key, value in s3.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # the endpoint comes from export.s3_endpoint

    def config(resume: bool = False) -> ExportConfig:
        overrides = {
            "export.account_id": emulator.account_id,
            "export.base_url": emulator.base_url,
            "export.output": f"s3://{bucket}/nightly",
            "export.s3_endpoint": s3.endpoint,
            "request.per_page": 25,
            "parquet.part_rows": 50,
        }
        env = {"CLOUDFLARE_API_TOKEN": emulator.token}
        return parse_config({}, env, overrides, today=dt.date(2026, 11, 27), resume=resume)

    await pipeline.export(config())
    first_parts = {k for k in s3.objects(bucket) if k.endswith(".parquet")}
    published = snapshot_dir(DATE)
    real = ObjectStore.write_atomic

    def killed(self: ObjectStore, path: str, data: bytes) -> None:
        if path == f"{published}/_manifest.json":
            raise Crash
        real(self, path, data)

    monkeypatch.setattr(ObjectStore, "write_atomic", killed)
    with pytest.raises(Crash):
        await pipeline.export(config())
    monkeypatch.setattr(ObjectStore, "write_atomic", real)
    keys = s3.objects(bucket)
    assert f"nightly/{published}/_SUCCESS" not in keys
    assert first_parts < {k for k in keys if k.endswith(".parquet")}
    requests = emulator.counters.requests
    await pipeline.export(config(resume=True))
    assert emulator.counters.requests == requests
    parts = {k for k in s3.objects(bucket) if k.endswith(".parquet")}
    assert parts and not parts & first_parts
    expected = catalog_rows(len(emulator.catalog), emulator.settings.seed, emulator.account_id)
    assert published_rows(s3, bucket, "nightly") == expected


def test_changes_in_a_bucket_between_an_ndjson_and_a_parquet_night(
    s3: S3Server, emu: EmulatorProcess, bucket: str, config: Path
) -> None:
    """Night 1 (half the catalog, NDJSON only) and night 2 (all of it, Parquet) in a bucket:
    night 2's change set is published beside it, verified by `inspect`, and holds exactly
    the images added since night 1."""
    uri = f"s3://{bucket}/nightly"
    with emulator_process(IMAGES // 2, SEED) as half:
        first = [*export_args(uri, config, "--format", "ndjson"), "--snapshot-date", "2026-11-26"]
        assert run_cli(first, half.env(**s3.env())).returncode == 0
    second = run_cli(export_args(uri, config), emu.env(**s3.env()))
    assert second.returncode == 0, second.stderr
    base = f"{bucket}/nightly/{ROOT.changes(DATE)}"
    fs = s3.filesystem()
    with fs.open_input_stream(f"{base}/_manifest.json") as raw:
        manifest = orjson.loads(raw.read())
    assert manifest["previous_snapshot_date"] == "2026-11-26"
    paths = [f"{base}/{f['path']}" for f in manifest["files"]]
    # the column snapshot_date repeats the folder's key: read without Hive partitioning
    table = pq.ParquetDataset(paths, filesystem=fs, partitioning=None).read()
    expected = set(catalog_rows(IMAGES, SEED, "")) - set(catalog_rows(IMAGES // 2, SEED, ""))
    assert set(table.column("id").to_pylist()) == expected
    assert set(table.column("change").to_pylist()) == {"added"}
    inspect = run_cli(["inspect", uri], emu.env(**s3.env()))
    assert inspect.returncode == 0, inspect.stderr
    assert f"{ROOT.changes(DATE)}: ok" in inspect.stdout
    assert not staged_objects(s3.objects(bucket))
