"""The native patch under ComfyUI's own context windows (``IndexListContextHandler``, dim 2).

As in ``test_native_patch.py``, ComfyUI runs in a subprocess: the tiny transformer file through
``load_diffusion_model``, ``CFGGuider`` + a one-call sampler, a recording ``diffusion_model``
wrapper that keeps every window call's inputs, output, window and the number of pose-attention
calls it made. The latent is 1 VACE reference frame (mask 0) + 6 video frames, cut into windows
of 3 with overlap 1: video frames [0, 1, 2], [2, 3, 4], [3, 4, 5] (on ComfyUI 0.33 and later each
window after the first also gets the frame before it, whose output ComfyUI drops).
"""

from __future__ import annotations

import pytest
import torch

from faithfulfaces_core.tiny.wan import (
    TINY_TRANSFORMER_CONFIG,
    build_tiny_transformer,
    save_original_layout,
)
from faithfulfaces_core.wan.injection import install_pose_injection
from faithfulfaces_core.wan.loading import load_transformer_file
from faithfulfaces_core.wan.windows import ContextWindows, window_weights

CFG = TINY_TRANSFORMER_CONFIG
SIGMA = 0.7
GUIDANCE = 3.0
VIDEO = 6
WINDOWS = [[0, 1, 2], [2, 3, 4], [3, 4, 5]]
ATOL = 1e-5

# run after conftest's NATIVE_SAMPLING_PREAMBLE (base, positive, negative, data, spec, work)
COMFY_BODY = """
    tensors, results = {}, {}
    pose_calls = []
    attend = pose_patch.attend_with_pose
    def counted(*args, **kwargs):
        pose_calls.append([bool(r) for r in (args[3][0].rows if args[3][0].rows is not None else [True] * args[0].shape[0])])
        return attend(*args, **kwargs)
    pose_patch.attend_with_pose = counted

    def recorder(calls):
        def record(executor, *args, **kwargs):
            before = len(pose_calls)
            out = executor(*args, **kwargs)
            options = args[5] if len(args) > 5 else kwargs["transformer_options"]
            window = options.get("context_window")
            calls.append({"x": args[0], "t": args[1], "context": args[2], "vace": kwargs["vace_context"], "out": out,
                          "sigma": float(options["sigmas"].max()),
                          "rows": list(options.get("cond_or_uncond") or [0]),
                          "window": None if window is None else list(window.index_list),
                          "anchor": getattr(window, "causal_anchor_index", None),
                          "pose": pose_calls[before:]})
            return out
        return record

    denoised = []
    def one_call(model, x, sigmas, extra_args=None, callback=None, disable=None):
        denoised.append(model(x, sigmas[0] * x.new_ones([x.shape[0]]), **extra_args))
        return denoised[-1]

    def windowed(model, length=3, overlap=1):
        model = model.clone()
        model.model_options["context_handler"] = cw.IndexListContextHandler(
            cw.get_matching_context_schedule("standard_static"), cw.get_matching_fuse_method("pyramid"),
            context_length=length, context_overlap=overlap, dim=2)
        cw.create_prepare_sampling_wrapper(model)
        return model

    def run(name, model, sampler=None, sigmas=None):
        calls = []
        model = model.clone()
        model.add_wrapper_with_key("diffusion_model", "test_recorder", recorder(calls))
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(spec["guidance"])
        try:
            latent = guider.sample(data["noise"], data["latent"], comfy.samplers.KSAMPLER(sampler or one_call),
                                   torch.tensor(sigmas or [spec["sigma"], 0.0]), seed=0)
        except Exception as exc:
            results[f"{name}.error"] = f"{type(exc).__name__}: {exc}"
            results[f"{name}.frames"] = [c["x"].shape[2] for c in calls]
            return
        tensors[f"{name}.latent"] = (latent if sampler else denoised[-1]).clone()
        for i, call in enumerate(calls):
            for key in ("x", "t", "context", "vace", "out"):
                tensors[f"{name}.{i}.{key}"] = call[key].contiguous()
        results[name] = [{"rows": c["rows"], "window": c["window"], "anchor": c["anchor"], "pose": c["pose"],
                          "sigma": c["sigma"]}
                         for c in calls]

    tokens, tokens2 = data["tokens"], data["tokens2"]
    run("plain", windowed(base))
    run("whole", patch_native_model(base, tokens))
    run("pose", windowed(patch_native_model(base, tokens)))
    run("pose_first", patch_native_model(windowed(base), tokens))
    run("negative", windowed(patch_native_model(base, tokens, pose_on_negative=True)))
    run("outside", windowed(patch_native_model(base, tokens, start=0.0, end=0.2)))
    run("chained", windowed(patch_native_model(patch_native_model(base, tokens), tokens2)))
    run("joined", windowed(patch_native_model(base, torch.cat([tokens, tokens2], dim=1))))
    run("no_reference", windowed(patch_native_model(base, tokens, reference_frames=0)))
    run("wrong_reference", windowed(patch_native_model(base, tokens, reference_frames=2)))
    run("one_window", windowed(patch_native_model(base, tokens), length=VIDEO_FRAMES))
    from comfy.k_diffusion.sampling import sample_euler
    run("steps", windowed(patch_native_model(base, tokens, start=0.0, end=0.5)), sampler=sample_euler,
        sigmas=[0.95, 0.6, 0.3, 0.0])
    results["half_sigma"] = float(base.get_model_object("model_sampling").percent_to_sigma(0.5))
    save_file(tensors, str(work / "out.safetensors"))
    print("RESULT " + json.dumps(results))
    """.replace("VIDEO_FRAMES", str(VIDEO))


