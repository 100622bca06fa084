"""The native MODEL patch inside ComfyUI's own sampling code, against the diffusers path.

ComfyUI's code runs in one subprocess (the core never imports ComfyUI and its modules must not
leak into this session). There the tiny native transformer file (original key layout) is loaded
with ComfyUI's own ``load_diffusion_model`` (what UNETLoader calls), patched with
``patch_native_model`` and evaluated through ``CFGGuider`` + a one-call sampler, so ``sigmas``,
``cond_or_uncond``, wrappers and LoRA patches are ComfyUI's. A recording ``diffusion_model``
wrapper keeps the exact inputs and output of every model call. Here the same file is loaded into
diffusers (``load_transformer_file``), given the same LoRA adapter and the pose-token injection,
and must give the same output on those inputs.
"""

from __future__ import annotations

import pytest
import torch

from faithfulfaces_core.tiny.native import add_random_lora
from faithfulfaces_core.tiny.wan import (
    TINY_TRANSFORMER_CONFIG,
    TINY_WIDTH,
    build_tiny_transformer,
    save_original_layout,
)
from faithfulfaces_core.wan import lora as wan_lora
from faithfulfaces_core.wan.injection import install_pose_injection
from faithfulfaces_core.wan.loading import load_transformer_file

CFG = TINY_TRANSFORMER_CONFIG
WIDTH = TINY_WIDTH
SIGMA = 0.7
LORA_STRENGTH = 0.8
OTHER_STRENGTH = 0.5
ATOL = 1e-5

