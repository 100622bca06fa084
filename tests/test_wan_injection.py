"""Pose-token injection: the maths against independent references, exact removal, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from faithfulfaces_core.errors import FaithfulFacesError
from faithfulfaces_core.tiny.wan import TINY_TRANSFORMER_CONFIG, TINY_WIDTH, build_tiny_pipeline
from faithfulfaces_core.wan.generate import generate
from faithfulfaces_core.wan.injection import (
    PoseTokenAttnProcessor,
    get_pose_injection,
    install_pose_injection,
    pose_kv_attention,
    remove_pose_injection,
)

WIDTH = TINY_WIDTH



@pytest.fixture
def model():
    from diffusers import WanVACETransformer3DModel

    torch.manual_seed(11)
    model = WanVACETransformer3DModel(**TINY_TRANSFORMER_CONFIG).eval()
    yield model
    remove_pose_injection(model)


@pytest.fixture
def inputs():
    gen = torch.Generator().manual_seed(3)
    return dict(
        hidden_states=torch.randn(1, 16, 3, 8, 8, generator=gen),
        timestep=torch.tensor([600.0]),
        encoder_hidden_states=torch.randn(1, 9, TINY_TRANSFORMER_CONFIG["text_dim"], generator=gen),
        control_hidden_states=torch.randn(1, 96, 3, 8, 8, generator=gen),
        return_dict=False,
    )


def run(model, inputs) -> torch.Tensor:
    return model(**inputs)[0]


def reference_attention(q, k, v, pose_k, pose_v, strength):
    """Softmax attention written out, with the pose logits shifted by log(strength)."""
    keys = torch.cat([k, pose_k], 1)
    values = torch.cat([v, pose_v], 1)
    logits = torch.einsum("blhd,bshd->bhls", q, keys) / math.sqrt(q.shape[-1])
    logits[..., k.shape[1]:] += math.log(strength)
    return torch.einsum("bhls,bshd->blhd", logits.softmax(-1), values)


@pytest.mark.parametrize("strength", [1.0, 0.3, 2.5])
def test_pose_kv_attention_matches_written_out_softmax(strength):
    gen = torch.Generator().manual_seed(int(strength * 10))
    q, k, v = (torch.randn(2, 7, 3, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    pk, pv = (torch.randn(2, 4, 3, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    ours = pose_kv_attention(q, k, v, pk, pv, strength)
    torch.testing.assert_close(ours, reference_attention(q, k, v, pk, pv, strength), rtol=1e-10, atol=1e-10)
    # one token set broadcast over the batch
    torch.testing.assert_close(
        pose_kv_attention(q, k, v, pk[:1], pv[:1], strength),
        reference_attention(q, k, v, pk[:1].expand(2, -1, -1, -1), pv[:1].expand(2, -1, -1, -1), strength),
        rtol=1e-10, atol=1e-10,
    )


def test_pose_kv_attention_zero_strength_is_plain_attention():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 5, 2, 8, generator=gen) for _ in range(3))
    pk, pv = (torch.randn(1, 3, 2, 8, generator=gen) for _ in range(2))
    plain = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    assert torch.equal(pose_kv_attention(q, k, v, pk, pv, 0.0), plain.transpose(1, 2))


def test_processor_equals_tokens_appended_through_diffusers_own_processor(model):
    """Independent reference: append the tokens to the sequence, give them identity rotary
    (cos 1, sin 0 = no position), run diffusers' own WanAttnProcessor, keep the video rows."""
    injection = install_pose_injection(model)
    attn = model.blocks[1].attn1
    gen = torch.Generator().manual_seed(4)
    hidden = torch.randn(1, 12, WIDTH, generator=gen)
    tokens = torch.randn(1, 5, WIDTH, generator=gen)
    cos, sin = model.rope(torch.zeros(1, 16, 3, 4, 4))  # 3·2·2 = 12 positions
    with injection.use(tokens), torch.no_grad():
        ours = attn(hidden, None, None, (cos, sin))
        ones = torch.ones(1, 5, 1, cos.shape[-1], dtype=cos.dtype)
        reference = attn.processor.original(
            attn, torch.cat([hidden, tokens], 1), None, None,
            (torch.cat([cos, ones], 1), torch.cat([sin, torch.zeros_like(ones)], 1)),
        )[:, :12]
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_no_tokens_is_bit_identical_and_tokens_change_the_output(model, inputs):
    with torch.no_grad():
        untouched = run(model, inputs)
        injection = install_pose_injection(model)
        assert torch.equal(run(model, inputs), untouched)
        tokens = torch.randn(1, 3, WIDTH, generator=torch.Generator().manual_seed(9))
        with injection.use(tokens):
            changed = run(model, inputs)
        with injection.use(tokens, strength=0.0):
            assert torch.equal(run(model, inputs), untouched)
        assert torch.equal(run(model, inputs), untouched)  # use() put the no-token state back
    assert (changed - untouched).abs().max() > 1e-4


