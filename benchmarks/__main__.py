"""Run every benchmark, one process each: `python -m benchmarks [--smoke] [NAME …]`.

A benchmark is a `bench_*.py` script of this directory that accepts `--smoke`. NAME selects
benchmarks by a part of their file name (`master`, `software`, `instance` …). The exit
code is non-zero if a benchmark failed to run; a missed target is a figure, not a failure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = sorted(path.name for path in HERE.glob("bench_*.py"))


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="short runs, for CI")
    parser.add_argument("names", nargs="*", help="only benchmarks whose file name has one")
    args = parser.parse_args()
    selected = [b for b in BENCHMARKS if not args.names or any(n in b for n in args.names)]
    if not selected:
        parser.error(f"no benchmark matches {' '.join(args.names)} (have {', '.join(BENCHMARKS)})")
    failed = []
    for name in selected:
        print(f"=== {name}{' --smoke' if args.smoke else ''}", flush=True)
        started = time.monotonic()
        command = [sys.executable, str(HERE / name), *(["--smoke"] if args.smoke else [])]
        if subprocess.run(command).returncode != 0:
            failed.append(name)
        print(f"=== {name}: {time.monotonic() - started:.0f} s\n", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
