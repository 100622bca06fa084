"""Two-process DDP training on the CPU (torchrun + gloo, what ``accelerate launch`` starts on GPUs):
each process draws its own videos and pairs, writes its own RNG state, and a run killed after
step 3 and resumed ends with exactly the weights of an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from faithfulfaces_core.tiny.wan import build_tiny_pipeline
from faithfulfaces_core.training.synthetic import tiny_overrides, write_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def launch(overrides: list[str], *extra: str) -> subprocess.CompletedProcess:
    """torchrun in its own process group: a hang is killed with all its workers, none is left behind."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "training" / "train_lora.py"), "--no-progress", *extra, "--set", *overrides]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def test_two_processes_kill_and_resume_equal_an_uninterrupted_run(tmp_path):
    tiny = build_tiny_pipeline(tmp_path / "models", seed=0)
    dataset = write_synthetic_dataset(tmp_path / "ds", identities=4, crops_per_identity=4, frames=9)

    def overrides(out: Path) -> list[str]:
        return tiny_overrides(tiny.diffusers_dir, dataset, out, run__max_steps=4, run__checkpoint_every=2,
                              lora__dropout=0.2)

    straight = launch(overrides(tmp_path / "a"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert "(2 processes, cpu" in straight.stdout
    assert sorted(p.name for p in (tmp_path / "a" / "checkpoints" / "step-00000004").iterdir()) == [
        "model.safetensors", "optimizer.safetensors", "rng.rank0.safetensors", "rng.rank1.safetensors", "state.json"]

    killed = launch(overrides(tmp_path / "b"), "--stop-after-step", "3")
    assert killed.returncode != 0 and "Stopped after step 3" in killed.stderr
    resumed = launch(overrides(tmp_path / "b"), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    for name in ("faithfulfaces_aligner.safetensors", "faithfulfaces_lora.safetensors"):
        a, b = load_file(str(tmp_path / "a" / name)), load_file(str(tmp_path / "b" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