def test_install_and_remove_restore_the_model_exactly(model, inputs):
    processors = {name: attn.processor for name, attn in _attentions(model)}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    pre_hooks = len(model._forward_pre_hooks)
    with torch.no_grad():
        untouched = run(model, inputs)

    injection = install_pose_injection(model, include_vace_blocks=True)
    assert get_pose_injection(model) is injection
    wrapped = {name for name, attn in _attentions(model) if isinstance(attn.processor, PoseTokenAttnProcessor)}
    assert wrapped == {name for name in processors if name.endswith("attn1")}
    assert model.state_dict().keys() == state.keys()
    with pytest.raises(FaithfulFacesError, match="already installed"):
        install_pose_injection(model)
    with injection.use(torch.randn(1, 2, WIDTH)), torch.no_grad():
        run(model, inputs)

    injection.remove()
    assert get_pose_injection(model) is None
    assert all(attn.processor is processors[name] for name, attn in _attentions(model))
    assert len(model._forward_pre_hooks) == pre_hooks
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)
    with torch.no_grad():
        assert torch.equal(run(model, inputs), untouched)


def _attentions(model):
    return [(n, m) for n, m in model.named_modules() if n.endswith(("attn1", "attn2"))]


def test_vace_blocks_only_when_asked(model):
    injection = install_pose_injection(model)
    assert all(isinstance(b.attn1.processor, PoseTokenAttnProcessor) for b in model.blocks)
    assert not any(isinstance(b.attn1.processor, PoseTokenAttnProcessor) for b in model.vace_blocks)
    assert not any(isinstance(b.attn2.processor, PoseTokenAttnProcessor) for b in model.blocks)
    injection.remove()


def test_gradients_reach_the_tokens(model, inputs):
    injection = install_pose_injection(model)
    tokens = torch.randn(1, 3, WIDTH, generator=torch.Generator().manual_seed(2), requires_grad=True)
    with injection.use(tokens):
        loss = run(model, inputs).square().mean()
    loss.backward()
    assert tokens.grad is not None and tokens.grad.shape == tokens.shape
    assert torch.isfinite(tokens.grad).all() and tokens.grad.abs().sum() > 0
    # the gradient is the true one: a small step along it lowers the loss
    with injection.use(tokens.detach() - 1e-2 * tokens.grad / tokens.grad.norm()), torch.no_grad():
        assert run(model, inputs).square().mean() < loss.detach()


def test_attention_backend_setting_reaches_the_wrapped_processor(model):
    injection = install_pose_injection(model)
    original = model.blocks[0].attn1.processor.original
    model.set_attention_backend("native")
    assert str(original._attention_backend.value) == "native"
    injection.remove()
    assert model.blocks[0].attn1.processor is original


def test_token_checks_name_the_fix(model):
    injection = install_pose_injection(model)
    with pytest.raises(FaithfulFacesError, match=rf"Pose tokens are 5120 wide but this Wan model is {WIDTH} wide"):
        injection.set_tokens(torch.zeros(1, 4, 5120))
    with pytest.raises(FaithfulFacesError, match=rf"Pose tokens must be a float tensor \[batch, tokens, width\]; got a \(4, {WIDTH}\)"):
        injection.set_tokens(torch.zeros(4, WIDTH))
    with pytest.raises(FaithfulFacesError, match=r"Pose strength nan is not allowed"):
        injection.set_tokens(torch.zeros(1, 4, WIDTH), strength=float("nan"))


def test_pipeline_calls_are_labelled_cond_then_uncond(tmp_path):
    """Pins the pass detection to the installed diffusers: the call the injection labels
    'uncond' receives the negative prompt's embeddings, every step."""
    from faithfulfaces_core.wan.loading import load_pipeline

    paths = build_tiny_pipeline(tmp_path, seed=1)
    pipe = load_pipeline(paths.diffusers_dir, device="cpu")
    injection = install_pose_injection(pipe.transformer)
    seen = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((injection.current_pass, injection.step, kwargs["encoder_hidden_states"])),
        with_kwargs=True,
    )
    face = np.full((16, 16, 3), 128, np.uint8)
    generate(pipe, prompt="a man smiles", negative_prompt="blurry", reference_image=face, pose_tokens=torch.zeros(1, 2, WIDTH),
             width=32, height=32, num_frames=5, steps=3, guidance_scale=4.0)
    hook.remove()
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt("a man smiles", "blurry", max_sequence_length=512, device=torch.device("cpu"))
    assert [(p, s) for p, s, _ in seen] == [("cond", 0), ("uncond", 0), ("cond", 1), ("uncond", 1), ("cond", 2), ("uncond", 2)]
    for label, _, embeds in seen:
        assert torch.equal(embeds, cond if label == "cond" else uncond)
    injection.remove()
