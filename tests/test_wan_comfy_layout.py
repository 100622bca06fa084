"""The original-Wan-layout files against ComfyUI's own code (run in a subprocess; the core never
imports ComfyUI): the single-file transformer loads strictly into ComfyUI's ``VaceWanModel``,
and ComfyUI's LoRA key map + patch maths turn the exported LoRA into exactly the weights
diffusers' ``fuse_lora`` makes."""

from __future__ import annotations

import json
import textwrap

from safetensors.torch import save_file

from faithfulfaces_core.tiny.native import randomize_lora
from faithfulfaces_core.tiny.wan import TINY_TRANSFORMER_CONFIG as CFG
from faithfulfaces_core.tiny.wan import build_tiny_pipeline
from faithfulfaces_core.wan import lora as wan_lora
from faithfulfaces_core.wan.keys import diffusers_to_original_module
from faithfulfaces_core.wan.loading import load_pipeline

COMFY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    comfy_dir, model_file, lora_file, expected_file, cfg = sys.argv[1:6]
    cfg = json.loads(cfg)
    sys.path.insert(0, comfy_dir)
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import torch, comfy.ops, comfy.lora, comfy.ldm.wan.model as wan
    from safetensors.torch import load_file

    model = wan.VaceWanModel(
        dim=cfg["num_attention_heads"] * cfg["attention_head_dim"], ffn_dim=cfg["ffn_dim"], freq_dim=cfg["freq_dim"],
        text_dim=cfg["text_dim"], num_heads=cfg["num_attention_heads"], num_layers=cfg["num_layers"],
        vace_layers=len(cfg["vace_layers"]), vace_in_dim=cfg["vace_in_channels"], in_dim=cfg["in_channels"],
        out_dim=cfg["out_channels"], operations=comfy.ops.disable_weight_init,
    )
    result = {"vace_layer_positions": sorted(model.vace_layers_mapping)}
    result["strict_load"] = str(model.load_state_dict(load_file(model_file), strict=True))

    class Wrapped:  # what model_lora_keys_unet reads: the state dict under ComfyUI's "diffusion_model." prefix
        class model_config:
            unet_config = {}
        def state_dict(self):
            return {"diffusion_model." + k: v for k, v in model.state_dict().items()}

    key_map = comfy.lora.model_lora_keys_unet(Wrapped(), {})
    patches = comfy.lora.load_lora(load_file(lora_file), key_map)
    expected = load_file(expected_file)
    sd = Wrapped().state_dict()
    worst = 0.0
    for key, adapter in patches.items():
        patched = comfy.lora.calculate_weight([(1.0, adapter, 1.0, None, None)], sd[key].clone(), key)
        worst = max(worst, float((patched - expected[key]).abs().max()))
    result["patched"] = sorted(patches)
    result["max_abs_error"] = worst
    print("RESULT " + json.dumps(result))
    """
)



def test_single_file_and_lora_export_work_in_comfyui(comfy_dir, comfy_script, tmp_path):
    tiny = build_tiny_pipeline(tmp_path / "models", seed=6)
    pipe = load_pipeline(tiny.diffusers_dir, device="cpu")
    wan_lora.add_lora(pipe.transformer, wan_lora.LoraSpec(rank=4, alpha=2))
    randomize_lora(pipe.transformer, seed=0, std=0.2)
    lora_file = wan_lora.save_lora(tmp_path / "ff_comfy.safetensors", pipe.transformer, layout="original_wan")
    targets = wan_lora.target_module_names(pipe.transformer)
    wan_lora.fuse_lora(pipe, scale=1.0)
    modules = dict(pipe.transformer.named_modules())
    expected = {f"diffusion_model.{diffusers_to_original_module(m)}.weight": modules[m].base_layer.weight.detach().clone()
                for m in targets}
    save_file(expected, str(tmp_path / "expected.safetensors"))

    result = comfy_script(COMFY_SCRIPT, comfy_dir, tiny.transformer_file, lora_file,
                          tmp_path / "expected.safetensors", json.dumps(CFG))
    assert result["vace_layer_positions"] == CFG["vace_layers"]
    assert result["strict_load"] == "<All keys matched successfully>"
    assert result["patched"] == sorted(expected)  # every module, vace_blocks included, nothing left over
    assert result["max_abs_error"] < 1e-6
