"""Training end to end on the tiny Wan2.1-VACE pipeline and a synthetic dataset (CPU).

Outputs load with the nodes' loaders and generate; overfitting one batch drives both losses
down; a run killed and resumed ends with exactly the weights of an uninterrupted one; a NaN
stops the run at its step and keeps the last good checkpoint; caching changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from faithfulfaces_core.errors import FaithfulFacesError
from faithfulfaces_core.tiny.aligner import tiny_aligner_config
from faithfulfaces_core.tiny.wan import TINY_TRANSFORMER_CONFIG, TINY_WIDTH, build_tiny_pipeline
from faithfulfaces_core.training import checkpointing
from faithfulfaces_core.training.config import load_config
from faithfulfaces_core.training.export import BASE_MODEL_KEY, STEPS_KEY, TRAINING_CONFIG_KEY
from faithfulfaces_core.training.models import config_sha256
from faithfulfaces_core.training.synthetic import tiny_overrides, write_synthetic_dataset
from faithfulfaces_core.training.trainer import StopRequested, TrainingDiverged, train


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("train_tiny"), seed=0)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("train_ds"), identities=4, crops_per_identity=4, frames=9)


def config(tiny, dataset, out: Path, **extra):
    return load_config(None, tiny_overrides(tiny.diffusers_dir, dataset, out, **extra))


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata()


def test_three_steps_write_outputs_the_nodes_load_and_generate_with(tiny, dataset, tmp_path):
    from faithfulfaces_core.aligner import load_aligner
    from faithfulfaces_core.wan.generate import generate
    from faithfulfaces_core.wan.loading import load_pipeline
    from faithfulfaces_core.wan.lora import load_lora

    out = tmp_path / "run"
    result = train(config(tiny, dataset, out, data__batch_size=2), progress=False)
    assert result.steps == 3 and result.resumed_from is None
    for name in ("config.json", "train.log", "metrics.jsonl", "loss_curve.png", "data_report.json"):
        assert (out / name).is_file(), name
    assert (out / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite([r["flow"], r["infonce"]]).all() and r["flow"] > 0 and r["infonce"] > 0 for r in rows)
    assert "step 3/3 loss" in (out / "train.log").read_text()
    assert [s for s, _ in checkpointing.list_checkpoints(out)] == [2, 3]
    saved = load_config(out / "config.json")
    assert saved == config(tiny, dataset, out, data__batch_size=2)

    # metadata: the training config and the base model's identity, in all three files
    base_hash = config_sha256(TINY_TRANSFORMER_CONFIG)
    for path in (result.outputs.aligner, result.outputs.lora, result.outputs.lora_comfy):
        meta = metadata(path)
        assert json.loads(meta[TRAINING_CONFIG_KEY]) == json.loads(saved.to_json())
        base = json.loads(meta[BASE_MODEL_KEY])
        assert base["config_sha256"] == base_hash and base["source"] == tiny.diffusers_dir.name
        assert base["width"] == TINY_WIDTH and meta[STEPS_KEY] == "3"

    # the files hold the trained weights: equal to the final checkpoint's, and the LoRA is no longer zero
    final = tensors(out / "checkpoints" / "step-00000003" / "model.safetensors")
    lora = tensors(result.outputs.lora)
    assert len(lora) == 2 * 10 * 6  # (A, B) × 10 modules × (4 blocks + 2 VACE blocks)
    for key, value in lora.items():
        live = "transformer." + key.removeprefix("transformer.").replace(".weight", ".faithfulfaces.weight")
        assert torch.equal(value, final[live]), key
    assert max(float(v.abs().max()) for k, v in lora.items() if "lora_B" in k) > 0
    aligner_file = tensors(result.outputs.aligner)
    assert all(torch.equal(v, final[f"aligner.{k}"]) for k, v in aligner_file.items())

    # the nodes' loaders take the files unchanged and generate() runs with them
    aligner = load_aligner(result.outputs.aligner)
    pipe = load_pipeline(tiny.diffusers_dir, device="cpu")
    face = (np.random.default_rng(1).random((32, 32, 3)) * 255).astype(np.uint8)
    tokens = aligner.align(torch.from_numpy(face).permute(2, 0, 1)[None].float() / 255, torch.tensor([[5.0, 30.0, 0.0]]))
    for path in (result.outputs.lora, result.outputs.lora_comfy):
        load_lora(pipe, path)
        video = generate(pipe, prompt="a young woman turns her head left", reference_image=face,
                         pose_tokens=tokens.tokens, width=32, height=32, num_frames=5, steps=2, seed=3)
        assert video.frames.shape == (5, 32, 32, 3) and np.isfinite(video.frames).all()
    lora_b = {n: p for n, p in pipe.transformer.named_parameters() if "lora_B" in n}
    assert any(float(p.detach().abs().max()) > 0 for p in lora_b.values())


def test_three_views_per_identity_train_and_are_recorded(tiny, dataset, tmp_path, monkeypatch):
    """data.views_per_identity=3: every aligner batch of the run holds 3 views of each of its 3
    identities, the loss sees all three, and config.json and the outputs record the option."""
    from faithfulfaces_core.aligner.model import PoseSharedAligner
    from faithfulfaces_core.training.data import StepBatches

    seen_batches, seen_losses = [], []
    get_item, loss = StepBatches.__getitem__, PoseSharedAligner.contrastive_loss

    def recording_get_item(self, micro):
        batch = get_item(self, micro)
        seen_batches.append((tuple(batch["view_faces"].shape), tuple(batch["view_euler"].shape)))
        return batch

    def recording_loss(self, *views):
        seen_losses.append([tuple(v.shape) for v in views])
        return loss(self, *views)

    monkeypatch.setattr(StepBatches, "__getitem__", recording_get_item)
    monkeypatch.setattr(PoseSharedAligner, "contrastive_loss", recording_loss)
    out = tmp_path / "views3"
    result = train(config(tiny, dataset, out, run__max_steps=2, data__views_per_identity=3), progress=False)
    assert result.steps == 2 and result.report.views_per_identity == 3 and result.report.too_few_views == []
    assert seen_batches == [((3, 3, 3, 32, 32), (3, 3, 3))] * 2  # [V, A, ...]: 3 views of 3 identities
    aligner_dim = tiny_aligner_config().dim
    assert seen_losses == [[(3, aligner_dim)] * 3] * 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(np.isfinite(r["infonce"]) and r["infonce"] > 0 for r in rows)
    assert load_config(out / "config.json").data.views_per_identity == 3
    assert json.loads((out / "data_report.json").read_text())["views_per_identity"] == 3
    trained = json.loads(metadata(result.outputs.aligner)[TRAINING_CONFIG_KEY])
    assert trained["data"]["views_per_identity"] == 3


def test_overfitting_one_batch_drives_both_losses_down(tiny, dataset, tmp_path):
    """Same batch, noise and timesteps every step: after 25 steps the flow-matching loss is at least
    1.6× and InfoNCE at least 100× lower than at step 1 (measured: 1.9× and >10⁴×)."""
    cfg = config(tiny, dataset, tmp_path / "overfit", run__max_steps=25, run__checkpoint_every=100,
                 run__overfit_one_batch=True, data__aligner_batch_size=4, optim__learning_rate=1e-2,
                 optim__aligner_learning_rate=3e-3, optim__max_grad_norm=0)
    train(cfg, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "overfit" / "metrics.jsonl").read_text().splitlines()]
    flow, infonce = [r["flow"] for r in rows], [r["infonce"] for r in rows]
    assert flow[0] / flow[-1] > 1.6, flow
    assert infonce[0] / infonce[-1] > 100, infonce
    assert infonce[0] > 0.3  # it started from a real contrastive problem


def test_killed_and_resumed_run_ends_with_the_uninterrupted_weights(tiny, dataset, tmp_path):
    """Exact equality: the data, noise and timesteps are pure functions of (seed, micro-step), and the
    checkpoint restores weights, AdamW moments, the LR schedule and the global RNGs (LoRA dropout
    draws from the torch RNG, so a wrong RNG state would show)."""
    common = dict(run__max_steps=5, run__checkpoint_every=2, lora__dropout=0.2, optim__warmup_steps=3,
                  optim__gradient_accumulation_steps=2, data__aligner_batch_size=3)
    straight = train(config(tiny, dataset, tmp_path / "a", **common), progress=False)

    killed = tmp_path / "b"
    with pytest.raises(StopRequested, match="after step 3"):
        train(config(tiny, dataset, killed, run__stop_after_step=3, **common), progress=False)
    assert [s for s, _ in checkpointing.list_checkpoints(killed)] == [2]
    assert not (killed / "faithfulfaces_lora.safetensors").exists()
    with pytest.raises(FaithfulFacesError, match="already holds checkpoints .*--resume"):
        train(config(tiny, dataset, killed, **common), progress=False)
    with pytest.raises(FaithfulFacesError, match=r"optim.learning_rate \(0.0001 → 0.001\)"):
        train(config(tiny, dataset, killed, optim__learning_rate=1e-3, **common), resume=True, progress=False)

    resumed = train(config(tiny, dataset, killed, **common), resume=True, progress=False)
    assert resumed.resumed_from == killed / "checkpoints" / "step-00000002" and resumed.steps == 5
    for name in ("aligner", "lora", "lora_comfy"):
        a, b = tensors(getattr(straight.outputs, name)), tensors(getattr(resumed.outputs, name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    rows_a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    rows_b = (killed / "metrics.jsonl").read_text().splitlines()
    strip = [lambda r: {k: v for k, v in json.loads(r).items() if k != "seconds"}][0]
    assert [strip(r) for r in rows_a] == [strip(r) for r in rows_b]
    assert len(rows_b) == 5


@pytest.mark.parametrize(("target", "what"), [
    ("aligner.dictionary.atoms", "the loss"),  # NaN pose codes: InfoNCE is NaN
    ("lora_A", "the gradient norm"),  # NaN queries: SDPA's safe softmax keeps the loss finite, not the gradient
])
def test_nan_stops_at_its_step_and_keeps_the_last_good_checkpoint(tiny, dataset, tmp_path, target, what):
    def poison(info, model):
        if info.step == 2:
            param = next(p for n, p in model.named_parameters() if target in n)
            with torch.no_grad():
                param.fill_(float("nan"))

    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged) as info:
        train(config(tiny, dataset, out, run__max_steps=4, run__checkpoint_every=2), callbacks=[poison],
              progress=False)
    message = str(info.value)
    assert info.value.step == 3 and f"Training stopped at step 3: {what}" in message
    assert info.value.checkpoint == out / "checkpoints" / "step-00000002"
    assert "step-00000002 (nothing was written after it)" in message and "--resume" in message
    assert [s for s, _ in checkpointing.list_checkpoints(out)] == [2]
    good = tensors(out / "checkpoints" / "step-00000002" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in good.values())
    assert not (out / "faithfulfaces_lora.safetensors").exists()
    assert "Training stopped at step 3" in (out / "train.log").read_text()


def test_latent_cache_gives_the_same_training(tiny, dataset, tmp_path):
    """fp32 cache: the cached latents, reference slots and (trimmed, re-padded) prompt embeddings are
    the ones computed on the fly, so the weights after two steps are identical."""
    plain = train(config(tiny, dataset, tmp_path / "plain", run__max_steps=2), progress=False)
    cached = train(config(tiny, dataset, tmp_path / "cached", run__max_steps=2, data__cache_latents=True),
                   progress=False)
    cache_files = list((tmp_path / "cached" / "cache").rglob("*.safetensors"))
    assert len(cache_files) == 4 + 4 + 1  # videos, prompts, context
    for name in ("aligner", "lora"):
        a, b = tensors(getattr(plain.outputs, name)), tensors(getattr(cached.outputs, name))
        assert all(torch.equal(a[k], b[k]) for k in a), name
