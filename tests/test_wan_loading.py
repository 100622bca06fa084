"""Loading: diffusers folder and original-layout single file give the same model; every missing
or wrong file is named with the fix."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from faithfulfaces_core.checkpoints import save_checkpoint
from faithfulfaces_core.errors import CheckpointError, FaithfulFacesError, MissingModelError
from faithfulfaces_core.tiny.wan import (
    TINY_TRANSFORMER_CONFIG,
    TINY_WIDTH,
    build_tiny_pipeline,
    save_original_layout,
)
from faithfulfaces_core.wan.keys import (
    diffusers_to_original_module,
    original_to_diffusers_module,
    to_original_state_dict,
)
from faithfulfaces_core.wan.loading import (
    SHIPPED_CONFIGS,
    detect_config,
    expected_shapes,
    load_config_file,
    load_pipeline,
    load_transformer_file,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("wan_load"), seed=4)


@pytest.fixture(scope="module")
def folder_transformer(tiny):
    from diffusers import WanVACETransformer3DModel

    return WanVACETransformer3DModel.from_pretrained(tiny.diffusers_dir, subfolder="transformer", local_files_only=True)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_files_are_in_the_real_layouts(tiny):
    assert (tiny.diffusers_dir / "model_index.json").is_file()
    for sub in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny.diffusers_dir / sub).is_dir()
    keys = set(load_file(str(tiny.transformer_file)))
    for key in ("patch_embedding.weight", "vace_patch_embedding.weight", "text_embedding.0.weight", "time_embedding.2.bias",
                "time_projection.1.weight", "head.head.weight", "head.modulation", "blocks.3.self_attn.q.weight",
                "blocks.0.norm3.weight", "blocks.0.modulation", "vace_blocks.0.before_proj.weight", "vace_blocks.1.after_proj.bias"):
        assert key in keys
    assert not any("attn1" in k or "to_q" in k for k in keys)


@pytest.mark.parametrize("prefix", ["", "diffusion_model.", "model.diffusion_model."])
def test_single_file_gives_the_folder_weights(tiny, folder_transformer, tmp_path, prefix):
    path = tmp_path / "vace.safetensors"
    save_original_layout(folder_transformer, path, prefix=prefix)
    assert same_weights(load_transformer_file(path, dtype=torch.float32), folder_transformer)


def test_single_file_without_metadata_needs_a_matching_config(tiny, folder_transformer, tmp_path):
    """Real files carry no config: ours is used when given, the shipped ones are tried by shape."""
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(tiny.transformer_file)), str(bare))
    config = tiny.diffusers_dir / "transformer" / "config.json"
    assert same_weights(load_transformer_file(bare, dtype=torch.float32, config=config), folder_transformer)
    with pytest.raises(CheckpointError, match=rf"a Wan2.1-VACE transformer of an unknown size \(width {TINY_WIDTH}, 4 blocks, 2 VACE blocks\); "
                                              r"FaithfulFaces ships configs for Wan2.1-VACE-1.3B: width 1536, 30 blocks, 15 VACE blocks; "
                                              r"Wan2.1-VACE-14B: width 5120, 40 blocks, 8 VACE blocks"):
        load_transformer_file(bare)


def test_a_released_size_is_recognised_and_its_missing_keys_named(tmp_path):
    """A 1.3B-shaped file (no metadata, only a few tensors): the 1.3B config is picked by its width
    and block counts, then every key is checked against it."""
    tensors = {"model.diffusion_model.patch_embedding.weight": torch.zeros(1536, 16, 1, 2, 2),
               "model.diffusion_model.vace_patch_embedding.weight": torch.zeros(1536, 96, 1, 2, 2)}
    tensors |= {f"model.diffusion_model.blocks.{i}.modulation": torch.zeros(1, 6, 1536) for i in range(30)}
    tensors |= {f"model.diffusion_model.vace_blocks.{i}.modulation": torch.zeros(1, 6, 1536) for i in range(15)}
    path = tmp_path / "wan2.1_vace_1.3B_fp16.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=r"Wan2.1-VACE transformer \(Wan2.1-VACE-1.3B\) key 'model.diffusion_model.head.modulation' "
                                              r"is missing \(and 1216 more\)"):
        load_transformer_file(path)


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_pipeline_from_single_file_matches_folder_in_half_precision(tiny, dtype):
    a = load_pipeline(tiny.diffusers_dir, transformer_file=tiny.transformer_file, device="cpu", dtype=dtype).transformer
    b = load_pipeline(tiny.diffusers_dir, device="cpu", dtype=dtype).transformer
    assert same_weights(a, b)
    dtypes = {v.dtype for v in a.state_dict().values()}
    assert dtypes == {torch.float32, {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]}  # norms stay fp32


@pytest.mark.parametrize("name", list(SHIPPED_CONFIGS))
def test_shipped_configs_are_detected_from_original_layout_shapes(name):
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    shapes = expected_shapes(load_config_file(SHIPPED_CONFIGS[name]))
    original = to_original_state_dict(shapes)
    back = convert_wan_transformer_to_diffusers(dict(original))  # diffusers' own converter inverts ours
    assert back == shapes
    assert detect_config(back)[0] == name


def test_module_names_invert_and_agree_with_diffusers_converter(folder_transformer):
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    for name, module in folder_transformer.named_modules():
        if not isinstance(module, torch.nn.Linear | torch.nn.Conv3d):
            continue
        original = diffusers_to_original_module(name)
        assert original_to_diffusers_module(original) == name
        assert list(convert_wan_transformer_to_diffusers({f"{original}.weight": 0})) == [f"{name}.weight"]


def test_vram_options_are_applied(tiny):
    pipe = load_pipeline(tiny.diffusers_dir, device="cpu", vae_tiling=True, vae_slicing=True, attention_backend="native")
    assert pipe.vae.use_tiling and pipe.vae.use_slicing
    assert str(pipe.transformer.blocks[0].attn1.processor._attention_backend.value) == "native"


def test_missing_models_name_folder_file_and_source(tiny, tmp_path):
    with pytest.raises(MissingModelError, match=r"The Wan2.1-VACE diffusers folder .*nowhere does not exist .*Wan-AI/Wan2.1-VACE-14B-diffusers"):
        load_pipeline(tmp_path / "nowhere", device="cpu")
    broken = tmp_path / "broken"
    shutil.copytree(tiny.diffusers_dir, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(MissingModelError, match=rf"The Wan VAE is missing: folder {broken}, file vae/ not found. It comes from the Hugging Face repo"):
        load_pipeline(broken, device="cpu")
    shutil.copytree(tiny.diffusers_dir / "vae", broken / "vae")
    (broken / "text_encoder" / "model.safetensors").unlink()
    with pytest.raises(MissingModelError, match=r"The weight file of the UMT5 text encoder is missing: folder .*text_encoder, file diffusion_pytorch_model.safetensors / model.safetensors not found"):
        load_pipeline(broken, device="cpu")
    (broken / "text_encoder" / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(MissingModelError, match=r"A weight shard of the UMT5 text encoder is missing: folder .*text_encoder, file model-00001-of-00002.safetensors not found.*incomplete"):
        load_pipeline(broken, device="cpu")
    with pytest.raises(MissingModelError, match=r"The Wan2.1-VACE transformer file is missing: folder .*diffusion_models, file wan2.1_vace_14B_fp16.safetensors not found. It comes from .*Comfy-Org/Wan_2.1_ComfyUI_repackaged"):
        load_pipeline(tiny.diffusers_dir, transformer_file=tmp_path / "diffusion_models" / "wan2.1_vace_14B_fp16.safetensors", device="cpu")


def test_wrong_kinds_of_file_and_folder(tiny, tmp_path):
    ckpt = tmp_path / "vace.ckpt"
    ckpt.write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match=r"is a '.ckpt' file; FaithfulFaces loads single-file transformers as .safetensors only"):
        load_transformer_file(ckpt)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"is not a readable safetensors file"):
        load_transformer_file(junk)
    full = load_file(str(tiny.transformer_file))
    cases = {
        "lora": ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(2, TINY_WIDTH)},
                 "is a LoRA, not a transformer: put it in ComfyUI/models/loras/"),
        "t2v": ({k: v for k, v in full.items() if "vace" not in k},
                "is a Wan2.1 transformer without VACE blocks (text-to-video or image-to-video); FaithfulFaces needs the VACE model"),
        "vae": ({"encoder.downsamples.0.residual.0.gamma": torch.zeros(3)}, "is the Wan VAE (it belongs in ComfyUI/models/vae/)"),
        "t5": ({"shared.weight": torch.zeros(4, 4)}, "is a UMT5 text encoder"),
        "other": ({"conv_in.weight": torch.zeros(4)}, "is not a Wan2.1-VACE transformer"),
    }
    for name, (tensors, message) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path))
        with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
            load_transformer_file(path)

    config = tiny.diffusers_dir / "transformer" / "config.json"
    missing = dict(full)
    del missing["blocks.2.cross_attn.o.bias"]
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing.safetensors: Wan2.1-VACE transformer key 'blocks.2.cross_attn.o.bias' is missing"):
        load_transformer_file(tmp_path / "missing.safetensors", config=config)
    wrong = dict(full)
    ffn = TINY_TRANSFORMER_CONFIG["ffn_dim"]
    wrong["blocks.1.ffn.0.weight"] = torch.zeros(2 * ffn, TINY_WIDTH)
    save_file(wrong, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(CheckpointError, match=rf"wrong.safetensors: Wan2.1-VACE transformer key 'blocks.1.ffn.0.weight' has shape "
                                              rf"\({2 * ffn}, {TINY_WIDTH}\), expected \({ffn}, {TINY_WIDTH}\)"):
        load_transformer_file(tmp_path / "wrong.safetensors", config=config)
    aligner = save_checkpoint(tmp_path / "aligner.safetensors", {"dictionary": torch.zeros(4, 4)}, kind="aligner", format=1, config={})
    with pytest.raises(CheckpointError, match=r"aligner.safetensors is not a Wan2.1-VACE transformer"):
        load_transformer_file(aligner)

    original_release = tmp_path / "Wan2.1-VACE-14B"
    original_release.mkdir()
    (original_release / "Wan2.1_VAE.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is the original \(non-diffusers\) Wan release; FaithfulFaces loads the diffusers format"):
        load_pipeline(original_release, device="cpu")
    t2v = tmp_path / "t2v"
    shutil.copytree(tiny.diffusers_dir, t2v)
    cfg = json.loads((t2v / "transformer" / "config.json").read_text())
    (t2v / "transformer" / "config.json").write_text(json.dumps({**cfg, "_class_name": "WanTransformer3DModel"}))
    with pytest.raises(CheckpointError, match=r"holds a WanTransformer3DModel, not a WanVACETransformer3DModel"):
        load_pipeline(t2v, device="cpu")
    # ... but its text encoder, tokenizer, VAE and scheduler serve a single-file VACE transformer
    pipe = load_pipeline(t2v, transformer_file=tiny.transformer_file, device="cpu")
    assert type(pipe.transformer).__name__ == "WanVACETransformer3DModel"


def test_bad_options_name_the_choices(tiny):
    with pytest.raises(FaithfulFacesError, match=r"Unknown offload mode 'disk'. Pick one of: none, model, sequential."):
        load_pipeline(tiny.diffusers_dir, device="cpu", offload="disk")
    with pytest.raises(FaithfulFacesError, match=r"CPU offload \('model'\) moves models between the CPU and a GPU, but the device is the CPU"):
        load_pipeline(tiny.diffusers_dir, device="cpu", offload="model")
    with pytest.raises(FaithfulFacesError, match=r"Unknown dtype 'fp8': use one of auto, fp32, fp16, bf16."):
        load_pipeline(tiny.diffusers_dir, device="cpu", dtype="fp8")
    with pytest.raises(FaithfulFacesError, match=r"Attention backend 'flash_hub' downloads its kernel from the Hugging Face hub"):
        load_pipeline(tiny.diffusers_dir, device="cpu", attention_backend="flash_hub")
    with pytest.raises(FaithfulFacesError, match=r"Unknown attention backend 'fast'. Pick one of: .*native"):
        load_pipeline(tiny.diffusers_dir, device="cpu", attention_backend="fast")
    if not torch.cuda.is_available():
        with pytest.raises(FaithfulFacesError, match=r"Device 'cuda' was asked for, but torch sees no CUDA GPU"):
            load_pipeline(tiny.diffusers_dir, device="cuda")
