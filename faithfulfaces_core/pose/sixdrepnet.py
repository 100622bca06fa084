"""6DRepNet (Hempel et al., 2022) on a RepVGG-B1g2 backbone, reimplemented from its description.

Architecture (RepVGG, Ding et al., 2021): a stem block (stride 2) and four stages of
``[4, 6, 16, 1]`` blocks (each stage starts with stride 2), widths
``min(64, 64a), 64a, 128a, 256a, 512b`` with ``a = 2, b = 4`` → 64, 128, 256, 512, 2048. The
blocks are numbered 1..27 after the stem; blocks 2, 4, …, 26 are grouped convolutions with
``groups = 2`` ("g2"). A block in training form is ``ReLU(BN(conv3x3) + BN(conv1x1) + BN)`` (the
last, identity branch only when shape is kept); its deploy form is one 3×3 conv with bias,
``rbr_reparam``, obtained by folding the branches together. Head: global average pool →
``Linear(2048, 6)`` (``linear_reg``) → 6-D rotation → Gram–Schmidt → ``[B, 3, 3]``.

State-dict layout of the released file ``6DRepNet_300W_LP_AFLW2000.pth`` (deploy form, a plain
dict of tensors)::

    layer0.rbr_reparam.{weight,bias}                  stem   [64, 3, 3, 3]
    layer1.{0..3}.rbr_reparam.{weight,bias}           stage 1 (128 wide)
    layer2.{0..5}.rbr_reparam.{weight,bias}           stage 2 (256)
    layer3.{0..15}.rbr_reparam.{weight,bias}          stage 3 (512)
    layer4.0.rbr_reparam.{weight,bias}                stage 4 (2048)
    linear_reg.{weight,bias}                          [6, 2048], [6]

Training checkpoints (``{"model_state_dict": ...}`` from the released train.py) replace each
``rbr_reparam`` with ``rbr_dense.conv.weight``, ``rbr_dense.bn.*``, ``rbr_1x1.conv.weight``,
``rbr_1x1.bn.*`` and, where present, ``rbr_identity.*`` (a BatchNorm2d); they are loaded and
re-parameterised to the deploy form.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoints import atomic_write, check_state_dict, load_checkpoint, save_checkpoint
from ..errors import CheckpointError, FaithfulFacesError, MissingModelError
from .rotation import RotationPoseEstimator, rotation_from_6d

RELEASED_FILENAME = "6DRepNet_300W_LP_AFLW2000.pth"
RELEASE_SOURCE = (
    "the 6DRepNet project thohemp/6DRepNet on GitHub (README, 'Pretrained models': the 300W-LP model, which the "
    "author hosts at https://cloud.ovgu.de/s/Q67RnLDy6JKLRWm/download/6DRepNet_300W_LP_AFLW2000.pth; download it "
    "yourself)"
)
CHECKPOINT_KIND = "pose_estimator"
CHECKPOINT_FORMAT = 1
ONNX_INPUT = "image"
ONNX_OUTPUT = "rotation"


@dataclass(frozen=True)
class SixDRepNetConfig:
    """RepVGG backbone shape. The default is the released RepVGG-B1g2."""

    num_blocks: tuple[int, int, int, int] = (4, 6, 16, 1)
    width_multipliers: tuple[float, float, float, float] = (2.0, 2.0, 2.0, 4.0)
    group_layers: tuple[int, ...] = tuple(range(2, 27, 2))
    groups: int = 2
    input_size: int = 224

    @property
    def widths(self) -> tuple[int, int, int, int, int]:
        a = self.width_multipliers
        return (min(64, int(64 * a[0])), int(64 * a[0]), int(128 * a[1]), int(256 * a[2]), int(512 * a[3]))

    @property
    def is_b1g2(self) -> bool:
        return self == SixDRepNetConfig()

    @property
    def label(self) -> str:
        return (
            "RepVGG-B1g2" if self.is_b1g2 else f"RepVGG{list(self.num_blocks)}x{list(self.width_multipliers)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SixDRepNetConfig:
        fields = {
            k: tuple(v) if isinstance(v, list) else v
            for k, v in data.items()
            if k in cls.__dataclass_fields__
        }
        return cls(**fields)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, padding: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
            bn=nn.BatchNorm2d(cout),
        )
    )


def _fuse_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the preceding bias-free conv kernel."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class RepVGGBlock(nn.Module):
    """One RepVGG block: three branches in training form, ``rbr_reparam`` in deploy form."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int = 1, deploy: bool = False):
        super().__init__()
        self.in_channels, self.groups = cin, groups
        self.nonlinearity = nn.ReLU()
        if deploy:
            self.rbr_reparam = nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=True)
        else:
            self.rbr_identity = nn.BatchNorm2d(cin) if cin == cout and stride == 1 else None
            self.rbr_dense = _conv_bn(cin, cout, 3, stride, 1, groups)
            self.rbr_1x1 = _conv_bn(cin, cout, 1, stride, 0, groups)

    @property
    def deploy(self) -> bool:
        return hasattr(self, "rbr_reparam")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return self.nonlinearity(self.rbr_reparam(x))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return self.nonlinearity(out)

    @torch.no_grad()
    def fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3×3 kernel ``[out, in/groups, 3, 3]`` and bias ``[out]`` of the deploy form."""
        if self.deploy:
            return self.rbr_reparam.weight, self.rbr_reparam.bias
        k3, b3 = _fuse_bn(self.rbr_dense.conv.weight, self.rbr_dense.bn)
        k1, b1 = _fuse_bn(self.rbr_1x1.conv.weight, self.rbr_1x1.bn)
        kernel, bias = k3 + nn.functional.pad(k1, [1, 1, 1, 1]), b3 + b1
        if self.rbr_identity is not None:
            per_group = self.in_channels // self.groups
            identity = torch.zeros_like(k3)
            idx = torch.arange(self.in_channels)
            identity[idx, idx % per_group, 1, 1] = 1.0
            ki, bi = _fuse_bn(identity, self.rbr_identity)
            kernel, bias = kernel + ki, bias + bi
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Switch to the deploy form in place (same outputs in eval mode)."""
        if self.deploy:
            return
        kernel, bias = self.fused_kernel_bias()
        dense = self.rbr_dense.conv
        conv = nn.Conv2d(
            dense.in_channels,
            dense.out_channels,
            3,
            dense.stride,
            1,
            groups=dense.groups,
            bias=True,
            device=kernel.device,
            dtype=kernel.dtype,
        )
        conv.weight.copy_(kernel)
        conv.bias.copy_(bias)
        for name in ("rbr_dense", "rbr_1x1", "rbr_identity"):
            delattr(self, name)
        self.rbr_reparam = conv


