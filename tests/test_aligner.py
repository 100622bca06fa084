"""The pose-shared identity aligner: Euler embedding, dictionary, InfoNCE, checkpoints, align(),
and a short CPU training on a synthetic identity/pose set showing that it learns what it claims."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from faithfulfaces_core.aligner import (
    ALIGNER_FORMAT,
    CLIP_INIT_LOGIT_SCALE,
    CLIP_MAX_LOGIT_SCALE,
    TOKENIZERS,
    AlignerConfig,
    FrozenFeatureTokenizer,
    PoseSharedAligner,
    euler_harmonics,
    info_nce,
    load_aligner,
    multi_view_info_nce,
    save_aligner,
)
from faithfulfaces_core.aligner.model import ALIGN_CHUNK
from faithfulfaces_core.checkpoints import read_metadata, save_checkpoint
from faithfulfaces_core.errors import CheckpointError, FaithfulFacesError, MissingModelError
from faithfulfaces_core.tiny.aligner import build_tiny_aligner, tiny_aligner_config, write_tiny_aligner


def _inputs(b: int, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g), (torch.rand(b, 3, generator=g) * 2 - 1) * 90


# --- Euler-angle embedding -------------------------------------------------------------------


def test_euler_embedding_is_360_periodic_per_angle():
    aligner = build_tiny_aligner(seed=1)
    g = torch.Generator().manual_seed(2)
    theta = (torch.rand(64, 3, generator=g, dtype=torch.float64) * 2 - 1) * 180
    turns = torch.randint(-3, 4, (64, 3), generator=g).double()
    with torch.no_grad():
        a = aligner.pose_embedding(theta)
        b = aligner.pose_embedding(theta + 360 * turns)
    assert (turns != 0).any(dim=0).all()
    torch.testing.assert_close(b, a, atol=1e-5, rtol=0)
    # integer degrees wrap exactly: bit-identical embeddings
    whole = torch.randint(-180, 180, (32, 3), generator=g).float()
    with torch.no_grad():
        assert torch.equal(aligner.pose_embedding(whole), aligner.pose_embedding(whole + 720))
        assert torch.equal(aligner.pose_embedding(whole), aligner.pose_embedding(whole - 360))


def test_euler_harmonics_are_integer_harmonics_of_the_angle():
    theta = torch.tensor([[30.0, -90.0, 200.0]])
    f = euler_harmonics(theta, 3).view(3, 2, 3)  # [angle, sin|cos, k]
    rad = np.deg2rad([30.0, -90.0, 200.0])
    for i in range(3):
        for k in (1, 2, 3):
            assert f[i, 0, k - 1].item() == pytest.approx(math.sin(k * rad[i]), abs=1e-6)
            assert f[i, 1, k - 1].item() == pytest.approx(math.cos(k * rad[i]), abs=1e-6)


def test_different_poses_give_different_embeddings():
    aligner = build_tiny_aligner(seed=3)
    g = torch.Generator().manual_seed(4)
    poses = torch.cat([(torch.rand(200, 3, generator=g) * 2 - 1) * 179,
                       torch.tensor([[10.0, 20.0, 30.0], [20.0, 10.0, 30.0], [30.0, 20.0, 10.0],
                                     [10.0, 20.0, 31.0]])])
    with torch.no_grad():
        emb = aligner.pose_embedding(poses)
    assert emb.shape == (204, aligner.config.dim)
    dist = torch.cdist(emb.double(), emb.double())
    off = ~torch.eye(len(poses), dtype=torch.bool)
    assert dist[off].min() > 1e-3  # every distinct pose, swapped angles and a 1° change included
    # nearby poses embed closer than far ones (the map is smooth)
    base = torch.tensor([[0.0, 0.0, 0.0]])
    with torch.no_grad():
        e0, e5, e90 = (aligner.pose_embedding(base + torch.tensor([[0.0, d, 0.0]])) for d in (0.0, 5.0, 90.0))
    assert (e5 - e0).norm() < (e90 - e0).norm()


def test_shapes_and_default_config():
    cfg = AlignerConfig()
    assert (cfg.dictionary_size, cfg.dim, cfg.image_size) == (4096, 256, 112)
    assert cfg.logit_scale_init == pytest.approx(math.log(1 / 0.07))
    aligner = build_tiny_aligner(seed=0, num_tokens=3, token_dim=24)
    crops, euler = _inputs(5, size=45)  # any size: resized inside
    out = aligner(crops, euler)
    n = (32 // 8) ** 2
    assert aligner.embed(crops, euler).shape == (5, n, 32)
    assert out.g.shape == (5, 32) and out.tokens.shape == (5, 3, 24) and out.weights.shape == (5, 64)
    assert out._fields == ("g", "tokens", "weights")


# --- dictionary -----------------------------------------------------------------------------


def test_dictionary_weights_are_probabilities_and_g_matches_float64_reference():
    aligner = build_tiny_aligner(seed=5)
    crops, euler = _inputs(6, seed=6)
    with torch.no_grad():
        out = aligner(crops, euler)
        e = aligner.embed(crops, euler).double()  # [B, N, d]
    w = out.weights
    assert w.dtype == torch.float32 and (w >= 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(6), atol=1e-6, rtol=0)
    d = aligner.dictionary.atoms.detach().double()  # [K, d]
    corr = np.einsum("bnd,kd->bnk", e.numpy(), d.numpy()) / math.sqrt(e.shape[-1])
    pooled = corr.max(axis=1)
    w_ref = np.exp(pooled - pooled.max(axis=1, keepdims=True))
    w_ref /= w_ref.sum(axis=1, keepdims=True)
    g_ref = w_ref @ d.numpy()
    np.testing.assert_allclose(w.numpy(), w_ref, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(out.g.detach().numpy(), g_ref, rtol=1e-4, atol=1e-6)
    assert not np.allclose(w_ref, 1 / w_ref.shape[1], atol=1e-4)  # the weights are not trivially uniform


def test_max_pooled_correlation_gradients_match_autograd(monkeypatch):
    from faithfulfaces_core.aligner import dictionary

    g = torch.Generator().manual_seed(30)
    e = torch.randn(7, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    d = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dictionary.MaxPooledCorrelation.apply, (e, d))
    monkeypatch.setattr(dictionary, "CHUNK_ELEMENTS", 2 * 5 * 9)  # chunks of 2 faces: 4 chunks
    upstream = torch.randn(7, 9, generator=g, dtype=torch.float64)
    pooled = dictionary.MaxPooledCorrelation.apply(e, d)
    grads = torch.autograd.grad(pooled, (e, d), upstream)
    reference = torch.einsum("bnd,kd->bnk", e, d).amax(dim=1)
    ref_grads = torch.autograd.grad(reference, (e, d), upstream)
    torch.testing.assert_close(pooled, reference, rtol=0, atol=1e-12)
    for got, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


# --- InfoNCE --------------------------------------------------------------------------------


def _info_nce_reference(a: np.ndarray, b: np.ndarray, logit_scale: float) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    s = math.exp(min(max(logit_scale, 0.0), math.log(100.0)))
    logits = s * a @ b.T
    total = 0.0
    for m in (logits, logits.T):
        for i in range(m.shape[0]):
            row = m[i]
            total += -(row[i] - (row.max() + math.log(np.exp(row - row.max()).sum())))
    return total / (2 * logits.shape[0])


@pytest.mark.parametrize("logit_scale", [CLIP_INIT_LOGIT_SCALE, 0.3, 7.0])
def test_info_nce_matches_float64_reference_and_is_symmetric(logit_scale):
    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(17, 24, generator=g), torch.randn(17, 24, generator=g)
    s = torch.tensor(logit_scale)
    loss = info_nce(a, b, s)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert loss.item() == pytest.approx(_info_nce_reference(a.double().numpy(), b.double().numpy(), logit_scale), rel=1e-5)
    assert info_nce(b, a, s).item() == pytest.approx(loss.item(), rel=1e-6, abs=1e-7)


def test_info_nce_is_lower_for_aligned_views_than_shuffled():
    g = torch.Generator().manual_seed(8)
    a = torch.randn(32, 16, generator=g)
    b = a + 0.3 * torch.randn(32, 16, generator=g)
    shuffled = b.roll(1, dims=0)
    s = torch.tensor(CLIP_INIT_LOGIT_SCALE)
    aligned, mixed = info_nce(a, b, s).item(), info_nce(a, shuffled, s).item()
    assert aligned < 0.5 < math.log(32) < mixed


def test_info_nce_clamps_the_temperature_like_clip_and_rejects_bad_shapes():
    g = torch.Generator().manual_seed(9)
    a, b = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    high = torch.tensor(9.0, requires_grad=True)
    assert info_nce(a, b, high).item() == pytest.approx(info_nce(a, b, torch.tensor(CLIP_MAX_LOGIT_SCALE)).item())
    info_nce(a, b, high).backward()
    assert high.grad.item() == 0.0  # beyond the clamp: no gradient, as in CLIP
    with pytest.raises(FaithfulFacesError, match=r"two views of the same shape \[B, d\].*\(8, 4\) and \(7, 4\)"):
        info_nce(a, b[:7], high)


def _fresh_generator() -> torch.Generator:
    """A generator seeded from the OS: each run tests the equality on inputs never seen before."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence().entropy) % 2**63)


