"""A complete tiny, randomly initialised model set in ComfyUI's ``models/`` layout.

What the quick-start demo and the end-to-end tests place where a user places the real files,
so the nodes run their real loading code. Every file is random: it proves the plumbing, not
the method. Each folder gets a ``TINY_RANDOM_MODELS.txt`` saying so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

NOTICE = (
    "These files are TINY, RANDOMLY INITIALISED models written by FaithfulFaces' tiny-model builder\n"
    "(faithfulfaces_core/tiny/modelset.py) for the demo and the tests. They are not real models:\n"
    "the videos they make are noise. Replace them with the real files listed in the README.\n"
)
FAKE_PACK = "tiny_fake_pack"
POSE_FILE = "6DRepNet_tiny_random.safetensors"
ALIGNER_FILE = "faithfulfaces_aligner_tiny_random.safetensors"
LORA_FILE = "faithfulfaces_lora_tiny_random.safetensors"
LORA_COMFY_FILE = "faithfulfaces_lora_tiny_random_comfy.safetensors"
# The fake InsightFace pack finds one face here (in 640-pixel frame units) wherever a white
# patch marks it (see tiny.insightface.paint_fake_faces).
FAKE_FACE_BOX = (200.0, 120.0, 440.0, 400.0)


@dataclass(frozen=True)
class TinyModelSet:
    models_dir: Path
    insightface_pack: Path
    pose_estimator: Path
    aligner: Path
    diffusers_dir: Path
    transformer_file: Path
    lora: Path
    lora_comfy: Path
    vae: Path  # for ComfyUI's VAELoader (the native KSampler path), see tiny/native.py


def write_tiny_model_set(models_dir: str | os.PathLike, *, seed: int = 0) -> TinyModelSet:
    """Write every model the pack's nodes load, tiny and random, under ``models_dir``.

    One transformer (a diffusers folder and a single file that ComfyUI's ``UNETLoader`` takes
    too), one aligner whose token width is that transformer's, and one LoRA for it in both
    layouts, so the diffusers and the native workflows run end to end on the same files.
    Rewrites existing files.
    """
    from ..aligner import save_aligner
    from ..pose.sixdrepnet import save_sixdrepnet
    from ..wan.loading import load_pipeline
    from ..wan.lora import save_lora
    from .aligner import build_tiny_aligner
    from .insightface import FakeFace, build_fake_insightface_pack
    from .native import add_random_lora, write_tiny_vae
    from .pose import random_sixdrepnet, tiny_sixdrepnet_config
    from .wan import TINY_WIDTH, build_tiny_pipeline

    models = Path(models_dir)
    wan = build_tiny_pipeline(models, seed=seed)
    pack = build_fake_insightface_pack(
        models / "insightface" / "models" / FAKE_PACK, [FakeFace(FAKE_FACE_BOX)], landmark_pose=(5.0, -20.0, 3.0)
    )
    ff = models / "faithfulfaces"
    pose = save_sixdrepnet(random_sixdrepnet(seed, config=tiny_sixdrepnet_config()), ff / POSE_FILE,
                           source="tiny random (faithfulfaces_core.tiny)")
    aligner = save_aligner(build_tiny_aligner(seed=seed, token_dim=TINY_WIDTH), ff / ALIGNER_FILE,
                           extra_metadata={"faithfulfaces.tiny": "1"})

    pipe = load_pipeline(wan.diffusers_dir, dtype="fp32", device="cpu")
    add_random_lora(pipe.transformer, seed=seed + 1)
    loras = models / "loras"
    lora = save_lora(loras / LORA_FILE, pipe.transformer, layout="diffusers")
    lora_comfy = save_lora(loras / LORA_COMFY_FILE, pipe.transformer, layout="original_wan")
    vae = write_tiny_vae(models, seed=seed)

    for folder in {wan.diffusers_dir.parent, wan.transformer_file.parent, pack.parent, ff, loras, vae.parent}:
        (folder / "TINY_RANDOM_MODELS.txt").write_text(NOTICE)
    return TinyModelSet(models, pack, pose, aligner, wan.diffusers_dir, wan.transformer_file, lora, lora_comfy, vae)
