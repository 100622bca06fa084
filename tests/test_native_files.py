"""The tiny model files against ComfyUI's own loaders (in a subprocess) and diffusers' converter."""

from __future__ import annotations

import textwrap

import pytest
import torch
from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
from safetensors.torch import load_file, save_file

from faithfulfaces_core.aligner import load_aligner, save_aligner
from faithfulfaces_core.checkpoints import load_checkpoint
from faithfulfaces_core.errors import FaithfulFacesError
from faithfulfaces_core.host import default_comfyui_dir
from faithfulfaces_core.tiny import native as tiny_native
from faithfulfaces_core.tiny.aligner import build_tiny_aligner
from faithfulfaces_core.tiny.native import add_random_lora
from faithfulfaces_core.tiny.wan import TINY_TRANSFORMER_CONFIG, TINY_WIDTH, build_tiny_pipeline
from faithfulfaces_core.wan.loading import load_transformer_file
from faithfulfaces_core.wan.lora import read_lora, save_lora

COMFY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    comfy_dir, models, expected, model_name, vae_name = sys.argv[1:6]
    sys.path.insert(0, comfy_dir)
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import torch, comfy.sd, comfy.utils, comfy.ldm.wan.vae as wan_vae
    from safetensors.torch import load_file

    result = {}
    model = comfy.sd.load_diffusion_model(f"{models}/diffusion_models/{model_name}")  # UNETLoader's call
    dm = model.model.diffusion_model
    result["model"] = [type(model.model).__name__, type(dm).__name__, dm.dim, dm.num_heads, dm.text_dim,
                       len(dm.blocks), sorted(dm.vace_layers_mapping)]
    vae_sd = comfy.utils.load_torch_file(f"{models}/vae/{vae_name}")
    vae = comfy.sd.VAE(sd=vae_sd)  # VAELoader's call: the Wan2.1 branch, base width from the file
    result["vae"] = [type(vae.first_stage_model).__name__, vae.latent_channels]
    strict = wan_vae.WanVAE(dim=vae_sd["decoder.head.0.gamma"].shape[0], z_dim=16, dim_mult=[1, 2, 4, 4],
                            num_res_blocks=2, attn_scales=[], temperal_downsample=[False, True, True])
    result["vae_strict"] = str(strict.load_state_dict(vae_sd, strict=True))
    data = load_file(expected)
    with torch.no_grad():
        decoded = strict.decode(data["z"]).clamp(-1, 1)
    result["vae_decode_error"] = float((decoded - data["decoded"]).abs().max())
    print("RESULT " + json.dumps(result))
    """
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(models folder, the tiny pipeline's paths, the tiny VAE file): the files the model set writes."""
    models = tmp_path_factory.mktemp("native_models")
    with torch.random.fork_rng(devices=[]):  # build_tiny_pipeline seeds the global RNG; later tests keep theirs
        return models, build_tiny_pipeline(models, seed=2), tiny_native.write_tiny_vae(models, seed=2)


def test_vae_layout_is_the_inverse_of_diffusers_converter(files):
    _, _, vae_file = files
    vae = tiny_native.build_tiny_native_vae(seed=2)
    state = vae.state_dict()
    written = load_file(str(vae_file))
    back = convert_wan_vae_to_diffusers(written)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    assert "decoder.upsamples.4.shortcut.weight" in written and "encoder.downsamples.5.time_conv.weight" in written
    with pytest.raises(KeyError, match="'decoder.nonsense.weight' is not a parameter of diffusers' Wan2.1 VAE"):
        tiny_native.wan_vae_key_to_original("decoder.nonsense.weight")


def test_tiny_files_follow_comfys_detection_rules(files, tmp_path):
    _, wan, _ = files
    config = TINY_TRANSFORMER_CONFIG
    assert config["attention_head_dim"] == 128 and config["text_dim"] == 4096  # num_heads = dim // 128; UMT5-XXL
    assert TINY_WIDTH == config["num_attention_heads"] * 128
    assert load_checkpoint(wan.transformer_file, kind="wan_transformer", max_format=1).config["attention_head_dim"] == 128
    transformer = load_transformer_file(wan.transformer_file, dtype=torch.float32)
    add_random_lora(transformer, seed=3)
    lora = read_lora(save_lora(tmp_path / "lora.safetensors", transformer, layout="original_wan"))
    assert lora.layout == "original_wan" and lora.config["width"] == TINY_WIDTH
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.state_dict.items())
    aligner = save_aligner(build_tiny_aligner(seed=2, token_dim=TINY_WIDTH), tmp_path / "aligner.safetensors")
    assert load_aligner(aligner).config.token_dim == TINY_WIDTH


def test_comfys_own_loaders_take_the_tiny_native_files(files, comfy_script, tmp_path):
    try:
        comfy_dir = default_comfyui_dir()
    except FaithfulFacesError as exc:
        pytest.skip(str(exc))
    models, wan, vae_file = files
    vae = tiny_native.build_tiny_native_vae(seed=2)
    z = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        decoded = vae.decode(z).sample
    save_file({"z": z, "decoded": decoded}, str(tmp_path / "expected.safetensors"))
    result = comfy_script(COMFY_SCRIPT, comfy_dir, models, tmp_path / "expected.safetensors",
                          wan.transformer_file.name, vae_file.name)
    heads, layers = TINY_TRANSFORMER_CONFIG["num_attention_heads"], TINY_TRANSFORMER_CONFIG["num_layers"]
    assert result["model"] == ["WAN21_Vace", "VaceWanModel", TINY_WIDTH, heads, 4096, layers, [0, 2]]
    assert result["vae"] == ["WanVAE", 16]
    assert result["vae_strict"] == "<All keys matched successfully>"
    assert decoded.shape == (1, 3, 5, 32, 32) and result["vae_decode_error"] < 1e-4
