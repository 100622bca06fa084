"""Training internals against independent references: Wan's timestep shift, the VACE context built
by the pipeline's own call, gradients through the pose tokens (with and without checkpointing),
the latent cache, optimizer/RNG checkpoint round trips and atomic checkpoint writes."""

from __future__ import annotations

import importlib.util
import json
import random

import numpy as np
import pytest
import torch

from faithfulfaces_core.errors import FaithfulFacesError, MissingDependencyError
from faithfulfaces_core.tiny.wan import TINY_TRANSFORMER_CONFIG, TINY_WIDTH, build_tiny_pipeline
from faithfulfaces_core.training import checkpointing
from faithfulfaces_core.training.cache import LatentCache
from faithfulfaces_core.training.encoding import Conditioner, clean_latents, vace_context
from faithfulfaces_core.training.objective import (
    JointModel,
    flow_inputs,
    flow_matching_loss,
    noisy_latents,
    shift_sigmas,
)

H = W = 32
T = 5



@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from faithfulfaces_core.wan.loading import load_pipeline

    paths = build_tiny_pipeline(tmp_path_factory.mktemp("core_tiny"), seed=2)
    return load_pipeline(paths.diffusers_dir, device="cpu")


@pytest.fixture(scope="module")
def conditioner(pipe):
    return Conditioner(pipe, device=torch.device("cpu"), height=H, width=W, num_frames=T, max_sequence_length=24)


