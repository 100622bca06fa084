"""What every benchmark shares: the import path, tiny mode, machine state, paired ratios, floors.

Importing this module puts the repository root on ``sys.path`` (a fresh clone runs the
benchmarks without installing anything). Tiny mode (``--tiny`` or ``FF_BENCH_TINY=1``, which
child processes inherit) shrinks every benchmark to seconds so a test can run each end to end.
``summary(...)`` prints one machine-readable line that ``run_all.py`` gathers into its table.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SUMMARY_PREFIX = "FF-BENCH-SUMMARY "
TINY_ENV = "FF_BENCH_TINY"


def add_tiny_flag(parser) -> None:
    parser.add_argument("--tiny", action="store_true", help=f"seconds-long smoke run (also: {TINY_ENV}=1)")


def is_tiny(args=None) -> bool:
    """True with ``--tiny`` (then also exported to child processes) or ``FF_BENCH_TINY=1``."""
    if args is not None and getattr(args, "tiny", False):
        os.environ[TINY_ENV] = "1"
    return os.environ.get(TINY_ENV) == "1"


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def machine() -> str:
    """Load averages, cores and torch threads: the context every figure needs beside it."""
    one, five, fifteen = os.getloadavg()
    return (f"load {one:.2f}/{five:.2f}/{fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores, "
            f"{torch_threads()} torch threads, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


@dataclass(frozen=True)
class PairedRatio:
    """Median of per-pair ratios B/A with its quartiles; ``load`` is the 1-min load while measuring."""

    median: float
    q1: float
    q3: float
    pairs: int
    load: float

    def __str__(self) -> str:
        return f"{self.median:.3f} (IQR {self.q1:.3f}–{self.q3:.3f}, {self.pairs} pairs, load {self.load:.1f})"


def ratio_stats(ratios: list[float]) -> PairedRatio:
    if len(ratios) < 2:
        r = ratios[0] if ratios else float("nan")
        return PairedRatio(r, r, r, len(ratios), os.getloadavg()[0])
    q1, med, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return PairedRatio(med, q1, q3, len(ratios), os.getloadavg()[0])


def paired(run_a: Callable[[], object], run_b: Callable[[], object], pairs: int,
           clock: Callable[[], float] = time.perf_counter) -> PairedRatio:
    """Time A, B, A, B … (``pairs`` of each, after one warm-up each) and return B/A per pair.

    Adjacent runs share the machine's momentary load, so the ratio of a pair cancels most of it.
    """
    run_a(), run_b()
    ratios = []
    for _ in range(pairs):
        t0 = clock()
        run_a()
        t1 = clock()
        run_b()
        t2 = clock()
        ratios.append((t2 - t1) / max(t1 - t0, 1e-12))
    return ratio_stats(ratios)


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` counted by ``torch.utils.flop_counter`` (matmuls, convs, SDPA)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


_GEMM_RATE: float | None = None


def gemm_rate(n: int | None = None) -> float:
    """This machine's fp32 GEMM rate (FLOP/s) at the current torch thread count: best of a few
    ``n × n`` matmuls (measured once per process)."""
    global _GEMM_RATE
    if _GEMM_RATE is None:
        import torch

        n = n or (256 if is_tiny() else 2048)
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(3 if is_tiny() else 5))
        _GEMM_RATE = 2 * n**3 / best
    return _GEMM_RATE


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def summary(bench: str, what: str, value: str, floor: str = "", note: str = "") -> None:
    """One line for run_all.py's table (also readable by a person)."""
    print(SUMMARY_PREFIX + json.dumps({"bench": bench, "what": what, "value": value, "floor": floor,
                                       "note": note}), flush=True)
