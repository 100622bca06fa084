"""A synthetic dataset directory in the curation pipeline's layout, for tests, benchmarks and the demo.

Each identity is a random texture; its face crops are that texture warped by the crop's head
pose plus a little noise, so identities are distinguishable and two crops of one identity
differ. Videos are random smooth colour fields encoded with PyAV (H.264, lossless). The
manifest lines are real ``VideoRecord``s (ranges and Δ computed from the angles), so
``load_manifest`` and the trainer read the directory exactly as a built one.
"""

from __future__ import annotations

import hashlib
from os import PathLike
from pathlib import Path

import numpy as np

from ..dataset.encode import write_video

PROMPTS = (
    "a young woman turns her head left", "an old man looks up slowly", "a child smiles at the camera",
    "a woman with red hair turns right", "a man in a dark room looks down", "a person walks in the street",
)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int = 4) -> np.ndarray:
    """``[size, size, 3]`` float in 0..1: coarse random colours upsampled bilinearly."""
    import torch
    import torch.nn.functional as F

    coarse = torch.from_numpy(rng.random((1, 3, cells, cells), dtype=np.float32))
    fine = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=True)
    return fine[0].permute(1, 2, 0).numpy()


def _crop_image(texture: np.ndarray, angles: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The identity's texture shifted by yaw/pitch, rotated by roll (in 90° steps), plus noise → uint8."""
    pitch, yaw, roll = angles
    image = np.roll(texture, (int(round(pitch / 15.0)), int(round(yaw / 15.0))), axis=(0, 1))
    image = np.rot90(image, k=int(round(roll / 90.0)) % 4)
    image = image + rng.normal(0.0, 0.03, image.shape)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def write_synthetic_dataset(
    root: str | PathLike,
    *,
    identities: int = 4,
    crops_per_identity: int = 4,
    frames: int = 9,
    size: int = 32,
    crop_size: int = 32,
    seed: int = 0,
) -> Path:
    """Write ``identities`` videos with their crops and a ``manifest.jsonl`` under ``root``; returns ``root``.

    Videos are ``size × size`` with ``frames`` frames; crops sit on evenly spread frames, each at
    a distinct random pose (pitch ±30°, yaw ±60°, roll ±20°).
    """
    from PIL import Image

    from ..dataset.manifest import CROPS_DIR, FORMAT_VERSION, MANIFEST_NAME, VideoRecord
    from ..dataset.variation import pose_ranges

    if crops_per_identity > frames:
        raise ValueError(f"crops_per_identity ({crops_per_identity}) cannot exceed frames ({frames})")
    root = Path(root)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for n in range(identities):
        key = f"person_{n:03d}.mp4"
        slug = f"person_{n:03d}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        video = root / "videos" / key
        clip = np.stack([_smooth_noise(rng, size) for _ in range(frames)])
        write_video(video, np.clip(np.rint(clip * 255.0), 0, 255).astype(np.uint8))
        texture = _smooth_noise(rng, crop_size, cells=6)
        indices = sorted(int(i) for i in np.linspace(0, frames - 1, crops_per_identity).round())
        angles = np.stack([rng.uniform(-30, 30, crops_per_identity), rng.uniform(-60, 60, crops_per_identity),
                           rng.uniform(-20, 20, crops_per_identity)], axis=1).round(3)
        crops = []
        (root / CROPS_DIR / slug).mkdir(parents=True, exist_ok=True)
        for index, triple in zip(indices, angles, strict=True):
            rel = f"{CROPS_DIR}/{slug}/f{index:06d}.png"
            Image.fromarray(_crop_image(texture, triple, rng)).save(root / rel)
            crops.append(rel)
        ranges = pose_ranges(angles.astype(np.float64))
        record = VideoRecord(
            format=FORMAT_VERSION, key=key, video=str(video.resolve()), prompt=PROMPTS[n % len(PROMPTS)],
            frame_indices=indices, crops=crops, angles=[tuple(float(a) for a in t) for t in angles],
            boxes=[(size * 0.25, size * 0.25, size * 0.75, size * 0.75)] * len(indices),
            crop_boxes=[(0, 0, size, size)] * len(indices), ranges=tuple(float(r) for r in ranges),
            delta=float(ranges.sum()), frames_decoded=frames, frames_sampled=frames, width=size, height=size,
            fps=8.0, backends={"detector": "synthetic", "pose": "synthetic", "captioner": "synthetic"},
        )
        lines.append(record.line())
    (root / MANIFEST_NAME).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return root


def tiny_overrides(diffusers_dir: str | PathLike, dataset_dir: str | PathLike, output_dir: str | PathLike,
                   **extra) -> list[str]:
    """``--set`` overrides for a run on ``tiny.wan``'s pipeline and a ``write_synthetic_dataset`` directory
    (32×32, 5 frames, LoRA rank 4, the tiny aligner, no loader workers); ``extra`` adds or replaces
    ``section__key=value`` entries (``data__batch_size=2``)."""
    import json

    from ..tiny.aligner import tiny_aligner_config

    aligner = {k: v for k, v in tiny_aligner_config().to_dict().items() if k != "token_dim"}
    values = {
        "model.diffusers_dir": str(diffusers_dir), "data.dataset_dir": str(dataset_dir),
        "run.output_dir": str(output_dir), "data.height": 32, "data.width": 32, "data.num_frames": 5,
        "data.frame_stride": 2, "data.batch_size": 1, "data.aligner_batch_size": 3, "data.num_workers": 0,
        "data.max_sequence_length": 16, "data.reference_candidates": 2, "lora.rank": 4, "aligner.config": aligner,
        "run.max_steps": 3, "run.checkpoint_every": 2, "run.log_every": 1, "run.device": "cpu",
    }
    values.update({key.replace("__", "."): value for key, value in extra.items()})
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]
