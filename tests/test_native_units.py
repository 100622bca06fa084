"""The native patch's parts without ComfyUI: window, rows, wrapper plumbing, stacked-patch maths, checks."""

from __future__ import annotations

import math

import pytest
import torch

from faithfulfaces_core.errors import CheckpointError, FaithfulFacesError
from faithfulfaces_core.native import check_native_lora_fits
from faithfulfaces_core.native.pose_patch import (
    TOKENS_FIX,
    PoseBlockPatch,
    PoseCall,
    PoseGroup,
    PoseSelfAttention,
    PoseTokenWrapper,
    SigmaWindow,
    active_rows,
    attend_with_pose,
    check_wan_model,
    sigma_window,
)
from faithfulfaces_core.wan.injection import (
    PoseTokenSettings,
    check_pose_tokens,
    pose_kv_attention,
    sdpa_attention,
)


class FlowSampling:
    """ComfyUI's ModelSamplingDiscreteFlow.percent_to_sigma with Wan's shift 8 (written out here)."""

    shift = 8.0

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        t = 1.0 - percent
        return self.shift * t / (1 + (self.shift - 1) * t)


def test_sigma_window_is_half_open_and_unbounded_at_0_and_1():
    window = sigma_window(FlowSampling(), 0.2, 0.6)
    high, low = FlowSampling().percent_to_sigma(0.2), FlowSampling().percent_to_sigma(0.6)
    assert window == SigmaWindow(high, low) and high > low
    assert window.contains(high) and not window.contains(low)
    assert window.contains((high + low) / 2) and not window.contains(high + 1e-4)
    # ComfyUI's sigmas are float32 tensors: the bounds are compared in that precision
    assert window.contains(torch.tensor(high, dtype=torch.float32))
    assert not window.contains(torch.tensor(low, dtype=torch.float32))
    everything = sigma_window(FlowSampling(), 0.0, 1.0)
    assert everything == SigmaWindow(math.inf, -math.inf) and everything.contains(1.0) and everything.contains(1e-9)
    assert not any(sigma_window(FlowSampling(), 0.5, 0.5).contains(s / 100) for s in range(1, 101))


def test_active_rows_follow_cond_or_uncond():
    assert active_rows([1, 0], 4, pose_on_negative=False) == [False, False, True, True]
    assert active_rows([0, 1], 2, pose_on_negative=False) == [True, False]
    assert active_rows([0, 1], 2, pose_on_negative=True) == [True, True]
    assert active_rows(None, 3, pose_on_negative=False) == [True] * 3
    with pytest.raises(RuntimeError, match="A batch of 3 rows cannot be split into the 2 cond/uncond chunks"):
        active_rows([0, 1], 3, pose_on_negative=False)


class Executor:
    def __init__(self, model):
        self.class_obj = model
        self.seen = None

    def __call__(self, *args, **kwargs):
        self.seen = (args, kwargs)
        return "out"


def test_wrapper_hands_a_pose_call_to_the_blocks_only_when_the_call_sees_the_tokens():
    tokens = torch.randn(1, 2, 8)
    wrapper = PoseTokenWrapper("k", tokens, PoseTokenSettings(strength=0.5), sigma_window(FlowSampling(), 0.0, 0.5))
    model, x = torch.nn.Module(), torch.randn(2, 16, 1, 2, 2)
    options = {"cond_or_uncond": [1, 0], "sigmas": torch.tensor([0.99])}
    executor = Executor(model)
    assert wrapper(executor, x, "t", "ctx", None, None, options, vace_context="v") == "out"
    args, kwargs = executor.seen
    call = args[5]["k"]
    assert args[:5] == (x, "t", "ctx", None, None) and kwargs == {"vace_context": "v"} and options.keys() == {"cond_or_uncond", "sigmas"}
    assert call.model is model and call.strength == 0.5 and call.rows.tolist() == [False, True]
    assert call.token_index.tolist() == [0, 0] and torch.equal(call.tokens, tokens)
    # keyword transformer_options, the negative pass alone: nothing to do, the options pass as they are
    wrapper(executor, x[:1], "t", "ctx", transformer_options={"cond_or_uncond": [1], "sigmas": torch.tensor([0.9])})
    assert "k" not in executor.seen[1]["transformer_options"]
    # below the window's end (sigma of 50 % of the schedule)
    low = {"cond_or_uncond": [0], "sigmas": torch.tensor([FlowSampling().percent_to_sigma(0.5)])}
    wrapper(executor, x[:1], "t", "ctx", None, None, low)
    assert executor.seen[0][5] is low
    # ComfyUI moves wrappers with the model
    assert wrapper.to(torch.device("cpu")) is wrapper and wrapper.to(torch.float16).tokens.dtype == torch.float32


