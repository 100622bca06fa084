"""Captioners: the text prompt of each kept video.

A captioner is any object with a ``name`` and ``caption(request) -> str`` that raises
``CaptionMissing`` when it has no caption for a video (the video is then rejected with reason
``no_caption``, and the run goes on). Built in:

- ``SidecarCaptioner``: ``clip.txt`` next to ``clip.mp4``.
- ``TableCaptioner``: one CSV or JSONL file mapping videos to captions.
- ``QwenVLCaptioner``: Qwen2.5-VL (as in the paper) from a folder the user placed; loaded with
  ``local_files_only=True``, never downloaded.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..deps import require
from ..errors import FaithfulFacesError, MissingModelError
from .sources import VideoRef

DEFAULT_CAPTION_PROMPT = (
    "Describe this video in one detailed paragraph for a text-to-video model. Describe the person's "
    "appearance (face, hair, skin, clothing and accessories), their actions, head movements and "
    "expressions, and the background and setting (place, lighting, other objects). Write plain "
    "prose without lists and do not guess the person's name."
)


class CaptionMissing(FaithfulFacesError):
    """The captioner has no caption for this video (the video is rejected, the run continues)."""


@dataclass(frozen=True)
class CaptionRequest:
    """A kept video to caption: its frames with a face and what the decoder saw."""

    ref: VideoRef
    frame_indices: tuple[int, ...]  # sampled frames with a face, increasing
    frames_decoded: int
    fps: float | None


@runtime_checkable
class Captioner(Protocol):
    name: str

    def caption(self, request: CaptionRequest) -> str:
        """The prompt for ``request.ref``; raise ``CaptionMissing`` when there is none."""
        ...


def _clean(text: str) -> str:
    return " ".join(text.split())


class SidecarCaptioner:
    """Reads the caption from a text file next to the video with the same stem (``a.mp4`` → ``a.txt``)."""

    def __init__(self, suffix: str = ".txt") -> None:
        self.suffix = suffix if suffix.startswith(".") else f".{suffix}"
        self.name = f"sidecar{self.suffix}"

    def caption(self, request: CaptionRequest) -> str:
        path = request.ref.path.with_suffix(self.suffix)
        if not path.is_file():
            raise CaptionMissing(f"no caption file {path} next to the video; write its prompt there")
        text = _clean(path.read_text(encoding="utf-8"))
        if not text:
            raise CaptionMissing(f"caption file {path} is empty; write the video's prompt into it")
        return text


class TableCaptioner:
    """Captions from one CSV (header ``video,caption``) or JSONL file (``{"video": ..., "caption": ...}``).

    ``prompt`` is accepted in place of ``caption``. A row's ``video`` is matched against the
    video's key (its path relative to the input folder), then its absolute path, then its file
    name when that name is unique in the table.
    """

    def __init__(self, path: str | PathLike) -> None:
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FaithfulFacesError(
                f"Caption table {self.path} does not exist. Give a CSV (columns video,caption) or a JSONL "
                'file (one {"video": ..., "caption": ...} object per line).'
            )
        self.name = f"table:{self.path.name}"
        rows = self._rows()
        self.by_video: dict[str, str] = {}
        where: dict[str, int] = {}
        for line, video, caption in rows:
            if video in self.by_video and self.by_video[video] != caption:
                raise FaithfulFacesError(
                    f"{self.path}, line {line}: video '{video}' already has another caption on line {where[video]}; "
                    "keep one caption per video."
                )
            self.by_video[video], where[video] = caption, line
        names: dict[str, list[str]] = {}
        for video in self.by_video:
            names.setdefault(Path(video).name, []).append(video)
        self.by_name = {n: self.by_video[v[0]] for n, v in names.items() if len(v) == 1}

    def _rows(self) -> list[tuple[int, str, str]]:
        rows: list[tuple[int, str, str]] = []
        if self.path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            for line, text in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise FaithfulFacesError(
                        f"{self.path}, line {line}: not valid JSON ({exc.msg})."
                    ) from exc
                rows.append((line, *self._pick(obj, line)))
        else:
            with open(self.path, newline="", encoding="utf-8") as fh:
                for line, obj in enumerate(csv.DictReader(fh), start=2):
                    rows.append((line, *self._pick(obj, line)))
        return rows

    def _pick(self, obj: object, line: int) -> tuple[str, str]:
        if not isinstance(obj, dict):
            raise FaithfulFacesError(
                f"{self.path}, line {line}: expected an object with 'video' and 'caption'."
            )
        caption = obj.get("caption", obj.get("prompt"))
        video = obj.get("video")
        if not isinstance(video, str) or not isinstance(caption, str):
            raise FaithfulFacesError(
                f"{self.path}, line {line}: needs a 'video' and a 'caption' (or 'prompt') text field, "
                f"found fields {sorted(obj)}."
            )
        return video.strip(), _clean(caption)

    def caption(self, request: CaptionRequest) -> str:
        ref = request.ref
        for candidate in (ref.key, str(ref.path), str(ref.path.resolve())):
            if candidate in self.by_video:
                text = self.by_video[candidate]
                break
        else:
            text = self.by_name.get(ref.path.name)
            if text is None:
                raise CaptionMissing(f"caption table {self.path} has no row for '{ref.key}'")
        if not text:
            raise CaptionMissing(f"caption table {self.path} has an empty caption for '{ref.key}'")
        return text


def caption_messages(prompt: str) -> list[dict]:
    """The chat for one video: a user turn holding the video, then the instruction."""
    return [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]


def pick_frames(frame_indices: Sequence[int], count: int) -> list[int]:
    """Up to ``count`` indices spread evenly over ``frame_indices`` (first and last included)."""
    if count < 1:
        raise FaithfulFacesError(f"The captioner needs at least 1 frame, got num_frames={count}.")
    indices = list(frame_indices)
    if len(indices) <= count:
        return indices
    positions = np.linspace(0, len(indices) - 1, count).round().astype(int)
    return [indices[p] for p in positions]


QWEN_SOURCE = (
    "Download a Qwen2.5-VL Instruct model once (e.g. `huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct "
    "--local-dir {path}`, or the 3B one) and point the captioner at that folder; nothing is downloaded at run time"
)


def check_qwen_folder(path: str | PathLike) -> Path:
    """The model folder, or a ``MissingModelError`` / ``FaithfulFacesError`` saying what is wrong."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise MissingModelError(
            f"Qwen2.5-VL captioner: the folder {path} does not exist. {QWEN_SOURCE.format(path=path)}."
        )
    config = path / "config.json"
    if not config.is_file():
        raise MissingModelError(
            f"Qwen2.5-VL captioner: {path} has no config.json, so it is not a Hugging Face model folder. "
            f"{QWEN_SOURCE.format(path=path)}."
        )
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except json.JSONDecodeError as exc:
        raise FaithfulFacesError(
            f"Qwen2.5-VL captioner: {config} is not valid JSON ({exc.msg}); re-download the model."
        ) from exc
    if model_type != "qwen2_5_vl":
        raise FaithfulFacesError(
            f"Qwen2.5-VL captioner: {path} holds a '{model_type}' model, but a Qwen2.5-VL model "
            f"(model_type 'qwen2_5_vl') is needed. {QWEN_SOURCE.format(path=path)}."
        )
    return path


