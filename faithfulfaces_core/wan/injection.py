"""Pose-token injection: the global pose tokens join every block's self-attention as extra keys/values.

The contract is in docs/method.md. For a block's self-attention (``attn1``) with video
queries/keys/values ``q, k, v`` ``[B, L, H, D]`` (rotary already applied to ``q`` and ``k``), the pose tokens
``P`` ``[B, M, C]`` (``C = H·D``) are projected by that block's own ``to_k`` / ``norm_k`` /
``to_v`` into ``pose_k, pose_v`` ``[B, M, H, D]`` *without* rotary (they are global, not at a
place in the video) and appended after the video keys::

    out = softmax(q·[k; pose_k]ᵀ/√D + [0 … 0; log s … log s]) · [v; pose_v]

``s`` is the pose strength: each pose key counts as ``s`` copies of itself in the softmax.
``s = 1`` is plain concatenation, ``s = 0`` is exactly no effect (the original processor runs),
``s > 1`` pulls harder. That maths is ``pose_kv_attention`` — one pure function, so ComfyUI's
native Wan model (``native/pose_patch.py``) calls it too.

The diffusers side is an attention-processor wrapper (diffusers used as a library, nothing
copied): ``PoseTokenAttnProcessor`` holds the block's original processor and calls it whenever
no tokens are active, so outputs are then bit-identical. ``install_pose_injection`` swaps the
wrappers in; ``PoseTokenInjection.remove`` puts the very same original processor objects back.
The wrapper is not an ``nn.Module``, so the state dict never changes.

Which calls see the tokens. ``WanVACEPipeline`` runs the conditional and the unconditional
(negative-prompt) pass as two separate transformer calls per step, conditional first. Inside a
``sampling`` session the injection counts the calls of each step (a forward pre-hook) to know
which pass runs; the unconditional pass sees the tokens only when ``pose_on_negative=True`` (default
no: CFG then pushes towards the pose tokens, as IP-Adapter does with its image embeds). The
``start``/``end`` window (fractions of the denoising steps, like IP-Adapter's start/end) is read
from the step counter, which ``step_finished`` advances from the pipeline's
``callback_on_step_end``. Outside a session (training: direct transformer calls) every call is
conditional and the window is not used. Gradients flow from the output back to the tokens.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import FaithfulFacesError
from ..numbers import finite_number

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """PyTorch SDPA on ``[B, L, H, D]`` tensors; ``bias`` is added to the logits ``[.., L, S]``."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=bias)
    return out.transpose(1, 2)


def pose_kv_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    pose_k: torch.Tensor,
    pose_v: torch.Tensor,
    strength: float = 1.0,
    attention: AttentionFn | None = None,
) -> torch.Tensor:
    """Attention of ``q`` over the video keys plus the pose keys, the latter weighted by ``strength``.

    ``q, k, v`` ``[B, L, H, D]`` (rotary applied), ``pose_k, pose_v`` ``[B or 1, M, H, D]`` (no
    rotary) → ``[B, L, H, D]``. ``attention(q, k, v)`` is the unbiased attention kernel (e.g. a
    diffusers backend); a strength other than 1 needs a logit bias, which runs on PyTorch SDPA.
    """
    attend = attention or sdpa_attention
    if strength == 0 or pose_k.shape[1] == 0:
        return attend(q, k, v)
    batch = q.shape[0]
    pose_k = pose_k.to(k.dtype).expand(batch, -1, -1, -1)
    pose_v = pose_v.to(v.dtype).expand(batch, -1, -1, -1)
    keys = torch.cat([k, pose_k], dim=1)
    values = torch.cat([v, pose_v], dim=1)
    if strength == 1:
        return attend(q, keys, values)
    bias = q.new_zeros(1, 1, 1, keys.shape[1])
    bias[..., k.shape[1]:] = math.log(strength)
    return sdpa_attention(q, keys, values, bias)