def _loss_and_grads(loss_fn, views, logit_scale):
    leaves = [v.clone().requires_grad_(True) for v in views] + [logit_scale.clone().requires_grad_(True)]
    loss = loss_fn(leaves[:-1], leaves[-1])
    loss.backward()
    return loss.detach(), [leaf.grad for leaf in leaves]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_two_views_of_multi_view_info_nce_are_info_nce_bit_for_bit(dtype):
    g = _fresh_generator()
    b, d = int(torch.randint(1, 40, (1,), generator=g)), int(torch.randint(2, 64, (1,), generator=g))
    views = [torch.randn(b, d, generator=g).to(dtype) for _ in range(2)]
    scale = torch.rand((), generator=g) * 5.0
    two, two_grads = _loss_and_grads(lambda v, s: info_nce(v[0], v[1], s), views, scale)
    many, many_grads = _loss_and_grads(lambda v, s: multi_view_info_nce(v, s), views, scale)
    assert torch.equal(two, many), (b, d)
    for a, m in zip(two_grads, many_grads, strict=True):
        assert torch.equal(a, m), (b, d)


def _multi_view_reference(views: list[np.ndarray], logit_scale: float) -> float:
    """Plain loops in float64: every ordered pair of distinct views (u, v), every identity i, the
    cross-entropy of i's view-u face against the view-v faces of all identities."""
    unit = [v / np.linalg.norm(v, axis=1, keepdims=True) for v in views]
    s = math.exp(min(max(logit_scale, 0.0), math.log(100.0)))
    n_views, n = len(unit), unit[0].shape[0]
    total, terms = 0.0, 0
    for u in range(n_views):
        for v in range(n_views):
            if u == v:
                continue
            for i in range(n):
                logits = [s * float(unit[u][i] @ unit[v][j]) for j in range(n)]
                top = max(logits)
                total += -(logits[i] - (top + math.log(sum(math.exp(x - top) for x in logits))))
                terms += 1
    return total / terms


