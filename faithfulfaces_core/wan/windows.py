"""Context windows over the latent frames: a video longer than the model's frame count.

The same scheme as ComfyUI's context windows (``WanContextWindowsManual`` with the
``standard_static`` schedule), so a long video made on the diffusers path and one made with
ComfyUI's native model are windowed alike:

- **windows**: ``length`` latent frames each, starting every ``length − overlap`` frames; the
  last one is moved back to end on the last frame, so every window is full;
- **fusion**: every transformer call is made per window and the outputs are averaged frame by
  frame with per-window weights — ``pyramid`` (1, 2, …, peak, …, 2, 1: a frame counts more in
  the middle of its window), ``flat`` (1), or ``overlap-linear`` (a linear ramp over the overlap,
  1 elsewhere) — ``fused[f] = Σ_w weight_w[f]·out_w[f] / Σ_w weight_w[f]``;
- **reference frames**: the VACE reference latent(s) the pipeline puts in front of the video
  (``R`` frames) go in front of *every* window, so each window sees the face exactly as a
  one-window video does (same rotary positions: reference at 0, video after it). Their outputs
  are averaged over the windows (the pipeline drops them before decoding).

The pose tokens are global, so they need nothing: every window's self-attention sees them.
``windowed_transformer`` puts this around one transformer for the duration of a
``WanVACEPipeline`` call, without touching the pipeline: it overrides the module's ``forward``
and calls the original one per window — module hooks (the pose injection's step counter) still
run once per pipeline call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..errors import FaithfulFacesError

FUSE_METHODS = ("pyramid", "flat", "overlap-linear")


def latent_frames(video_frames: int, temporal: int = 4) -> int:
    """Video frames → latent frames as ``WanContextWindowsManual`` converts lengths and overlaps."""
    return max((video_frames - 1) // temporal + 1, 0)


def static_windows(total: int, length: int, overlap: int) -> list[list[int]]:
    """Frame indices of each window over ``total`` frames (ComfyUI's ``standard_static``)."""
    if total <= length:
        return [list(range(total))]
    windows, step = [], length - overlap
    for start in range(0, total, step):
        if start + length >= total:
            windows.append(list(range(total - length, total)))
            break
        windows.append(list(range(start, start + length)))
    return windows


def window_weights(method: str, window: list[int], total: int, overlap: int) -> torch.Tensor:
    """Fusion weights ``[len(window)]`` (float32) of one window of frames ``window`` out of ``total``."""
    length = len(window)
    if method == "flat":
        return torch.ones(length)
    if method == "pyramid":
        peak = (length + 1) // 2
        rising = list(range(1, peak + 1))
        return torch.tensor(rising + rising[::-1][length % 2:], dtype=torch.float32)
    if method == "overlap-linear":
        weights = torch.ones(length)
        if overlap and min(window) > 0:
            weights[:overlap] = torch.linspace(1e-37, 1, overlap)
        if overlap and max(window) < total - 1:
            weights[-overlap:] = torch.linspace(1, 1e-37, overlap)
        return weights
    raise FaithfulFacesError(f"Context fuse method '{method}' is unknown: use one of {', '.join(FUSE_METHODS)}.")


@dataclass(frozen=True)
class ContextWindows:
    """Window length and overlap in latent frames, and how overlapping outputs are fused."""

    length: int
    overlap: int
    fuse: str = "pyramid"

    def check(self) -> None:
        if self.length < 1 or not 0 <= self.overlap < self.length:
            raise FaithfulFacesError(
                f"Context windows of {self.length} latent frames with overlap {self.overlap} are not possible: "
                "the overlap must be ≥ 0 and shorter than the window (e.g. 81 video frames with overlap 16)."
            )
        if self.fuse not in FUSE_METHODS:
            raise FaithfulFacesError(f"Context fuse method '{self.fuse}' is unknown: use one of {', '.join(FUSE_METHODS)}.")

    def windows(self, total: int) -> list[list[int]]:
        return static_windows(total, self.length, self.overlap)


def fuse_windows(outputs: list[torch.Tensor], windows: list[list[int]], total: int, spec: ContextWindows,
                 dim: int = 2) -> torch.Tensor:
    """Per-window outputs (``len(window)`` frames on ``dim`` each) → one tensor of ``total`` frames.

    A single window is returned as it is (no division, so bit-identical to an unwindowed call).
    Accumulates in float32, as ComfyUI does, and returns the outputs' dtype.
    """
    if len(windows) == 1:
        return outputs[0]
    shape = list(outputs[0].shape)
    shape[dim] = total
    fused = torch.zeros(shape, dtype=torch.float32, device=outputs[0].device)
    counts = torch.zeros(total, dtype=torch.float32, device=outputs[0].device)
    view = [1] * len(shape)
    view[dim] = -1
    for out, window in zip(outputs, windows, strict=True):
        weights = window_weights(spec.fuse, window, total, spec.overlap).to(out.device)
        index = torch.tensor(window, device=out.device)
        fused.index_add_(dim, index, out.float() * weights.view(view))
        counts.index_add_(0, index, weights)
    return (fused / counts.view(view)).to(outputs[0].dtype)


def run_windows(forward: Callable, kwargs: dict, spec: ContextWindows, reference_frames: int,
                on_window: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """One transformer call as per-window calls: ``hidden_states`` / ``control_hidden_states``
    ``[B, C, R + T, h, w]`` → the fused output ``[B, C_out, R + T, h, w]``.

    Each window gets the ``R`` reference frames in front of its ``T``-frame slice; ``forward`` is
    the transformer's own forward (called with ``return_dict=False``); ``on_window(i, count)``
    runs after window ``i`` (progress, cancel).
    """
    hidden, control = kwargs["hidden_states"], kwargs.get("control_hidden_states")
    total = hidden.shape[2] - reference_frames
    windows = spec.windows(total)
    refs, videos = [], []
    for i, window in enumerate(windows):
        index = torch.tensor(list(range(reference_frames)) + [reference_frames + f for f in window], device=hidden.device)
        call = {**kwargs, "hidden_states": hidden.index_select(2, index), "return_dict": False}
        if control is not None:
            call["control_hidden_states"] = control.index_select(2, index.to(control.device))
        out = forward(**call)[0]
        refs.append(out[:, :, :reference_frames])
        videos.append(out[:, :, reference_frames:])
        if on_window is not None:
            on_window(i, len(windows))
    video = fuse_windows(videos, windows, total, spec)
    if len(windows) == 1:
        return torch.cat([refs[0], video], dim=2)
    return torch.cat([torch.stack(refs).mean(0).to(video.dtype), video], dim=2)


@contextmanager
def windowed_transformer(transformer, spec: ContextWindows, video_frames: int,
                         on_window: Callable[[int, int], None] | None = None) -> Iterator[None]:
    """Inside the block, every ``transformer(...)`` call runs window by window (see ``run_windows``).

    ``video_frames`` is the video's latent frame count; the frames in front of them in
    ``hidden_states`` are the reference frames (as many as the pipeline got reference images).
    """
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    spec.check()
    own = transformer.__dict__.get("forward")  # an accelerate offload hook puts its forward here
    original = own if own is not None else type(transformer).forward.__get__(transformer)

    def forward(*args, **kwargs):
        if args:
            raise TypeError("Context windows need the transformer's inputs as keywords, as WanVACEPipeline passes them.")
        reference_frames = kwargs["hidden_states"].shape[2] - video_frames
        if reference_frames < 0:
            raise RuntimeError(f"The transformer got {kwargs['hidden_states'].shape[2]} latent frames, "
                               f"fewer than the video's {video_frames}.")
        out = run_windows(original, kwargs, spec, reference_frames, on_window)
        return (out,) if not kwargs.get("return_dict", True) else Transformer2DModelOutput(sample=out)

    transformer.forward = forward
    try:
        yield
    finally:
        if own is not None:
            transformer.forward = own
        else:
            del transformer.forward
