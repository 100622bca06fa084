"""Random 6DRepNet models with the real classes, written in the released file layout.

``build_random_sixdrepnet`` writes a full-size RepVGG-B1g2 with random weights as a plain
``torch.save`` state dict in the released deploy key layout, so the loader that reads the real
``6DRepNet_300W_LP_AFLW2000.pth`` reads it too. Weights are seeded (the global RNG is left
untouched) and calibrated so that activations stay of order one through all 27 blocks and the
angles vary from crop to crop, which the equivalence tests and the demo need.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..pose.sixdrepnet import SixDRepNet, SixDRepNetConfig

_IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
_IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)


def tiny_sixdrepnet_config(input_size: int = 64) -> SixDRepNetConfig:
    """A small RepVGG (widths 16, 16, 32, 64, 128; one block per stage) for fast tests."""
    return SixDRepNetConfig(
        num_blocks=(1, 2, 1, 1),
        width_multipliers=(0.25, 0.25, 0.25, 0.25),
        group_layers=(2,),
        groups=2,
        input_size=input_size,
    )


def calibration_images(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """``[count, 3, size, size]`` smooth random images, ImageNet-normalised."""
    low = torch.rand(count, 3, 6, 6, generator=generator)
    contrast = torch.rand(count, 1, 1, 1, generator=generator) * 0.8 + 0.2
    images = nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    images = (0.5 + (images - 0.5) * contrast).clamp(0, 1)
    return (images - _IMAGENET_MEAN) / _IMAGENET_STD


@torch.no_grad()
def random_sixdrepnet(
    seed: int = 0,
    *,
    config: SixDRepNetConfig | None = None,
    form: str = "deploy",
    calibration_size: int | None = None,
) -> SixDRepNet:
    """A seeded random 6DRepNet in eval mode; ``form`` is ``"deploy"`` or ``"train"``.

    BatchNorm affine parameters are random; running statistics are those of a calibration batch
    (so every BN has non-trivial statistics to fold); the head is centred on the identity
    rotation with a spread of tens of degrees over the calibration images.
    """
    if form not in ("deploy", "train"):
        raise ValueError(f"form must be 'deploy' or 'train', got {form!r}")
    config = config or SixDRepNetConfig()
    size = calibration_size or min(config.input_size, 64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        model = SixDRepNet(config, deploy=False)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.4, 0.8, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
                module.reset_running_stats()
                module.momentum = None  # cumulative average: one batch → its exact statistics
        images = calibration_images(6, size, generator)
        model.train()
        model.features(images)
        model.eval()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
        feats = model.features(images)
        weight = torch.randn(6, feats.shape[1], generator=generator)
        spread = ((feats - feats.mean(0)) @ weight.T).std(0).clamp_min(1e-6)
        weight = weight * (0.5 / spread)[:, None]
        model.linear_reg.weight.copy_(weight)
        model.linear_reg.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]) - weight @ feats.mean(0))
    if form == "deploy":
        model.reparameterize()
    return model


def build_random_sixdrepnet(
    path: str | os.PathLike, seed: int = 0, *, form: str = "deploy", config: SixDRepNetConfig | None = None
) -> Path:
    """Write a random RepVGG-B1g2 6DRepNet as a ``.pth`` in the released layout; returns the path.

    ``form="deploy"`` writes a plain state dict (like ``6DRepNet_300W_LP_AFLW2000.pth``);
    ``form="train"`` writes ``{"epoch": 0, "model_state_dict": ...}`` in the training layout,
    like a checkpoint of the released train.py.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = random_sixdrepnet(seed, config=config, form=form)
    state = model.state_dict()
    torch.save(state if form == "deploy" else {"epoch": 0, "model_state_dict": state}, path)
    return path
