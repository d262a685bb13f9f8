"""Synthetic normalizer output for sink tests: core columns, meta_json and meta__ columns.

`batch(images, plan)` builds a batch the way the normalizer would, for a column plan
{"meta__x": type}; `conformer(final_schema)` re-derives a batch from its core columns and
`meta_json`, as `Normalizer.conform` does.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa

CORE = pa.schema(
    [
        pa.field("account_id", pa.string()),
        pa.field("id", pa.string(), nullable=False),
        pa.field("filename", pa.string()),
        pa.field("creator", pa.string()),
        pa.field("require_signed_urls", pa.bool_()),
        pa.field("uploaded", pa.timestamp("us", tz="UTC")),
        pa.field("variants", pa.list_(pa.string())),
        pa.field("meta_json", pa.string()),
    ]
)
START = datetime(2026, 1, 1, tzinfo=UTC)
Image = dict[str, Any]


def make_images(start: int, count: int) -> list[Image]:
    """Return deterministic, deliberately awkward images numbered from `start`."""
    images = []
    for n in range(start, start + count):
        meta: dict[str, Any] | None = {"status": ["active", "draft"][n % 2], "size": n * 7}
        if n % 5 == 0:
            meta = None  # no meta at all
        elif n % 3 == 0:
            meta = {"size": n, "nested": {"k": "vé", "list": [1, 2]}, "status": "ünï\u2028"}
        images.append(
            {
                "id": f"folder/img-{n:06d}",
                "filename": f"photo {n}.jpg",
                "creator": None if n % 4 == 0 else f"user-{n % 3}",
                "requireSignedURLs": n % 7 == 0,
                # ties every other image, microseconds on some
                "uploaded": START + timedelta(seconds=n // 2, microseconds=(n % 3) * 1234),
                "variants": [f"https://imagedelivery.net/h/{n}/public"],
                "meta": meta,
            }
        )
    return images


def meta_value(meta: Any, column: str, kind: pa.DataType) -> Any:
    if not isinstance(meta, dict):
        return None
    value = meta.get(column.removeprefix("meta__"))
    if value is None or isinstance(value, dict | list):
        return None
    if pa.types.is_string(kind):
        return value if isinstance(value, str) else orjson.dumps(value).decode()
    return value


def make_batch(
    images: list[Image], plan: dict[str, pa.DataType], account: str = "acc"
) -> pa.RecordBatch:
    """Return the batch the normalizer would emit for `images` under the column plan `plan`."""
    metas = [img["meta"] for img in images]
    columns: list[pa.Array] = [
        pa.array([account] * len(images), pa.string()),
        pa.array([i["id"] for i in images], pa.string()),
        pa.array([i["filename"] for i in images], pa.string()),
        pa.array([i["creator"] for i in images], pa.string()),
        pa.array([i["requireSignedURLs"] for i in images], pa.bool_()),
        pa.array([i["uploaded"] for i in images], pa.timestamp("us", tz="UTC")),
        pa.array([i["variants"] for i in images], pa.list_(pa.string())),
        pa.array([None if m is None else orjson.dumps(m).decode() for m in metas], pa.string()),
    ]
    fields = list(CORE)
    for name, kind in plan.items():
        columns.append(pa.array([meta_value(m, name, kind) for m in metas], kind))
        fields.append(pa.field(name, kind))
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))


def conformer(final: pa.Schema) -> Callable[[pa.RecordBatch], pa.RecordBatch]:
    """Return a conform(batch) that rebuilds meta__ columns from meta_json, like the normalizer."""

    def conform(batch: pa.RecordBatch) -> pa.RecordBatch:
        metas = [None if m is None else orjson.loads(m) for m in batch.column(7).to_pylist()]
        columns = [batch.column(i) for i in range(len(CORE))]
        for field in list(final)[len(CORE) :]:
            columns.append(
                pa.array([meta_value(m, field.name, field.type) for m in metas], field.type)
            )
        return pa.RecordBatch.from_arrays(columns, schema=final)

    return conform


def schema_of(plan: dict[str, pa.DataType]) -> pa.Schema:
    return pa.schema([*CORE, *(pa.field(k, v) for k, v in plan.items())])


class FullDisk:
    """A file opened for writing whose writes fail with ENOSPC after `room` bytes."""

    def __init__(self, path: Any, mode: str, room: int) -> None:
        self._file = open(path, mode)
        self._room = room

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        if size > self._room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= size
        return int(self._file.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


def full_disk_open(room: int) -> Callable[..., Any]:
    """Return an `open` replacement: write modes get a FullDisk, reads the real file."""
    import builtins

    def fake_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode or "a" in mode:
            return FullDisk(path, mode, room)
        return builtins.open(path, mode, *args, **kwargs)

    return fake_open
