"""`--format delta` through the CLI: the four Delta tables, read back with deltalake/pyarrow.

The emulator's catalog of n images is a prefix of the catalog of n + k, so nights of different
sizes are known uploads and deletions. Every table is compared exactly with what the exporter
published in Parquet beside it (snapshot and change set), and each CLI run's real exit status
is checked: deltalake 1.6.6 with pyarrow 26 aborts the interpreter at exit (status 134) when a
table read through it is still alive.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.sinks.delta_tables import storage_options
from tests.helpers import EmulatorProcess, emulator_process, query_rows, run_cli
from tests.s3_fixture import s3_server

CORE = "id, account_id, filename, creator, require_signed_urls, uploaded, variants, meta_json"
NIGHTS = (("2026-01-01", 120), ("2026-01-02", 150), ("2026-01-03", 100))


def read_delta(
    uri: str, options: dict[str, str] | None = None, *, history: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return a Delta table's rows and (locally) its history, with nothing of deltalake left
    alive. `history()` holds the GIL during its requests, which would starve the moto server
    thread of this process: bucket tests read rows only."""
    from deltalake import DeltaTable

    table = DeltaTable(uri, storage_options=options)
    rows = table.to_pyarrow_table().to_pylist()
    commits = table.history() if history else []
    del table
    gc.collect()
    return rows, commits


def by_id(rows: list[dict[str, Any]], *columns: str) -> dict[str, tuple[Any, ...]]:
    found = {}
    for row in rows:
        assert row["id"] not in found, f"duplicate id {row['id']}"
        found[row["id"]] = tuple(row[c] for c in columns)
    return found


def export(
    emu: EmulatorProcess, out: str, date: str, *extra: str, env: dict[str, str] | None = None
) -> None:
    args = ["export", "--output", out, "--snapshot-date", date, "--format", "delta", *extra]
    result = run_cli([*args, "--format", "parquet", "-q"], env=emu.env(**(env or {})))
    assert result.returncode == 0, result.stderr  # the real status: never 134 after a Delta run


@pytest.fixture(scope="module")
def nights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Three nights (uploads, then deletions) and a re-run of night 2, into one output."""
    out = tmp_path_factory.mktemp("delta") / "out"
    config = out.parent / "c.toml"
    config.write_text("[changes]\nmax_removed_share = 0.5\n")
    for date, images in (*NIGHTS, ("2026-01-02", 150)):
        with emulator_process(images, 4) as emu:
            export(emu, str(out), date, "--config", str(config))
    yield out


COLUMNS = (
    "account_id",
    "filename",
    "creator",
    "require_signed_urls",
    "uploaded",
    "variants",
    "meta_json",
)


def parquet_rows(sql: str) -> list[dict[str, Any]]:
    return query_rows(sql)


def rows_as(rows: list[dict[str, Any]], key: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Return rows as comparable tuples (dates and lists as text)."""
    return [tuple(str(row[k]) for k in key) for row in rows]


def test_images_hold_each_snapshot_once(nights: Path) -> None:
    """`images` holds every night's partition exactly as its Parquet snapshot (a re-run of a
    date replaced it, never duplicated it), and its versions name their snapshot."""
    rows, history = read_delta(str(nights / "delta" / "images"))
    for date, _ in NIGHTS:
        expected = parquet_rows(
            f"SELECT * FROM read_parquet('{nights}/snapshot_date={date}/*.parquet')"
        )
        mine = [r for r in rows if str(r["snapshot_date"]) == date]
        assert by_id(mine, *COLUMNS) == by_id(expected, *COLUMNS)
    # newest first: the re-run of night 2 after nights 1, 2 and 3
    dates = [h.get("cf_images.snapshot_date") for h in history]
    assert dates == ["2026-01-02", "2026-01-03", "2026-01-02", "2026-01-01"]
    # each commit names its snapshot's run by the manifest's whole run id (users join them)
    run_ids = {
        date: json.loads((nights / f"snapshot_date={date}" / "_manifest.json").read_text())[
            "run_id"
        ]
        for date, _ in NIGHTS
    }
    assert history[0]["cf_images.run_id"] == run_ids["2026-01-02"]
    assert [h.get("cf_images.run_id") for h in history[1:]] == [
        run_ids["2026-01-03"],
        history[2]["cf_images.run_id"],  # the first run of night 2, since replaced
        run_ids["2026-01-01"],
    ]
    assert all(len(h["cf_images.run_id"]) == len(run_ids["2026-01-01"]) for h in history)


def test_image_changes_equal_the_published_change_sets(nights: Path) -> None:
    rows, _ = read_delta(str(nights / "delta" / "image_changes"))
    published = parquet_rows(
        f"SELECT * FROM read_parquet('{nights}/changes/snapshot_date=*/*.parquet', "
        "hive_partitioning = false)"
    )
    key = ("id", "change", "snapshot_date", "previous_snapshot_date", "changed_fields", *COLUMNS)
    assert sorted(rows_as(rows, key)) == sorted(rows_as(published, key))
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        kind = (str(row["snapshot_date"]), row["change"])
        counts[kind] = counts.get(kind, 0) + 1
    assert counts == {
        ("2026-01-01", "added"): 120,
        ("2026-01-02", "added"): 30,
        ("2026-01-03", "removed"): 50,
    }


def test_current_equals_the_latest_snapshot(nights: Path) -> None:
    """After a re-run of an earlier night, images_current still equals the latest snapshot."""
    rows, _ = read_delta(str(nights / "delta" / "images_current"))
    latest = parquet_rows(
        f"SELECT * FROM read_parquet('{nights}/snapshot_date=2026-01-03/*.parquet')"
    )
    assert by_id(rows, *COLUMNS) == by_id(latest, *COLUMNS)


