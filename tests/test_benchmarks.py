"""Every benchmark runs to the end in tiny mode, from a checkout, with no installed package.

A benchmark that breaks (an import path, a renamed API) fails here instead of in front of a user
running ``make bench``. Figures are not checked: speed lives in the benchmarks' own output.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import _common  # noqa: E402
import bench_instructions  # noqa: E402
import run_all  # noqa: E402

# callgrind runs torch under valgrind (minutes even when tiny); it has its own test at the end.
SMOKE = [name for name in run_all.benchmarks() if name != "instructions"]


def _run(script: str, *extra: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(BENCH / script), "--tiny", *extra], capture_output=True,
                          text=True, cwd="/", env=env, timeout=timeout, check=False)


def _summaries(stdout: str) -> list[dict]:
    prefix = _common.SUMMARY_PREFIX
    return [json.loads(line[len(prefix):]) for line in stdout.splitlines() if line.startswith(prefix)]


def test_every_benchmark_file_is_in_the_run_order():
    assert set(run_all.benchmarks()) == {p.stem.removeprefix("bench_") for p in BENCH.glob("bench_*.py")}
    assert "dlib" in SMOKE and "training" in SMOKE


@pytest.mark.parametrize("name", SMOKE)
def test_benchmark_runs_in_tiny_mode(name):
    done = _run(f"bench_{name}.py")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "load " in done.stdout  # the machine load is printed beside the figures
    if name not in ("dlib",):
        assert _summaries(done.stdout), f"bench_{name}.py printed no summary line"


def test_run_all_prints_one_summary_table():
    done = _run("run_all.py", "--only", "dlib")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "## Benchmark summary" in done.stdout and "| dlib | run: ok |" in done.stdout


def test_paired_ratio_of_known_work():
    calls = []
    ratio = _common.paired(lambda: calls.append("a"), lambda: sum(range(20000)) and calls.append("b"), pairs=5)
    assert calls == ["a", "b"] * 6  # warm-up pair, then strictly alternating
    assert ratio.pairs == 5 and ratio.q1 <= ratio.median <= ratio.q3 and ratio.median > 1


def test_flop_count_of_a_matmul():
    import torch

    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert _common.count_flops(lambda: a @ b) == 2 * 8 * 16 * 4


CALLGRIND = bool(shutil.which("valgrind") and shutil.which("cc") and Path("/usr/include/valgrind/callgrind.h").exists())


@pytest.mark.skipif(not CALLGRIND, reason="needs valgrind, a C compiler and valgrind/callgrind.h")
def test_instruction_counts_in_tiny_mode():
    done = _run("bench_instructions.py", timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    ratios = {row["what"].split(" vs plain")[0]: float(row["value"]) for row in _summaries(done.stdout)}
    tokens, unfused, fused, again = (ratios[bench_instructions.CONDITIONS[c]]
                                     for c in ("tokens", "lora", "lora_fused", "plain_again"))
    # four more keys per attention and a rank-128 LoRA on a width-128 model both add work; fusing takes it back
    assert tokens > 1.0 and unfused > 1.3 and fused < unfused
    assert abs(again - 1) < 0.01  # the same condition in another process: the count repeats
