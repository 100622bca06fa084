"""A fake InsightFace model pack that the real ``insightface.app.FaceAnalysis`` loads.

Tiny torch modules are exported with ``torch.onnx.export`` into a pack folder with the file
names and input/output signatures InsightFace's model router recognises:

- ``det_10g.onnx``: an SCRFD-style detector (input ``[1, 3, H, W]`` with dynamic H, W; nine
  outputs: scores ``[N_s, 1]``, box distances ``[N_s, 4]`` and keypoint distances ``[N_s, 10]``
  for strides 8, 16, 32 with two anchors per cell). Its outputs are *scripted*: each
  ``FakeFace`` sits on one stride-8 anchor, with distances computed from the input size so that
  InsightFace's own decoding (``distance2bbox`` / ``distance2kps``, divided by ``det_scale``)
  returns the scripted box exactly, at every ``det_size``.
- ``w600k_r50.onnx``: a random convolutional "recognition" model, ``[B, 3, 112, 112]`` →
  ``[B, 512]``, so identity embeddings can be computed (deterministic per seed).
- ``1k3d68.onnx`` (optional): a "3-D landmark" model, ``[1, 3, 192, 192]`` → ``[1, 3309]``,
  whose 68 landmarks are InsightFace's mean shape turned by a scripted head pose, so
  InsightFace's pose read-out is known.

Boxes are given in pixels of a square image of side ``frame`` (640 by default); on another
square image they scale with its side, on a non-square one with its longer side (exactly when
the height is the longer side; InsightFace rounds the padded width otherwise).

With ``presence="marker"`` (default) a face is reported only where the input is bright at its
box centre: tests paint white patches (``paint_fake_faces``) where faces should be, and a dark
image has none. ``presence="always"`` reports the scripted faces on every image.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

STRIDES = (8, 16, 32)
NUM_ANCHORS = 2
DETECTION_FILE = "det_10g.onnx"
RECOGNITION_FILE = "w600k_r50.onnx"
LANDMARK_3D_FILE = "1k3d68.onnx"


@dataclass(frozen=True)
class FakeFace:
    """A scripted face: box ``(x1, y1, x2, y2)`` in ``frame`` pixels, detector score, keypoints.

    ``keypoints``: five ``(x, y)`` points (eyes, nose tip, mouth corners); by default placed at
    typical positions inside the box. ``max_det_size``: the face is only found when the detector
    input side is at most this (to exercise retries at smaller ``det_size``).
    """

    box: tuple[float, float, float, float]
    score: float = 0.9
    keypoints: tuple[tuple[float, float], ...] | None = None
    max_det_size: int | None = None

    def five_points(self) -> np.ndarray:
        if self.keypoints is not None:
            return np.asarray(self.keypoints, dtype=np.float64).reshape(5, 2)
        x1, y1, x2, y2 = self.box
        w, h = x2 - x1, y2 - y1
        rel = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
        return np.stack([x1 + rel[:, 0] * w, y1 + rel[:, 1] * h], axis=1)


class FakeSCRFD(nn.Module):
    """``[1, 3, H, W]`` → nine SCRFD outputs whose decoding yields the scripted faces."""

    def __init__(self, faces: Sequence[FakeFace], frame: int, presence: str):
        super().__init__()
        n = len(faces)
        boxes = torch.tensor([f.box for f in faces], dtype=torch.float32).reshape(n, 4) / frame
        kps = torch.tensor(
            np.stack([f.five_points() for f in faces]) if n else np.zeros((0, 5, 2)), dtype=torch.float32
        )
        self.register_buffer("boxes", boxes)  # [F, 4] fractions of the frame
        self.register_buffer("kps", kps.reshape(n, 10) / frame)  # [F, 10]
        self.register_buffer(
            "scores", torch.tensor([f.score for f in faces], dtype=torch.float32).reshape(n, 1)
        )
        limits = [float(f.max_det_size) if f.max_det_size else 1e9 for f in faces]
        self.register_buffer("max_side", torch.tensor(limits, dtype=torch.float32).reshape(n))
        # face k sits on stride-8 anchor k: cell k // 2 of the first row, centre ((k // 2) * 8, 0)
        centres = torch.tensor(
            [[(k // NUM_ANCHORS) * STRIDES[0], 0.0] for k in range(n)], dtype=torch.float32
        )
        self.register_buffer("centres", centres.reshape(n, 2))
        self.presence = presence

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        height = torch.ones_like(x[0, 0, :, 0]).sum()
        width = torch.ones_like(x[0, 0, 0, :]).sum()
        n = self.boxes.shape[0]
        pixels = self.boxes * torch.stack([width, height, width, height])
        kps = self.kps * torch.stack([width, height] * 5)
        stride = float(STRIDES[0])
        box_dist = torch.cat([self.centres - pixels[:, :2], pixels[:, 2:] - self.centres], dim=1) / stride
        kps_dist = (kps - self.centres.repeat(1, 5)) / stride
        score = self.scores * (width <= self.max_side).float().reshape(n, 1)
        if self.presence == "marker" and n:
            cx = ((pixels[:, 0] + pixels[:, 2]) / 2).floor().clamp(min=0).long()
            cy = ((pixels[:, 1] + pixels[:, 3]) / 2).floor().clamp(min=0).long()
            cx = torch.minimum(cx, width.long() - 1)
            cy = torch.minimum(cy, height.long() - 1)
            flat = x[0].reshape(3, -1)
            centre_values = torch.index_select(flat, 1, cy * width.long() + cx).mean(0)  # [F], -1..1
            score = score * (centre_values > 0).float().reshape(n, 1)
        scores, boxes, points = [], [], []
        for s in STRIDES:
            cells = torch.zeros_like(x[0, 0, ::s, ::s]).reshape(-1, 1)
            empty = torch.cat([cells] * NUM_ANCHORS, dim=1).reshape(-1, 1)  # [N_s, 1]
            rest = empty[n:] if s == STRIDES[0] else empty
            scores.append(torch.cat([score, rest], 0) if s == STRIDES[0] else rest)
            boxes.append(
                torch.cat([box_dist, rest.expand(-1, 4)], 0) if s == STRIDES[0] else rest.expand(-1, 4)
            )
            points.append(
                torch.cat([kps_dist, rest.expand(-1, 10)], 0) if s == STRIDES[0] else rest.expand(-1, 10)
            )
        return (*scores, *boxes, *points)


class FakeArcFace(nn.Module):
    """``[B, 3, 112, 112]`` (normalised by InsightFace) → ``[B, 512]`` random-feature embedding."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(512, 512),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def scripted_landmarks_3d(pose: Sequence[float]) -> np.ndarray:
    """InsightFace's 68-point mean shape turned by ``pose`` (6DRepNet pitch, yaw, roll degrees).

    Returns the 3309-vector a ``1k3d68`` model outputs: ``[1103, 3]`` flattened, the last 68
    rows being landmarks in normalised crop units (InsightFace maps ``(v + 1) * 96`` to pixels).
    """
    from insightface.data import get_object

    from ..pose.rotation import head_to_image_rotation

    mean = np.asarray(get_object("meanshape_68.pkl"), dtype=np.float64)
    rotation = head_to_image_rotation(np.asarray(pose, dtype=np.float64))
    landmarks = 0.6 * mean @ rotation.T
    out = np.zeros((1103, 3), dtype=np.float64)
    out[-68:] = landmarks
    return out.reshape(-1).astype(np.float32)


