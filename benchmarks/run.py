"""Run every benchmark in turn (``make bench``); each writes its JSON under --out and prints its table."""

from __future__ import annotations

import argparse
import subprocess
import sys

BENCHMARKS = (
    ("bench_subknn", []),
    ("bench_growth", []),
    ("bench_ranges", []),
    ("bench_daemon", []),
    ("bench_cnn", []),
    ("bench_retrain_latency", []),
    ("bench_maps", []),
    ("bench_reclassify", []),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="artifacts/bench")
    parser.add_argument("--only", action="append", help="run only these (e.g. --only bench_daemon)")
    args = parser.parse_args()
    failed = []
    for name, extra in BENCHMARKS:
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        done = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{name}", "--out", args.out, *extra], check=False
        )
        if done.returncode:
            failed.append(name)
    if failed:
        sys.exit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