class QwenVLCaptioner:
    """Captions a video with Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration`` + ``AutoProcessor``).

    Reads ``num_frames`` frames spread over the video's frames with a face, asks ``prompt``
    (appearance, actions, background) and decodes greedily up to ``max_new_tokens`` tokens.
    """

    def __init__(
        self,
        model_path: str | PathLike,
        *,
        prompt: str = DEFAULT_CAPTION_PROMPT,
        num_frames: int = 8,
        max_new_tokens: int = 256,
        device: str = "auto",
        dtype: str = "auto",
        max_pixels: int | None = 448 * 448,
    ) -> None:
        path = check_qwen_folder(model_path)
        if not prompt.strip():
            raise FaithfulFacesError(
                "The captioner prompt is empty; give an instruction such as the default prompt."
            )
        if max_new_tokens < 1:
            raise FaithfulFacesError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
        pick_frames([0], num_frames)
        transformers = require("transformers", "The Qwen2.5-VL captioner")
        from ..devices import resolve_device, resolve_dtype

        self.path, self.prompt, self.num_frames, self.max_new_tokens = (
            path,
            prompt,
            num_frames,
            max_new_tokens,
        )
        self.max_pixels = max_pixels
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.name = f"qwen2.5-vl:{path.name}"
        try:
            self.processor = transformers.AutoProcessor.from_pretrained(str(path), local_files_only=True)
            self.model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(
                str(path), local_files_only=True, dtype=self.dtype
            )
        except (OSError, ValueError) as exc:
            raise MissingModelError(
                f"Qwen2.5-VL captioner: cannot load the model from {path} ({exc}). The folder must hold the "
                f"complete model (config, weights, tokenizer, processor files). {QWEN_SOURCE.format(path=path)}."
            ) from exc
        self.model.to(self.device).eval()

    def chat_text(self) -> str:
        """The prompt as the model sees it (chat template applied, generation turn opened)."""
        return self.processor.apply_chat_template(
            caption_messages(self.prompt), tokenize=False, add_generation_prompt=True
        )

    def inputs(self, frames: np.ndarray, request: CaptionRequest, indices: Sequence[int]) -> dict:
        """Processor outputs for ``frames`` ``[T, H, W, 3]`` uint8 taken at ``indices``."""
        videos_kwargs: dict = {}
        video_processor = self.processor.video_processor
        size = getattr(video_processor, "size", None)
        shortest = (
            size.get("shortest_edge") if isinstance(size, dict) else getattr(size, "shortest_edge", None)
        )
        if (
            self.max_pixels is not None
        ):  # transformers 5 takes the pixel budget as size, older ones as max_pixels
            if shortest is not None:
                videos_kwargs["size"] = {
                    "shortest_edge": min(shortest, self.max_pixels),
                    "longest_edge": self.max_pixels,
                }
            else:
                videos_kwargs["max_pixels"] = self.max_pixels
        if hasattr(video_processor, "cap_pixels_per_frame"):
            videos_kwargs["cap_pixels_per_frame"] = True
        if request.fps:  # real frame times for the model's temporal positions
            videos_kwargs["video_metadata"] = [
                {
                    "total_num_frames": request.frames_decoded,
                    "fps": request.fps,
                    "frames_indices": list(indices),
                }
            ]
        return self.processor(text=[self.chat_text()], videos=[frames], return_tensors="pt", **videos_kwargs)

    def caption(self, request: CaptionRequest) -> str:
        import torch

        from .decode import read_frames

        indices = pick_frames(request.frame_indices, self.num_frames)
        frames = np.stack(read_frames(request.ref.path, indices))
        batch = self.inputs(frames, request, indices).to(self.device)
        if "pixel_values_videos" in batch:
            batch["pixel_values_videos"] = batch["pixel_values_videos"].to(self.dtype)
        with torch.inference_mode():
            out = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = out[:, batch["input_ids"].shape[1] :]
        text = _clean(self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0])
        if not text:
            raise CaptionMissing(f"Qwen2.5-VL returned an empty caption for '{request.ref.key}'")
        return text
