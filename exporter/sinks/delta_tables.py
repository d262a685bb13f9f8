"""Delta Lake tables under `OUT/delta/` (delta-rs): images, image_changes, current, history.

    images           every snapshot, partitioned by snapshot_date; a night replaces its date
                     (an overwrite with a predicate); columns only grow (schema merge)
    image_changes    every published change set, partitioned by snapshot_date, the same way
    images_current   one row per live id: a MERGE from the latest snapshot in `images`
                     (updates, inserts, and deletes of ids that snapshot no longer holds)
    images_history   SCD2 derived from image_changes: one row per (id, version) with
                     valid_from, valid_to (null while current), is_current, is_deleted

Every write is idempotent, so a re-run of a date, a backfill or a resumed run never applies a
night twice: replacing a date is a predicate overwrite, the MERGE source is the whole latest
snapshot (a second MERGE finds nothing to do and commits nothing), and the history is derived
anew from the log. Each commit's metadata names the night it holds (`cf_images.snapshot_date`,
`cf_images.run_id`), so a table's versions say which snapshot they hold.

Order after snapshot D: `images` (by the `delta` sink, before D's directory is published);
then, once D's change set is published: `image_changes`, `images_current`, `images_history`.
Each commit is atomic (a reader sees the version before or after it); a kill between two
leaves the run's checkpoint, and `--resume` writes them again. A withheld change set (exit 9)
touches none of the last three.

On a bucket, delta-rs commits a version by creating its log entry only if it is absent: the
store must honour conditional PUT (`If-None-Match`), as S3, R2, MinIO and moto do, selected
here with `conditional_put = "etag"`; without it two writers could both write one version.

Tables read through delta-rs are dropped (and collected) before each function returns: with
pyarrow 26, deltalake 1.6.6 aborts the interpreter at exit (status 134) while one is alive.
"""

from __future__ import annotations

import gc
import os
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from exporter.errors import SinkError, first_line
from exporter.sinks.sql import history_query, literal
from exporter.store import Layout, Store
from exporter.transform.schema import IMAGE_COLUMNS

DELTA = "delta"
IMAGES, CHANGES, CURRENT, HISTORY = "images", "image_changes", "images_current", "images_history"
NEW_UPLOADS = "new_uploads"  # batches of new uploads (`export --new-uploads`), by snapshot_date


class DeltaLocation:
    """Where the Delta tables of one output live, and how delta-rs reaches them."""

    def __init__(self, store: Store, layout: Layout) -> None:
        base = posixpath.join(layout.prefix, DELTA) if layout.prefix else DELTA
        local = store.local_path(base)
        self.base = str(local) if local is not None else f"{store.root.rstrip('/')}/{base}"
        self.options = storage_options(self.base, os.environ, store.endpoint_url)

    def uri(self, table: str) -> str:
        return f"{self.base}/{table}"


