"""The FaithfulFaces LoRA: targets, diffusers-format round trip, original-layout export/import, fusing."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from faithfulfaces_core.checkpoints import save_checkpoint
from faithfulfaces_core.errors import CheckpointError, MissingModelError
from faithfulfaces_core.tiny.native import randomize_lora
from faithfulfaces_core.tiny.wan import TINY_TRANSFORMER_CONFIG, TINY_WIDTH, build_tiny_pipeline
from faithfulfaces_core.wan import lora as wan_lora
from faithfulfaces_core.wan.loading import load_pipeline

RANK = 4



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("wan_lora"), seed=2)


def fresh(tiny):
    return load_pipeline(tiny.diffusers_dir, device="cpu")


@pytest.fixture(scope="module")
def trained(tiny):
    pipe = fresh(tiny)
    wan_lora.add_lora(pipe.transformer, wan_lora.LoraSpec(rank=RANK, alpha=8))
    randomize_lora(pipe.transformer, seed=0, std=0.3)
    return pipe


def forward(transformer, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return transformer(
            hidden_states=torch.randn(1, 16, 3, 8, 8, generator=gen), timestep=torch.tensor([400.0]),
            encoder_hidden_states=torch.randn(1, 6, TINY_TRANSFORMER_CONFIG["text_dim"], generator=gen),
            control_hidden_states=torch.randn(1, 96, 3, 8, 8, generator=gen), return_dict=False,
        )[0]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_targets_are_attention_and_ffn_projections_of_all_blocks(trained):
    names = wan_lora.target_module_names(trained.transformer)
    assert len(names) == (4 + 2) * 10
    assert "blocks.3.attn1.to_out.0" in names and "vace_blocks.1.ffn.net.2" in names
    assert "vace_blocks.0.proj_in" not in names and "proj_out" not in names
    main_only = wan_lora.target_module_names(trained.transformer, wan_lora.LoraSpec(include_vace_blocks=False))
    assert len(main_only) == 40 and not any(n.startswith("vace_") for n in main_only)
    config = trained.transformer.peft_config[wan_lora.ADAPTER_NAME]
    assert (config.r, config.lora_alpha) == (RANK, 8)
    assert wan_lora.lora_config(trained.transformer).r == 128  # the paper's default


def test_save_then_load_is_exact_and_diffusers_loads_the_file(trained, tiny, tmp_path):
    path = wan_lora.save_lora(tmp_path / "ff_lora.safetensors", trained.transformer)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["faithfulfaces.kind"] == "lora"
    assert json.loads(meta["faithfulfaces.config"])["rank"] == RANK
    assert json.loads(meta["lora_adapter_metadata"])["transformer.lora_alpha"] == 8

    original = wan_lora.lora_state_dict(trained.transformer)
    read = wan_lora.read_lora(path)
    assert read.layout == "diffusers" and same(read.state_dict, original)

    plain = fresh(tiny)
    plain.load_lora_weights(str(path), adapter_name="plain")  # diffusers' own loader, unchanged
    assert same(wan_lora.lora_state_dict(plain.transformer, "plain"), original)
    config = plain.transformer.peft_config["plain"]
    assert (config.r, config.lora_alpha) == (RANK, 8)
    torch.testing.assert_close(forward(plain.transformer), forward(trained.transformer), rtol=0, atol=0)


def test_original_layout_export_import_is_exact_with_vace_blocks(trained, tiny, tmp_path):
    exported = wan_lora.save_lora(tmp_path / "ff_comfy.safetensors", trained.transformer, layout="original_wan")
    raw = load_file(str(exported))
    assert all(k.startswith("diffusion_model.") for k in raw)
    for key in ("diffusion_model.blocks.0.self_attn.q.lora_A.weight", "diffusion_model.blocks.3.cross_attn.o.lora_B.weight",
                "diffusion_model.blocks.2.ffn.0.alpha", "diffusion_model.vace_blocks.1.self_attn.k.lora_A.weight",
                "diffusion_model.vace_blocks.0.ffn.2.lora_B.weight"):
        assert key in raw
    assert len(raw) == 3 * 60 and float(raw["diffusion_model.vace_blocks.0.self_attn.v.alpha"]) == 8.0

    back = wan_lora.read_lora(exported)
    assert back.layout == "original_wan"
    assert same(back.state_dict, wan_lora.lora_state_dict(trained.transformer))
    assert (back.lora_config["r"], back.lora_config["lora_alpha"]) == (RANK, 8)

    again = wan_lora.convert_lora_file(exported, tmp_path / "again.safetensors", "original_wan")
    assert same(load_file(str(again)), raw)

    loaded = fresh(tiny)
    wan_lora.load_lora(loaded, exported)
    torch.testing.assert_close(forward(loaded.transformer), forward(trained.transformer), rtol=0, atol=0)


def test_original_layout_keeps_per_module_ranks_and_alphas():
    gen = torch.Generator().manual_seed(0)
    raw = {}
    for module, rank, alpha in (("blocks.0.self_attn.q", 4, 4.0), ("blocks.0.ffn.0", 2, 1.0), ("vace_blocks.0.cross_attn.k", 4, 4.0)):
        out = TINY_WIDTH if "ffn" not in module else TINY_TRANSFORMER_CONFIG["ffn_dim"]
        raw[f"diffusion_model.{module}.lora_A.weight"] = torch.randn(rank, TINY_WIDTH, generator=gen)
        raw[f"diffusion_model.{module}.lora_B.weight"] = torch.randn(out, rank, generator=gen)
        raw[f"diffusion_model.{module}.alpha"] = torch.tensor(alpha)
    state, config = wan_lora.from_original_layout(raw)
    assert config["rank_pattern"] == {"blocks.0.ffn.net.0.proj": 2} and config["alpha_pattern"] == {"blocks.0.ffn.net.0.proj": 1.0}
    assert "transformer.vace_blocks.0.attn2.to_k.lora_A.weight" in state
    assert same(wan_lora.to_original_layout(state, config), raw)


def test_fused_equals_unfused(tiny):
    pipe = fresh(tiny)
    wan_lora.add_lora(pipe.transformer, wan_lora.LoraSpec(rank=RANK))
    randomize_lora(pipe.transformer, seed=3, std=0.3)
    base_weight = pipe.transformer.blocks[0].attn1.to_q.base_layer.weight.detach().clone()
    unfused = forward(pipe.transformer)
    wan_lora.fuse_lora(pipe, scale=1.0)
    assert wan_lora.lora_is_fused(pipe.transformer)
    fused = forward(pipe.transformer)
    torch.testing.assert_close(fused, unfused, rtol=1e-5, atol=1e-5)
    assert (fused - unfused).abs().max() < 1e-4 * unfused.abs().max()
    wan_lora.unfuse_lora(pipe)
    assert not wan_lora.lora_is_fused(pipe.transformer)
    torch.testing.assert_close(pipe.transformer.blocks[0].attn1.to_q.base_layer.weight, base_weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(forward(pipe.transformer), unfused, rtol=1e-5, atol=1e-5)


def test_lora_scale_through_attention_kwargs(trained):
    def at(scale):
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            return trained.transformer(
                hidden_states=torch.randn(1, 16, 3, 8, 8, generator=gen), timestep=torch.tensor([400.0]),
                encoder_hidden_states=torch.randn(1, 6, TINY_TRANSFORMER_CONFIG["text_dim"], generator=gen),
                control_hidden_states=torch.randn(1, 96, 3, 8, 8, generator=gen), return_dict=False,
                attention_kwargs={"scale": scale},
            )[0]

    trained.transformer.disable_adapters()
    without = forward(trained.transformer)
    trained.transformer.enable_adapters()
    assert torch.equal(at(0.0), without)
    assert (at(1.0) - without).abs().max() > 1e-3
    assert torch.equal(at(1.0), forward(trained.transformer))  # scale restored after the call


def test_use_lora_loads_only_when_the_file_changes(tiny, tmp_path):
    import os

    source = fresh(tiny)
    wan_lora.add_lora(source.transformer, wan_lora.LoraSpec(rank=RANK))
    randomize_lora(source.transformer, seed=8, std=0.3)
    path = wan_lora.save_lora(tmp_path / "ff.safetensors", source.transformer)
    pipe = fresh(tiny)
    wan_lora.use_lora(pipe, path)
    first = pipe.transformer.blocks[0].attn1.to_q.lora_A[wan_lora.ADAPTER_NAME]
    assert same(wan_lora.lora_state_dict(pipe.transformer), wan_lora.lora_state_dict(source.transformer))
    wan_lora.use_lora(pipe, path)
    assert pipe.transformer.blocks[0].attn1.to_q.lora_A[wan_lora.ADAPTER_NAME] is first  # not reloaded
    randomize_lora(source.transformer, seed=9, std=0.3)  # a re-trained file at the same path
    wan_lora.save_lora(path, source.transformer)
    os.utime(path, ns=(1, os.stat(path).st_mtime_ns + 10**9))
    wan_lora.use_lora(pipe, path)
    assert same(wan_lora.lora_state_dict(pipe.transformer), wan_lora.lora_state_dict(source.transformer))
    wan_lora.use_lora(pipe, None)
    assert not wan_lora.has_lora(pipe.transformer)
    with pytest.raises(MissingModelError, match=r"The FaithfulFaces LoRA is missing: folder .*, file gone.safetensors not found"):
        wan_lora.use_lora(pipe, tmp_path / "gone.safetensors")


def test_wrong_files_name_the_problem(trained, tmp_path):
    aligner = save_checkpoint(tmp_path / "aligner.safetensors", {"w": torch.zeros(2)}, kind="aligner", format=1, config={})
    with pytest.raises(CheckpointError, match=r"is a FaithfulFaces 'aligner' file, but a 'lora' file was expected here"):
        wan_lora.read_lora(aligner)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"blocks.0.self_attn.q.lora_A.weight": torch.zeros(2, TINY_WIDTH)}, str(foreign))
    with pytest.raises(CheckpointError, match=r"is a safetensors file but not a FaithfulFaces lora file"):
        wan_lora.read_lora(foreign)
    half = save_checkpoint(tmp_path / "half.safetensors", {"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(2, TINY_WIDTH)},
                           kind="lora", format=1, config={})
    with pytest.raises(CheckpointError, match=r"LoRA module 'diffusion_model.blocks.0.self_attn.q' has no lora_B weight"):
        wan_lora.read_lora(half)
    diff = save_checkpoint(tmp_path / "diff.safetensors", {"diffusion_model.blocks.0.self_attn.q.diff": torch.zeros(TINY_WIDTH, TINY_WIDTH)},
                           kind="lora", format=1, config={})
    with pytest.raises(CheckpointError, match=r"'diffusion_model.blocks.0.self_attn.q.diff' is not a lora_A / lora_B / alpha entry"):
        wan_lora.read_lora(diff)
    wide = save_checkpoint(tmp_path / "wide.safetensors", {
        "diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.zeros(2, 1536),
        "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.zeros(1536, 2)}, kind="lora", format=1, config={})
    with pytest.raises(CheckpointError, match=rf"is for a 1536→1536 layer, but this transformer's is {TINY_WIDTH}→{TINY_WIDTH}: the LoRA was trained for another model size"):
        wan_lora.load_lora(trained, wide)
    deep = save_checkpoint(tmp_path / "deep.safetensors", {
        "diffusion_model.blocks.30.self_attn.q.lora_A.weight": torch.zeros(2, TINY_WIDTH),
        "diffusion_model.blocks.30.self_attn.q.lora_B.weight": torch.zeros(TINY_WIDTH, 2)}, kind="lora", format=1, config={})
    with pytest.raises(CheckpointError, match=r"'transformer.blocks.30.attn1.to_q.lora_A.weight' names a module this transformer does not have"):
        wan_lora.load_lora(trained, deep)
