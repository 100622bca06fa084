"""What a run tells its user: the log file, per-step metrics, the loss-curve PNG, TensorBoard.

- ``train.log``: the data report, the set-up, a line every ``log_every`` steps, checkpoints,
  errors (also echoed to the terminal under the progress bar).
- ``metrics.jsonl``: one JSON line per optimizer step (loss, flow, infonce, lr, grad_norm,
  seconds); a resumed run first cuts it back to its checkpoint's step.
- ``loss_curve.png``: both losses against the step (matplotlib, Agg backend).
- TensorBoard (``run.tensorboard``): only when the package is installed; asking for it without
  it is an error before anything is loaded.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ..checkpoints import atomic_write, ensure_writable_dir, remove_stale_temporaries

LOG_NAME = "train.log"
METRICS_NAME = "metrics.jsonl"
CURVE_NAME = "loss_curve.png"
TENSORBOARD_DIR = "tensorboard"
LOGGER = "faithfulfaces.training"


def require_tensorboard():
    """``torch.utils.tensorboard.SummaryWriter``, or a ``MissingDependencyError`` naming the fix."""
    from ..deps import require

    require("tensorboard", "TensorBoard logging (run.tensorboard=true)")
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


class _TqdmHandler(logging.Handler):
    """Terminal output that does not break the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm.auto import tqdm

        tqdm.write(self.format(record))


def setup_logging(output_dir: Path, *, main: bool) -> logging.Logger:
    """The run's logger: ``train.log`` (appended) and the terminal, on the main process only."""
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if main:
        ensure_writable_dir(output_dir)
        remove_stale_temporaries(output_dir)  # a kill during the final export leaves .<name>.*.tmp behind
        file = logging.FileHandler(output_dir / LOG_NAME, encoding="utf-8")
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        terminal = _TqdmHandler()
        terminal.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(file)
        logger.addHandler(terminal)
    else:
        logger.addHandler(logging.NullHandler())
    return logger


def close_logging() -> None:
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class Metrics:
    """``metrics.jsonl``: append one line per step; ``truncate(step)`` when resuming."""

    def __init__(self, output_dir: Path) -> None:
        self.path = output_dir / METRICS_NAME

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # the torn last line of a killed run
                continue
        return rows

    def truncate(self, step: int) -> None:
        """Keep the steps ``<= step`` (what a resumed checkpoint has seen)."""
        rows = [r for r in self.read() if r.get("step", 0) <= step]
        text = "".join(json.dumps(r) + "\n" for r in rows)
        atomic_write(self.path, lambda p: Path(p).write_text(text, encoding="utf-8"))

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def plot_losses(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Flow-matching and InfoNCE loss against the step, with a moving average; None without rows."""
    if not rows:
        return None
    from ..deps import require

    require("matplotlib", "The loss-curve plot")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    steps = np.array([r["step"] for r in rows])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.9, wspace=0.2)
    for ax, key, title in ((axes[0], "flow", "flow matching (MSE)"), (axes[1], "infonce", "InfoNCE")):
        values = np.array([r[key] for r in rows], dtype=float)
        ax.plot(steps, values, lw=0.8, alpha=0.5, label="per step")
        window = max(1, len(values) // 20)
        if window > 1:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], smooth, lw=1.6, label=f"mean of {window}")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)

    def save(tmp: str) -> None:
        fig.savefig(tmp, format="png", dpi=110)

    atomic_write(path, save)
    plt.close(fig)
    return path