# run after conftest's NATIVE_SAMPLING_PREAMBLE (base, positive, negative, data, spec, work)
COMFY_BODY = """
    tensors, results = {}, {"dtype": str(base.model.diffusion_model.blocks[0].self_attn.k.weight.dtype)}

    def recorder(calls):
        def record(executor, *args, **kwargs):
            out = executor(*args, **kwargs)
            options = args[5] if len(args) > 5 else kwargs["transformer_options"]
            calls.append({"x": args[0], "t": args[1], "context": args[2], "vace": kwargs["vace_context"],
                          "out": out, "rows": list(options.get("cond_or_uncond") or [0])})
            return out
        return record

    def one_call(model, x, sigmas, extra_args=None, callback=None, disable=None):
        return model(x, sigmas[0] * x.new_ones([x.shape[0]]), **extra_args)

    def run(name, model, cfg=1.0):
        calls = []
        model = model.clone()
        model.add_wrapper_with_key("diffusion_model", "test_recorder", recorder(calls))
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        latent = guider.sample(data["noise"], data["latent"], comfy.samplers.KSAMPLER(one_call),
                               torch.tensor([spec["sigma"], 0.0]), seed=0)
        assert len(calls) == 1, len(calls)
        call = calls[0]
        for key in ("x", "t", "context", "vace", "out"):
            tensors[f"{name}.{key}"] = call[key].contiguous()
        tensors[f"{name}.latent"] = latent.contiguous()
        results[f"{name}.rows"] = call["rows"]
        return call

    def lora(model, path, strength):
        return comfy.sd.load_lora_for_models(model, None, comfy.utils.load_torch_file(path), strength, 0)[0]

    tokens, tokens2 = data["tokens"], data["tokens2"]
    L, S = spec["lora"], spec["lora_strength"]
    run("base", base)
    noop = patch_native_model(base, None, lora_path=L, lora_strength=0.0)
    results["noop_is_input"] = noop is base
    run("noop", noop)
    run("noop_zero_strength", patch_native_model(base, tokens, lora_path=L, lora_strength=0.0, strength=0.0))
    run("lora", patch_native_model(base, None, lora_path=L, lora_strength=S))
    pose = patch_native_model(base, tokens, lora_path=L, lora_strength=S)
    run("pose", pose)
    run("pose_cfg", pose, cfg=3.0)
    run("pose_weak_uncond", patch_native_model(base, tokens, lora_path=L, lora_strength=S, strength=0.6, pose_on_negative=True),
        cfg=3.0)
    run("window_out", patch_native_model(base, tokens, lora_path=L, lora_strength=S, start=0.0, end=0.3))
    run("window_in", patch_native_model(base, tokens, lora_path=L, lora_strength=S, start=0.3, end=1.0))
    results["window_sigmas"] = [base.get_model_object("model_sampling").percent_to_sigma(p) for p in (0.3,)]

    # cloning, and an unload / reload cycle of ComfyUI's model management
    run("clone", pose.clone().clone())
    comfy.model_management.unload_all_models()
    comfy.model_management.soft_empty_cache()
    run("reloaded", pose)

    # low-VRAM weight streaming: weights stay unpatched, LoRA applied per layer on the fly
    comfy.model_management.unload_all_models()
    streamed = pose.clone()
    calls = []
    streamed.add_wrapper_with_key("diffusion_model", "test_recorder", recorder(calls))
    streamed.patch_model(torch.device("cpu"), lowvram_model_memory=1)
    options = dict(streamed.model_options["transformer_options"])
    options.update(wrappers=streamed.wrappers, cond_or_uncond=[0], sigmas=torch.tensor([spec["sigma"]]))
    with torch.no_grad():
        streamed.model.diffusion_model(tensors["pose.x"], tensors["pose.t"], tensors["pose.context"],
                                       transformer_options=options, vace_context=tensors["pose.vace"],
                                       vace_strength=[1.0])
    results["lowvram_cast_modules"] = sum(bool(getattr(m, "comfy_cast_weights", False))
                                          for m in streamed.model.diffusion_model.modules())
    streamed.unpatch_model(torch.device("cpu"))
    tensors["lowvram.out"] = calls[0]["out"].contiguous()

    # another LoRA, before and after the patch
    O, OS = spec["other_lora"], spec["other_strength"]
    run("other_first", patch_native_model(lora(base, O, OS), tokens, lora_path=L, lora_strength=S))
    run("other_after", lora(pose, O, OS))

    # a second pose patch on top of the first, and the tokens of both in one patch
    joined = torch.cat([tokens, tokens2], dim=1)
    run("chained", patch_native_model(patch_native_model(base, tokens), tokens2))
    run("joined", patch_native_model(base, joined))
    run("chained_weak", patch_native_model(patch_native_model(base, tokens, strength=0.6), tokens2, strength=0.6))
    run("joined_weak", patch_native_model(base, joined, strength=0.6))
    run("chained_rows", patch_native_model(patch_native_model(base, tokens, pose_on_negative=True), tokens2), cfg=3.0)
    run("joined_cfg", patch_native_model(base, joined), cfg=3.0)
    run("single_uncond", patch_native_model(base, tokens, pose_on_negative=True), cfg=3.0)

    # another MODEL patch: a block replace and an attention override already there
    counts = {"replace": 0, "override": 0}
    def foreign_replace(args, extra):
        counts["replace"] += 1
        return extra["original_block"](args)
    def foreign_override(func, *args, **kwargs):
        counts["override"] += 1
        return func(*args, **kwargs)
    other = base.clone()
    for i in range(len(base.model.diffusion_model.blocks)):
        other.set_model_patch_replace(foreign_replace, "dit", "double_block", i)
    other.model_options["transformer_options"]["optimized_attention_override"] = foreign_override
    run("foreign", patch_native_model(other, tokens, lora_path=L, lora_strength=S))
    results["foreign_counts"] = counts

    def message(fn):
        try:
            fn()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return None
    results["errors"] = {
        "width": message(lambda: patch_native_model(base, torch.zeros(1, 2, 7))),
        "window": message(lambda: patch_native_model(base, tokens, start=0.8, end=0.2)),
        "lora_size": message(lambda: patch_native_model(base, None, lora_path=spec["wide_lora"])),
        "batch": message(lambda: run("batch", patch_native_model(base, torch.cat([tokens] * 3)))),
    }
    results["untouched"] = (not base.wrappers and "patches_replace" not in base.model_options["transformer_options"]
                            and not base.patches)
    save_file(tensors, str(work / "out.safetensors"))
    print("RESULT " + json.dumps(results))
    """