@pytest.fixture(scope="module")
def native(native_sampling, tmp_path_factory):
    work = tmp_path_factory.mktemp("native_windows")
    model_file = save_original_layout(build_tiny_transformer(seed=11), work / "wan_tiny.safetensors")
    spec = {"model": str(model_file), "sigma": SIGMA, "guidance": GUIDANCE}
    results, tensors, inputs = native_sampling(work, COMFY_BODY, spec, seed=6, frames=1 + VIDEO, reference_frame=True)
    transformer = load_transformer_file(model_file, dtype=torch.float32).eval()
    return results, tensors, transformer, inputs


def test_comfyui_alone_drops_or_breaks_the_reference(native, comfy_dir):
    """Without the patch, ComfyUI 0.3.75 leaves vace_context uncut (size mismatch); versions that
    cut it give later windows no reference frame."""
    results = native[0]
    if '"0.3.75"' in (comfy_dir / "comfyui_version.py").read_text():
        assert "plain.error" in results
    if "plain.error" in results:
        assert "must match the size of tensor" in results["plain.error"]
    else:
        assert [c["window"][0] for c in results["plain"]][1:] != [0, 0]


def call_frames(call: dict) -> list[int]:
    """Video frames one window call got: ComfyUI 0.33+ (``causal_window_fix``) puts the frame before the
    window in front of it and drops its output again; 0.3.75 has no such anchor."""
    anchor = call["anchor"]
    return ([anchor] if anchor is not None and anchor >= 0 else []) + call["window"]


def test_every_window_gets_the_reference_and_its_vace_frames(native):
    results, t, _, _ = native
    calls = results["pose"]
    assert [c["window"] for c in calls] == WINDOWS
    full_x = t["whole.0.x"]  # the unwindowed call's input: reference + 6 video frames
    full_vace = t["whole.0.vace"]
    for i, call in enumerate(calls):
        frames = [0] + [1 + f for f in call_frames(call)]
        assert torch.equal(t[f"pose.{i}.x"], full_x[:, :, frames]), i
        assert torch.equal(t[f"pose.{i}.vace"], full_vace[:, :, :, frames]), i
    # the patch before or after the context-windows node: the same run
    assert torch.equal(t["pose_first.latent"], t["pose.latent"])


