"""Plots of a FaceSim run: similarity and pitch/yaw/roll over the frames, one video or several.

Drawn on matplotlib's Agg canvas (no display, no global backend switch) at a fixed
``PLOT_WIDTH`` × ``PLOT_HEIGHT`` pixels, returned as ``[H, W, 3]`` uint8 RGB so the node can
hand it to ComfyUI and the CLI can write it as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from ..deps import require
from .facesim import VideoScore

PLOT_WIDTH = 1000
PLOT_HEIGHT = 600
_DPI = 100
_POSE_COLORS = {"pitch": "#2f7d32", "yaw": "#c0392b", "roll": "#7b4fa0"}


def _figure():
    require("matplotlib", "FaceSim plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(PLOT_WIDTH / _DPI, PLOT_HEIGHT / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    fig.subplots_adjust(left=0.07, right=0.83, top=0.92, bottom=0.09, hspace=0.08)
    return fig, top, bottom


def _render(fig) -> np.ndarray:
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3])


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _axes(top, bottom, *, degrees: str, frames: str, legends: Sequence = ()) -> None:
    """The layout every FaceSim plot shares: similarity 0..1 on top, angles (``degrees``) below over
    ``frames``, grids, and the ``legends`` of those axes right of them."""
    top.set_ylim(-0.05, 1.05)
    top.set_ylabel("FaceSim (cosine, ≥ 0)")
    bottom.set_ylabel(degrees)
    bottom.set_xlabel(frames)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    for ax in legends:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _yaw_guides(ax) -> None:
    for level in (30.0, 60.0):
        for sign in (-1.0, 1.0):
            ax.axhline(sign * level, color="#999999", linewidth=0.6, linestyle=":")


def plot_video(score: VideoScore, *, title: str | None = None) -> np.ndarray:
    """Similarity (top) and head pose (bottom) of one video over its sampled frames → ``[H, W, 3]`` uint8."""
    fig, top, bottom = _figure()
    x = np.array([f.index for f in score.frames], dtype=np.float64)
    sim = score.series("similarity")
    padded = np.array([f.padded for f in score.frames], bool)
    multi = np.array([f.faces > 1 for f in score.frames], bool)
    missing = np.isnan(sim)
    s = score.summary
    top.plot(x, sim, color="#1f5fa8", linewidth=1.2, label="similarity")
    plain = ~missing & ~padded & ~multi
    top.scatter(x[plain], sim[plain], s=18, color="#1f5fa8", zorder=3, label="one face")
    if (~missing & multi).any():
        top.scatter(x[~missing & multi], sim[~missing & multi], s=40, marker="D", facecolors="none",
                    edgecolors="#e67e22", zorder=4, label="several faces (largest)")
    if (~missing & padded).any():
        top.scatter(x[~missing & padded], sim[~missing & padded], s=40, marker="s", facecolors="none",
                    edgecolors="#16a085", zorder=4, label="found after padding")
    if missing.any():
        top.scatter(x[missing], np.zeros(int(missing.sum())), s=40, marker="x", color="#c0392b", zorder=4,
                    label="no face")
    if s.mean is not None:
        top.axhline(s.mean, color="#1f5fa8", linestyle="--", linewidth=0.8, label=f"mean {s.mean:.3f}")
    for name in ("pitch", "yaw", "roll"):
        bottom.plot(x, score.series(name), marker=".", linewidth=1.0, color=_POSE_COLORS[name], label=name)
    _yaw_guides(bottom)
    _axes(top, bottom, degrees="degrees", frames="frame", legends=(top, bottom))
    bins = "  ".join(f"{b.label}: {_fmt(b.mean)} ({b.frames})" for b in s.yaw_bins)
    fig.suptitle(
        title or f"{score.name}: mean {_fmt(s.mean)}, min {_fmt(s.min)}, no face {s.no_face_frames}/"
        f"{s.frames_sampled}\n{bins}",
        fontsize=10,
    )
    return _render(fig)


def plot_comparison(scores: Sequence[VideoScore], *, title: str = "FaceSim comparison") -> np.ndarray:
    """Similarity (top) and yaw (bottom) of several videos on shared axes → ``[H, W, 3]`` uint8."""
    fig, top, bottom = _figure()
    for score in scores:
        x = np.array([f.index for f in score.frames], dtype=np.float64)
        line = top.plot(x, score.series("similarity"), marker="o", markersize=3, linewidth=1.0,
                        label=f"{score.name} (mean {_fmt(score.summary.mean)})")[0]
        bottom.plot(x, score.series("yaw"), marker=".", linewidth=1.0, color=line.get_color(), label=score.name)
    _yaw_guides(bottom)
    _axes(top, bottom, degrees="yaw (degrees)", frames="frame", legends=(top,))
    fig.suptitle(title, fontsize=10)
    return _render(fig)


def save_png(image: np.ndarray, path: str | PathLike) -> Path:
    """Write ``[H, W, 3]`` uint8 RGB as a PNG (atomically) and return the path."""
    from PIL import Image

    from ..checkpoints import atomic_write

    return atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))
