"""Context windows on the diffusers path: ComfyUI's schedule and fusion, one window = today's
generate() bit for bit, two windows = a fusion computed directly, progress / cancel per window."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

from faithfulfaces_core.errors import FaithfulFacesError
from faithfulfaces_core.tiny.wan import build_tiny_pipeline
from faithfulfaces_core.wan.generate import GenerationCancelled, generate
from faithfulfaces_core.wan.injection import PoseTokenAttnProcessor
from faithfulfaces_core.wan.loading import load_pipeline
from faithfulfaces_core.wan.windows import (
    FUSE_METHODS,
    ContextWindows,
    latent_frames,
    run_windows,
    static_windows,
    window_weights,
)

KW = dict(prompt="a young woman turns her head left", negative_prompt="blurry low quality",
          width=32, height=32, steps=2, guidance_scale=5.0, seed=7)
GRID = [(total, length, overlap) for total in (1, 5, 6, 11, 21, 41) for length in (3, 5, 21) for overlap in (0, 1, 2, 4)
        if overlap < length]

COMFY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    comfy_dir = sys.argv[1]
    sys.path.insert(0, comfy_dir)
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.context_windows as cw
    grid = json.loads(sys.stdin.read())
    out = []
    for total, length, overlap in grid:
        handler = cw.IndexListContextHandler(cw.get_matching_context_schedule("standard_static"),
                                             cw.get_matching_fuse_method("pyramid"), length, overlap, dim=2)
        windows = cw.create_windows_static_standard(total, handler, {})
        weights = {}
        for method in ("pyramid", "flat", "overlap-linear"):
            handler.fuse_method = cw.get_matching_fuse_method(method)
            try:
                weights[method] = [[float(w) for w in cw.get_context_weights(len(w_), total, w_, handler)] for w_ in windows]
            except RuntimeError:  # overlap-linear with overlap 0 fails inside ComfyUI 0.3.75
                weights[method] = None
        out.append({"windows": windows, "weights": weights})
    print("RESULT " + json.dumps({"grid": out}))
    """
)


def test_windows_and_weights_are_comfyuis(comfy_dir, comfy_script):
    comfy = comfy_script(COMFY_SCRIPT, comfy_dir, stdin=json.dumps(GRID), timeout=120)["grid"]
    for (total, length, overlap), theirs in zip(GRID, comfy, strict=True):
        ours = static_windows(total, length, overlap)
        assert ours == theirs["windows"], (total, length, overlap)
        for method in FUSE_METHODS:
            if theirs["weights"][method] is None:
                assert method == "overlap-linear" and overlap == 0 and len(ours) > 1
                assert window_weights(method, ours[0], total, overlap).tolist() == [1.0] * length  # no ramp
                continue
            for window, expected in zip(ours, theirs["weights"][method], strict=True):
                assert window_weights(method, window, total, overlap).tolist() == pytest.approx(expected), method
    # WanContextWindowsManual's conversion of video frames to latent frames
    assert [latent_frames(n) for n in (81, 16, 30, 9, 4, 1)] == [21, 4, 8, 3, 1, 1]
    assert latent_frames(0) == 0


def test_bad_windows_name_the_fix():
    with pytest.raises(FaithfulFacesError, match="the overlap must be ≥ 0 and shorter than the window"):
        ContextWindows(3, 3).check()
    with pytest.raises(FaithfulFacesError, match="Context fuse method 'mean' is unknown: use one of pyramid, flat"):
        ContextWindows(3, 1, "mean").check()


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return load_pipeline(build_tiny_pipeline(tmp_path_factory.mktemp("wan_windows"), seed=0).diffusers_dir, device="cpu")