def test_tokens_act_in_every_window_and_the_negative_rule_holds(native):
    results = native[0]
    blocks = CFG["num_layers"]
    for case, negative_sees in (("pose", False), ("negative", True)):
        for call in results[case]:
            assert sorted(call["rows"]) == [0, 1]
            expected = [kind == 0 or negative_sees for kind in call["rows"]]
            assert call["pose"] == [expected] * blocks, case  # one pose attention per block, right rows
    assert all(call["pose"] == [] for call in results["outside"])  # outside [start, end): no pose attention
    # three Euler steps × three windows, tokens in [0, 0.5) of the schedule: every window of the early steps
    calls = results["steps"]
    assert [c["window"] for c in calls] == WINDOWS * 3
    assert [round(c["sigma"], 4) for c in calls] == [0.95] * 3 + [0.6] * 3 + [0.3] * 3
    for call in calls:
        sees = call["sigma"] > results["half_sigma"]
        assert call["pose"] == ([[kind == 0 for kind in call["rows"]]] * blocks if sees else []), call["sigma"]
    assert any(c["pose"] for c in calls) and not all(c["pose"] for c in calls)


def diffusers_window(transformer, t, case: str, i: int, row: int, tokens):
    injection = install_pose_injection(transformer)
    try:
        with injection.use(tokens), torch.no_grad():
            return transformer(
                hidden_states=t[f"{case}.{i}.x"][row:row + 1], timestep=t[f"{case}.{i}.t"][row:row + 1],
                encoder_hidden_states=t[f"{case}.{i}.context"][row:row + 1],
                control_hidden_states=t[f"{case}.{i}.vace"][row:row + 1, 0],
                control_hidden_states_scale=torch.ones(len(CFG["vace_layers"])), return_dict=False,
            )[0]
    finally:
        injection.remove()


def test_one_window_equals_a_direct_call_and_the_fusion_is_comfyuis(native):
    results, t, transformer, inputs = native
    outs = {}
    for i, call in enumerate(results["pose"]):
        for row, kind in enumerate(call["rows"]):
            direct = diffusers_window(transformer, t, "pose", i, row, inputs["tokens"] if kind == 0 else None)
            assert (direct - t[f"pose.{i}.out"][row:row + 1]).abs().max() < ATOL, (i, kind)
            outs[i, kind] = t[f"pose.{i}.out"][row:row + 1]
    # fuse the recorded window outputs directly: pyramid weights over video frames, reference averaged
    spec = ContextWindows(3, 1, "pyramid")
    x = t["whole.0.x"][:1]
    fused = {}
    for kind in (0, 1):
        video = torch.zeros_like(x[:, :, 1:])
        counts = torch.zeros(VIDEO)
        for i, window in enumerate(WINDOWS):
            w = window_weights(spec.fuse, window, VIDEO, spec.overlap)
            skip = 1 + len(call_frames(results["pose"][i])) - len(window)  # the reference, and an anchor
            video[:, :, window] += (x[:, :, [1 + f for f in window]] - SIGMA * outs[i, kind][:, :, skip:]) * w.view(1, 1, -1, 1, 1)
            counts[window] += w
        ref = torch.stack([x[:, :, :1] - SIGMA * outs[i, kind][:, :, :1] for i in range(3)]).mean(0)
        fused[kind] = torch.cat([ref, video / counts.view(1, 1, -1, 1, 1)], dim=2)
    expected = fused[1] + GUIDANCE * (fused[0] - fused[1])
    assert (t["pose.latent"] - expected).abs().max() < 1e-4
    # one window over all video frames = the unwindowed run
    assert results["one_window"][0]["window"] is None or len(results["one_window"]) == 1
    assert (t["one_window.latent"] - t["whole.latent"]).abs().max() < 1e-6


def test_stacked_patches_hold_under_windows(native):
    _, t, _, _ = native
    assert (t["chained.latent"] - t["joined.latent"]).abs().max() < 1e-5
    assert (t["chained.latent"] - t["pose.latent"]).abs().max() > 1e-4


def test_reference_frame_count_is_checked(native):
    results = native[0]
    assert "reference_frames is 2 but those first latent frames are not VACE reference frames" in results["wrong_reference.error"]
    assert "connect WanVaceToVideo's trim_latent to reference_frames" in results["wrong_reference.error"]
    assert ("no_reference.error" in results) == ("plain.error" in results)  # 0 = ComfyUI's own handling
