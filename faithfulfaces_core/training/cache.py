"""Latent cache: every clip, reference candidate and prompt encoded once, so training runs without
the VAE and the text encoder in memory.

``<cache_dir>/<fingerprint>/`` (the fingerprint covers the encoders' configs and weight files
(name, size, mtime), their dtype, the clip geometry and the cache dtype, so a changed setting
never reads stale latents):

- ``videos/<sha256(key)[:16]>.safetensors``: ``latents`` ``[16, T', h, w]`` and
  ``reference.<crop>`` ``[32, 1, h, w]`` for each reference candidate crop
- ``prompts/<sha256(prompt)[:16]>.safetensors``: ``embeds`` ``[L, D]`` (trailing zero padding
  removed, restored on reading: bit-identical)
- ``context.safetensors``: the sample-independent VACE context parts

Files are written atomically and skipped when present, so an interrupted cache build resumes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from ..checkpoints import save_checkpoint
from ..errors import FaithfulFacesError

CACHE_KIND = "latent_cache"
CACHE_FORMAT = 1
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def cache_fingerprint(encoders: dict[str, Any], data_cfg) -> str:
    """sha256 of what the cached tensors depend on."""
    payload = {
        "format": CACHE_FORMAT, "encoders": encoders, "height": data_cfg.height, "width": data_cfg.width,
        "num_frames": data_cfg.num_frames, "frame_stride": data_cfg.frame_stride,
        "max_sequence_length": data_cfg.max_sequence_length, "dtype": data_cfg.cache_dtype,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class LatentCache:
    def __init__(self, root: str | Path, fingerprint: str, *, max_sequence_length: int, dtype: str = "fp32") -> None:
        self.dir = Path(root) / fingerprint[:16]
        self.max_sequence_length = max_sequence_length
        self.dtype = _DTYPES[dtype]

    def video_path(self, item) -> Path:
        return self.dir / "videos" / f"{_short(item.key)}.safetensors"

    def prompt_path(self, prompt: str) -> Path:
        return self.dir / "prompts" / f"{_short(prompt)}.safetensors"

    @property
    def context_path(self) -> Path:
        return self.dir / "context.safetensors"

    # --- writing ---------------------------------------------------------------------------------
    def _write(self, path: Path, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> None:
        save_checkpoint(path, {k: v.to(self.dtype) for k, v in tensors.items()}, kind=CACHE_KIND,
                        format=CACHE_FORMAT, config=config)

    def write_video(self, item, latents: torch.Tensor, references: dict[int, torch.Tensor]) -> None:
        tensors = {"latents": latents, **{f"reference.{c}": r for c, r in references.items()}}
        self._write(self.video_path(item), tensors, {"key": item.key, "candidates": sorted(references)})

    def write_prompt(self, prompt: str, embeds: torch.Tensor) -> None:
        """``embeds`` ``[L, D]`` with the pipeline's zero padding; trailing zero rows are not stored."""
        nonzero = torch.nonzero(embeds.abs().amax(-1) > 0)
        length = int(nonzero.max()) + 1 if len(nonzero) else 0
        self._write(self.prompt_path(prompt), {"embeds": embeds[: max(length, 1)]}, {"prompt": prompt})

    def write_context(self, blank: torch.Tensor, masks: torch.Tensor) -> None:
        self._write(self.context_path, {"blank": blank, "masks": masks}, {})

    def has_video(self, item) -> bool:
        path = self.video_path(item)
        if not path.is_file():
            return False
        with safe_open(str(path), framework="pt") as fh:
            keys = set(fh.keys())
        return {f"reference.{c}" for c in item.candidates} <= keys

    # --- reading ---------------------------------------------------------------------------------
    def _read(self, path: Path, keys: list[str]) -> list[torch.Tensor]:
        if not path.is_file():
            raise FaithfulFacesError(
                f"Latent cache file {path} is missing; the cache is incomplete. Run again with data.cache_latents=true "
                "(the cache build resumes and fills the gaps) or delete the cache directory.")
        with safe_open(str(path), framework="pt") as fh:
            missing = [k for k in keys if k not in fh.keys()]
            if missing:
                raise FaithfulFacesError(f"Latent cache file {path} lacks '{missing[0]}'; delete it and run again.")
            return [fh.get_tensor(k).float() for k in keys]

    def read_video(self, item, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents ``[16, T', h, w]``, reference part ``[32, 1, h, w]``), float32."""
        latents, reference = self._read(self.video_path(item), ["latents", f"reference.{crop}"])
        return latents, reference

    def read_prompt(self, prompt: str) -> torch.Tensor:
        """``[max_sequence_length, D]`` float32, zero-padded as the pipeline pads."""
        (embeds,) = self._read(self.prompt_path(prompt), ["embeds"])
        out = embeds.new_zeros(self.max_sequence_length, embeds.shape[-1])
        out[: embeds.shape[0]] = embeds
        return out

    def read_context(self) -> tuple[torch.Tensor, torch.Tensor]:
        blank, masks = self._read(self.context_path, ["blank", "masks"])
        return blank, masks


def build_cache(cache: LatentCache, index, conditioner, data_cfg, *, rank: int = 0, world: int = 1,
                progress: bool = True) -> dict[str, int]:
    """Encode what is not cached yet; process ``rank`` takes every ``world``-th video and prompt."""
    from tqdm.auto import tqdm

    from .data import clip_frame_indices, read_clip, read_image

    frames = clip_frame_indices(data_cfg.num_frames, data_cfg.frame_stride)
    videos = [index.items[i] for i in index.videos][rank::world]
    prompts = sorted({index.items[i].prompt for i in index.videos})[rank::world]
    todo_videos = [item for item in videos if not cache.has_video(item)]
    todo_prompts = [p for p in prompts if not cache.prompt_path(p).is_file()]
    if rank == 0 and not cache.context_path.is_file():
        cache.write_context(*conditioner.constant_parts())
    bar = tqdm(total=len(todo_videos) + len(todo_prompts), desc="caching latents", disable=not progress,
               unit="item")
    for item in todo_videos:
        clip = read_clip(item.video, item.clip_frames(frames), data_cfg.height, data_cfg.width)
        latents = conditioner.video_latents(clip[None])[0]
        parts = conditioner.reference_parts([read_image(item.crops[c]) for c in item.candidates])
        cache.write_video(item, latents.cpu(), {c: parts[k].cpu() for k, c in enumerate(item.candidates)})
        bar.update()
    for prompt in todo_prompts:
        cache.write_prompt(prompt, conditioner.prompt_embeds([prompt])[0].cpu())
        bar.update()
    bar.close()
    return {"videos": len(todo_videos), "prompts": len(todo_prompts),
            "cached_videos": len(videos) - len(todo_videos), "cached_prompts": len(prompts) - len(todo_prompts)}
