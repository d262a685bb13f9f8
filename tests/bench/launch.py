"""`python -m tests.bench.launch CMD...`: run CMD, print its exit code and rusage as JSON.

Why a launcher: Linux counts a child's RSS from before its exec into `ru_maxrss`, and
subprocess starts children with vfork, so an exporter started straight from the bench (which
holds catalogs and page bodies) would report the bench's own peak. This process stays a few
MB, so the rusage it prints is the exporter's. Its stdout carries only the JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    report = {
        "exit_code": process.returncode,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "maxrss_kb": usage.ru_maxrss,  # KiB on Linux
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
