#!/usr/bin/env python
"""Run every benchmark to the end and print one summary table (what ``make bench`` runs).

Each ``bench_*.py`` runs in its own process with its output shown as it comes; the lines it
marks with ``_common.summary`` are gathered into the table at the end, beside the machine load.
A benchmark that fails is reported and the rest still run; the exit status is 1 if any failed.

    python benchmarks/run_all.py                    # the full figures (tens of minutes on CPU)
    python benchmarks/run_all.py --tiny             # smoke mode (callgrind left out unless --only names it)
    python benchmarks/run_all.py --skip instructions --only aligner pose
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import _common

HERE = Path(__file__).resolve().parent
# cheap first, so a broken set-up shows early; callgrind last (slowest)
ORDER = ["dlib", "pose", "aligner", "dataset", "wan", "native", "training", "instructions"]


def benchmarks() -> list[str]:
    found = {p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py")}
    return [b for b in ORDER if b in found] + sorted(found - set(ORDER))


def run_one(name: str, tiny: bool) -> tuple[int, float, list[dict]]:
    """Exit status, seconds and summary rows of ``bench_<name>.py``; its output goes to ours."""
    cmd = [sys.executable, str(HERE / f"bench_{name}.py")] + (["--tiny"] if tiny else [])
    rows, t0 = [], time.perf_counter()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            if line.startswith(_common.SUMMARY_PREFIX):
                rows.append(json.loads(line[len(_common.SUMMARY_PREFIX):]))
            else:
                sys.stdout.write(line)
        proc.wait()
    return proc.returncode, time.perf_counter() - t0, rows


def print_table(results: dict[str, tuple[int, float, list[dict]]]) -> None:
    print(f"\n## Benchmark summary ({_common.machine()})\n")
    print("| benchmark | figure | value | floor | note |")
    print("|---|---|---:|---:|---|")
    for name, (code, seconds, rows) in results.items():
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        print(f"| {name} | run: {status} | {seconds:.0f} s | | |")
        for r in rows:
            print(f"| {name} | {r['what']} | {r['value']} | {r['floor']} | {r['note']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = benchmarks()
    parser.add_argument("--only", nargs="+", choices=names, help="run just these")
    parser.add_argument("--skip", nargs="+", choices=names, default=[], help="leave these out")
    _common.add_tiny_flag(parser)
    args = parser.parse_args()
    tiny = _common.is_tiny(args)
    skip = set(args.skip) | ({"instructions"} if tiny and not args.only else set())  # valgrind: minutes
    chosen = [n for n in (args.only or names) if n not in skip]
    print(_common.machine())
    results = {}
    for name in chosen:
        print(f"\n=== bench_{name}.py{' --tiny' if tiny else ''} ===", flush=True)
        results[name] = run_one(name, tiny)
    print_table(results)
    sys.exit(1 if any(code for code, _, _ in results.values()) else 0)


if __name__ == "__main__":
    main()