def face(seed: int, shape=(40, 28, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# --- objective --------------------------------------------------------------------------------------

def test_shift_matches_diffusers_flow_match_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=5.0)
    unshifted = torch.from_numpy(np.linspace(1, 1000, 1000)[::-1].copy() / 1000)
    torch.testing.assert_close(shift_sigmas(unshifted, 5.0).float(), scheduler.sigmas, rtol=0, atol=1e-6)
    torch.testing.assert_close(shift_sigmas(unshifted, 5.0).float() * 1000, scheduler.timesteps, rtol=0, atol=1e-3)
    assert torch.equal(shift_sigmas(unshifted, 1.0), unshifted)


def test_flow_inputs_follow_the_shifted_uniform_law_and_the_velocity_target():
    sigmas, noise = flow_inputs((20000, 1), seed=5, shift=5.0)
    # σ' = g(σ), σ ~ U(0,1) with g increasing: the median is g(0.5) = 2.5 / 3
    assert abs(float(sigmas.median()) - 2.5 / 3) < 0.01 and 0 < float(sigmas.min()) and float(sigmas.max()) < 1
    again, noise2 = flow_inputs((20000, 1), seed=5, shift=5.0)
    assert torch.equal(sigmas, again) and torch.equal(noise, noise2)
    x0, eps = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    s = torch.tensor([0.0, 1.0])
    xt = noisy_latents(x0, eps, s)
    assert torch.equal(xt[0], x0[0]) and torch.equal(xt[1], eps[1])
    # d x_t / dσ = ε − x0, the regression target
    h = 1e-3
    s0 = torch.tensor([0.3, 0.6], dtype=torch.float64)
    x0d, epsd = x0.double(), eps.double()
    velocity = (noisy_latents(x0d, epsd, s0 + h) - noisy_latents(x0d, epsd, s0 - h)) / (2 * h)
    torch.testing.assert_close(velocity, epsd - x0d)
    assert float(flow_matching_loss(eps - x0, x0, eps)) == 0.0


# --- encoding ---------------------------------------------------------------------------------------

def test_vace_context_equals_the_pipelines_own_call(pipe, conditioner):
    """Reference: what WanVACEPipeline.__call__ builds for reference_images=[face], no control video."""
    from PIL import Image

    faces = [face(1), face(2, (20, 50, 3))]
    parts = conditioner.reference_parts(faces)
    blank, masks = conditioner.constant_parts()
    context = vace_context(parts, blank, masks)
    assert context.shape == (2, 96, 1 + 2, H // 8, W // 8)
    for i, image in enumerate(faces):
        with torch.no_grad():
            video, mask, refs = pipe.preprocess_conditions(
                None, None, [Image.fromarray(image)], 1, H, W, T, torch.float32, torch.device("cpu"))
            reference = torch.cat([pipe.prepare_video_latents(video, mask, refs, None, torch.device("cpu")),
                                   pipe.prepare_masks(mask, refs, None)], dim=1)
        assert torch.equal(context[i : i + 1], reference)
    clips = torch.rand(2, 3, T, H, W) * 2 - 1
    latents = conditioner.video_latents(clips)
    with torch.no_grad():
        via_pipeline = pipe.prepare_video_latents(clips[:1], torch.zeros_like(clips[:1]), [[]], None, torch.device("cpu"))
    assert torch.equal(latents[:1], via_pipeline[:, :16])
    x0 = clean_latents(parts, latents)
    assert x0.shape == (2, 16, 3, H // 8, W // 8)
    assert torch.equal(x0[:, :, :1], parts[:, :16]) and torch.equal(x0[:, :, 1:], latents)


def test_prompt_cache_round_trip_is_exact(conditioner, tmp_path):
    embeds = conditioner.prompt_embeds(["a young woman turns her head left", "a man"])
    assert embeds.shape == (2, 24, TINY_TRANSFORMER_CONFIG["text_dim"])
    cache = LatentCache(tmp_path, "f" * 64, max_sequence_length=24)
    cache.write_prompt("a man", embeds[1])
    assert torch.equal(cache.read_prompt("a man"), embeds[1])
    half = LatentCache(tmp_path / "bf16", "e" * 64, max_sequence_length=24, dtype="bf16")
    half.write_prompt("a man", embeds[1])
    assert torch.equal(half.read_prompt("a man"), embeds[1].bfloat16().float())
    with pytest.raises(FaithfulFacesError, match="cache is incomplete.*cache_latents=true"):
        cache.read_prompt("never cached")


# --- gradients --------------------------------------------------------------------------------------

def _joint(seed: int, checkpointing_on: bool):
    from diffusers import WanVACETransformer3DModel

    from faithfulfaces_core.tiny.aligner import build_tiny_aligner
    from faithfulfaces_core.training.config import LoraSection
    from faithfulfaces_core.training.models import prepare_transformer
    from faithfulfaces_core.wan.injection import remove_pose_injection

    torch.manual_seed(seed)
    transformer = WanVACETransformer3DModel(**TINY_TRANSFORMER_CONFIG)
    ready = prepare_transformer(transformer, LoraSection(rank=4), gradient_checkpointing=checkpointing_on,
                                attention_backend=None)
    with torch.no_grad():  # a LoRA that is not zero, so the gradient of A is not zero either
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    aligner = build_tiny_aligner(seed=seed, token_dim=TINY_WIDTH).train()
    model = JointModel(transformer, aligner, ready.injection, infonce_weight=0.0, num_train_timesteps=1000,
                       reference_frame_loss=True)
    return model, lambda: remove_pose_injection(transformer)


def _batch(seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    sigmas, noise = flow_inputs((2, 16, 3, 4, 4), seed, 5.0)
    return {
        "reference_faces": torch.rand(2, 3, 32, 32, generator=gen), "reference_euler": torch.randn(2, 3, generator=gen) * 30,
        "view_faces": torch.rand(2, 3, 3, 32, 32, generator=gen), "view_euler": torch.randn(2, 3, 3, generator=gen) * 30,
        "x0": torch.randn(2, 16, 3, 4, 4, generator=gen), "noise": noise, "sigmas": sigmas,
        "prompt_embeds": torch.randn(2, 8, TINY_TRANSFORMER_CONFIG["text_dim"], generator=gen), "context": torch.randn(2, 96, 3, 4, 4, generator=gen),
        "reference_frames": 1,
    }


def test_flow_loss_trains_the_aligner_through_the_tokens_and_checkpointing_changes_no_gradient():
    grads = []
    for checkpointing_on in (False, True):
        model, remove = _joint(7, checkpointing_on)
        losses = model(_batch(3))
        assert float(losses.infonce) > 0 and torch.equal(losses.total, losses.flow + 0.0 * losses.infonce)
        losses.total.backward()
        model.clear_tokens()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        remove()
    plain, recomputed = grads
    assert plain.keys() == recomputed.keys()
    # with InfoNCE weighted 0, only the flow loss reaches the aligner: through the injected tokens
    assert float(plain["aligner.tokenizer.patch_embed.weight"].abs().sum()) > 0
    assert float(plain["aligner.projection.proj.weight"].abs().sum()) > 0
    assert any("lora_A" in n and float(g.abs().sum()) > 0 for n, g in plain.items())
    assert not any(n.startswith("transformer.") and "lora_" not in n for n in plain)  # the base stays frozen
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


# --- checkpoints ------------------------------------------------------------------------------------

def _adam_steps(params, optimizer, n: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        optimizer.step()


def test_optimizer_state_round_trips_through_safetensors_exactly(tmp_path):
    from diffusers.optimization import get_scheduler

    def make():
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))]
        opt = torch.optim.AdamW([{"params": params[:1], "lr": 1e-2}, {"params": params[1:], "lr": 3e-3}],
                                betas=(0.8, 0.95), weight_decay=0.1)
        return params, opt, get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=10)

    params, opt, sched = make()
    for _ in range(3):
        _adam_steps(params, opt, 1, seed=1)
        sched.step()
    state = {f"p{i}": p for i, p in enumerate(params)}
    path = checkpointing.save_training_checkpoint(
        tmp_path, 3, micro_step=6, model_state=state, optimizer_state=opt.state_dict(),
        scheduler_state=sched.state_dict(), config={"x": 1})
    assert path.name == "step-00000003" and sorted(p.name for p in path.iterdir()) == [
        "model.safetensors", "optimizer.safetensors", "rng.rank0.safetensors", "state.json"]
    params2, opt2, sched2 = make()
    checkpointing.load_model_state(path, {f"p{i}": p for i, p in enumerate(params2)})
    resumed = checkpointing.load_training_state(path, optimizer=opt2, scheduler=sched2)
    assert (resumed.step, resumed.micro_step, resumed.config) == (3, 6, {"x": 1})
    assert all(torch.equal(x, y) for x, y in zip(params, params2, strict=True))
    _adam_steps(params, opt, 2, seed=9)
    _adam_steps(params2, opt2, 2, seed=9)
    sched.step()
    sched2.step()
    assert all(torch.equal(x, y) for x, y in zip(params, params2, strict=True))
    assert sched.get_last_lr() == sched2.get_last_lr()
    with pytest.raises(FaithfulFacesError, match="written by 1 processes but this run has 2"):
        checkpointing.load_training_state(path, optimizer=opt2, scheduler=sched2, world_size=2)


def test_rng_states_round_trip():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.normal(), torch.rand(2)  # leave a cached gaussian in NumPy's state
    tensors, meta = checkpointing.rng_state()
    expected = (random.random(), np.random.normal(), np.random.normal(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    checkpointing.set_rng_state(tensors, json.loads(json.dumps(meta)))
    got = (random.random(), np.random.normal(), np.random.normal(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


def test_a_write_killed_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([p])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    def write(step):
        return checkpointing.save_training_checkpoint(
            tmp_path, step, micro_step=step, model_state={"p": p}, optimizer_state=opt.state_dict(),
            scheduler_state=sched.state_dict(), config={}, keep=2)

    write(2)
    real = checkpointing.save_checkpoint

    def dies_on_the_model_file(path, *args, **kwargs):
        if path.name == "model.safetensors":
            raise KeyboardInterrupt("killed")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checkpointing, "save_checkpoint", dies_on_the_model_file)
    with pytest.raises(KeyboardInterrupt):
        write(4)
    monkeypatch.undo()
    assert checkpointing.latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "step-00000002"
    leftover = tmp_path / "checkpoints" / ".step-00000004.tmp"
    assert leftover.is_dir()  # what a kill leaves; never listed, removed at the next start
    assert checkpointing.remove_leftovers(tmp_path) == [leftover] and not leftover.exists()
    write(4), write(6)
    assert [s for s, _ in checkpointing.list_checkpoints(tmp_path)] == [4, 6]  # keep=2
    write(6)  # a step written again (resumed from an older checkpoint) replaces the old directory
    assert [s for s, _ in checkpointing.list_checkpoints(tmp_path)] == [4, 6]
    with pytest.raises(FaithfulFacesError, match="not a training checkpoint"):
        checkpointing.read_state(tmp_path)


def test_tensorboard_is_required_only_when_asked(tmp_path):
    from faithfulfaces_core.training.config import load_config
    from faithfulfaces_core.training.trainer import train

    if importlib.util.find_spec("tensorboard") is not None:
        pytest.skip("tensorboard is installed here: this checks the error for when it is not")
    cfg = load_config(None, ["run.tensorboard=true", f"model.diffusers_dir={tmp_path}", f"data.dataset_dir={tmp_path}",
                             f"run.output_dir={tmp_path / 'out'}"])
    with pytest.raises(MissingDependencyError, match=r"TensorBoard logging \(run.tensorboard=true\) needs the Python "
                                                     r"package 'tensorboard'.*pip install tensorboard"):
        train(cfg, progress=False)
    assert not (tmp_path / "out").exists()  # refused before anything was written
