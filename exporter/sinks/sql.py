"""The SQL text the table-keeping sinks share, written once: quoting, and the history query.

DuckDB's quoting doubles the quote character inside a literal (`'`) or an identifier (`"`); a
value is never spliced into SQL any other way. The history (SCD2) query is the same whether the
events are the DuckDB sink's `image_changes` table or a Delta change log that DuckDB scans.
"""

from __future__ import annotations

from collections.abc import Iterable


def literal(text: str) -> str:
    """Return a SQL string literal of `text`."""
    return "'" + text.replace("'", "''") + "'"


def identifier(name: str) -> str:
    """Return a SQL identifier (a column or table name) of `name`."""
    return '"' + name.replace('"', '""') + '"'


def file_list(paths: Iterable[str]) -> str:
    """Return a SQL list of file paths, as `read_parquet` and `read_ndjson` take them."""
    return "[" + ", ".join(literal(p) for p in paths) + "]"


def history_query(events: str) -> str:
    """Return the SCD2 rows of the change log `events`: one row per (id, version).

    A version is valid from the night it was added or changed until the next event of its id
    (a change replaces it, a removal ends it: `is_deleted`); `valid_to` is null while current.
    """
    return f"""
SELECT id, valid_from, valid_to, valid_to IS NULL AS is_current,
       coalesce(next_change = 'removed', false) AS is_deleted,
       account_id, filename, creator, require_signed_urls, uploaded, variants, meta_json,
       extra_json
FROM (
    SELECT *, snapshot_date AS valid_from, lead(snapshot_date) OVER w AS valid_to,
           lead(change) OVER w AS next_change
    FROM {events} WINDOW w AS (PARTITION BY id ORDER BY snapshot_date)
) WHERE change <> 'removed'
"""
