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
    for fleet, one in zip(small[::2], small[1::2], strict=True):
        lines.append(
            f"second nights, {fleet.variant}: {fleet.wall_s:.2f} s = "
            f"{fleet.wall_s / one.wall_s:.2f}x {one.variant} ({one.wall_s:.2f} s),"
            f" peak {_mb(fleet)}, {fleet.extra.get('requests_per_account')} requests per"
            " account (target <= 2x)"
        )
    fleets = [r for r in rows if r.scenario == "fleet"]
    by_variant = {r.variant: r for r in fleets}
    for row in fleets:
        setting, _, workers = row.variant.rpartition(", ")
        line = f"fleet {row.variant}: {row.images_per_s:,.0f} images/s, peak {_mb(row)}"
        one = by_variant.get(f"{setting}, --workers 1")
        if one is not None and one is not row:
            line += f", {row.images_per_s / one.images_per_s:.2f}x --workers 1"
        for old in fleets:
            if old.variant.startswith(setting + " @") and old.variant.endswith(", " + workers):
                revision = old.variant.rpartition(", ")[0].rpartition("@")[2]
                line += f", {row.images_per_s / old.images_per_s:.2f}x {revision}'s"
        if workers == "--workers 8" and "latency 0 ms" in setting:
            before = FLEET_BEFORE_IMAGES_PER_S
            line += f" ({row.images_per_s / before:.2f}x {before:,}; target >= 2x, <= 400 MB)"
        elif workers == "--workers 8":
            line += " (target <= 400 MB)"
        else:
            line += " (target <= 200 MB)"
        lines.append(line)
    for row in rows:
        if row.scenario == "fleet-big":
            lines.append(
                f"second nights, fleet of {row.variant}: peak {_mb(row)}, {row.wall_s:.1f} s"
                " (target <= 400 MB)"
            )
    for row in rows:
        if row.scenario != "nasty" or "@" in row.variant:
            continue
        ratios = [
            f"{value:.2f}x {key.removeprefix('speedup_vs_')}'s"
            for key, value in row.extra.items()
            if key.startswith("speedup_vs_")
        ]
        if ratios:
            lines.append(
                f"nasty first night {row.variant}: {row.images_per_s:,.0f} images/s, "
                f"{', '.join(ratios)}, peak {_mb(row)} (target >= 0.95x, <= 200 MB)"
            )
    return lines
