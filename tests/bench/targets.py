"""One line per target of issue 22, from the rows of a bench run (scenarios that did not run
are left out). The lines state the figures and the bound; they judge nothing on their own."""

from __future__ import annotations

from collections.abc import Sequence

from tests.bench.scenarios import Row

# The fleet's throughput at --workers 8 before issue 22 (its bench, 100 x 2,000 images).
FLEET_BEFORE_IMAGES_PER_S = 6_803


def _mb(row: Row) -> str:
    return f"{row.peak_rss_mb or 0:.0f} MB"


def target_lines(rows: Sequence[Row]) -> list[str]:
    """Return the target lines the rows allow."""
    lines: list[str] = []
    mine = [r for r in rows if r.scenario == "second-night" and "@" not in r.variant]
    ones = [r for r in mine if " 1% changed" in r.variant]
    if ones:
        peaks = ", ".join(f"{r.variant.split(' nasty')[0]} {_mb(r)}" for r in ones)
        ratio = (ones[-1].peak_rss_mb or 0) / (ones[0].peak_rss_mb or 1)
        lines.append(
            f"second nights, ~1% changed, peak RSS: {peaks}; largest/smallest {ratio:.2f}x"
            " (target <= 200 MB, <= 1.15x)"
        )
    for row in mine:
        if " 1% changed" not in row.variant:
            lines.append(
                f"second night, {row.variant}: {_mb(row)}, completed, "
                f"{row.extra.get('change_rows', 0):,} change rows (target <= 200 MB)"
            )
    small = [r for r in rows if r.scenario == "fleet-night-2"]
    if len(small) == 2:
        fleet, one = small
        lines.append(
            f"second nights, {fleet.variant}: {fleet.wall_s:.2f} s = "
            f"{fleet.wall_s / one.wall_s:.2f}x {one.variant} ({one.wall_s:.2f} s),"
            f" peak {_mb(fleet)} (target <= 2x)"
        )
    for row in rows:
        if row.scenario != "fleet":
            continue
        if row.variant.endswith("--workers 8"):
            before = FLEET_BEFORE_IMAGES_PER_S
            lines.append(
                f"fleet {row.variant}: {row.images_per_s:,.0f} images/s = "
                f"{row.images_per_s / before:.2f}x {before:,},"
                f" peak {_mb(row)} (target >= 2x, <= 400 MB)"
            )
        else:
            lines.append(f"fleet {row.variant}: peak {_mb(row)} (target <= 200 MB)")
    for row in rows:
        if row.scenario != "nasty" or "@" in row.variant:
            continue
        if "speedup_vs_baseline" in row.extra:
            lines.append(
                f"nasty first night {row.variant}: {row.images_per_s:,.0f} images/s, "
                f"{row.extra['speedup_vs_baseline']:.2f}x the baseline revision's, peak "
                f"{_mb(row)} (target >= 0.95x, <= 200 MB)"
            )
    return lines