@pytest.mark.parametrize(("n_views", "logit_scale"), [(3, CLIP_INIT_LOGIT_SCALE), (4, 0.3), (5, 9.0)])
def test_multi_view_info_nce_matches_a_loop_reference(n_views, logit_scale):
    g = _fresh_generator()
    views = [torch.randn(9, 12, generator=g) for _ in range(n_views)]
    loss = multi_view_info_nce(views, torch.tensor(logit_scale))
    assert loss.dtype == torch.float32 and loss.ndim == 0
    reference = _multi_view_reference([v.double().numpy() for v in views], logit_scale)
    assert loss.item() == pytest.approx(reference, rel=1e-5)
    # the order of the views does not matter
    assert multi_view_info_nce(views[::-1], torch.tensor(logit_scale)).item() == pytest.approx(loss.item(), rel=1e-6)


def test_multi_view_info_nce_rewards_agreeing_views_and_rejects_bad_shapes():
    g = torch.Generator().manual_seed(12)
    base = torch.randn(16, 8, generator=g)
    views = [base + 0.2 * torch.randn(16, 8, generator=g) for _ in range(3)]
    s = torch.tensor(CLIP_INIT_LOGIT_SCALE)
    aligned = multi_view_info_nce(views, s).item()
    mixed = multi_view_info_nce([views[0], views[1].roll(1, dims=0), views[2].roll(2, dims=0)], s).item()
    assert aligned < 0.5 < math.log(16) < mixed
    with pytest.raises(FaithfulFacesError, match=r"at least 2 views of the same shape \[B, d\].*\[\(16, 8\)\]"):
        multi_view_info_nce(views[:1], s)
    with pytest.raises(FaithfulFacesError, match=r"\[\(16, 8\), \(16, 8\), \(15, 8\)\]"):
        multi_view_info_nce([views[0], views[1], views[2][:15]], s)


