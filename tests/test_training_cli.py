"""training/train_lora.py as a user runs it: --help, config files with --set, a run on the tiny set with
a loader worker, exit codes, and --stop-after-step then --resume through the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from faithfulfaces_core.tiny.wan import build_tiny_pipeline
from faithfulfaces_core.training.synthetic import tiny_overrides, write_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training" / "train_lora.py"


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tiny = build_tiny_pipeline(root / "models", seed=0)
    dataset = write_synthetic_dataset(root / "ds", identities=4, crops_per_identity=4, frames=9)
    return root, tiny, dataset


def write_config(path: Path, tiny, dataset, out: Path) -> Path:
    """A YAML file with the tiny-model options, as a user would write one."""
    import yaml

    data: dict = {}
    for item in tiny_overrides(tiny.diffusers_dir, dataset, out, run__max_steps=4, data__num_workers=1):
        key, _, value = item.partition("=")
        section, name = key.split(".")
        data.setdefault(section, {})[name] = json.loads(value)
    path.write_text(yaml.safe_dump(data))
    return path


def test_help_lists_every_option_without_importing_torch():
    result = cli("--help", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "--resume [CHECKPOINT]" in result.stdout and "--set SECTION.KEY=VALUE" in result.stdout
    assert "data.aligner_batch_size = 1024" in result.stdout
    assert "identities per micro-batch per process for InfoNCE" in result.stdout
    assert "data.views_per_identity = 2" in result.stdout
    code = (f"import runpy, sys\nsys.argv = ['train_lora.py', '--help']\ntry:\n"
            f"    runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert probe.stdout.strip().splitlines()[-1] == "False"


def test_bad_options_exit_1_with_the_fix(setup):
    result = cli("--set", "data.batchsize=2", timeout=60)
    assert result.returncode == 1
    assert "data.batchsize: unknown option; known options in data:" in result.stderr
    result = cli("--set", "data.dataset_dir=/nowhere", timeout=60)
    assert result.returncode == 1 and "model.diffusers_dir must be set" in result.stderr


def test_print_config_resolves_file_and_overrides(setup, tmp_path):
    root, tiny, dataset = setup
    config = write_config(tmp_path / "train.yaml", tiny, dataset, tmp_path / "out")
    result = cli("--config", str(config), "--set", "optim.learning_rate=3e-4", "--print-config", timeout=60)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["optim"]["learning_rate"] == 3e-4 and printed["data"]["num_workers"] == 1
    assert printed["lora"]["rank"] == 4 and printed["objective"]["flow_shift"] == 5.0


def test_run_stop_and_resume_through_the_command_line(setup, tmp_path):
    """A killed run (--stop-after-step) and its --resume write every output; that the resumed weights
    equal an uninterrupted run's is checked in test_training_run (in process) and test_training_ddp."""
    root, tiny, dataset = setup
    out = tmp_path / "run"
    config = write_config(tmp_path / "train.yaml", tiny, dataset, out)
    result = cli("--config", str(config), "--stop-after-step", "3", "--no-progress")
    assert result.returncode == 3 and "Stopped after step 3" in result.stderr
    assert "step 3/4 loss" in result.stdout and "checkpoint" in result.stdout
    assert not (out / "faithfulfaces_lora.safetensors").exists()
    result = cli("--config", str(config), "--resume", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "resumed from" in result.stdout and "step-00000002 at step 2" in result.stdout
    assert "step 4/4 loss" in result.stdout and "wrote faithfulfaces_aligner.safetensors" in result.stdout
    for name in ("faithfulfaces_aligner.safetensors", "faithfulfaces_lora.safetensors",
                 "faithfulfaces_lora_comfy.safetensors", "loss_curve.png", "config.json", "train.log"):
        assert (out / name).is_file(), name
    lora = load_file(str(out / "faithfulfaces_lora.safetensors"))
    assert len(lora) == 120 and any(float(v.abs().max()) > 0 for k, v in lora.items() if "lora_B" in k)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # step 3 of the killed run was cut back and redone
