"""`cf-images-export demo`: two nights exported over loopback from an embedded emulator, DuckDB.

Nothing to set up: the emulator listens on a free 127.0.0.1 port with its demo token, and
serves the catalog as of yesterday night, then as of tonight (uploads, deletions, edits). Each
export runs exactly as a nightly job would (both-ends walk, pacing, Parquet + NDJSON,
manifest, atomic publication, change set); then images are uploaded, a few listed late, and
`export --new-uploads` publishes them as a batch. DuckDB queries over the published Parquet
show the catalog, what changed between the two nights and the new uploads, and the `report`
page shows it all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporter.config import ExportConfig, parse_config
from exporter.emulator import EmulatorSettings, run_emulator
from exporter.observe.progress import print_summary, report_progress
from exporter.observe.report import write_report
from exporter.run.new_uploads_run import run_export
from exporter.run.summary import RunSummary
from exporter.sinks.sql import literal
from exporter.snapshot.manifest import decode_manifest
from exporter.stats import RunStats
from exporter.store.layout import MANIFEST_NAME, ROOT, SUCCESS_NAME, manifest_path
from exporter.tasks import FirstErrorGroup
from exporter.transform.schema import display_path

log = logging.getLogger("exporter.demo")


def meta_column(schema: Sequence[dict[str, Any]], *path: str) -> str | None:
    """Return the column that holds the meta value at `path`, from the manifest's schema."""
    for column in schema:
        if column.get("path") == list(path):
            return str(column["name"])
    return None


