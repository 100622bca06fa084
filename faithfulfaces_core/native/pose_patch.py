"""The global pose tokens on ComfyUI's native Wan model, through ComfyUI's public patch points.

The contract is the diffusers path's (``wan/injection.py``, docs/method.md): in every main block
(``blocks.N``, not the VACE blocks) the self-attention also attends to the pose tokens ``P``
``[B, M, C]``, projected by that block's own ``k`` / ``norm_k`` / ``v`` into keys/values without
rotary, weighted by ``strength`` — the maths is ``pose_kv_attention``, shared by both paths.

Three mechanisms, all set on a ``ModelPatcher`` clone (the input MODEL is never changed, and
ComfyUI's files are never edited):

1. a ``diffusion_model`` wrapper (``add_wrapper_with_key``) runs once per model call. It holds
   the tokens (moved by ComfyUI through ``.to`` when the model loads or offloads), decides
   whether this call sees them — ``transformer_options["sigmas"]`` inside the ``[start, end)``
   window (fractions of the schedule, turned into sigmas with ``model_sampling.percent_to_sigma``)
   and, from ``transformer_options["cond_or_uncond"]``, which batch rows are the negative pass —
   and hands a :class:`PoseCall` to the blocks inside ``transformer_options``;
2. a ``("dit", ("double_block", i))`` replace per main block (``set_model_patch_replace``)
   chains the replace that was there and gives the block an attention override;
3. that ``optimized_attention_override`` treats the block's first attention call — its
   self-attention, which ``WanAttentionBlock`` runs before the cross-attention — with the pose
   keys/values, computed by calling the block's own modules (so LoRA patches and ComfyUI's
   low-VRAM weight casting apply), and passes every other call on unchanged, to an override
   that was already there or to ComfyUI's kernel.

A call outside sampling (no ``sigmas`` / ``cond_or_uncond``) counts as conditional and in the
window, as a direct transformer call does on the diffusers side.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import FaithfulFacesError
from ..wan.injection import PoseTokenSettings, check_pose_tokens, pose_kv_attention, sdpa_attention

DIFFUSION_MODEL_WRAPPER = "diffusion_model"  # comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
KEY_PREFIX = "faithfulfaces_pose_"
UNCOND = 1  # comfy.samplers: cond_or_uncond entries are 0 (positive) and 1 (negative)
# WanModel.forward(x, timestep, context, clip_fea, time_dim_concat, transformer_options, **kwargs)
OPTIONS_POSITION = 5
TOKENS_FIX = "Connect the 'Global Pose Token (FaithfulFaces)' node's output."


@dataclass(frozen=True)
class SigmaWindow:
    """The sigmas ``low < sigma <= high`` in which the tokens act (``start``/``end`` of 0/1: no bound)."""

    high: float
    low: float

    def contains(self, sigma: float | torch.Tensor) -> bool:
        """Compared in the sigma's own precision (ComfyUI's sigmas are float32 tensors)."""
        if isinstance(sigma, torch.Tensor):
            high, low = (torch.tensor(b, dtype=sigma.dtype, device=sigma.device) for b in (self.high, self.low))
            return bool((low < sigma) & (sigma <= high))
        return self.low < sigma <= self.high


def sigma_window(model_sampling, start: float, end: float) -> SigmaWindow:
    """``[start, end)`` as fractions of the schedule → sigmas, with ComfyUI's ``percent_to_sigma``."""
    high = math.inf if start <= 0 else float(model_sampling.percent_to_sigma(start))
    low = -math.inf if end >= 1 else float(model_sampling.percent_to_sigma(end))
    return SigmaWindow(high, low)


def active_rows(cond_or_uncond: Sequence[int] | None, batch: int, pose_on_negative: bool) -> list[bool]:
    """Which of ``batch`` rows see the tokens: all of them, or the non-negative chunks' rows."""
    if cond_or_uncond is None or pose_on_negative:
        return [True] * batch
    chunks = len(cond_or_uncond)
    if chunks == 0 or batch % chunks:
        raise RuntimeError(f"A batch of {batch} rows cannot be split into the {chunks} cond/uncond chunks.")
    size = batch // chunks
    return [kind != UNCOND for kind in cond_or_uncond for _ in range(size)]


def check_wan_model(diffusion_model) -> int:
    """The width ``C`` of a native Wan transformer; a clear error for any other MODEL."""
    blocks = getattr(diffusion_model, "blocks", None)
    attn = getattr(blocks[0], "self_attn", None) if blocks is not None and len(blocks) else None
    if attn is None or not all(hasattr(attn, name) for name in ("k", "v", "norm_k", "num_heads")):
        raise FaithfulFacesError(
            f"This MODEL is a {type(diffusion_model).__name__}, not a Wan2.1 (VACE) transformer: load "
            "wan2.1_vace_*.safetensors with 'Load Diffusion Model' (UNETLoader) and connect that MODEL."
        )
    return int(diffusion_model.dim)


