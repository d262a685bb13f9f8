"""The process's allocator, tuned for a walk and handed back before the change step.

A walk decodes and frees millions of short-lived page objects and Arrow buffers; the defaults
of the cyclic collector, Arrow's pool and glibc's malloc keep the peak RSS creeping with the
night's length. Each function says which default it changes and why; the figures behind them
are in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
from collections.abc import Callable, Iterator

import pyarrow as pa


@contextlib.contextmanager
def bulk_allocation() -> Iterator[None]:
    """Tune the process for a stream of short-lived page objects; restore it afterwards.

    A decoded page holds ~15 containers per image and none form cycles, yet the default gen0
    threshold (700) runs the cyclic collector every ~50 images, and its full passes walk every
    object imported at start-up: freezing those and collecting every 100,000 allocations cut
    the export's CPU by a fifth. Arrow's default jemalloc pool keeps freed row-group buffers
    resident; the system allocator gives them back, which keeps the peak RSS flat.
    """
    thresholds = gc.get_threshold()
    pool = pa.default_memory_pool()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(pool)
        gc.set_threshold(*thresholds)
        gc.unfreeze()


# Freed heap pages are handed back every this many images written (a few row groups when
# meta is large); trimming after every group cost 3.6 s of system CPU per 3,000,000 images.
# The trim runs in a worker thread (ctypes releases the GIL), off the normalizing thread.
TRIM_EVERY_IMAGES = 25_000


def heap_trimmer() -> Callable[[], object]:
    """Return a call that gives the heap's free pages back to the OS, or a no-op without glibc.

    Freed pages and row-group buffers leave free holes under live objects, which glibc keeps:
    the peak RSS crept with the export's length (157 MB at 50,000 nasty images, 180-186 MB at
    3,000,000). `malloc_trim(0)` releases every whole free page: 178 MB at 3,000,000, for
    ~1.5 s more system CPU (pages faulted in again).
    """
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc (macOS, musl): nothing to trim
        return lambda: None
    return functools.partial(trim, 0)


# glibc's option number for the size from which malloc maps a buffer on its own.
M_MMAP_THRESHOLD_OPTION = -3
# From the change step on, buffers of 1 MiB or more (row groups' columns, encoded pages) are
# mapped on their own and unmapped when freed, instead of being carved from the heap.
CHANGES_MMAP_THRESHOLD = 1 << 20


def release_heap() -> None:
    """Give back what the walk freed before the change step allocates its own buffers.

    The walk's pages, batches and row groups are garbage by then, but their heap pages stay
    resident (and Arrow's pool may keep some). The change step then reads and writes a row
    group of a few MB at a time; glibc's dynamic threshold (raised to 32 MB by the first
    such buffer freed) put them on the heap, whose holes kept its peak creeping with the
    night: +68 MB at 3,000,000 nasty images, +37 MB with the fixed 1 MiB threshold (the
    export's peak 215 -> 185 MB), for ~1.5 s more system CPU (fresh pages faulted in; a
    2 MiB threshold saved nothing). Not glibc: nothing to tune.
    """
    gc.collect()
    pa.default_memory_pool().release_unused()
    heap_trimmer()()
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return
    mallopt(M_MMAP_THRESHOLD_OPTION, CHANGES_MMAP_THRESHOLD)


__all__ = ["TRIM_EVERY_IMAGES", "bulk_allocation", "heap_trimmer", "release_heap"]