def storage_options(
    base: str, environ: Mapping[str, str], endpoint: str | None = None
) -> dict[str, str]:
    """Return delta-rs storage options for a table base: none locally; on S3 the endpoint
    (the store's `--s3-endpoint`, else AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL), plain HTTP
    when it says so, etag commits."""
    if not base.startswith("s3://"):
        return {}
    options = {"conditional_put": "etag"}
    endpoint = endpoint or environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if urlsplit(endpoint).scheme == "http":
            options["AWS_ALLOW_HTTP"] = "true"
    if not (environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")):
        options["AWS_REGION"] = "us-east-1"
    return options


def _commit(snapshot_date: str, run_id: str) -> Any:
    from deltalake import CommitProperties

    return CommitProperties(
        custom_metadata={"cf_images.snapshot_date": snapshot_date, "cf_images.run_id": run_id}
    )


def _errors(action: str, table: str) -> Any:
    """Return a context manager turning delta-rs failures into one-line SinkErrors."""
    import contextlib

    @contextlib.contextmanager
    def wrap() -> Iterator[None]:
        try:
            yield
        except (OSError, pa.ArrowException, duckdb.Error) as exc:
            raise SinkError(DELTA, f"cannot {action} {table}: {first_line(exc)[:300]}") from exc
        except Exception as exc:  # deltalake's DeltaError and friends share no importable base
            if type(exc).__module__.split(".")[0] not in ("deltalake", "_internal"):
                raise
            raise SinkError(DELTA, f"cannot {action} {table}: {first_line(exc)[:300]}") from exc

    return wrap()


def replace_partition(
    location: DeltaLocation,
    table: str,
    snapshot_date: str,
    data: pa.RecordBatchReader,
    run_id: str,
) -> None:
    """Replace one snapshot_date partition of a table with `data` (columns may be added)."""
    predicate = f"snapshot_date = {literal(snapshot_date)}"
    _overwrite(location, table, predicate, data, _commit(snapshot_date, run_id))


def replace_batch(
    location: DeltaLocation, snapshot_date: str, batch: str, data: pa.RecordBatchReader
) -> None:
    """Append one batch to `new_uploads` (replacing that batch's rows: a repeat is harmless)."""
    predicate = f"snapshot_date = {literal(snapshot_date)} AND batch = {literal(batch)}"
    _overwrite(location, NEW_UPLOADS, predicate, data, _commit(snapshot_date, batch))


def delete_batches(location: DeltaLocation, snapshot_date: str, batches: Sequence[str]) -> None:
    """Delete the rows of `batches` of `snapshot_date` from `new_uploads` (if it exists)."""
    from deltalake import DeltaTable

    uri = location.uri(NEW_UPLOADS)
    if not _exists(uri, location.options):
        return
    listed = ", ".join(literal(b) for b in batches)
    predicate = f"snapshot_date = {literal(snapshot_date)} AND batch IN ({listed})"
    with _errors("delete from", uri):
        table = DeltaTable(uri, storage_options=location.options)
        table.delete(predicate, commit_properties=_commit(snapshot_date, "retired batches"))
        del table
    gc.collect()


def _overwrite(
    location: DeltaLocation,
    table: str,
    predicate: str,
    data: pa.RecordBatchReader,
    commit: Any,  # deltalake.CommitProperties (deltalake is imported where used)
) -> None:
    """Replace the rows of `table` that `predicate` selects with `data`, in one commit."""
    from deltalake import write_deltalake

    with _errors("write", location.uri(table)):
        write_deltalake(
            location.uri(table),
            data,
            mode="overwrite",
            predicate=predicate,
            partition_by=["snapshot_date"],
            schema_mode="merge",
            storage_options=location.options,
            commit_properties=commit,
        )


def with_batch(reader: pa.RecordBatchReader, batch: str) -> pa.RecordBatchReader:
    """Return `reader` with a constant `batch` column appended."""
    out_schema = reader.schema.append(pa.field("batch", pa.string()))

    def extend() -> Iterator[pa.RecordBatch]:
        for part in reader:
            column = pa.array([batch] * part.num_rows, pa.string())
            yield pa.RecordBatch.from_arrays([*part.columns, column], schema=out_schema)

    return pa.RecordBatchReader.from_batches(out_schema, extend())


def with_date(
    batches: Iterator[pa.RecordBatch], schema: pa.Schema, date: str
) -> pa.RecordBatchReader:
    """Return a reader of `batches` with a constant snapshot_date column appended."""
    import datetime as dt

    day = dt.date.fromisoformat(date)
    out_schema = schema.append(pa.field("snapshot_date", pa.date32()))

    def extend() -> Iterator[pa.RecordBatch]:
        for batch in batches:
            column = pa.array([day] * batch.num_rows, pa.date32())
            yield pa.RecordBatch.from_arrays([*batch.columns, column], schema=out_schema)

    return pa.RecordBatchReader.from_batches(out_schema, extend())


def parquet_batches(store: Store, paths: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """Yield the batches of stored Parquet files, one row group at a time."""
    for path in paths:
        with store.open_read(path) as raw:
            yield from pq.ParquetFile(raw).iter_batches()


def load_changes(
    store: Store,
    layout: Layout,
    snapshot_date: str,
    files: Sequence[str],
    schema: pa.Schema,
    run_id: str,
) -> None:
    """After D's change set is published: image_changes, then current, then history."""
    location = DeltaLocation(store, layout)
    reader = pa.RecordBatchReader.from_batches(schema, parquet_batches(store, files))
    replace_partition(location, CHANGES, snapshot_date, reader, run_id)
    refresh_current(location, snapshot_date, run_id)
    rebuild_history(location, snapshot_date, run_id)
    gc.collect()


def read_partition(location: DeltaLocation, table: str, snapshot_date: str) -> pads.Dataset:
    """Return a dataset of one partition of a Delta table (the caller drops it after use)."""
    from deltalake import DeltaTable

    with _errors("read", location.uri(table)):
        delta = DeltaTable(location.uri(table), storage_options=location.options)
        return delta.to_pyarrow_dataset(
            file_pruning_predicate=[("snapshot_date", "=", snapshot_date)]
        )


def read_batch(location: DeltaLocation, snapshot_date: str, batch: str) -> pa.Table:
    """Return the rows of one batch of `new_uploads` (read whole: a batch is a lag window's)."""
    dataset = read_partition(location, NEW_UPLOADS, snapshot_date)
    with _errors("read", location.uri(NEW_UPLOADS)):
        rows = dataset.to_table(filter=pads.field("batch") == batch)
    del dataset
    gc.collect()
    return rows


def latest_date(location: DeltaLocation, table: str) -> str | None:
    """Return the newest snapshot_date a table holds (from its partition values)."""
    from deltalake import DeltaTable

    with _errors("read", location.uri(table)):
        delta = DeltaTable(location.uri(table), storage_options=location.options)
        actions = delta.get_add_actions(flatten=True)
        values = pa.table(actions).column("partition.snapshot_date").to_pylist()
        del delta, actions
    dates = [str(v) for v in values if v is not None]
    return max(dates) if dates else None


def refresh_current(location: DeltaLocation, snapshot_date: str, run_id: str) -> None:
    """MERGE the latest snapshot of `images` into images_current: update what differs, insert
    the new ids, delete the ids it no longer holds. A second MERGE changes nothing."""
    from deltalake import DeltaTable, write_deltalake

    latest = latest_date(location, IMAGES)
    if latest is None:
        return
    source = read_partition(location, IMAGES, latest)
    columns = list(IMAGE_COLUMNS)
    uri = location.uri(CURRENT)
    with _errors("merge into", uri):
        snapshot = source.scanner(columns=columns).to_reader()
        if not _exists(uri, location.options):  # the first night creates the table
            write_deltalake(
                uri,
                snapshot,
                mode="error",
                storage_options=location.options,
                commit_properties=_commit(latest, run_id),
            )
        else:
            target = DeltaTable(uri, storage_options=location.options)
            held = {f.name for f in target.schema().fields}
            # A column the table lacks (extra_json, for a table from before it) is added by
            # merge_schema: a row differs where the source has a value for it.
            differs = " OR ".join(
                f"(t.{c} IS DISTINCT FROM s.{c})" if c in held else f"(s.{c} IS NOT NULL)"
                for c in columns[1:]
            )
            (
                target.merge(
                    snapshot,
                    "t.id = s.id",
                    source_alias="s",
                    target_alias="t",
                    merge_schema=True,  # a table from before extra_json gains it
                    commit_properties=_commit(latest, run_id),
                )
                .when_matched_update_all(predicate=differs)
                .when_not_matched_insert_all()
                .when_not_matched_by_source_delete()
                .execute()
            )
            del target
    del source, snapshot


def _exists(uri: str, options: dict[str, str]) -> bool:
    from deltalake import DeltaTable

    return bool(DeltaTable.is_deltatable(uri, storage_options=options))


def rebuild_history(location: DeltaLocation, snapshot_date: str, run_id: str) -> None:
    """Derive images_history from the whole image_changes log and replace the table."""
    from deltalake import DeltaTable, write_deltalake

    with _errors("derive", location.uri(HISTORY)):
        log = DeltaTable(location.uri(CHANGES), storage_options=location.options)
        events = log.to_pyarrow_dataset()
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.register("events", events)
            history = con.sql(history_query("events")).to_arrow_reader(65_536)
            write_deltalake(
                location.uri(HISTORY),
                history,
                mode="overwrite",
                schema_mode="overwrite",
                storage_options=location.options,
                commit_properties=_commit(snapshot_date, run_id),
            )
        finally:
            con.close()
        del log, events