@dataclass
class PoseCall:
    """What one model call's blocks need: the model, tokens on its device, rows and strength.

    ``tokens`` ``[T, M, C]``; ``token_index`` ``[B]`` maps each batch row to its token set;
    ``rows`` ``[B]`` bool marks the rows that see the tokens (``None``: all of them).
    """

    model: torch.nn.Module
    tokens: torch.Tensor
    token_index: torch.Tensor
    rows: torch.Tensor | None
    strength: float


class PoseTokenWrapper:
    """The ``diffusion_model`` wrapper: per call, a :class:`PoseCall` for the blocks, or nothing."""

    def __init__(self, key: str, tokens: torch.Tensor, settings: PoseTokenSettings, window: SigmaWindow) -> None:
        self.key = key
        self.tokens = tokens.detach()
        self.settings = settings
        self.window = window

    def to(self, device_or_dtype):
        """ComfyUI moves wrappers with the model; the tokens keep their float dtype until used."""
        if isinstance(device_or_dtype, (torch.device, str)):
            self.tokens = self.tokens.to(device_or_dtype)
        return self

    def __call__(self, executor, *args, **kwargs):
        positional = "transformer_options" not in kwargs and len(args) > OPTIONS_POSITION
        options = args[OPTIONS_POSITION] if positional else kwargs.get("transformer_options", {})
        call = self.pose_call(executor.class_obj, args[0], options)
        if call is None:
            return executor(*args, **kwargs)
        options = {**options, self.key: call}
        if positional:
            args = (*args[:OPTIONS_POSITION], options, *args[OPTIONS_POSITION + 1:])
        else:
            kwargs = {**kwargs, "transformer_options": options}
        return executor(*args, **kwargs)

    def pose_call(self, model, x: torch.Tensor, options: dict) -> PoseCall | None:
        sigmas = options.get("sigmas")
        if sigmas is not None and not self.window.contains(sigmas.max()):
            return None
        batch = x.shape[0]
        rows = active_rows(options.get("cond_or_uncond"), batch, self.settings.pose_on_negative)
        if not any(rows):
            return None
        chunks = len(options.get("cond_or_uncond") or [0])
        per_chunk = batch // chunks
        count = self.tokens.shape[0]
        if count not in (1, per_chunk):
            raise FaithfulFacesError(
                f"The pose token holds {count} token sets but the sampler runs a batch of {per_chunk} "
                "videos: use one reference face for all, or one per video."
            )
        index = torch.arange(batch, device=x.device) % count
        mask = None if all(rows) else torch.tensor(rows, device=x.device)
        tokens = self.tokens.to(device=x.device, dtype=x.dtype)
        return PoseCall(model, tokens, index, mask, self.settings.strength)


class PoseBlockPatch:
    """The ``("double_block", i)`` replace: hands block ``i`` the pose override, then runs it.

    ``previous`` is the replace that was installed before (another patch's), called in turn.
    Holds no tensors and no module, so ComfyUI's deep copy of ``model_options`` stays cheap.
    """

    def __init__(self, key: str, index: int, previous: Callable | None = None) -> None:
        self.key = key
        self.index = index
        self.previous = previous

    def __call__(self, args: dict, extra: dict) -> dict:
        options = args["transformer_options"]
        call = options.get(self.key)
        override = None
        if call is not None:
            attn = call.model.blocks[self.index].self_attn
            override = PoseSelfAttention(call, attn, options.get("optimized_attention_override"))
            args = {**args, "transformer_options": {**options, "optimized_attention_override": override}}
        out = self.previous(args, extra) if self.previous is not None else extra["original_block"](args)
        if override is not None and not override.used:
            raise FaithfulFacesError(
                f"Wan block {self.index} ran without calling ComfyUI's attention override, so the pose tokens "
                "could not act: update ComfyUI (0.3.75 and later have transformer_options"
                "['optimized_attention_override']), or remove a node that replaces the attention."
            )
        return out


@dataclass
class PoseGroup:
    """One patch's pose keys/values in one block call: ``k, v`` ``[B, M, H, D]``, rows, strength."""

    k: torch.Tensor
    v: torch.Tensor
    rows: torch.Tensor | None
    strength: float


def pose_group(call: PoseCall, attn: torch.nn.Module, like: torch.Tensor, heads: int) -> PoseGroup:
    """The block's own ``k``/``norm_k``/``v`` on the tokens (no rotary), one row per batch row."""
    tokens = call.tokens.to(device=like.device, dtype=like.dtype)
    k = attn.norm_k(attn.k(tokens)).unflatten(2, (heads, -1))[call.token_index]
    v = attn.v(tokens).unflatten(2, (heads, -1))[call.token_index]
    return PoseGroup(k, v, call.rows, call.strength)


