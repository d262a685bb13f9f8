"""A DuckDB database file with table `images`; each run replaces its date's rows at once.

Batches of new uploads (`export --new-uploads`) go to table `new_uploads` (with
`snapshot_date`, the snapshot they follow, and `batch`); view `images_latest` is the latest
snapshot plus its batches, one row per id.

Beside it, `image_changes` holds every published change set (`exporter.changes` loads a
date's set after publishing it) and two views derive from that event log: `images_history`
(SCD2, one row per id and version) and `images_current` (the versions still current).

Batches are staged as Parquet parts in the run's staging area (never published), conformed to
the final schema in `finish`, then, in `publish` (after the snapshot's files are published),
loaded with one transaction: DELETE that date's rows, INSERT the new ones, COMMIT. Another
connection sees the old rows or the new, never a mix. The transaction is idempotent, so a run
killed before it is finished by `--resume`. The database is opened only for that transaction,
so it is not locked during the (long) walk.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import anyio.to_thread
import duckdb
import pyarrow as pa

from exporter.errors import SinkError, first_line
from exporter.sinks._base import Conform, FileFormat, PartFile, Publication
from exporter.sinks.parquet import ParquetSink
from exporter.sinks.sql import file_list, history_query, identifier
from exporter.store.base import Store
from exporter.store.layout import Layout

TABLE = "images"
# When a column's type differs from an earlier snapshot's, the table takes the wider type, as
# the normalizer widens (schema.py): int + float -> float; a bool never becomes a number.
_NUMERIC_WIDTH = {"BIGINT": 1, "DOUBLE": 2}


def wider_type(old: str, new: str) -> str:
    """Return the column type holding both `old` and `new` values (VARCHAR when unrelated)."""
    if old == new:
        return old
    if old in _NUMERIC_WIDTH and new in _NUMERIC_WIDTH:
        return old if _NUMERIC_WIDTH[old] >= _NUMERIC_WIDTH[new] else new
    return "VARCHAR"


def duckdb_type(kind: pa.DataType) -> str:
    """Return the DuckDB type (as DESCRIBE spells it) that holds an Arrow column of `kind`."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return duckdb_type(kind.value_type) + "[]"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP WITH TIME ZONE" if kind.tz else "TIMESTAMP"
    for check, name in _SIMPLE_TYPES:
        if check(kind):
            return name
    raise SinkError("duckdb", f"no DuckDB column type for Arrow type {kind}")


_SIMPLE_TYPES = (
    (pa.types.is_boolean, "BOOLEAN"),
    (pa.types.is_int64, "BIGINT"),
    (pa.types.is_int32, "INTEGER"),
    (pa.types.is_float64, "DOUBLE"),
    (pa.types.is_string, "VARCHAR"),
    (pa.types.is_large_string, "VARCHAR"),
    (pa.types.is_date32, "DATE"),
)


def _reconcile_table(
    con: duckdb.DuckDBPyConnection, schema: pa.Schema, table: str = TABLE, extra: str = ""
) -> None:
    """Create `table` or widen it so every column of `schema` fits (inside the transaction)."""
    wanted = {field.name: duckdb_type(field.type) for field in schema}
    columns = ", ".join(f"{identifier(name)} {kind}" for name, kind in wanted.items())
    con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns}, snapshot_date DATE{extra})")
    rows = con.execute(f"DESCRIBE {table}").fetchall()
    existing = {str(row[0]): str(row[1]) for row in rows}
    for name, new_type in wanted.items():
        old_type = existing.get(name)
        if old_type is None:
            con.execute(f"ALTER TABLE {table} ADD COLUMN {identifier(name)} {new_type}")
        elif (target := wider_type(old_type, new_type)) != old_type:
            con.execute(f"ALTER TABLE {table} ALTER COLUMN {identifier(name)} TYPE {target}")


