"""Another revision's exporter beside this one, for side-by-side measurements in one run.

Issue 12 asks for throughput against the revision before its work, measured in the same
`make bench` run (same machine, same load): `git archive` extracts that revision's `exporter`
package into a temporary directory, and `harness.run_export(..., tree=...)` runs it with the
same interpreter and dependencies. The emulator always comes from this checkout.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

from tests.bench.harness import ROOT

# main before issue 12's memory and throughput work (the closing note's revision)
BASELINE_REVISION = "c010e14"
# main before issue 22's work on second nights and fleets
NIGHTS_BASELINE = "08ff60f"
# main before issue 22's work on a fleet's fixed cost per account under latency
FLEET_BASELINE = "c7b9a92"
# The emulator flags NIGHTS_BASELINE (and older revisions) need: their walker took images that
# share an instant to come in id order, the emulator's only order then; the nasty catalog now
# serves them in a seeded hash order, under which that walker loses images or stops (exit 4).
# They walk the same catalog with its ties in id order: the same images, pages and fields.
BEFORE_TIE_FIX = ("--tie-order", "id")
# main just before issue 22's first merge (8286464, branch 'memory'): the tie fix and the
# fields the reference does not list are in, issue 22's work is not
ISSUE22_START = "629260c"
# The first nights' baselines, with the emulator flags each needs.
NASTY_BASELINES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (NIGHTS_BASELINE, BEFORE_TIE_FIX),
    (ISSUE22_START, ()),
)


@contextmanager
def revision_tree(revision: str) -> Iterator[Path | None]:
    """Yield a directory holding `revision`'s `exporter` package; None without git or that
    revision (a shallow clone), so the scenario reports this checkout alone."""
    try:
        archive = subprocess.run(
            ["git", "archive", "--format=tar", revision, "exporter"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        yield None
        return
    directory = Path(tempfile.mkdtemp(prefix=f"cf-bench-{revision}-"))
    try:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse odd members
                tar.extraction_filter = tarfile.data_filter
            tar.extractall(directory)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