@pytest.fixture(scope="module")
def face():
    return np.random.default_rng(0).integers(0, 256, (40, 28, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tokens(pipe):
    cfg = pipe.transformer.config
    return torch.randn(1, 3, cfg.num_attention_heads * cfg.attention_head_dim, generator=torch.Generator().manual_seed(5))


def transformer_inputs(pipe, frames: int, seed: int) -> dict:
    cfg = pipe.transformer.config
    gen = torch.Generator().manual_seed(seed)
    return dict(
        hidden_states=torch.randn(1, cfg.in_channels, frames, 4, 4, generator=gen),
        timestep=torch.tensor([700.0]),
        encoder_hidden_states=torch.randn(1, 6, cfg.text_dim, generator=gen),
        control_hidden_states=torch.randn(1, cfg.vace_in_channels, frames, 4, 4, generator=gen),
        control_hidden_states_scale=torch.ones(len(cfg.vace_layers)),
    )


def test_two_windows_fuse_like_a_direct_computation(pipe):
    """1 reference + 4 video frames in windows of 3 with overlap 1: [0, 1, 2] and [1, 2, 3]."""
    transformer = pipe.transformer
    inputs = transformer_inputs(pipe, 5, seed=3)
    spec = ContextWindows(length=3, overlap=1, fuse="pyramid")
    seen = []
    with torch.no_grad():
        fused = run_windows(transformer.forward, inputs, spec, reference_frames=1,
                            on_window=lambda i, n: seen.append((i, n)))
        direct = []
        for frames in ([0, 1, 2, 3], [0, 2, 3, 4]):  # the reference (0) in front of each window
            window = {**inputs, "hidden_states": inputs["hidden_states"][:, :, frames],
                      "control_hidden_states": inputs["control_hidden_states"][:, :, frames]}
            direct.append(transformer(**window, return_dict=False)[0])
    assert seen == [(0, 2), (1, 2)]
    a, b = direct[0][:, :, 1:], direct[1][:, :, 1:]  # video frames 0-2 and 1-3, pyramid weights 1 2 1
    expected = torch.stack([a[:, :, 0], (2 * a[:, :, 1] + b[:, :, 0]) / 3, (a[:, :, 2] + 2 * b[:, :, 1]) / 3,
                            b[:, :, 2]], dim=2)
    assert fused.shape == direct[0].shape[:2] + (5,) + direct[0].shape[3:]
    assert (fused[:, :, 1:] - expected).abs().max() < 1e-6
    assert (fused[:, :, :1] - (direct[0][:, :, :1] + direct[1][:, :, :1]) / 2).abs().max() < 1e-6
    # the windows differ from one call over all frames: windowing is not a no-op here
    with torch.no_grad():
        whole = transformer(**inputs, return_dict=False)[0]
    assert (whole - fused).abs().max() > 1e-3


def count_pose_calls(monkeypatch) -> list[int]:
    calls = []
    original = PoseTokenAttnProcessor._attend_with_pose

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PoseTokenAttnProcessor, "_attend_with_pose", counted)
    return calls


def test_one_window_is_todays_generate_bit_for_bit(pipe, face, tokens, monkeypatch):
    today = generate(pipe, reference_image=face, pose_tokens=tokens, num_frames=9, **KW).frames
    ticks = []
    pose_calls = count_pose_calls(monkeypatch)
    windowed = generate(pipe, reference_image=face, pose_tokens=tokens, num_frames=9, context_frames=9,
                        context_overlap=4, progress=lambda done, total: ticks.append((done, total)), **KW).frames
    assert np.array_equal(windowed, today)
    steps = KW["steps"]
    assert ticks == [(i, 2 * steps) for i in range(1, 2 * steps + 1)]  # cond + uncond call, one window each
    assert len(pose_calls) == steps * len(pipe.transformer.blocks)  # tokens in the cond pass of every step


def test_two_windows_carry_reference_and_tokens_with_progress_and_cancel(pipe, face, tokens, monkeypatch):
    pose_calls = count_pose_calls(monkeypatch)
    ticks = []
    kw = dict(KW, num_frames=13, context_frames=9, context_overlap=4)  # 4 latent frames, windows of 3, overlap 1
    video = generate(pipe, reference_image=face, pose_tokens=tokens,
                     progress=lambda done, total: ticks.append((done, total)), **kw)
    steps, blocks, windows = KW["steps"], len(pipe.transformer.blocks), 2
    assert video.frames.shape == (13, 32, 32, 3)
    assert ticks == [(i, 2 * steps * windows) for i in range(1, 2 * steps * windows + 1)]
    assert len(pose_calls) == steps * windows * blocks  # the positive pass of each window sees the tokens
    pose_calls.clear()
    both = generate(pipe, reference_image=face, pose_tokens=tokens, pose_on_negative=True, **kw).frames
    assert len(pose_calls) == 2 * steps * windows * blocks
    assert not np.array_equal(both, video.frames)
    assert not np.array_equal(generate(pipe, reference_image=face, **kw).frames, video.frames)

    asked = []

    def cancel() -> bool:
        asked.append(1)
        return len(asked) == 4  # before the first step, then after windows 1, 2, 3

    with pytest.raises(GenerationCancelled, match=r"after window 1 of 2 \(call 3 of 8\)"):
        generate(pipe, reference_image=face, pose_tokens=tokens, cancel=cancel, **kw)
    assert pipe.transformer.forward.__func__ is type(pipe.transformer).forward  # the override is gone


def test_bad_context_arguments_name_the_fix(pipe, face):
    with pytest.raises(FaithfulFacesError, match=r"context_frames 8 / context_overlap 16 are not allowed: use a window of 4k\+1"):
        generate(pipe, reference_image=face, num_frames=13, context_frames=8, **KW)
    with pytest.raises(FaithfulFacesError, match="the overlap must be ≥ 0 and shorter than the window"):
        generate(pipe, reference_image=face, num_frames=13, context_frames=5, context_overlap=8, **KW)