@contextmanager
def _transaction(database: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """Yield a connection to `database` inside one transaction: committed when the block ends,
    rolled back when it raises, so a reader sees a night's rows all replaced or none."""
    con = duckdb.connect(str(database))
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()


def replace_snapshot(
    database: Path, snapshot_date: str, files: Sequence[Path], schema: pa.Schema
) -> None:
    """Replace the rows of `snapshot_date` in `images` with `files`, in one transaction."""
    with _transaction(database) as con:
        _reconcile_table(con, schema)
        con.execute(f"DELETE FROM {TABLE} WHERE snapshot_date = CAST(? AS DATE)", [snapshot_date])
        if files:
            listed = file_list(str(f) for f in files)
            con.execute(
                f"INSERT INTO {TABLE} BY NAME SELECT *, CAST(? AS DATE) AS snapshot_date "
                f"FROM read_parquet({listed}, hive_partitioning = false)",
                [snapshot_date],
            )
        _reconcile_table(con, schema, NEW_UPLOADS_TABLE, ", batch VARCHAR")
        con.execute(LATEST_VIEW)


NEW_UPLOADS_TABLE = "new_uploads"
# The latest snapshot plus the batches of new uploads that follow it, one row per id (the
# snapshot's row first: a re-run of D may hold an id an earlier batch of D took). Re-created
# whenever a table's columns may have changed (DuckDB binds a view's columns when created).
LATEST_VIEW = f"""
CREATE OR REPLACE VIEW images_latest AS
SELECT * FROM (
    SELECT *, NULL::VARCHAR AS batch FROM {TABLE}
    UNION ALL BY NAME
    SELECT * FROM {NEW_UPLOADS_TABLE}
)
WHERE snapshot_date = (SELECT max(snapshot_date) FROM {TABLE})
QUALIFY row_number() OVER (PARTITION BY id ORDER BY batch NULLS FIRST) = 1
"""


def replace_batch(
    database: Path, snapshot_date: str, batch: str, files: Sequence[Path], schema: pa.Schema
) -> None:
    """Replace the rows of one batch in `new_uploads` with `files`, in one transaction."""
    with _transaction(database) as con:
        _reconcile_table(con, schema)
        _reconcile_table(con, schema, NEW_UPLOADS_TABLE, ", batch VARCHAR")
        con.execute(f"DELETE FROM {NEW_UPLOADS_TABLE} WHERE batch = ?", [batch])
        if files:
            listed = file_list(str(f) for f in files)
            con.execute(
                f"INSERT INTO {NEW_UPLOADS_TABLE} BY NAME SELECT *, "
                "CAST(? AS DATE) AS snapshot_date, CAST(? AS VARCHAR) AS batch "
                f"FROM read_parquet({listed}, hive_partitioning = false)",
                [snapshot_date, batch],
            )
        con.execute(LATEST_VIEW)


def delete_batch(database: Path, batch: str) -> None:
    """Delete one batch's rows from `new_uploads`, in one transaction (a retired batch: a
    re-run of its snapshot date holds what it added, and its files are deleted next)."""
    if not database.exists():
        return
    with _transaction(database) as con:
        tables = con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        if (NEW_UPLOADS_TABLE,) in tables:
            con.execute(f"DELETE FROM {NEW_UPLOADS_TABLE} WHERE batch = ?", [batch])


CHANGES_TABLE = "image_changes"
HISTORY_VIEW = "CREATE OR REPLACE VIEW images_history AS" + history_query(CHANGES_TABLE)
CURRENT_VIEW = """
CREATE OR REPLACE VIEW images_current AS
SELECT id, valid_from, account_id, filename, creator, require_signed_urls, uploaded, variants,
       meta_json, extra_json
FROM images_history WHERE is_current
"""


def replace_changes(database: Path, snapshot_date: str, files: Sequence[Path]) -> None:
    """Replace the rows of `snapshot_date` in `image_changes` with `files`, in one transaction,
    and (re)create the history and current views."""
    with _transaction(database) as con:
        listed = file_list(str(f) for f in files)
        source = f"read_parquet({listed}, hive_partitioning = false)"
        con.execute(f"CREATE TABLE IF NOT EXISTS {CHANGES_TABLE} AS FROM {source} LIMIT 0")
        # a table from before extra_json existed gains it (null on the older nights)
        con.execute(f"ALTER TABLE {CHANGES_TABLE} ADD COLUMN IF NOT EXISTS extra_json VARCHAR")
        con.execute(
            f"DELETE FROM {CHANGES_TABLE} WHERE snapshot_date = CAST(? AS DATE)",
            [snapshot_date],
        )
        con.execute(f"INSERT INTO {CHANGES_TABLE} BY NAME FROM {source}")
        con.execute(HISTORY_VIEW)
        con.execute(CURRENT_VIEW)


class DuckdbSink(ParquetSink):
    """Loads the snapshot into table `images` of a DuckDB file (default OUT/images.duckdb).

    Its Parquet parts are its own (the pipeline opens it on a directory of the run's staging
    that is never published) and add no file to the snapshot: `finish` conforms them and
    returns nothing; `publish`, after the snapshot's files are published, loads them.
    """

    name = "duckdb"
    file_formats: tuple[FileFormat, ...] = ()  # its parts never enter the snapshot

    async def open(
        self, store: Store, directory: str, schema: pa.Schema, committed: Sequence[PartFile] = ()
    ) -> None:
        if store.local_path(directory) is None:
            raise SinkError(
                self.name, "needs a local output directory (DuckDB reads its staged parts locally)"
            )
        await super().open(store, directory, schema, committed)

    async def finish(self, final_schema: pa.Schema, conform: Conform) -> list[PartFile]:
        """Conform the staged parts to `final_schema`; they are loaded by `publish`."""
        await super().finish(final_schema, conform)
        return []

    def _database(self, store: Store, layout: Layout) -> Path | None:
        configured = self.options.duckdb_path
        return Path(configured) if configured else store.local_path(layout.database())

    def retire_batch(self, store: Store, layout: Layout, batch: str) -> None:
        """Delete the rows of a batch its snapshot's re-run retires, before its files go."""
        database = self._database(store, layout)
        if database is None:
            return
        try:
            delete_batch(database, batch)
        except duckdb.Error as exc:
            raise SinkError(self.name, f"cannot update {database}: {first_line(exc)}") from exc

    async def publish(self, publication: Publication) -> None:
        """Replace the date's rows with the staged parts, in one transaction (idempotent)."""
        store = publication.store
        database = self._database(store, publication.layout)
        files = [
            store.local_path(posixpath.join(publication.directory, p.path))
            for p in publication.parts
        ]
        if database is None or any(f is None for f in files):
            raise SinkError(
                self.name, "needs a local output directory (DuckDB reads its staged parts locally)"
            )
        found = [f for f in files if f is not None]
        date, schema = publication.snapshot_date, publication.schema
        try:
            if publication.batch is not None:  # a batch of new uploads following D
                batch = publication.batch
                await anyio.to_thread.run_sync(replace_batch, database, date, batch, found, schema)
            else:
                await anyio.to_thread.run_sync(replace_snapshot, database, date, found, schema)
        except duckdb.Error as exc:
            raise SinkError(self.name, f"cannot load {database}: {first_line(exc)}") from exc
