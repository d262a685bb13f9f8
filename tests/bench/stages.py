"""Each stage of the pipeline alone, in this process on one core: decode, normalize, write.

The pages are the emulator's own reply bodies (the same bytes it serves), so "decode" is what
the exporter does with a reply, "normalize" turns decoded pages into record batches and
"write" sends those batches through a sink into a temporary directory. images/s per stage
show which one bounds the end-to-end rate (issue 4 asks for decode+normalize on one core).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import pyarrow as pa

from exporter.api.pagination import parse_page
from exporter.emulator import build_catalog
from exporter.emulator.listing import page_body
from exporter.sinks import SinkOptions, open_sink
from exporter.store import open_store
from exporter.transform.normalize import NormalizeOptions, Normalizer
from tests.bench.harness import median
from tests.bench.scenarios import Row

PER_PAGE = 1000
ACCOUNT = "0123456789abcdef0123456789abcdef"


def page_bodies(images: int, per_page: int = PER_PAGE, seed: int = 1) -> list[bytes]:
    """Return the reply bodies of an ascending walk over a catalog of `images`."""
    catalog = build_catalog(images, seed)
    bodies = []
    for start in range(0, images, per_page):
        positions = range(start, min(start + per_page, images))
        token = None if start + per_page >= images else f"token-{start}"
        bodies.append(page_body(catalog.blobs, positions, token))
    return bodies


def decode_and_normalize(bodies: Sequence[bytes]) -> tuple[float, float, list[pa.RecordBatch]]:
    """Decode and normalize page after page, as the exporter does; return the seconds spent
    in each stage and the batches. Pages are dropped as soon as they are normalized: holding
    every decoded page would make the cyclic GC walk all of them and skew both stages."""
    normalizer = Normalizer(ACCOUNT, NormalizeOptions())
    batches = []
    decoding = normalizing = 0.0
    clock = time.perf_counter
    for body in bodies:
        start = clock()
        page = parse_page(body)
        middle = clock()
        batches.append(normalizer.normalize(page.images))
        del page  # freeing the page's objects is part of the per-image cost
        decoding += middle - start
        normalizing += clock() - middle
    return decoding, normalizing, batches


def write(batches: Sequence[pa.RecordBatch], fmt: str) -> int:
    """Write batches through the sink `fmt` into a temp directory; return the bytes written."""

    async def main(directory: str) -> int:
        sink = open_sink(fmt, SinkOptions())
        await sink.open(open_store(directory), "snap", batches[-1].schema)
        for batch in batches:
            await sink.write(batch)
        final = batches[-1].schema
        files = await sink.finish(final, lambda b: b)
        return sum(f.bytes for f in files)

    with tempfile.TemporaryDirectory(prefix="cf-bench-stage-") as directory:
        return anyio.run(main, directory)


def timed(action: Callable[[], Any], runs: int) -> tuple[float, float, Any]:
    """Return the median wall and process-CPU seconds of `action` over `runs`, and its result."""
    walls, cpus, result = [], [], None
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        result = action()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return median(walls), median(cpus), result


def measure_stages(images: int, runs: int) -> list[Row]:
    """Return one row per stage: images/s of that stage alone."""
    bodies = page_bodies(images)
    rows = []

    def row(variant: str, wall: float, cpu: float, **extra: Any) -> Row:
        return Row("stages", variant, images, runs, wall, images / wall, cpu, extra=extra)

    decode_and_normalize(bodies[:10])  # warm-up: first-call costs are not per image
    results = [decode_and_normalize(bodies) for _ in range(runs)]
    decoding = median([r[0] for r in results])
    normalizing = median([r[1] for r in results])
    batches = results[-1][2]
    mb = sum(map(len, bodies)) / 2**20
    rows.append(row("decode (orjson page -> dicts)", decoding, decoding, input_mb=round(mb, 1)))
    rows.append(row("normalize (dicts -> Arrow)", normalizing, normalizing))
    both = median([r[0] + r[1] for r in results])
    rows.append(row("decode + normalize", both, both))
    for fmt in ("parquet", "ndjson"):
        wall, cpu, size = timed(lambda fmt=fmt: write(batches, fmt), runs)
        rows.append(row(f"write {fmt}", wall, cpu, output_mb=round(size / 2**20, 1)))
    return rows
