"""Several VACE references on the native path, against ComfyUI's WanVaceToVideo and diffusers.

ComfyUI's code runs in a subprocess (its modules must not leak into this session). There one
random full-size Wan 2.1 VAE (ComfyUI's own ``WanVAE`` class, original key layout) is loaded by
ComfyUI's ``VAE`` and, through diffusers' key converter, into diffusers' ``AutoencoderKLWan``;
ComfyUI's ``WanVaceToVideo`` class, our node and ``WanVACEPipeline``'s own reference handling
then lay out the same images at a small spatial size.
"""

from __future__ import annotations

import textwrap

import numpy as np

from faithfulfaces_core.host import PACK_ROOT

SCRIPT = textwrap.dedent(
    """
    import json, sys, types
    comfy_dir, pack_root, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.path[:0] = [comfy_dir, pack_root]
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import numpy as np, torch, comfy.sd, comfy.latent_formats
    from comfy.ldm.wan.vae import WanVAE
    from comfy_extras.nodes_wan import WanVaceToVideo
    pkg = types.ModuleType("ff_nodes"); pkg.__path__ = [pack_root + "/nodes"]; sys.modules["ff_nodes"] = pkg
    from ff_nodes.native import WanVaceToVideoReferences
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanVACEPipeline
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers
    from PIL import Image
    from faithfulfaces_core.tiny.wan import build_tiny_transformer

    torch.manual_seed(seed)
    shapes = WanVAE(dim=96, z_dim=16, temperal_downsample=[False, True, True]).state_dict()  # ComfyUI skips init
    sd = {k: torch.ones_like(v) if k.endswith("gamma") else torch.randn(v.shape) / max(1, v[0].numel()) ** 0.5
          for k, v in sorted(shapes.items())}
    vae = comfy.sd.VAE(sd=dict(sd))
    dvae = AutoencoderKLWan()
    dvae.load_state_dict(convert_wan_vae_to_diffusers(dict(sd)), strict=True)
    W = H = 32; F = 5
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (2, H, W, 3), dtype=np.uint8)
    refs = torch.from_numpy(pixels).float() / 255.0
    cond = lambda: [[torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(1)), {}]]
    out = {"vae": type(vae.first_stage_model).__name__}

    theirs = WanVaceToVideo.execute(cond(), cond(), vae, W, H, F, 1, 0.8, None, None, refs[:1]).args
    ours = WanVaceToVideoReferences.execute(cond(), cond(), vae, W, H, F, 1, 0.8, None, None, refs[:1]).args
    for side in (0, 1):
        a, b = theirs[side][0][1], ours[side][0][1]
        out[f"one.{side}"] = all(torch.equal(x, y) for k in ("vace_frames", "vace_mask") for x, y in zip(a[k], b[k]))
        out[f"one.{side}.diff"] = {k: [float((x - y).abs().max()) if x.shape == y.shape else str(x.shape) + str(y.shape)
                                       for x, y in zip(a[k], b[k])] for k in ("vace_frames", "vace_mask")}
        out[f"one.{side}.strength"] = a["vace_strength"] == b["vace_strength"]
        out[f"one.{side}.text"] = torch.equal(theirs[side][0][0], ours[side][0][0])
    out["one.latent"] = torch.equal(theirs[2]["samples"], ours[2]["samples"])
    out["one.trim"] = [theirs[3], ours[3]]

    several = WanVaceToVideoReferences.execute(cond(), cond(), vae, W, H, F, 1, 1.0, None, None, refs).args
    frames, mask = several[0][0][1]["vace_frames"][0], several[0][0][1]["vace_mask"][0]
    fmt = comfy.latent_formats.Wan21()
    normalised = torch.cat([fmt.process_in(frames[:, :16]), fmt.process_in(frames[:, 16:])], dim=1)
    pipe = WanVACEPipeline(tokenizer=None, text_encoder=None, transformer=build_tiny_transformer(seed=0), vae=dvae,
                           scheduler=FlowMatchEulerDiscreteScheduler())
    images = [Image.fromarray(p) for p in pixels]
    with torch.no_grad():
        video, vmask, prepared = pipe.preprocess_conditions(None, None, images, 1, H, W, F, torch.float32, "cpu")
        latents = pipe.prepare_video_latents(video, vmask, prepared, None, "cpu")
        dmask = pipe.prepare_masks(vmask, prepared, None)
    out["several.shape"] = [list(frames.shape), list(latents.shape), list(mask.shape), list(dmask.shape)]
    out["several.trim"] = several[3]
    out["several.latent_frames"] = several[2]["samples"].shape[2]
    out["several.max_diff"] = float((normalised - latents).abs().max())
    out["several.scale"] = float(latents.abs().max())
    out["several.mask_equal"] = torch.equal(mask, dmask)
    out["several.refs_differ"] = float((latents[:, :, 0] - latents[:, :, 1]).abs().max())
    print("RESULT " + json.dumps(out))
    """
)


def test_one_reference_is_wan_vace_to_video_and_several_match_diffusers(comfy_dir, comfy_script):
    seed = int(np.random.SeedSequence().entropy % 2**31)
    out = comfy_script(SCRIPT, comfy_dir, PACK_ROOT, seed, timeout=600)
    assert out["vae"] == "WanVAE"
    for side in (0, 1):
        assert out[f"one.{side}"] and out[f"one.{side}.strength"] and out[f"one.{side}.text"], out
    assert out["one.latent"] and out["one.trim"] == [1, 1]
    assert out["several.shape"] == [[1, 32, 4, 4, 4], [1, 32, 4, 4, 4], [1, 64, 4, 4, 4], [1, 64, 4, 4, 4]]
    assert out["several.trim"] == 2 and out["several.latent_frames"] == 4
    assert out["several.mask_equal"]
    assert out["several.refs_differ"] > 1e-3  # the two references are told apart (and their order is checked)
    assert out["several.max_diff"] <= 1e-4 * max(1.0, out["several.scale"]), out