def test_info_nce_gradient_reaches_every_trainable_tensor():
    aligner = build_tiny_aligner(seed=10).train()
    crops, euler = _inputs(8, seed=11)
    crops_b = (crops + 0.05 * torch.randn_like(crops)).clamp(0, 1)
    out_a = aligner(crops, euler)
    out_b = aligner(crops_b, euler + 20)
    aligner.contrastive_loss(out_a.g, out_b.g).backward()
    trainable = dict(aligner.named_parameters())
    infonce = {id(p) for p in aligner.aligner_parameters()}
    projection = {id(p) for p in aligner.projection_parameters()}
    assert infonce | projection == {id(p) for p in trainable.values()} and not infonce & projection
    for name, p in trainable.items():
        if id(p) in infonce:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name  # the projection is trained through the generator, not InfoNCE
    assert aligner.logit_scale.grad.abs() > 0
    aligner.zero_grad()
    aligner(crops, euler).tokens.square().mean().backward()
    for p in aligner.projection_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_gradient_checkpointing_gives_the_same_gradients():
    crops, euler = _inputs(6, seed=22)
    grads = []
    for enabled in (False, True):
        aligner = build_tiny_aligner(seed=23, depth=2).train()
        aligner.enable_gradient_checkpointing(enabled)
        out = aligner(crops, euler)
        (aligner.contrastive_loss(*out.g.chunk(2)) + out.tokens.square().mean()).backward()
        grads.append({n: p.grad.clone() for n, p in aligner.named_parameters()})
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, atol=1e-6, rtol=1e-5, msg=name)


def test_clamp_logit_scale_in_place():
    aligner = build_tiny_aligner()
    with torch.no_grad():
        aligner.logit_scale.fill_(12.0)
    aligner.clamp_logit_scale_()
    assert aligner.logit_scale.item() == pytest.approx(math.log(100.0))


# --- checkpoints ----------------------------------------------------------------------------


def test_save_load_round_trip_is_bit_identical(tmp_path):
    aligner = build_tiny_aligner(seed=12, num_tokens=3, token_dim=48)
    path = save_aligner(aligner, tmp_path / "a.safetensors", extra_metadata={"note": "run 7"})
    meta = read_metadata(path)
    assert meta["faithfulfaces.kind"] == "aligner" and meta["faithfulfaces.format"] == str(ALIGNER_FORMAT)
    assert json.loads(meta["faithfulfaces.config"]) == aligner.config.to_dict() and meta["note"] == "run 7"
    loaded = load_aligner(path)
    assert loaded.config == aligner.config and not loaded.training
    crops, euler = _inputs(4, size=40, seed=13)
    with torch.no_grad():
        ref, got = aligner(crops, euler), loaded(crops, euler)
    for r, o in zip(ref, got, strict=True):
        assert torch.equal(r, o)
    assert torch.equal(loaded.logit_scale, aligner.logit_scale)


def test_tiny_aligner_file_loads_and_builds_reproducibly(tmp_path):
    state = torch.random.get_rng_state()
    a, b, c = build_tiny_aligner(seed=4), build_tiny_aligner(seed=4), build_tiny_aligner(seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.dictionary.atoms, c.dictionary.atoms)
    loaded = load_aligner(write_tiny_aligner(tmp_path / "tiny.safetensors", seed=4))
    assert torch.equal(loaded.dictionary.atoms, a.dictionary.atoms)