class SixDRepNet(nn.Module):
    """Face crop ``[B, 3, S, S]`` (ImageNet-normalised) → rotation matrix ``[B, 3, 3]``."""

    def __init__(self, config: SixDRepNetConfig | None = None, *, deploy: bool = True):
        super().__init__()
        self.config = config = config or SixDRepNetConfig()
        widths = config.widths
        self.layer0 = RepVGGBlock(3, widths[0], stride=2, deploy=deploy)
        cin, index = widths[0], 1
        for stage, (count, cout) in enumerate(zip(config.num_blocks, widths[1:], strict=True), start=1):
            blocks = []
            for i in range(count):
                groups = config.groups if index in config.group_layers else 1
                blocks.append(RepVGGBlock(cin, cout, stride=2 if i == 0 else 1, groups=groups, deploy=deploy))
                cin, index = cout, index + 1
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear_reg = nn.Linear(widths[4], 6)

    @property
    def deploy(self) -> bool:
        return all(block.deploy for block in self.blocks())

    def blocks(self) -> list[RepVGGBlock]:
        return [m for m in self.modules() if isinstance(m, RepVGGBlock)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` → pooled backbone features ``[B, 512b]``."""
        for layer in (self.layer0, self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
        return torch.flatten(self.gap(x), 1)

    def forward_6d(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_reg(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rotation_from_6d(self.forward_6d(x))

    def reparameterize(self) -> SixDRepNet:
        """Fold every block into its deploy form (in place); returns ``self``."""
        for block in self.blocks():
            block.reparameterize()
        return self


# ---------------------------------------------------------------- loading


def _expected(config: SixDRepNetConfig, deploy: bool) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return SixDRepNet(config, deploy=deploy).state_dict()


def _wrong_architecture_hint(config: SixDRepNetConfig) -> str:
    return (
        f" The file does not hold a 6DRepNet with a {config.label} backbone in the released key layout "
        f"(layer0, layer1..layer4, linear_reg). Use {RELEASED_FILENAME} from {RELEASE_SOURCE}, "
        "or a .safetensors/.onnx conversion of it made by FaithfulFaces."
    )


def _pickled_global(exc: BaseException) -> str:
    """`` (posix.system)``: the global torch's safe unpickler refused, named without torch's advice."""
    found = re.search(r"GLOBAL ([\w.]+)", re.sub(r"\x1b\[[0-9;]*m", "", str(exc)))
    return f" ({found.group(1)})" if found else ""


def read_pth_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a 6DRepNet ``.pth`` with ``torch.load(weights_only=True)``: tensors only, no code run.

    Accepts a plain state dict, ``{"model_state_dict": ...}`` / ``{"state_dict": ...}``
    (training checkpoints) and DataParallel's ``module.`` prefixes.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingModelError(
            f"6DRepNet weight file {path} does not exist. Place {RELEASED_FILENAME} from {RELEASE_SOURCE} there."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path} is not a plain state dict: it pickles Python code or objects{_pickled_global(exc)}, which "
            "FaithfulFaces never runs (loading it could execute anything). FaithfulFaces only reads tensors from "
            f".pth files; use the released {RELEASED_FILENAME} from {RELEASE_SOURCE}, or save "
            "model.state_dict() instead of the whole model."
        ) from exc
    except Exception as exc:  # not a torch file at all: zip/pickle errors, truncated downloads
        raise CheckpointError(
            f"{path} cannot be read as a PyTorch weight file ({type(exc).__name__}: {exc}). The file may be "
            f"damaged or of another format; place {RELEASED_FILENAME} from {RELEASE_SOURCE} again."
        ) from exc
    if isinstance(obj, dict):
        for key in ("model_state_dict", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        what = type(obj).__name__ if not isinstance(obj, dict) else "a dict whose values are not all tensors"
        raise CheckpointError(
            f"{path} holds {what}, not a state dict of tensors. Expected the 6DRepNet weights "
            f"{RELEASED_FILENAME} from {RELEASE_SOURCE}."
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def sixdrepnet_from_state_dict(
    state_dict: dict[str, torch.Tensor], *, path: str | os.PathLike, config: SixDRepNetConfig | None = None
) -> SixDRepNet:
    """Build a deploy-form, eval-mode model from a training- or deploy-form state dict."""
    config = config or SixDRepNetConfig()
    deploy = not any(".rbr_dense." in k or k.startswith("rbr_dense.") for k in state_dict)
    try:
        check_state_dict(path, state_dict, _expected(config, deploy), what=f"6DRepNet ({config.label})")
    except CheckpointError as exc:
        raise CheckpointError(str(exc) + _wrong_architecture_hint(config)) from None
    with torch.device("meta"):
        model = SixDRepNet(config, deploy=deploy)
    model.load_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}, assign=True
    )
    model.eval()
    return model.reparameterize()


def load_sixdrepnet(path: str | os.PathLike) -> SixDRepNet:
    """Load 6DRepNet from the released ``.pth`` or a FaithfulFaces ``.safetensors`` conversion."""
    path = Path(path)
    if path.suffix == ".safetensors":
        ckpt = load_checkpoint(path, kind=CHECKPOINT_KIND, max_format=CHECKPOINT_FORMAT)
        config = SixDRepNetConfig.from_dict(ckpt.config)
        return sixdrepnet_from_state_dict(ckpt.tensors, path=path, config=config)
    if path.suffix in (".pth", ".pt", ".pkl", ".tar"):
        return sixdrepnet_from_state_dict(read_pth_state_dict(path), path=path)
    raise CheckpointError(
        f"{path}: unknown 6DRepNet file type '{path.suffix}'. Use {RELEASED_FILENAME} (released), "
        "or a .safetensors or .onnx conversion."
    )


# ---------------------------------------------------------------- conversion


def save_sixdrepnet(model: SixDRepNet, path: str | os.PathLike, *, source: str = "") -> Path:
    """Write the deploy-form weights (released key layout) as a ``pose_estimator`` safetensors file."""
    if not model.deploy:
        raise FaithfulFacesError("Re-parameterise the model (model.reparameterize()) before saving it.")
    config = dict(model.config.to_dict(), form="deploy", architecture=model.config.label)
    extra = {"faithfulfaces.source": source} if source else None
    return save_checkpoint(
        path,
        model.state_dict(),
        kind=CHECKPOINT_KIND,
        format=CHECKPOINT_FORMAT,
        config=config,
        extra_metadata=extra,
    )


def export_sixdrepnet_onnx(model: SixDRepNet, path: str | os.PathLike, *, opset: int = 17) -> Path:
    """Export ``image [B, 3, S, S]`` → ``rotation [B, 3, 3]`` (dynamic batch) to ONNX.

    Uses the TorchScript exporter (``dynamo=False``): torch ≥ 2.9's default exporter needs the
    extra package onnxscript and gains nothing for this static graph. The file's metadata carries
    ``faithfulfaces.kind = pose_estimator`` and the config, like the safetensors files.
    """
    import onnx

    if not model.deploy:
        raise FaithfulFacesError("Re-parameterise the model (model.reparameterize()) before exporting it.")
    cpu = SixDRepNet(model.config, deploy=True)
    cpu.load_state_dict({k: v.detach().float().cpu() for k, v in model.state_dict().items()})
    cpu.eval()
    size = model.config.input_size
    dummy = torch.zeros(1, 3, size, size)

    def write(tmp: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                cpu,
                (dummy,),
                tmp,
                dynamo=False,
                opset_version=opset,
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
            )
        proto = onnx.load(tmp)
        config = dict(model.config.to_dict(), form="deploy", architecture=model.config.label)
        for key, value in (
            ("faithfulfaces.kind", CHECKPOINT_KIND),
            ("faithfulfaces.format", str(CHECKPOINT_FORMAT)),
            ("faithfulfaces.config", json.dumps(config, sort_keys=True)),
        ):
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, tmp)

    return atomic_write(path, write)


# ---------------------------------------------------------------- estimator


class SixDRepNetEstimator(RotationPoseEstimator):
    """``PoseEstimator`` on torch: face crops → (pitch, yaw, roll) degrees.

    Takes the model over: it is re-parameterised and moved to ``device``, ``dtype`` and channels-last.
    """

    name = "6drepnet"

    def __init__(
        self,
        model: SixDRepNet,
        *,
        device: str | torch.device = "auto",
        dtype: torch.dtype = torch.float32,
        batch_size: int = 32,
    ):
        from ..devices import resolve_device

        self.device = resolve_device(device) if isinstance(device, str) else device
        self.dtype = dtype
        self.batch_size = batch_size
        # channels-last: the layout oneDNN and cuDNN's fp16/bf16 convolutions prefer
        self.model = model.reparameterize().to(self.device, dtype, memory_format=torch.channels_last).eval()
        self.input_size = model.config.input_size

    @torch.inference_mode()
    def run_batch(self, x: np.ndarray) -> np.ndarray:
        """``[b, 3, S, S]`` float32 (normalised) → ``[b, 3, 3]`` float32 rotation matrices."""
        batch = torch.from_numpy(x).to(self.device, self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model(batch).float().cpu().numpy()
