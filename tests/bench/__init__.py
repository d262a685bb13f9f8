"""Benchmarks of the exporter against the emulator over loopback TCP (`make bench`).

Not tests: nothing here asserts a timing. `python -m tests.bench` prints one table and saves it
as JSON under `bench-results/` with the machine and the git revision. pytest never collects
this package (pyproject `norecursedirs`); `tests/test_bench_smoke.py` runs its machinery small.
"""
