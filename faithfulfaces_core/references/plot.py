"""The coverage plot of a reference pick: yaw/pitch of every face, chosen and rejected ones marked.

Drawn on matplotlib's Agg canvas at a fixed size and returned as ``[H, W, 3]`` uint8 RGB (the
node hands it to ComfyUI, the CLI writes it as PNG).
"""

from __future__ import annotations

import numpy as np

from ..deps import require
from .pick import BLURRED, OTHER, SMALL, PickResult

WIDTH, HEIGHT, DPI = 800, 600, 100
_STYLE = {None: ("o", "#7f8c8d", "accepted"), SMALL: ("s", "#e67e22", SMALL),
          BLURRED: ("^", "#8e44ad", BLURRED), OTHER: ("x", "#2c3e50", OTHER)}


def plot_coverage(result: PickResult) -> np.ndarray:
    """``[HEIGHT, WIDTH, 3]`` uint8: yaw (x) against pitch (y) of every candidate face."""
    require("matplotlib", "the reference coverage plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for reason, (marker, color, label) in _STYLE.items():
        pts = np.array([[c.pose.angles.yaw, c.pose.angles.pitch] for c in result.candidates if c.reason == reason])
        if len(pts):
            ax.scatter(pts[:, 0], pts[:, 1], marker=marker, c=color, s=36, label=f"{label} ({len(pts)})")
    chosen = np.array([[c.pose.angles.yaw, c.pose.angles.pitch] for c in result.chosen])
    ax.scatter(chosen[:, 0], chosen[:, 1], s=220, facecolors="none", edgecolors="#c0392b", linewidths=2,
               label=f"chosen ({len(chosen)})")
    for n, (x, y) in enumerate(chosen):
        ax.annotate(str(n + 1), (x, y), xytext=(7, 7), textcoords="offset points", color="#c0392b")
    whole = [f"{r}: {n}" for r, n in result.counts().items() if n and r not in _STYLE]
    ax.set(xlim=(-95, 95), ylim=(-95, 95), xlabel="yaw (°)", ylabel="pitch (°)",
           title=f"{len(result.chosen)} of {len(result.candidates)} faces in {result.images} images"
                 + (f" — images dropped: {', '.join(whole)}" if whole else ""))
    ax.axhline(0, color="#ddd", zorder=0)
    ax.axvline(0, color="#ddd", zorder=0)
    ax.legend(loc="upper right", fontsize=8)
    fig.canvas.draw()
    return np.ascontiguousarray(np.asarray(fig.canvas.buffer_rgba())[..., :3])
