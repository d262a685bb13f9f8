"""`python -m tests.bench [--quick] [--repeat N] [--only NAME ...]`: run, print, save JSON."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tests.bench.report import render_table, save
from tests.bench.scenarios import SCENARIOS, Plan, Row
from tests.bench.targets import target_lines

RESULTS = Path(__file__).resolve().parents[2] / "bench-results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~2 minute smoke run")
    parser.add_argument("--repeat", type=int, help="runs per measurement (median); 3, quick 1")
    parser.add_argument(
        "--only", action="append", choices=sorted(SCENARIOS), help="run only these scenarios"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    if args.repeat is not None:
        if args.repeat < 1:
            raise SystemExit("--repeat must be at least 1")
        plan = Plan(**{**plan.__dict__, "repeat": args.repeat})
    names = args.only or list(SCENARIOS)
    started = time.perf_counter()
    rows: list[Row] = []
    for name in names:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        begun = time.perf_counter()
        new = SCENARIOS[name](plan)
        rows += new
        print(render_table(new), file=sys.stderr)
        print(f"[bench] {name}: {time.perf_counter() - begun:.0f} s", file=sys.stderr, flush=True)
    print(render_table(rows))
    for line in target_lines(rows):
        print(line)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = save(args.out / f"bench-{stamp}.json", rows, plan, time.perf_counter() - started)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