def _write(path, tensors, config, kind="aligner", fmt=ALIGNER_FORMAT):
    return save_checkpoint(path, tensors, kind=kind, format=fmt, config=config)


def test_loader_errors_name_the_problem(tmp_path):
    aligner = build_tiny_aligner(seed=14)
    cfg = aligner.config.to_dict()
    good = save_aligner(aligner, tmp_path / "good.safetensors")
    state = dict(aligner.state_dict())

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.safetensors is not a readable safetensors file"):
        load_aligner(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_aligner(garbage)

    lora = _write(tmp_path / "lora.safetensors", {"x": torch.zeros(2)}, {}, kind="lora")
    with pytest.raises(CheckpointError, match="is a FaithfulFaces 'lora' file, but a 'aligner' file was expected"):
        load_aligner(lora)
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(CheckpointError, match="not a FaithfulFaces aligner file"):
        load_aligner(plain)
    with pytest.raises(MissingModelError, match="does not exist"):
        load_aligner(tmp_path / "nowhere.safetensors")

    wrong = dict(state, **{"dictionary.atoms": torch.zeros(65, 32)})
    with pytest.raises(CheckpointError, match=r"aligner key 'dictionary.atoms' has shape \(65, 32\), expected \(64, 32\)"):
        load_aligner(_write(tmp_path / "shape.safetensors", wrong, cfg))
    missing = {k: v for k, v in state.items() if k != "logit_scale"}
    with pytest.raises(CheckpointError, match="missing.safetensors: aligner key 'logit_scale' is missing"):
        load_aligner(_write(tmp_path / "missing.safetensors", missing, cfg))
    extra = dict(state, **{"extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected aligner key 'extra.weight'"):
        load_aligner(_write(tmp_path / "extra.safetensors", extra, cfg))

    with pytest.raises(CheckpointError, match=r"cannot rebuild the aligner.*Unknown aligner config field\(s\) \['bogus'\]"):
        load_aligner(_write(tmp_path / "bogus.safetensors", state, dict(cfg, bogus=1)))
    no_dim = {k: v for k, v in cfg.items() if k != "dim"}
    with pytest.raises(CheckpointError, match=r"lacks field\(s\) \['dim'\]"):
        load_aligner(_write(tmp_path / "nodim.safetensors", state, no_dim))
    with pytest.raises(CheckpointError, match="Unknown face tokenizer 'never_registered'"):
        load_aligner(_write(tmp_path / "tok.safetensors", state, dict(cfg, tokenizer="never_registered")))
    with pytest.raises(CheckpointError, match="makes pose tokens of width 32, but the generator needs width 1536"):
        load_aligner(good, token_dim=1536)
    assert load_aligner(good, token_dim=32).config.token_dim == 32
    with pytest.raises(CheckpointError, match=f"has aligner format {ALIGNER_FORMAT + 1}, newer than"):
        load_aligner(_write(tmp_path / "new.safetensors", state, cfg, fmt=ALIGNER_FORMAT + 1))


# --- align(): the plain-Python API ------------------------------------------------------------


def test_align_batches_restores_mode_and_returns_no_graph():
    aligner = build_tiny_aligner(seed=15).train()
    crops, euler = _inputs(7, size=50, seed=16)
    whole = aligner.align(crops, euler)
    chunked = aligner.align(crops, euler, batch_size=3)
    assert aligner.training
    for w, c in zip(whole, chunked, strict=True):
        torch.testing.assert_close(c, w, atol=1e-5, rtol=1e-5)
        assert not w.requires_grad
    single = aligner.align(crops[:1], euler[0])  # one face, angles as a [3] vector
    torch.testing.assert_close(single.g, whole.g[:1], atol=1e-5, rtol=1e-5)


def test_align_default_chunks_agree_with_one_piece():
    aligner = build_tiny_aligner(seed=18)
    n = 2 * ALIGN_CHUNK + 5  # two full chunks and a remainder
    crops, euler = _inputs(n, size=40, seed=19)
    chunked = aligner.align(crops, euler)
    whole = aligner.align(crops, euler, batch_size=n)
    with torch.no_grad():
        forward = aligner.eval()(crops, euler)
    for c, w, f in zip(chunked, whole, forward, strict=True):
        assert c.shape[0] == n
        torch.testing.assert_close(c, w, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(c, f, atol=1e-5, rtol=1e-5)


def test_align_resizes_inside():
    aligner = build_tiny_aligner(seed=17)
    colour = torch.tensor([0.2, 0.6, 0.9]).view(1, 3, 1, 1)
    euler = torch.tensor([[10.0, -30.0, 5.0]])
    native = aligner.align(colour.expand(1, 3, 32, 32), euler)
    for size in (17, 64, 250):
        other = aligner.align(colour.expand(1, 3, size, size).contiguous(), euler)
        torch.testing.assert_close(other.g, native.g, atol=1e-5, rtol=1e-5)
    varied = aligner.align(torch.rand(1, 3, 32, 32), euler)
    assert not torch.allclose(varied.g, native.g, atol=1e-3)


def test_align_in_bfloat16_matches_float32():
    aligner = build_tiny_aligner(seed=18)
    crops, euler = _inputs(4, size=32, seed=19)
    ref = aligner.align(crops, euler)
    low = aligner.to(torch.bfloat16).align(crops, euler)
    assert low.g.dtype == torch.bfloat16 and low.tokens.dtype == torch.bfloat16 and low.weights.dtype == torch.float32
    assert F.cosine_similarity(low.g.float(), ref.g, dim=-1).min() > 0.99
    assert F.cosine_similarity(low.tokens.float().flatten(1), ref.tokens.flatten(1), dim=-1).min() > 0.99
    torch.testing.assert_close(low.weights.sum(-1), torch.ones(4), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("crops", "euler", "message"),
    [
        (torch.rand(2, 32, 32, 3), torch.zeros(2, 3), r"\[B, 3, H, W\].*got \(2, 32, 32, 3\).*permute"),
        ((torch.rand(2, 3, 8, 8) * 255).to(torch.uint8), torch.zeros(2, 3), r"float in 0\.\.1.*uint8.*/ 255"),
        (torch.rand(2, 3, 8, 8) * 255, torch.zeros(2, 3), r"0\.\.1.*0\.\.255 values: divide by 255"),
        (torch.rand(2, 3, 8, 8), torch.zeros(2, 2), r"euler must be a tensor \[B, 3\].*got \(2, 2\)"),
        (torch.rand(2, 3, 8, 8), torch.zeros(3, 3), "face_crops has 2 images but euler has 3 rows"),
        (torch.rand(2, 3, 8, 8), torch.tensor([[0.0, float("nan"), 0.0]] * 2), "NaN or infinite angles"),
        (torch.rand(0, 3, 8, 8), torch.zeros(0, 3), r"empty \(B = 0\)"),
    ],
)
def test_align_rejects_bad_input(crops, euler, message):
    with pytest.raises(FaithfulFacesError, match=message):
        build_tiny_aligner().align(crops, euler)


def test_config_validation():
    with pytest.raises(FaithfulFacesError, match="dictionary_size must be a positive integer"):
        AlignerConfig(dictionary_size=0)
    with pytest.raises(FaithfulFacesError, match="not a multiple of patch_size"):
        PoseSharedAligner(tiny_aligner_config(image_size=30))
    with pytest.raises(FaithfulFacesError, match="not divisible by num_heads"):
        PoseSharedAligner(tiny_aligner_config(dim=30, num_heads=4))
    with pytest.raises(FaithfulFacesError, match="mlp_ratio must be a finite number, got '4'"):
        AlignerConfig(mlp_ratio="4")
    with pytest.raises(FaithfulFacesError, match=r"pixel_mean must hold 3 numbers"):
        AlignerConfig(pixel_mean=(0.5, 0.5))
    cfg = tiny_aligner_config(pixel_mean=[0.4, 0.5, 0.6])
    assert AlignerConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# --- a swapped tokenizer ----------------------------------------------------------------------


def _frozen_backbone() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 12, 3, stride=2, padding=1), torch.nn.BatchNorm2d(12), torch.nn.ReLU(),
        torch.nn.Conv2d(12, 20, 3, stride=2, padding=1),
    )


class _FrozenConvTokenizer(FrozenFeatureTokenizer):
    @classmethod
    def from_config(cls, c):
        return cls(_frozen_backbone(), 20, c.dim)


TOKENIZERS["test_frozen_conv"] = _FrozenConvTokenizer


def test_frozen_feature_tokenizer_swaps_in(tmp_path):
    aligner = build_tiny_aligner(seed=20, tokenizer="test_frozen_conv").train()
    backbone = aligner.tokenizer.backbone
    assert not backbone.training and all(not p.requires_grad for p in backbone.parameters())
    crops, euler = _inputs(3, size=32, seed=21)
    out = aligner(crops, euler)
    assert aligner.embed(crops, euler).shape == (3, 8 * 8, 32) and out.g.shape == (3, 32)
    trainable = {id(p) for p in aligner.aligner_parameters()}
    assert not any(id(p) in trainable for p in backbone.parameters())
    assert id(aligner.tokenizer.proj.weight) in trainable
    loaded = load_aligner(save_aligner(aligner, tmp_path / "f.safetensors"))
    with torch.no_grad():
        assert torch.equal(loaded(crops, euler).g, aligner.eval()(crops, euler).g)


# --- it learns what it claims -----------------------------------------------------------------
# Identities are hidden codes: a colour texture on a sphere (a "head") built from fixed random
# spherical sinusoids. A view rotates the head by known Euler angles (R = Rz(roll)Ry(yaw)Rx(pitch)),
# renders it orthographically with shading, over a random cluttered background, with a random
# gain and pixel noise. Cross-pose retrieval must see through pose, clutter and lighting.

_J, _S = 24, 32
_LIMITS = torch.tensor([40.0, 75.0, 30.0])


def _rotation(euler: torch.Tensor) -> torch.Tensor:
    p, y, r = torch.deg2rad(euler).unbind(-1)
    c, s, o, z = torch.cos, torch.sin, torch.ones_like(p), torch.zeros_like(p)
    rx = torch.stack([o, z, z, z, c(p), -s(p), z, s(p), c(p)], -1).view(-1, 3, 3)
    ry = torch.stack([c(y), z, s(y), z, o, z, -s(y), z, c(y)], -1).view(-1, 3, 3)
    rz = torch.stack([c(r), -s(r), z, s(r), c(r), z, z, z, o], -1).view(-1, 3, 3)
    return rz @ ry @ rx


class _HeadWorld:
    def __init__(self, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.gen = g
        self.freqs = torch.randn(_J, 3, generator=g) * 2.5
        self.phases = torch.rand(_J, generator=g) * 2 * math.pi
        lin = torch.linspace(-1, 1, _S)
        v, u = torch.meshgrid(lin, lin, indexing="ij")
        radius = 0.9
        self.mask = ((u**2 + v**2) < radius**2).reshape(-1, 1)
        depth = torch.sqrt((radius**2 - u**2 - v**2).clamp(min=0))
        self.points = torch.stack([u, -v, depth], -1).view(-1, 3) / radius  # camera frame, [P, 3]
        self.shade = (0.55 + 0.45 * depth / radius).reshape(-1, 1)

    def identities(self, n: int) -> torch.Tensor:
        return torch.randn(n, _J, 3, generator=self.gen) * (2.0 / math.sqrt(_J))

    def poses(self, n: int) -> torch.Tensor:
        return (torch.rand(n, 3, generator=self.gen) * 2 - 1) * _LIMITS

    def render(self, codes: torch.Tensor, euler: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, J, 3]``, angles ``[B, 3]`` → images ``[B, 3, S, S]`` in 0..1."""
        b = codes.shape[0]
        surface = self.points @ _rotation(euler)  # object-frame points R^T p, [B, P, 3]
        colour = torch.sigmoid(torch.sin(surface @ self.freqs.T + self.phases) @ codes)
        clutter = F.interpolate(torch.rand(b, 3, 4, 4, generator=self.gen), size=(_S, _S), mode="bilinear")
        gain = 0.6 + 0.4 * torch.rand(b, 1, 1, generator=self.gen)
        img = torch.where(self.mask, colour * self.shade * gain, clutter.permute(0, 2, 3, 1).reshape(b, -1, 3))
        img = (img + 0.05 * torch.randn(img.shape, generator=self.gen)).clamp(0, 1)
        return img.view(b, _S, _S, 3).permute(0, 3, 1, 2).contiguous()


def _retrieval_top1(aligner: PoseSharedAligner, gallery, query) -> float:
    ga = aligner.align(*gallery).g
    gb = aligner.align(*query).g
    sim = F.normalize(ga, dim=-1) @ F.normalize(gb, dim=-1).T
    return (sim.argmax(0) == torch.arange(sim.shape[0])).float().mean().item()


def _js(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = 0.5 * (p + q)
    kl = lambda a, b: (a * (a.clamp_min(1e-12).log() - b.clamp_min(1e-12).log())).sum(-1)  # noqa: E731
    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def _pose_pattern_divergence(aligner: PoseSharedAligner, world: _HeadWorld) -> tuple[float, float]:
    """Mean Jensen–Shannon divergence of one identity's dictionary weights between yaws 15° apart
    and yaws ≥ 90° apart (pitch = roll = 0, 16 held-out identities, yaw −75…75 in 15° steps)."""
    yaws = torch.arange(-75.0, 76.0, 15.0)
    euler = torch.zeros(16, len(yaws), 3)
    euler[:, :, 1] = yaws
    codes = world.identities(16).repeat_interleave(len(yaws), 0)
    w = aligner.align(world.render(codes, euler.view(-1, 3)), euler.view(-1, 3)).weights.view(16, len(yaws), -1)
    div = _js(w[:, :, None], w[:, None, :])  # [16, P, P]
    gap = (yaws[:, None] - yaws[None, :]).abs()
    return div[:, gap == 15].mean().item(), div[:, gap >= 90].mean().item()


@pytest.mark.slow
def test_short_training_learns_cross_pose_identity_and_pose_structured_weights():
    assert torch.get_num_threads() == 1  # conftest's one_torch_thread: the same numbers on any machine
    torch.manual_seed(0)
    world = _HeadWorld(seed=1)
    aligner = build_tiny_aligner(seed=2, dim=64, patch_size=8, depth=1, num_heads=4, mlp_ratio=4.0,
                                 dictionary_size=256, num_tokens=1, token_dim=16).train()
    n_eval = 128
    codes = world.identities(n_eval)
    pose_a = world.poses(n_eval)
    pose_b = world.poses(n_eval)
    # cross-pose: the query's yaw is 30–60° away from the gallery's, on whichever side fits
    step = 30 + 30 * torch.rand(n_eval, generator=world.gen)
    pose_b[:, 1] = torch.where(pose_a[:, 1] > 0, pose_a[:, 1] - step, pose_a[:, 1] + step)
    gallery = (world.render(codes, pose_a), pose_a)
    query = (world.render(codes, pose_b), pose_b)
    before = _retrieval_top1(aligner, gallery, query)
    near_before, far_before = _pose_pattern_divergence(aligner, world)

    opt = torch.optim.AdamW(aligner.aligner_parameters(), lr=3e-3, weight_decay=0.0)
    t0 = time.perf_counter()
    for _ in range(500):
        ids = world.identities(64)
        ea, eb = world.poses(64), world.poses(64)
        out = aligner(torch.cat([world.render(ids, ea), world.render(ids, eb)]), torch.cat([ea, eb]))
        loss = aligner.contrastive_loss(*out.g.chunk(2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        aligner.clamp_logit_scale_()
    seconds = time.perf_counter() - t0

    after = _retrieval_top1(aligner, gallery, query)
    near_after, far_after = _pose_pattern_divergence(aligner, world)
    print(f"\ncross-pose top-1 {before:.3f} -> {after:.3f} (chance {1 / n_eval:.3f}), {seconds:.1f} s; "
          f"JS near/far before {near_before:.4f}/{far_before:.4f}, after {near_after:.4f}/{far_after:.4f}; "
          f"temperature {1 / aligner.logit_scale.exp().item():.4f}")
    assert before < 0.05  # chance is 1/128 = 0.008; measured 0.000
    assert after > 0.15 and after > before + 0.12  # measured 0.383
    assert near_after < 0.6 * far_after  # similar poses: more alike dictionary weights (measured 0.42x)