@pytest.fixture(scope="module")
def native(native_sampling, tmp_path_factory):
    """(ComfyUI's results, its recorded tensors, the diffusers transformer with both adapters)."""
    work = tmp_path_factory.mktemp("native")
    model_file = save_original_layout(build_tiny_transformer(seed=11), work / "wan_tiny.safetensors")
    transformer = load_transformer_file(model_file, dtype=torch.float32).eval()
    add_random_lora(transformer, seed=1)
    wan_lora.add_lora(transformer, wan_lora.LoraSpec(rank=2, modules=wan_lora.FFN_MODULES, include_vace_blocks=False),
                      adapter_name="other")
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, param in transformer.named_parameters():
            if "lora_B.other." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    lora = wan_lora.save_lora(work / "ff.safetensors", transformer, layout="diffusers")
    other = wan_lora.save_lora(work / "other.safetensors", transformer, "other", layout="original_wan")
    wide = wan_lora.save_lora_file(  # a LoRA for a model twice as wide
        work / "wide.safetensors",
        {"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 2 * WIDTH),
         "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(2 * WIDTH, 4)},
        {"r": 4, "lora_alpha": 4, "target_modules": ["blocks.0.attn1.to_q"]}, layout="original_wan")

    spec = {"model": str(model_file), "lora": str(lora), "lora_strength": LORA_STRENGTH,
            "other_lora": str(other), "other_strength": OTHER_STRENGTH, "wide_lora": str(wide), "sigma": SIGMA}
    results, tensors, inputs = native_sampling(work, COMFY_BODY, spec, seed=5, frames=2)
    return results, tensors, transformer, inputs


def diffusers_output(transformer, tensors, case: str, row: int, tokens, *, strength=1.0, adapters=None):
    """The diffusers transformer on ComfyUI's recorded inputs of ``case``, batch row ``row``."""
    adapters = adapters or {wan_lora.ADAPTER_NAME: LORA_STRENGTH}
    transformer.set_adapters(list(adapters), list(adapters.values()))
    injection = install_pose_injection(transformer)
    try:
        with injection.use(tokens, strength=strength), torch.no_grad():
            out = transformer(
                hidden_states=tensors[f"{case}.x"][row:row + 1],
                timestep=tensors[f"{case}.t"][row:row + 1],
                encoder_hidden_states=tensors[f"{case}.context"][row:row + 1],
                control_hidden_states=tensors[f"{case}.vace"][row:row + 1, 0],
                control_hidden_states_scale=torch.ones(len(CFG["vace_layers"])),
                return_dict=False,
            )[0]
    finally:
        injection.remove()
    return out


def test_no_tokens_and_lora_strength_zero_is_bit_identical(native):
    results, t, _, _ = native
    assert results["dtype"] == "torch.float32"
    assert results["noop_is_input"] and results["untouched"]
    for case in ("noop", "noop_zero_strength"):
        assert torch.equal(t[f"{case}.out"], t["base.out"]), case
        assert torch.equal(t[f"{case}.latent"], t["base.latent"]), case
    assert not torch.equal(t["lora.out"], t["base.out"])


def test_native_and_diffusers_paths_agree(native):
    results, t, transformer, inputs = native
    assert torch.allclose(t["base.t"], torch.tensor([SIGMA * 1000.0]))
    reference = diffusers_output(transformer, t, "base", 0, None, adapters={wan_lora.ADAPTER_NAME: 0.0})
    assert (reference - t["base.out"]).abs().max() < ATOL
    reference = diffusers_output(transformer, t, "lora", 0, None)
    assert (reference - t["lora.out"]).abs().max() < ATOL
    with_tokens = diffusers_output(transformer, t, "pose", 0, inputs["tokens"])
    assert (with_tokens - t["pose.out"]).abs().max() < ATOL
    assert (with_tokens - reference).abs().max() > 100 * ATOL  # the tokens matter


def test_negative_pass_and_strength_follow_the_contract(native):
    results, t, transformer, inputs = native
    for case, strength, negative_sees in (("pose_cfg", 1.0, False), ("pose_weak_uncond", 0.6, True)):
        rows = results[f"{case}.rows"]
        assert sorted(rows) == [0, 1], rows  # positive and negative ran as one batch
        for row, kind in enumerate(rows):
            tokens = inputs["tokens"] if kind == 0 or negative_sees else None
            reference = diffusers_output(transformer, t, case, row, tokens, strength=strength)
            assert (reference - t[f"{case}.out"][row:row + 1]).abs().max() < ATOL, (case, kind)


def test_start_end_window_uses_the_schedules_sigmas(native):
    results, t, _, _ = native
    assert results["window_sigmas"][0] > SIGMA  # 30 % of the schedule is still above sigma 0.7
    assert torch.equal(t["window_out.out"], t["lora.out"])
    assert torch.equal(t["window_in.out"], t["pose.out"])


def test_patch_survives_cloning_reloading_and_weight_streaming(native):
    results, t, _, _ = native
    assert torch.equal(t["clone.out"], t["pose.out"])
    assert torch.equal(t["reloaded.out"], t["pose.out"])
    assert results["lowvram_cast_modules"] > 0
    assert (t["lowvram.out"] - t["pose.out"]).abs().max() < 1e-5


def test_patch_composes_with_another_lora_and_other_model_patches(native):
    results, t, transformer, inputs = native
    both = {wan_lora.ADAPTER_NAME: LORA_STRENGTH, "other": OTHER_STRENGTH}
    reference = diffusers_output(transformer, t, "other_after", 0, inputs["tokens"], adapters=both)
    assert (reference - t["other_after.out"]).abs().max() < ATOL
    assert (t["other_first.out"] - t["other_after.out"]).abs().max() < 1e-5
    assert (t["other_after.out"] - t["pose.out"]).abs().max() > 100 * ATOL
    # two pose patches = one patch with both token sets; the negative row sees only the patch that allows it
    assert (t["chained.out"] - t["joined.out"]).abs().max() < 1e-5
    assert (t["chained_weak.out"] - t["joined_weak.out"]).abs().max() < 1e-5
    assert (t["chained_weak.out"] - t["chained.out"]).abs().max() > 100 * ATOL
    rows = results["chained_rows.rows"]
    assert rows == results["joined_cfg.rows"] == results["single_uncond.rows"] and sorted(rows) == [0, 1]
    for row, kind in enumerate(rows):
        expected = t["joined_cfg.out"] if kind == 0 else t["single_uncond.out"]
        assert (t["chained_rows.out"][row] - expected[row]).abs().max() < 1e-5, kind
    # a block replace and an attention override that were there keep running, the pose acts too
    counts = results["foreign_counts"]
    blocks, vace = CFG["num_layers"], len(CFG["vace_layers"])
    assert counts == {"replace": blocks, "override": 2 * (blocks + vace)}
    assert torch.equal(t["foreign.out"], t["pose.out"])


def test_bad_inputs_name_the_fix(native):
    errors = native[0]["errors"]
    assert "Pose tokens are 7 wide but this Wan model is" in errors["width"]
    assert "use an aligner file trained for this model size" in errors["width"]
    assert "start=0.8, end=0.2 is not allowed" in errors["window"]
    assert errors["lora_size"].startswith("CheckpointError")
    assert f"is for a {2 * WIDTH}→{2 * WIDTH} layer, but this model's 'blocks.0.self_attn.q' is {WIDTH}→{WIDTH}" in errors["lora_size"]
    assert "holds 3 token sets but the sampler runs a batch of 1 videos" in errors["batch"]