def demo_queries(glob: str, schema: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """Return (title, SQL) pairs for the demo, naming meta columns as the manifest says."""
    source = f"read_parquet('{glob}')"
    queries = [
        (
            "images per creator (NULL = not set)",
            f"SELECT creator, count(*) AS images FROM {source} "
            "GROUP BY ALL ORDER BY images DESC, creator NULLS FIRST LIMIT 8",
        ),
        (
            "uploads per month",
            f"SELECT strftime(uploaded, '%Y-%m') AS month, count(*) AS images FROM {source} "
            "GROUP BY ALL ORDER BY month LIMIT 12",
        ),
        (
            "the largest meta objects (bytes of meta_json)",
            f"SELECT id, strlen(meta_json) AS meta_bytes FROM {source} "
            "ORDER BY meta_bytes DESC NULLS LAST, id LIMIT 5",
        ),
    ]
    keys = [c for c in schema if c.get("path") and c["name"].startswith("meta__")][:40]
    if keys:
        counts = " UNION ALL ".join(
            f"SELECT {literal(display_path(c['path']))} AS meta_key, '{c['type']}' AS type, "
            f'count("{c["name"]}") AS images FROM {source}'
            for c in keys
        )
        queries.append(
            ("the most used meta keys", f"{counts} ORDER BY images DESC, meta_key LIMIT 8")
        )
    status = meta_column(schema, "status")
    if status:
        queries.insert(
            0,
            (
                "images per meta.status",
                f'SELECT "{status}" AS status, count(*) AS images FROM {source} '
                "GROUP BY ALL ORDER BY images DESC, status NULLS LAST",
            ),
        )
    return queries


def render_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Return rows as an aligned plain-text table (what the demo prints)."""
    cells = [[str(c) for c in columns]] + [
        ["NULL" if v is None else str(v) for v in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def show_results(output: str, snapshot: str) -> None:
    """Print the DuckDB query results and the paths written."""
    import duckdb

    manifest = decode_manifest(Path(manifest_path(snapshot)).read_bytes())
    glob = posixpath.join(snapshot, "*.parquet")
    with duckdb.connect() as con:
        for title, sql in demo_queries(glob, manifest.schema):
            result = con.execute(sql)
            columns = [d[0] for d in result.description]
            print(f"\n-- {title}\n{render_table(columns, result.fetchall())}")
    print(f"\nsnapshot: {snapshot}")
    for entry in manifest.files:
        print(f"  {entry.path:<28} {entry.rows:>9,} rows {entry.bytes:>12,} bytes")
    print(f"  {MANIFEST_NAME}, {SUCCESS_NAME}")
    print(f"query it yourself: SELECT count(*) FROM read_parquet('{glob}')")
    changes = posixpath.join(output, ROOT.changes("*"), "*.parquet")
    print(f"and the changes: SELECT * FROM read_parquet('{changes}', hive_partitioning = false)")


def change_queries(output: str) -> list[tuple[str, str]]:
    """Return (title, SQL) pairs showing tonight's change set."""
    source = (
        f"read_parquet('{posixpath.join(output, ROOT.changes('*'), '*.parquet')}', "
        "hive_partitioning = false) WHERE previous_snapshot_date IS NOT NULL"
    )
    return [
        (
            "what changed since the previous night",
            f"SELECT snapshot_date, change, count(*) AS images FROM {source} "
            "GROUP BY ALL ORDER BY snapshot_date, change",
        ),
        (
            "a few edited images and the fields that changed",
            f"SELECT id, changed_fields, left(filename, 30) AS filename FROM {source} "
            "AND change = 'changed' ORDER BY len(changed_fields) DESC, id LIMIT 6",
        ),
    ]


def show_changes(output: str) -> None:
    """Print tonight's change set, as DuckDB sees it."""
    import duckdb

    with duckdb.connect() as con:
        for title, sql in change_queries(output):
            result = con.execute(sql)
            columns = [d[0] for d in result.description]
            print(f"\n-- {title}\n{render_table(columns, result.fetchall())}")


async def run_demo(images: int, seed: int, output: str, interactive: bool) -> None:
    """Export the catalog as of last night, then tonight; query both and the changes."""
    today = dt.datetime.now(dt.UTC).date()
    summary = None
    for night, day in enumerate((today - dt.timedelta(days=1), today)):
        uploads = DEMO_UPLOADS if night == 1 else 0
        summary = await _export_night(images, seed, night, day, output, interactive, uploads)
    assert summary is not None
    show_results(output, str(summary.snapshot))
    show_changes(output)
    show_new_uploads(output)
    path, _ = write_report(output)
    print(f"\nthe catalog as a page: {path} (open it in a browser)")


# Uploads the demo adds after tonight's snapshot (a few listed late), then exports as a batch.
DEMO_UPLOADS = 40


def show_new_uploads(output: str) -> None:
    """Print the batches of new uploads that follow the latest snapshot, as DuckDB sees them."""
    import duckdb

    glob = posixpath.join(output, "new_uploads", "snapshot_date=*", "batch=*", "*.parquet")
    sql = (
        "SELECT snapshot_date AS after_snapshot, batch, count(*) AS images, "
        "min(uploaded) AS oldest, max(uploaded) AS newest "
        f"FROM read_parquet('{glob}', hive_partitioning = true) GROUP BY ALL ORDER BY batch"
    )
    with duckdb.connect() as con:
        result = con.execute(sql)
        columns = [d[0] for d in result.description]
        rows = result.fetchall()
    print(f"\n-- new uploads since the latest snapshot\n{render_table(columns, rows)}")
    print(f"query them: SELECT * FROM read_parquet('{glob}', hive_partitioning = true)")


async def _export_night(
    images: int,
    seed: int,
    night: int,
    day: dt.date,
    output: str,
    interactive: bool,
    uploads: int = 0,
) -> RunSummary:
    """Serve the catalog as of `night` on loopback and export it as the snapshot of `day`;
    then, with `uploads`, upload that many images and export them with `--new-uploads`."""
    # Ties in a hash order, another each night: the API promises nothing inside an instant;
    # extra_fields: the demo meets the fields the API adds, as a real account will.
    settings = EmulatorSettings(
        images=images, seed=seed, night=night, tie_order="hash", extra_fields=True
    )
    async with run_emulator(settings) as emu:
        # what this night serves: a later night holds its uploads and deletions too
        served = f"{len(emu.catalog):,}"
        log.info("night %s: a %s-image emulated catalog (seed %s)", night, served, seed)
        log.info("emulator at %s, account %s", emu.base_url, emu.account_id)
        config = parse_config(
            {},
            {"CLOUDFLARE_API_TOKEN": emu.token},
            {
                "export.account_id": emu.account_id,
                "export.base_url": emu.base_url,
                "export.output": output,
                "export.formats": ["parquet", "ndjson"],
                "export.snapshot_date": day.isoformat(),
            },
            today=day,
        )
        summary = await _run(config, interactive)
        if uploads:
            late = uploads // 8
            emu.account().uploads.add(uploads - late, late=late, lateness_s=120)
            emu.account().uploads.release()  # the late ones are listable by now
            log.info("%s images uploaded since the snapshot (%s listed late)", uploads, late)
            await _run(dataclasses.replace(config, new_uploads=True), interactive)
    return summary


async def _run(config: ExportConfig, interactive: bool) -> RunSummary:
    """Run one export (a snapshot, or a batch of new uploads) with progress; print its summary."""
    stats = RunStats()
    summaries: list[RunSummary] = []
    async with FirstErrorGroup() as group:

        async def run() -> None:
            summaries.append(await run_export(config, stats=stats))
            group.cancel_scope.cancel()

        group.start_soon(functools.partial(report_progress, stats, interactive=interactive))
        group.start_soon(run)
    print_summary(summaries[0], log_format="plain", interactive=interactive)
    return summaries[0]