def apply_wan_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's rotary embedding on interleaved (even, odd) channel pairs.

    ``x`` ``[B, L, H, D]``; ``cos, sin`` ``[1, L, 1, D]`` as ``WanRotaryPosEmbed`` returns them
    (each frequency repeated for its pair). Written into one output, in ``x``'s dtype.
    """
    x1, x2 = x[..., 0::2], x[..., 1::2]
    c, s = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * c - x2 * s
    out[..., 1::2] = x1 * s + x2 * c
    return out


def check_pose_tokens(tokens, width: int, *, fix: str) -> None:
    """``tokens`` must be a float ``[B, M, width]`` tensor; ``fix`` says where correct tokens come from.

    One check for both generator stacks (the diffusers injection and the native ComfyUI patch).
    """
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3 or not tokens.is_floating_point():
        got = f"a {tuple(tokens.shape)} {tokens.dtype} tensor" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise FaithfulFacesError(f"Pose tokens must be a float tensor [batch, tokens, width]; got {got}. {fix}")
    if tokens.shape[-1] != width:
        raise FaithfulFacesError(
            f"Pose tokens are {tokens.shape[-1]} wide but this Wan model is {width} wide "
            "(1536 = Wan2.1-VACE-1.3B, 5120 = 14B): use an aligner file trained for this model size."
        )


@dataclass(frozen=True)
class PoseTokenSettings:
    """How the tokens act: strength (≥ 0), the step window [start, end) and whether the negative pass sees them."""

    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0
    pose_on_negative: bool = False

    def check(self) -> None:
        finite_number(self.strength, "Pose strength", low=0, hint="0 = off, 1 = as trained")
        finite_number(self.start, "Pose start", low=0, high=1, hint="fraction of the denoising steps")
        finite_number(self.end, "Pose end", low=0, high=1, hint="fraction of the denoising steps")
        if not self.start <= self.end:
            raise FaithfulFacesError(
                f"Pose window start={self.start}, end={self.end} is not allowed: use 0 ≤ start ≤ end ≤ 1 "
                "(fractions of the denoising steps; 0 and 1 = every step)."
            )


class PoseTokenAttnProcessor:
    """Wraps one self-attention processor; delegates to it unless pose tokens are active."""

    def __init__(self, original, injection: PoseTokenInjection) -> None:
        self.original = original
        self._injection = weakref.ref(injection)

    # diffusers' set_attention_backend / context parallel write these on whatever processor sits there
    @property
    def _attention_backend(self):
        return getattr(self.original, "_attention_backend", None)

    @_attention_backend.setter
    def _attention_backend(self, value) -> None:
        self.original._attention_backend = value

    @property
    def _parallel_config(self):
        return getattr(self.original, "_parallel_config", None)

    @_parallel_config.setter
    def _parallel_config(self, value) -> None:
        self.original._parallel_config = value

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None, **kwargs):
        injection = self._injection()
        tokens = None if injection is None else injection.active_tokens()
        if tokens is None or encoder_hidden_states is not None:
            return self.original(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb, **kwargs)
        if attention_mask is not None:
            raise RuntimeError("Pose-token injection got an attention mask; Wan's self-attention never passes one.")
        return self._attend_with_pose(attn, hidden_states, rotary_emb, tokens, injection.settings.strength)

    def _attend_with_pose(self, attn, hidden_states, rotary_emb, tokens, strength: float) -> torch.Tensor:
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        batch = hidden_states.shape[0]
        if tokens.shape[0] not in (1, batch):
            raise FaithfulFacesError(
                f"Pose tokens have batch {tokens.shape[0]} but the transformer runs batch {batch}: pass one "
                "token set per video, or a single one for all."
            )
        tokens = tokens.to(device=hidden_states.device, dtype=hidden_states.dtype)
        heads = attn.heads
        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (heads, -1))
        k = attn.norm_k(attn.to_k(hidden_states)).unflatten(2, (heads, -1))
        v = attn.to_v(hidden_states).unflatten(2, (heads, -1))
        pose_k = attn.norm_k(attn.to_k(tokens)).unflatten(2, (heads, -1))
        pose_v = attn.to_v(tokens).unflatten(2, (heads, -1))
        if rotary_emb is not None:
            q = apply_wan_rotary(q, *rotary_emb)
            k = apply_wan_rotary(k, *rotary_emb)
        backend = self._attention_backend

        def attend(q_, k_, v_):
            return dispatch_attention_fn(q_, k_, v_, backend=backend)

        out = pose_kv_attention(q, k, v, pose_k, pose_v, strength, attention=attend)
        out = out.flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))


_INSTALLED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _target_attentions(transformer, include_vace_blocks: bool) -> list:
    blocks = list(transformer.blocks)
    if include_vace_blocks:
        blocks += list(getattr(transformer, "vace_blocks", []))
    return [block.attn1 for block in blocks]


class PoseTokenInjection:
    """The injection installed on one Wan transformer: tokens, settings, pass and step bookkeeping."""

    def __init__(self, transformer, *, include_vace_blocks: bool = False) -> None:
        if transformer in _INSTALLED:
            raise FaithfulFacesError(
                "Pose-token injection is already installed on this transformer; use get_pose_injection() "
                "to reach it, or remove it first."
            )
        self._transformer = weakref.ref(transformer)  # _INSTALLED must not keep its key alive
        self.include_vace_blocks = include_vace_blocks
        self.width = int(transformer.config.num_attention_heads * transformer.config.attention_head_dim)
        self.tokens: torch.Tensor | None = None
        self.settings = PoseTokenSettings()
        self.current_pass: str | None = None
        self._num_steps: int | None = None
        self._cfg = False
        self._step = 0
        self._calls = 0
        self._originals: list[tuple[object, object, PoseTokenAttnProcessor]] = []
        for attn in _target_attentions(transformer, include_vace_blocks):
            wrapper = PoseTokenAttnProcessor(attn.processor, self)
            self._originals.append((attn, attn.processor, wrapper))
            attn.set_processor(wrapper)
        self._hook = transformer.register_forward_pre_hook(self._on_forward)
        _INSTALLED[transformer] = self

    # --- installation -----------------------------------------------------------------------
    def remove(self) -> None:
        """Put the original processor objects back and drop the hook: the model is as before."""
        for attn, original, wrapper in self._originals:
            if attn.processor is wrapper:
                attn.set_processor(original)
        self._originals.clear()
        self._hook.remove()
        self.tokens = None
        transformer = self._transformer()
        if transformer is not None:
            _INSTALLED.pop(transformer, None)

    # --- tokens -----------------------------------------------------------------------------
    def set_tokens(
        self,
        tokens: torch.Tensor | None,
        *,
        strength: float = 1.0,
        start: float = 0.0,
        end: float = 1.0,
        pose_on_negative: bool = False,
    ) -> None:
        """Use ``tokens`` ``[B, M, C]`` (``None``: no injection) with these settings from now on."""
        settings = PoseTokenSettings(float(strength), float(start), float(end), bool(pose_on_negative))
        settings.check()
        if tokens is not None:
            check_pose_tokens(tokens, self.width, fix="Pass the aligner's pose tokens (PoseToken.tokens).")
        self.tokens, self.settings = tokens, settings

    @contextmanager
    def use(self, tokens: torch.Tensor | None, **settings) -> Iterator[PoseTokenInjection]:
        """``set_tokens`` for the duration of a block, then back to what was set before."""
        before = (self.tokens, self.settings)
        self.set_tokens(tokens, **settings)
        try:
            yield self
        finally:
            self.tokens, self.settings = before

    def active_tokens(self) -> torch.Tensor | None:
        """The tokens if the current call should see them (pass, step window, strength), else None."""
        s = self.settings
        if self.tokens is None or s.strength == 0:
            return None
        if self.current_pass == "uncond" and not s.pose_on_negative:
            return None
        if self._num_steps is not None and not (s.start <= self._step / self._num_steps < s.end):
            return None
        return self.tokens

    # --- sampling bookkeeping -----------------------------------------------------------------
    @contextmanager
    def sampling(self, num_steps: int, *, cfg: bool) -> Iterator[PoseTokenInjection]:
        """A denoising run of ``num_steps`` steps, two transformer calls per step when ``cfg``."""
        self._num_steps, self._cfg, self._step, self._calls = int(num_steps), bool(cfg), 0, 0
        try:
            yield self
        finally:
            self._num_steps, self._step, self._calls, self.current_pass = None, 0, 0, None

    def step_finished(self, step_index: int) -> None:
        """Called after denoising step ``step_index`` (0-based): the next call starts step + 1."""
        self._step, self._calls = step_index + 1, 0

    @property
    def transformer(self):
        return self._transformer()

    @property
    def step(self) -> int:
        return self._step

    def _on_forward(self, module, args) -> None:
        if self._num_steps is None:
            self.current_pass = "cond"
            return
        self._calls += 1
        if self._calls == 1:
            self.current_pass = "cond"
        elif self._calls == 2 and self._cfg:
            self.current_pass = "uncond"
        else:
            raise RuntimeError(
                f"Transformer call {self._calls} within denoising step {self._step}: the pipeline did not "
                "report the end of the step (generate() wires callback_on_step_end to step_finished)."
            )


def install_pose_injection(transformer, *, include_vace_blocks: bool = False) -> PoseTokenInjection:
    """Wrap the self-attention of every block (and the VACE blocks if asked) of ``transformer``."""
    return PoseTokenInjection(transformer, include_vace_blocks=include_vace_blocks)


def get_pose_injection(transformer) -> PoseTokenInjection | None:
    """The injection installed on ``transformer``, if any."""
    return _INSTALLED.get(transformer)


def remove_pose_injection(transformer) -> None:
    """Remove the injection from ``transformer`` if one is installed."""
    injection = _INSTALLED.get(transformer)
    if injection is not None:
        injection.remove()