def attend_with_pose(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, groups: Sequence[PoseGroup],
                     attend: Callable) -> torch.Tensor:
    """Self-attention of ``q`` over the video keys and the pose keys: ``[B, L, H, D]`` → same.

    One group (one patch, the usual case): ``pose_kv_attention``, the diffusers path's function,
    on the rows that see the tokens and ``attend`` alone on the others. Several groups (patches
    stacked on one model): the same maths with one logit bias per group — log(strength) on rows
    that see it, −inf on rows that do not — and ``attend`` when every bias is 0.
    """
    if len(groups) == 1:
        group = groups[0]
        if group.rows is None:
            return pose_kv_attention(q, k, v, group.k, group.v, group.strength, attention=attend)
        on, off = group.rows, ~group.rows
        out = torch.empty_like(q)
        out[on] = pose_kv_attention(q[on], k[on], v[on], group.k[on], group.v[on], group.strength, attention=attend)
        out[off] = attend(q[off], k[off], v[off])
        return out
    batch = q.shape[0]
    keys = torch.cat([k] + [g.k.to(k.dtype) for g in groups], dim=1)
    values = torch.cat([v] + [g.v.to(v.dtype) for g in groups], dim=1)
    bias = q.new_zeros(batch, 1, 1, keys.shape[1])
    start = k.shape[1]
    for group in groups:
        weight = torch.full((batch,), math.log(group.strength), dtype=q.dtype, device=q.device)
        if group.rows is not None:
            weight[~group.rows] = -math.inf
        bias[:, 0, 0, start:start + group.k.shape[1]] = weight[:, None]
        start += group.k.shape[1]
    if not bias.any():
        return attend(q, keys, values)
    return sdpa_attention(q, keys, values, bias)


class PoseSelfAttention:
    """``optimized_attention_override`` for one block call: pose keys/values in its self-attention.

    Patches stacked on one model stack their overrides; the first one called gathers the unused
    ones below it, so all their tokens join one attention call.
    """

    def __init__(self, call: PoseCall, attn: torch.nn.Module, previous: Callable | None) -> None:
        self.call = call
        self.attn = attn
        self.previous = previous
        self.used = False

    def _plain(self, func, *args, **kwargs) -> torch.Tensor:
        if self.previous is not None:
            return self.previous(func, *args, **kwargs)
        return func(*args, **kwargs)

    def _check_self_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int | None,
                              rest: dict) -> None:
        """The call is a Wan self-attention: q/k ``[B, L, heads·D]``, this block's head count, no mask."""
        if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
            raise RuntimeError(  # e.g. the AttentionTensorContainer calls 2026 ComfyUI makes for some models
                f"Wan's self-attention reached the pose patch with {type(q).__name__} arguments, not "
                "tensors: this ComfyUI's Wan model differs from the one FaithfulFaces' native patch was "
                "written for."
            )
        if (q.ndim != 3 or k.ndim != 3 or k.shape[0] != q.shape[0] or k.shape[1] < q.shape[1]
                or heads != self.attn.num_heads or rest.get("mask") is not None or rest.get("skip_reshape")):
            raise RuntimeError(
                "The first attention call of a Wan block was not its self-attention "
                f"(q {tuple(q.shape)}, k {tuple(k.shape)}, heads {heads}): this ComfyUI's Wan model "
                "differs from the one FaithfulFaces' native patch was written for."
            )

    def __call__(self, func, *args, **kwargs) -> torch.Tensor:
        if self.used:
            return self._plain(func, *args, **kwargs)
        q, k, v = args[:3]
        heads = args[3] if len(args) > 3 else kwargs.get("heads")
        rest = {key: value for key, value in kwargs.items() if key != "heads"}
        self._check_self_attention(q, k, v, heads, rest)
        stacked, below = [], self
        while isinstance(below, PoseSelfAttention) and not below.used:
            below.used = True
            stacked.append(below)
            below = below.previous

        def attend(q_: torch.Tensor, k_: torch.Tensor, v_: torch.Tensor) -> torch.Tensor:
            flat = (q_.flatten(2), k_.flatten(2), v_.flatten(2))
            out = below(func, *flat, heads=heads, **rest) if below is not None else func(*flat, heads=heads, **rest)
            return out.unflatten(2, (heads, -1))

        groups = [pose_group(o.call, o.attn, q, heads) for o in stacked]
        split = [t.unflatten(2, (heads, -1)) for t in (q, k, v)]
        return attend_with_pose(*split, groups, attend).flatten(2)


def install_pose_patch(model, tokens: torch.Tensor, settings: PoseTokenSettings):
    """A clone of ComfyUI ``ModelPatcher`` ``model`` whose main Wan blocks see ``tokens`` ``[B, M, C]``."""
    settings.check()
    diffusion_model = model.get_model_object("diffusion_model")
    check_pose_tokens(tokens, check_wan_model(diffusion_model), fix=TOKENS_FIX)
    window = sigma_window(model.get_model_object("model_sampling"), settings.start, settings.end)
    key = KEY_PREFIX + uuid.uuid4().hex[:12]
    patched = model.clone()
    patched.add_wrapper_with_key(DIFFUSION_MODEL_WRAPPER, key, PoseTokenWrapper(key, tokens, settings, window))
    existing = patched.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
    for index in range(len(diffusion_model.blocks)):
        previous = existing.get(("double_block", index))
        patched.set_model_patch_replace(PoseBlockPatch(key, index, previous), "dit", "double_block", index)
    return patched