def test_block_patch_without_a_pose_call_runs_what_was_there():
    calls = []

    def previous(args, extra):
        calls.append(args)
        return extra["original_block"](args)

    args = {"img": 1, "transformer_options": {}}
    out = PoseBlockPatch("k", 0, previous)(args, {"original_block": lambda a: {"img": a["img"] + 1}})
    assert out == {"img": 2} and calls == [args] and calls[0] is args


def test_block_whose_attention_never_reaches_the_override_is_an_error():
    """An older ComfyUI without attention overrides must not silently drop the tokens."""
    model = torch.nn.Module()
    attn = torch.nn.Module()
    model.blocks = torch.nn.ModuleList([torch.nn.Module()])
    model.blocks[0].self_attn = attn
    call = PoseCall(model, torch.zeros(1, 2, 8), torch.tensor([0]), None, 1.0)
    args = {"img": 1, "transformer_options": {"k": call}}
    with pytest.raises(FaithfulFacesError, match="Wan block 0 ran without calling ComfyUI's attention override, so "
                                                 "the pose tokens could not act: update ComfyUI"):
        PoseBlockPatch("k", 0)(args, {"original_block": lambda a: {"img": a["img"]}})


def test_attention_arguments_that_are_not_tensors_are_an_error():
    """2026 ComfyUI hands some models' attention wrapped tensors; the patch must say so, not crash on ``.ndim``."""

    class Wrapped:  # stands for comfy's AttentionTensorContainer
        def __init__(self, tensor):
            self.tensor = tensor

    attn = torch.nn.Module()
    attn.num_heads = 2
    call = PoseCall(torch.nn.Module(), torch.zeros(1, 2, 8), torch.tensor([0]), None, 1.0)
    override = PoseSelfAttention(call, attn, None)
    q = Wrapped(torch.zeros(1, 4, 8))
    with pytest.raises(RuntimeError, match="reached the pose patch with Wrapped arguments, not tensors"):
        override(lambda *a, **k: None, q, q, q, heads=2)


def reference_attention(q, k, v, extra, bias_per_row):
    """softmax(q·Kᵀ/√D + bias)·V written out, ``extra`` = [(pose_k, pose_v)], bias per row and group."""
    keys = torch.cat([k] + [pk for pk, _ in extra], dim=1)
    values = torch.cat([v] + [pv for _, pv in extra], dim=1)
    logits = torch.einsum("blhd,bshd->bhls", q, keys) / math.sqrt(q.shape[-1])
    bias = torch.zeros(q.shape[0], keys.shape[1])
    start = k.shape[1]
    for g, (pk, _) in enumerate(extra):
        bias[:, start:start + pk.shape[1]] = torch.tensor([row[g] for row in bias_per_row])[:, None]
        start += pk.shape[1]
    weights = (logits + bias[:, None, None, :]).softmax(-1)
    return torch.einsum("bhls,bshd->blhd", weights, values)