class FakeLandmark3D(nn.Module):
    """``[1, 3, 192, 192]`` → ``[1, 3309]``: the scripted landmarks whatever the input."""

    def __init__(self, pose: Sequence[float]):
        super().__init__()
        self.register_buffer("out", torch.from_numpy(scripted_landmarks_3d(pose)).reshape(1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out + 0.0 * x.mean()


def _export(module: nn.Module, example: torch.Tensor, path: Path, outputs: list[str], dynamic: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            (example,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["input.1"],
            output_names=outputs,
            dynamic_axes=dynamic,
        )


def build_fake_insightface_pack(
    folder: str | os.PathLike,
    faces: Sequence[FakeFace | tuple[float, float, float, float]] = (),
    *,
    frame: int = 640,
    presence: str = "marker",
    recognition: bool = True,
    landmark_pose: Sequence[float] | None = None,
    seed: int = 0,
) -> Path:
    """Write a pack folder ``FaceAnalysis(name=str(folder))`` loads; returns ``folder``.

    ``faces``: scripted faces (``FakeFace`` or plain boxes); ``landmark_pose``: when given, a
    ``1k3d68.onnx`` whose pose read-out is this (pitch, yaw, roll) in 6DRepNet's convention.
    """
    if presence not in ("marker", "always"):
        raise ValueError(f"presence must be 'marker' or 'always', got {presence!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scripted = [f if isinstance(f, FakeFace) else FakeFace(tuple(map(float, f))) for f in faces]
    names = [f"score_{s}" for s in STRIDES] + [f"bbox_{s}" for s in STRIDES] + [f"kps_{s}" for s in STRIDES]
    dynamic = {"input.1": {2: "height", 3: "width"}} | {name: {0: f"n_{name}"} for name in names}
    with torch.no_grad():
        _export(
            FakeSCRFD(scripted, frame, presence),
            torch.zeros(1, 3, 640, 640),
            folder / DETECTION_FILE,
            names,
            dynamic,
        )
        if recognition:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                arcface = FakeArcFace()
            _export(
                arcface,
                torch.zeros(1, 3, 112, 112),
                folder / RECOGNITION_FILE,
                ["embedding"],
                {"input.1": {0: "batch"}},
            )
        if landmark_pose is not None:
            _export(
                FakeLandmark3D(landmark_pose),
                torch.zeros(1, 3, 192, 192),
                folder / LANDMARK_3D_FILE,
                ["fc1"],
                {},
            )
    return folder


def paint_fake_faces(
    image: np.ndarray, faces: Sequence[FakeFace | tuple[float, float, float, float]], *, frame: int = 640
) -> np.ndarray:
    """A copy of ``image`` ``[H, W, 3]`` uint8 with a white patch on each face (the presence marker).

    Boxes are scaled from ``frame`` pixels to the image's longer side, as the fake detector reads them.
    """
    out = np.array(image, dtype=np.uint8, copy=True)
    scale = max(out.shape[:2]) / frame
    for face in faces:
        box = face.box if isinstance(face, FakeFace) else face
        x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
        out[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = 255
    return out