def test_history_is_scd2_of_the_change_log(nights: Path) -> None:
    """One row per (id, version): the 50 removed on night 3 ended then (is_deleted), the rest
    are current from the night they were added."""
    rows, _ = read_delta(str(nights / "delta" / "images_history"))
    assert len(rows) == 150
    deleted = [r for r in rows if r["is_deleted"]]
    assert len(deleted) == 50
    assert {(str(r["valid_to"]), r["is_current"]) for r in deleted} == {("2026-01-03", False)}
    current = [r for r in rows if r["is_current"]]
    assert len(current) == 100 and all(r["valid_to"] is None for r in current)
    first = {str(r["valid_from"]) for r in rows}
    assert first == {"2026-01-01", "2026-01-02"}


def test_delta_on_s3_with_etag_commits(tmp_path: Path) -> None:
    """Two nights into a moto bucket: images and current read back through delta-rs with the
    same storage options the exporter used (conditional_put = etag)."""
    with s3_server() as s3:
        s3.client().create_bucket(Bucket="lake")
        uri = "s3://lake/nightly"
        for date, images in NIGHTS[:2]:
            with emulator_process(images, 4) as emu:
                export(emu, uri, date, env=s3.env())
        env = {**os.environ, **s3.env()}
        options = storage_options(f"{uri}/delta", env)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            options[name] = env[name]
        assert options["conditional_put"] == "etag"
        current, _ = read_delta(f"{uri}/delta/images_current", options, history=False)
        changes, _ = read_delta(f"{uri}/delta/image_changes", options, history=False)
    assert len(current) == 150
    assert sorted(r["change"] for r in changes).count("added") == 150


def test_delta_on_s3_follows_the_s3_endpoint_flag(tmp_path: Path) -> None:
    """`--s3-endpoint` alone (no AWS_ENDPOINT_URL in the environment) points delta-rs at the
    same S3-compatible service as the snapshot's files, not at AWS."""
    with s3_server() as s3:
        s3.client().create_bucket(Bucket="lake")
        uri = "s3://lake/flagged"
        env = s3.env()
        endpoint = env.pop("AWS_ENDPOINT_URL")
        with emulator_process(60, 4) as emu:
            export(emu, uri, "2026-01-01", "--s3-endpoint", endpoint, env=env)
        options = storage_options(f"{uri}/delta", {}, endpoint)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            options[name] = s3.env()[name]
        current, _ = read_delta(f"{uri}/delta/images_current", options, history=False)
    assert len(current) == 60


def test_storage_options_prefer_the_stores_endpoint() -> None:
    environ = {"AWS_ENDPOINT_URL": "https://elsewhere.example", "AWS_REGION": "eu-west-1"}
    options = storage_options("s3://b/delta", environ, "http://127.0.0.1:9000")
    assert options["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert options["AWS_ALLOW_HTTP"] == "true"
    assert (
        storage_options("s3://b/delta", environ)["AWS_ENDPOINT_URL"] == environ["AWS_ENDPOINT_URL"]
    )
    assert storage_options("/local/delta", environ, "http://127.0.0.1:9000") == {}


def test_current_from_before_extra_json_gains_it(tmp_path: Path) -> None:
    """An images_current table written before extra_json existed takes the column on the next
    MERGE (each image with extra fields updated), instead of failing the run."""
    from deltalake import DeltaTable, write_deltalake

    out = str(tmp_path / "out")
    with emulator_process(60, 3, "--extra-fields") as emu:
        export(emu, out, "2026-01-01")
        uri = f"{out}/delta/images_current"
        table = DeltaTable(uri).to_pyarrow_table()
        older = table.drop_columns(["extra_json"])
        write_deltalake(uri, older, mode="overwrite", schema_mode="overwrite")
        del table, older
        gc.collect()
        export(emu, out, "2026-01-02")
    rows, _ = read_delta(f"{out}/delta/images_current")
    latest = parquet_rows(f"SELECT * FROM read_parquet('{out}/snapshot_date=2026-01-02/*.parquet')")
    assert by_id(rows, "extra_json") == by_id(latest, "extra_json")
    assert any(r["extra_json"] for r in rows)


def test_retired_batches_leave_new_uploads(tmp_path: Path) -> None:
    """The Delta sink reads one batch of `new_uploads` back and drops retired batches' rows."""
    import pyarrow as pa

    from exporter.sinks import PublishedNight
    from exporter.sinks import delta_tables as delta
    from exporter.sinks.delta import DeltaSink
    from exporter.store import LocalStore
    from exporter.store.layout import ROOT

    date, store = "2026-01-01", LocalStore(tmp_path)
    location = delta.DeltaLocation(store, ROOT)
    schema = pa.schema([("id", pa.string())])
    for name, ids in (("b1", ["a", "b"]), ("b2", ["c"])):
        rows = pa.record_batch([pa.array(ids)], schema=schema)
        data = delta.with_date(iter([rows]), schema, date)
        delta.replace_batch(location, date, name, delta.with_batch(data, name))
    sink = DeltaSink()
    night = PublishedNight(
        store=store, layout=ROOT, snapshot_date=date, directory=ROOT.batch(date, "b2"), batch="b2"
    )
    source = sink.night_source(night, tmp_path)
    assert source is not None and source.table.column("id").to_pylist() == ["c"]
    sink.drop_new_uploads(store, ROOT, date, ["b1"])
    held, _ = read_delta(location.uri(delta.NEW_UPLOADS), history=False)
    assert [(row["batch"], row["id"]) for row in held] == [("b2", "c")]
