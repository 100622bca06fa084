"""generate(): bit-identity with plain diffusers, determinism, progress / cancel, size checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faithfulfaces_core.errors import FaithfulFacesError
from faithfulfaces_core.tiny.native import randomize_lora
from faithfulfaces_core.tiny.wan import TINY_WIDTH, build_tiny_pipeline
from faithfulfaces_core.wan import lora as wan_lora
from faithfulfaces_core.wan.generate import GenerationCancelled, check_video_size, generate
from faithfulfaces_core.wan.injection import PoseTokenAttnProcessor, get_pose_injection
from faithfulfaces_core.wan.loading import load_pipeline

KW = dict(prompt="a young woman turns her head left", negative_prompt="blurry low quality",
          width=32, height=32, num_frames=5, steps=2, guidance_scale=5.0, seed=7)



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("wan_gen"), seed=0)


@pytest.fixture(scope="module")
def pipe(tiny):
    """The tiny pipeline through our loader, with a random (non-zero) LoRA loaded."""
    pipe = load_pipeline(tiny.diffusers_dir, device="cpu")
    wan_lora.add_lora(pipe.transformer, wan_lora.LoraSpec(rank=4))
    randomize_lora(pipe.transformer, seed=1, std=0.5)
    return pipe


@pytest.fixture(scope="module")
def face():
    return np.random.default_rng(0).integers(0, 256, (40, 28, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tokens(pipe):
    return torch.randn(1, 4, pipe.transformer.config.num_attention_heads * pipe.transformer.config.attention_head_dim,
                       generator=torch.Generator().manual_seed(5))


def plain_diffusers(tiny, face, **overrides):
    from diffusers import WanVACEPipeline
    from PIL import Image

    kw = {**KW, **overrides}
    pipe = WanVACEPipeline.from_pretrained(tiny.diffusers_dir, local_files_only=True)
    return pipe(
        prompt=kw["prompt"], negative_prompt=kw["negative_prompt"], reference_images=[Image.fromarray(face)],
        height=kw["height"], width=kw["width"], num_frames=kw["num_frames"], num_inference_steps=kw["steps"],
        guidance_scale=kw["guidance_scale"], generator=torch.Generator().manual_seed(kw["seed"]), output_type="np",
    ).frames[0]


def test_no_tokens_and_lora_scale_zero_is_bit_identical_to_plain_diffusers(tiny, pipe, face):
    ours = generate(pipe, reference_image=face, lora_scale=0.0, **KW)
    ref = plain_diffusers(tiny, face)
    assert ours.fps == 16
    assert ours.frames.shape == (5, 32, 32, 3) and ours.frames.dtype == np.float32
    assert 0.0 <= ours.frames.min() and ours.frames.max() <= 1.0
    assert np.array_equal(ours.frames, ref)
    # the LoRA is really there: at scale 1 the frames move
    assert not np.allclose(generate(pipe, reference_image=face, lora_scale=1.0, **KW).frames, ref, atol=1e-3)


def test_tokens_change_frames_and_same_seed_repeats(pipe, face, tokens):
    base = generate(pipe, reference_image=face, lora_scale=0.0, **KW).frames
    a = generate(pipe, reference_image=face, lora_scale=0.0, pose_tokens=tokens, **KW).frames
    b = generate(pipe, reference_image=face, lora_scale=0.0, pose_tokens=tokens, **KW).frames
    assert np.abs(a - base).max() > 1e-3
    assert np.array_equal(a, b)
    other_seed = generate(pipe, reference_image=face, lora_scale=0.0, pose_tokens=tokens, **{**KW, "seed": 8}).frames
    assert np.abs(other_seed - a).max() > 1e-3
    # the call installed the injection for itself and took it away again
    assert get_pose_injection(pipe.transformer) is None
    assert not any(isinstance(b.attn1.processor, PoseTokenAttnProcessor) for b in pipe.transformer.blocks)


def test_zero_strength_and_empty_window_are_exactly_no_tokens(pipe, face, tokens):
    base = generate(pipe, reference_image=face, **KW).frames
    assert np.array_equal(generate(pipe, reference_image=face, pose_tokens=tokens, pose_strength=0.0, **KW).frames, base)
    empty = generate(pipe, reference_image=face, pose_tokens=tokens, pose_start=0.5, pose_end=0.5, **KW).frames
    assert np.array_equal(empty, base)
    full = generate(pipe, reference_image=face, pose_tokens=tokens, **KW).frames
    first_half = generate(pipe, reference_image=face, pose_tokens=tokens, pose_end=0.5, **KW).frames
    assert np.abs(first_half - base).max() > 1e-4 and np.abs(first_half - full).max() > 1e-4


def test_uncond_pose_only_matters_with_cfg(pipe, face, tokens):
    cond_only = generate(pipe, reference_image=face, pose_tokens=tokens, pose_on_negative=False, **KW).frames
    both = generate(pipe, reference_image=face, pose_tokens=tokens, pose_on_negative=True, **KW).frames
    assert np.abs(cond_only - both).max() > 1e-4
    no_cfg = {**KW, "guidance_scale": 1.0}
    assert np.array_equal(
        generate(pipe, reference_image=face, pose_tokens=tokens, pose_on_negative=False, **no_cfg).frames,
        generate(pipe, reference_image=face, pose_tokens=tokens, pose_on_negative=True, **no_cfg).frames,
    )


def test_reference_image_formats_agree(pipe, face):
    from PIL import Image

    frames = [
        generate(pipe, reference_image=ref, **KW).frames
        for ref in (face, face[None], face.astype(np.float32) / 255.0, Image.fromarray(face),
                    torch.from_numpy(face).permute(2, 0, 1).float()[None] / 255.0)
    ]
    for other in frames[1:]:
        assert np.array_equal(frames[0], other)


def test_progress_every_step_and_cancel_between_steps(pipe, face):
    seen: list[tuple[int, int]] = []
    generate(pipe, reference_image=face, progress=lambda s, n: seen.append((s, n)), **{**KW, "steps": 3})
    assert seen == [(1, 3), (2, 3), (3, 3)]

    seen.clear()
    with pytest.raises(GenerationCancelled, match="after step 2 of 4"):
        generate(pipe, reference_image=face, progress=lambda s, n: seen.append((s, n)),
                 cancel=lambda: len(seen) >= 2, **{**KW, "steps": 4})
    assert seen == [(1, 4), (2, 4)]
    with pytest.raises(GenerationCancelled, match="before the first step"):
        generate(pipe, reference_image=face, cancel=lambda: True, **KW)


def test_exceptions_from_callbacks_propagate_and_leave_the_model_clean(pipe, face, tokens):
    class HostInterrupt(Exception):
        pass

    calls = []

    def cancel():
        calls.append(1)
        if len(calls) == 2:  # the check before step 1, then after step 1
            raise HostInterrupt("interrupted by the host")
        return False

    with pytest.raises(HostInterrupt, match="interrupted by the host"):
        generate(pipe, reference_image=face, pose_tokens=tokens, cancel=cancel, **{**KW, "steps": 3})
    with pytest.raises(ZeroDivisionError):
        generate(pipe, reference_image=face, progress=lambda s, n: 1 / 0, **KW)
    assert get_pose_injection(pipe.transformer) is None
    assert not any(isinstance(b.attn1.processor, PoseTokenAttnProcessor) for b in pipe.transformer.blocks)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"width": 500}, "width 500 is not a multiple of 16 (at least 16), which Wan2.1 needs: use 496 or 512."),
        ({"height": 8}, "height 8 is not a multiple of 16 (at least 16), which Wan2.1 needs: use 16."),
        ({"height": 40}, "height 40 is not a multiple of 16 (at least 16), which Wan2.1 needs: use 32 or 48."),
        ({"num_frames": 50}, "num_frames 50 is not of the form 4k+1 (1, 5, 9, ..., 81), which Wan2.1 needs: use 49 or 53."),
        ({"num_frames": 0}, "num_frames 0 is not of the form 4k+1 (1, 5, 9, ..., 81), which Wan2.1 needs: use 1 or 5."),
        ({"num_frames": 80}, "num_frames 80 is not of the form 4k+1 (1, 5, 9, ..., 81), which Wan2.1 needs: use 77 or 81."),
        ({"width": 528}, "width 528 is larger than this model's 512: use 512 or less."),
        ({"steps": 0}, "steps 0 is not allowed: use a whole number ≥ 1 (Wan: 20–50)."),
        ({"guidance_scale": -1.0}, "guidance_scale (cfg) -1.0 is not allowed: use a finite number ≥ 0 (> 1 turns CFG on; Wan: 5)."),
        ({"prompt": ["a", "b"]}, "prompt must be one string (got list): WanVACEPipeline makes one video per call."),
        ({"conditioning_scale": [1.0, 1.0, 1.0]},
         "conditioning_scale has 3 values but the model has 2 VACE layers: give one number, or one per VACE layer."),
        ({"pose_strength": -0.5}, "Pose strength -0.5 is not allowed: use a finite number ≥ 0 (0 = off, 1 = as trained)."),
        ({"pose_start": 0.8, "pose_end": 0.2}, "Pose window start=0.8, end=0.2 is not allowed: use 0 ≤ start ≤ end ≤ 1"),
    ],
)
def test_rejected_inputs_name_the_fix(pipe, face, tokens, overrides, message):
    with pytest.raises(FaithfulFacesError) as err:
        generate(pipe, reference_image=face, pose_tokens=tokens, **{**KW, **overrides})
    assert message in str(err.value)


def test_batches_and_token_widths_are_rejected(pipe, face, tokens):
    with pytest.raises(FaithfulFacesError, match=r"The pose-token set has batch 2, but WanVACEPipeline makes one video per call"):
        generate(pipe, reference_image=face, pose_tokens=tokens.repeat(2, 1, 1), **KW)
    with pytest.raises(FaithfulFacesError, match=r"The reference image has batch 3, but WanVACEPipeline makes one video"):
        generate(pipe, reference_image=np.stack([face] * 3), **KW)
    with pytest.raises(FaithfulFacesError, match=rf"Pose tokens are 1536 wide but this Wan model is {TINY_WIDTH} wide"):
        generate(pipe, reference_image=face, pose_tokens=torch.zeros(1, 4, 1536), **KW)
    with pytest.raises(FaithfulFacesError, match=r"The reference image must be \[H, W, 3\] RGB; got shape \(40, 28\)"):
        generate(pipe, reference_image=face[..., 0], **KW)


def test_fused_lora_refuses_other_scales(pipe, face):
    wan_lora.fuse_lora(pipe, scale=1.0)
    try:
        with pytest.raises(FaithfulFacesError, match="The LoRA is fused into the weights, so lora_scale 0.5 cannot act"):
            generate(pipe, reference_image=face, lora_scale=0.5, **KW)
    finally:
        wan_lora.unfuse_lora(pipe)
    assert not wan_lora.lora_is_fused(pipe.transformer)


@pytest.mark.parametrize("frames", [1, 5, 9, 81])
def test_valid_sizes_pass(frames):
    check_video_size(832, 480, frames)


def test_several_references_are_bit_identical_to_diffusers_with_a_list(tiny, pipe, face):
    from diffusers import WanVACEPipeline
    from PIL import Image

    rng = np.random.default_rng(np.random.SeedSequence().entropy)
    faces = [face, rng.integers(0, 256, (40, 28, 3), dtype=np.uint8)]
    # a pipeline of its own: the module's shared one carries earlier tests' LoRA and injection
    fresh = WanVACEPipeline.from_pretrained(tiny.diffusers_dir, local_files_only=True)
    ours = generate(fresh, reference_images=np.stack(faces), lora_scale=0.0, **KW).frames
    plain = WanVACEPipeline.from_pretrained(tiny.diffusers_dir, local_files_only=True)
    ref = plain(prompt=KW["prompt"], negative_prompt=KW["negative_prompt"],
                reference_images=[Image.fromarray(f) for f in faces], height=32, width=32, num_frames=5,
                num_inference_steps=2, guidance_scale=5.0, generator=torch.Generator().manual_seed(KW["seed"]),
                output_type="np").frames[0]
    assert np.array_equal(ours, ref)
    assert not np.array_equal(ours, generate(pipe, reference_image=face, lora_scale=0.0, **KW).frames)
    with pytest.raises(FaithfulFacesError, match="not both"):
        generate(pipe, reference_image=face, reference_images=faces, **KW)
    with pytest.raises(FaithfulFacesError, match=r"3 reference images but only 2 latent frames \(5 frames\).*"
                                                 r"at most 2 references, or at least 9 frames"):
        generate(pipe, reference_images=faces + [face], **KW)


def test_several_token_sets_keep_the_first_and_say_so(tokens):
    from faithfulfaces_core.wan.generate import first_token_set

    same, none = first_token_set(tokens)
    assert same is tokens and none == []
    three = torch.cat([tokens, tokens + 1, tokens + 2])
    first, notes = first_token_set(three)
    assert torch.equal(first, tokens)
    assert notes == ["The pose token holds 3 token sets (one per face); this video used the first. "
                     "Set Global Pose Token's several_faces to 'pool' to use every face."]


def test_a_cached_pipeline_is_plain_again_after_lora_and_tokens(tiny, face, tokens):
    """ComfyUI keeps one pipeline for every run: earlier runs with the LoRA and tokens leave no trace.

    A pipeline of its own: the module's shared one went through fuse/unfuse, exact only up to rounding.
    """
    pipe = load_pipeline(tiny.diffusers_dir, device="cpu")
    wan_lora.add_lora(pipe.transformer, wan_lora.LoraSpec(rank=4))
    randomize_lora(pipe.transformer, seed=1, std=0.5)
    generate(pipe, reference_image=face, lora_scale=1.0, pose_tokens=tokens, **KW)
    generate(pipe, reference_image=face, lora_scale=0.7, pose_tokens=tokens, pose_strength=0.5, **KW)
    assert np.array_equal(generate(pipe, reference_image=face, lora_scale=0.0, **KW).frames, plain_diffusers(tiny, face))