def test_stacked_patches_attend_like_one_biased_softmax():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, 6, 2, 8, generator=gen) for _ in range(3))
    g1 = PoseGroup(torch.randn(3, 2, 2, 8, generator=gen), torch.randn(3, 2, 2, 8, generator=gen), None, 0.5)
    g2 = PoseGroup(torch.randn(3, 3, 2, 8, generator=gen), torch.randn(3, 3, 2, 8, generator=gen),
                   torch.tensor([True, False, True]), 2.0)
    out = attend_with_pose(q, k, v, [g1, g2], sdpa_attention)
    bias = [[math.log(0.5), math.log(2.0)], [math.log(0.5), -math.inf], [math.log(0.5), math.log(2.0)]]
    expected = reference_attention(q, k, v, [(g1.k, g1.v), (g2.k, g2.v)], bias)
    assert (out - expected).abs().max() < 1e-5
    # one group: the diffusers path's function on the rows that see it, plain attention on the others
    single = attend_with_pose(q, k, v, [g2], sdpa_attention)
    assert torch.equal(single[1:2], sdpa_attention(q[1:2], k[1:2], v[1:2]))
    assert torch.allclose(single[[0, 2]], pose_kv_attention(q[[0, 2]], k[[0, 2]], v[[0, 2]], g2.k[[0, 2]],
                                                            g2.v[[0, 2]], 2.0), atol=1e-6)
    # strength 1 everywhere goes through the given kernel with the keys appended
    seen = []

    def kernel(q_, k_, v_):
        seen.append(k_.shape[1])
        return sdpa_attention(q_, k_, v_)

    attend_with_pose(q, k, v, [PoseGroup(g1.k, g1.v, None, 1.0), PoseGroup(g2.k, g2.v, None, 1.0)], kernel)
    assert seen == [6 + 2 + 3]


def test_checks_name_the_problem_and_the_fix():
    with pytest.raises(FaithfulFacesError, match=r"This MODEL is a Linear, not a Wan2.1 \(VACE\) transformer: load "
                                                 r"wan2.1_vace_\*.safetensors with 'Load Diffusion Model'"):
        check_wan_model(torch.nn.Linear(2, 2))
    with pytest.raises(FaithfulFacesError, match=r"Pose tokens are 24 wide but this Wan model is 1536 wide"):
        check_pose_tokens(torch.zeros(1, 4, 24), 1536, fix=TOKENS_FIX)
    with pytest.raises(FaithfulFacesError, match=r"got a \(4, 24\) torch.float32 tensor. Connect the 'Global Pose Token"):
        check_pose_tokens(torch.zeros(4, 24), 24, fix=TOKENS_FIX)
    shapes = {"blocks.0.self_attn.q.weight": (16, 16), "blocks.1.self_attn.q.weight": (16, 16)}
    fits = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 16),
            "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(16, 4),
            "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(4.0)}
    check_native_lora_fits(fits, shapes, "ok.safetensors")
    extra = {**fits, "diffusion_model.blocks.7.ffn.0.lora_A.weight": torch.zeros(4, 16),
             "diffusion_model.blocks.7.ffn.0.lora_B.weight": torch.zeros(16, 4)}
    with pytest.raises(CheckpointError, match=r"x.safetensors: LoRA key 'diffusion_model.blocks.7.ffn.0.lora_A.weight' "
                                              r"names a module this Wan model does not have \(it has 2 blocks\)"):
        check_native_lora_fits(extra, shapes, "x.safetensors")
    wide = {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(4, 32),
            "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(32, 4)}
    with pytest.raises(CheckpointError, match=r"is for a 32→32 layer, but this model's 'blocks.0.self_attn.q' is 16→16"):
        check_native_lora_fits(wide, shapes, "w.safetensors")


def test_freenoise_sees_the_video_frames_only():
    """ComfyUI 0.33's FreeNoise copies noise between frames by window position: not the reference frames'."""
    from faithfulfaces_core.native.context import ReferenceFrameHandler

    class Inner:  # stands for comfy's IndexListContextHandler (dim 2)
        dim = 2

        def _apply_freenoise(self, noise, conds, seed):
            self.seen = noise.clone()
            noise[:, :, 3:] = noise[:, :, :2]  # copies as apply_freenoise does
            return noise

    inner = Inner()
    noise = torch.randn(1, 4, 1 + 5, 2, 2, generator=torch.Generator().manual_seed(2))
    out = ReferenceFrameHandler(inner, reference_frames=1)._apply_freenoise(noise.clone(), [], seed=0)
    assert torch.equal(inner.seen, noise[:, :, 1:])
    assert torch.equal(out[:, :, :1], noise[:, :, :1])
    assert torch.equal(out[:, :, 4:], noise[:, :, 1:3]) and torch.equal(out[:, :, 1:4], noise[:, :, 1:4])
