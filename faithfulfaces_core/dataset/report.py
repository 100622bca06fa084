"""The build report: counts by outcome and reason, the Δ histogram, throughput, failed files.

Counts cover every video the directory has processed (all runs, from ``done.jsonl``);
throughput covers the run that wrote the report. ``report.json`` holds the numbers, the
histogram is a PNG drawn with matplotlib's Agg canvas (no display, no global backend switch),
and ``print_report`` shows a rich table on the terminal.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..deps import require
from . import journal
from . import outcomes as oc
from .outcomes import DoneRecord

MAX_LISTED_ERRORS = 200
MAX_LISTED_REJECTED = 1000
BIN_WIDTH = 10.0


@dataclass(frozen=True)
class RunStats:
    """What this run did (resumed videos are not counted)."""

    videos: int
    frames_decoded: int
    frames_sampled: int
    wall_seconds: float


def histogram(deltas: Sequence[float], threshold: float) -> tuple[list[float], list[int]]:
    """Δ histogram with ``BIN_WIDTH``° bins from 0 past both the largest Δ and the threshold."""
    top = max([threshold + BIN_WIDTH, *deltas]) if deltas else threshold + BIN_WIDTH
    edges = np.arange(0.0, math.floor(top / BIN_WIDTH) * BIN_WIDTH + BIN_WIDTH + 1e-9, BIN_WIDTH)
    counts, _ = np.histogram(np.asarray(deltas, dtype=np.float64), bins=edges)
    return edges.tolist(), counts.astype(int).tolist()


def _reason_rows(latest: Sequence[DoneRecord]) -> list[dict]:
    """One row per known (outcome, reason) with its count and description, zero counts included."""
    reason_counts = Counter((r.outcome, r.reason) for r in latest)
    return [
        {
            "outcome": outcome,
            "reason": reason,
            "count": reason_counts.get((outcome, reason), 0),
            "description": oc.REASON_TEXT[reason],
        }
        for outcome, rs in oc.REASONS.items()
        for reason in rs
    ]


def _delta_section(latest: Sequence[DoneRecord], threshold: float) -> dict:
    """The Δ statistics and histogram over the videos that have a Δ."""
    deltas = sorted(r.delta for r in latest if r.delta is not None)
    edges, counts = histogram(deltas, threshold)
    return {
        "threshold": threshold,
        "count": len(deltas),
        "videos_with_face": sum(1 for r in latest if r.frames_with_face > 0 or r.reason == oc.MULTIPLE_FACES),
        "min": deltas[0] if deltas else None,
        "median": float(np.median(deltas)) if deltas else None,
        "max": deltas[-1] if deltas else None,
        "bin_edges": edges,
        "bin_counts": counts,
    }


def _throughput(run: RunStats) -> dict:
    """Videos and frames of this run per wall-clock second."""
    wall = max(run.wall_seconds, 1e-9)
    return {
        "videos": run.videos,
        "frames_decoded": run.frames_decoded,
        "frames_sampled": run.frames_sampled,
        "wall_seconds": round(run.wall_seconds, 3),
        "videos_per_second": round(run.videos / wall, 4),
        "frames_per_second": round(run.frames_decoded / wall, 3),
        "sampled_frames_per_second": round(run.frames_sampled / wall, 3),
    }


def build_report(
    records: Sequence[DoneRecord], *, threshold: float, run: RunStats | None = None, shard: str = "0/1"
) -> dict:
    """The report as a JSON-able dict (one record per key; the last one wins)."""
    latest = list({r.key: r for r in records}.values())
    outcome_counts = Counter(r.outcome for r in latest)
    failed = sorted((r for r in latest if r.outcome == oc.ERROR), key=lambda r: r.key)
    rejected = sorted((r for r in latest if r.outcome == oc.REJECTED), key=lambda r: r.key)
    report = {
        "total": len(latest),
        "outcomes": {o: outcome_counts.get(o, 0) for o in oc.REASONS},
        "reasons": _reason_rows(latest),
        "delta": _delta_section(latest, threshold),
        "frames": {
            "decoded": sum(r.frames_decoded for r in latest),
            "sampled": sum(r.frames_sampled for r in latest),
            "with_face": sum(r.frames_with_face for r in latest),
        },
        "rejected": [_rejection(r) for r in rejected[:MAX_LISTED_REJECTED]],
        "errors": [
            {"key": r.key, "reason": r.reason, "detail": r.detail} for r in failed[:MAX_LISTED_ERRORS]
        ],
        "shard": shard,
    }
    if run is not None:
        report["throughput"] = _throughput(run)
    return report


def _rejection(record: DoneRecord) -> dict:
    """Why one video was rejected, with the numbers behind it (the detail names the rule's numbers)."""
    return {
        "key": record.key,
        "reason": record.reason,
        "detail": record.detail,
        "ranges": record.ranges,
        "delta": record.delta,
        "identity_spread": record.identity_spread,
    }


def histogram_title(delta: dict) -> str:
    """Δ exists only for videos that reached the pose step; videos rejected before it (several faces,
    several people) may still have had a face, so the two counts are shown apart."""
    return f"Pose variation Δ of {delta['count']} videos ({delta.get('videos_with_face', delta['count'])} had a face)"


def write_histogram(report: dict, path: str | Path) -> Path:
    """Draw ``report["delta"]`` as a bar chart with the threshold marked; returns the PNG path."""
    require("matplotlib", "The dataset report's Δ histogram")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    delta = report["delta"]
    edges, counts = np.asarray(delta["bin_edges"]), np.asarray(delta["bin_counts"])
    fig = Figure(figsize=(7, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#4878a8", edgecolor="white")
    ax.axvline(
        delta["threshold"], color="#c03030", linestyle="--", label=f"threshold {delta['threshold']:g}°"
    )
    ax.set_xlabel("Δ = Σ range of pitch, yaw, roll (degrees)")
    ax.set_ylabel("videos")
    ax.set_title(histogram_title(delta))
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


def write_report(report: dict, json_path: str | Path, histogram_path: str | Path) -> None:
    """``report.json`` (atomically) and the histogram PNG."""
    write_histogram(report, histogram_path)
    journal.rewrite_lines(
        json_path, [json.dumps({**report, "histogram": Path(histogram_path).name}, indent=1)]
    )


def print_report(report: dict, *, console=None) -> None:
    """The counts, Δ summary, throughput and failed files as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(stderr=True)
    table = Table(title=f"Dataset build: {report['total']} videos (shard {report['shard']})")
    for column in ("outcome", "reason", "videos", "share"):
        table.add_column(column, justify="right" if column in ("videos", "share") else "left")
    total = max(report["total"], 1)
    for row in report["reasons"]:
        if row["count"] or row["outcome"] == oc.KEPT:
            table.add_row(
                row["outcome"],
                f"{row['reason']} ({row['description']})",
                str(row["count"]),
                f"{100.0 * row['count'] / total:.1f}%",
            )
    console.print(table)
    delta = report["delta"]
    if delta["count"]:
        console.print(
            f"{histogram_title(delta)}: min {delta['min']:.1f}°, median {delta['median']:.1f}°, "
            f"max {delta['max']:.1f}° (threshold {delta['threshold']:g}°)"
        )
    if "throughput" in report:
        t = report["throughput"]
        console.print(
            f"This run: {t['videos']} videos in {t['wall_seconds']:.1f} s = {t['videos_per_second']:.3f} videos/s, "
            f"{t['frames_per_second']:.1f} decoded frames/s, {t['sampled_frames_per_second']:.1f} sampled frames/s"
        )
    for row in report.get("rejected", [])[:10]:
        console.print(f"[yellow]{row['reason']}[/yellow] {row['key']}: {row['detail']}")
    if len(report.get("rejected", [])) > 10:
        console.print(f"... and {len(report['rejected']) - 10} more rejected videos (see report.json)")
    for err in report["errors"][:10]:
        console.print(f"[red]{err['reason']}[/red] {err['key']}: {err['detail']}")
    if len(report["errors"]) > 10:
        console.print(f"... and {len(report['errors']) - 10} more failed files (see report.json)")
