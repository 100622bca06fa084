"""The training objective ``L = L_flow + λ·L_InfoNCE`` and the module that computes it.

Flow matching as Wan trains (rectified flow): ``σ ~ U(0, 1)``, shifted to
``σ' = shift·σ / (1 + (shift − 1)·σ)`` (more steps at high noise; the same map as diffusers'
``FlowMatchEulerDiscreteScheduler(shift=...)``), ``x_t = (1 − σ')·x0 + σ'·ε``, timestep
``σ'·1000``, and the transformer regresses the velocity ``ε − x0`` (MSE). The transformer sees
the VACE context and the global pose tokens of the reference face, which the aligner computes
in the same forward, so the flow loss trains the LoRA, the token projection and the aligner.
InfoNCE (``aligner.contrastive_loss``) ties the crops of each identity at different poses: two
(the paper), or ``data.views_per_identity`` of them, every ordered pair of views a positive.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan's timestep shift ``shift·σ / (1 + (shift − 1)·σ)`` (identity for shift 1)."""
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


def flow_inputs(shape: torch.Size | tuple[int, ...], seed: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Shifted ``σ'`` ``[B]`` and noise ``ε`` of ``shape``, drawn on the CPU from ``seed`` (device-independent)."""
    gen = torch.Generator().manual_seed(int(seed))
    sigmas = shift_sigmas(torch.rand(shape[0], generator=gen, dtype=torch.float64), shift).float()
    noise = torch.randn(tuple(shape), generator=gen, dtype=torch.float32)
    return sigmas, noise


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """``x_t = (1 − σ)·x0 + σ·ε`` with ``σ`` ``[B]`` broadcast over ``[B, C, T, H, W]``."""
    s = sigmas.view(-1, *([1] * (x0.ndim - 1))).to(x0)
    return (1.0 - s) * x0 + s * noise


def flow_matching_loss(prediction: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
                       *, skip_frames: int = 0) -> torch.Tensor:
    """MSE of the predicted velocity against ``ε − x0`` (float32), over latent frames ``skip_frames:``."""
    target = (noise - x0)[:, :, skip_frames:]
    return F.mse_loss(prediction[:, :, skip_frames:].float(), target.float())


class Losses(NamedTuple):
    total: torch.Tensor
    flow: torch.Tensor
    infonce: torch.Tensor


class JointModel(nn.Module):
    """The transformer (LoRA + injection) and the aligner under one module, so DDP/FSDP wrap both.

    ``forward(batch)`` takes the device tensors ``prepare_step`` makes and returns ``Losses``.
    The pose tokens stay set on the injection after the forward: gradient checkpointing
    recomputes the blocks during backward and must see them. ``clear_tokens()`` afterwards.
    """

    def __init__(self, transformer: nn.Module, aligner: nn.Module, injection, *, infonce_weight: float,
                 num_train_timesteps: int, reference_frame_loss: bool) -> None:
        super().__init__()
        self.transformer = transformer
        self.aligner = aligner
        self.injection = injection
        self.infonce_weight = float(infonce_weight)
        self.num_train_timesteps = num_train_timesteps
        self.reference_frame_loss = reference_frame_loss

    def forward(self, batch: dict[str, Any]) -> Losses:
        views = batch["view_faces"]  # [V, A, 3, S, S], view-major: one aligner forward for everything
        faces = torch.cat([batch["reference_faces"], views.flatten(0, 1)])
        euler = torch.cat([batch["reference_euler"], batch["view_euler"].flatten(0, 1)])
        out = self.aligner(faces, euler)
        b, a = batch["reference_faces"].shape[0], views.shape[1]
        tokens = out.tokens[:b]
        infonce = self.aligner.contrastive_loss(*(out.g[b + v * a : b + (v + 1) * a] for v in range(views.shape[0])))

        x0, noise, sigmas = batch["x0"], batch["noise"], batch["sigmas"]
        dtype = batch["context"].dtype
        self.injection.set_tokens(tokens)
        prediction = self.transformer(
            hidden_states=noisy_latents(x0, noise, sigmas).to(dtype),
            timestep=sigmas * self.num_train_timesteps,
            encoder_hidden_states=batch["prompt_embeds"],
            control_hidden_states=batch["context"],
            return_dict=False,
        )[0]
        skip = 0 if self.reference_frame_loss else batch["reference_frames"]
        flow = flow_matching_loss(prediction, x0, noise, skip_frames=skip)
        return Losses(flow + self.infonce_weight * infonce, flow.detach(), infonce.detach())

    def clear_tokens(self) -> None:
        self.injection.set_tokens(None)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must hold: the LoRA weights and the whole aligner (buffers included)."""
        state = {f"transformer.{n}": p for n, p in self.transformer.named_parameters() if p.requires_grad}
        state.update({f"aligner.{k}": v for k, v in self.aligner.state_dict().items()})
        return state

    def trainable_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
        """(LoRA, token projection, aligner) parameters, in a fixed order."""
        lora = [p for p in self.transformer.parameters() if p.requires_grad]
        return lora, list(self.aligner.projection_parameters()), list(self.aligner.aligner_parameters())
