"""The FaceSim report: one JSON document for a reference and one or more videos, its text and table.

Keys (``docs/evaluation.md`` documents each): ``format``, ``backend``, ``detector``,
``pose_estimator``, ``embedding`` {``model``, ``kind``, ``similarity``, ``distance``},
``protocol`` {``frames``, ``sampling``, ``clip_min``, ``face``, ``pad_factor``, ``pad_mode``,
``enlarge``, ``yaw_bins``}, ``reference`` {``name``, ``faces``, ``padded``, ``box``,
``image_size``, ``pitch``, ``yaw``, ``roll``}, ``videos`` [{``name``, ``path``, ``frames_total``,
``summary``, ``frames``, ``plot``, ``segments`` {``length``, ``overlap``, ``drift``, ``segments``
[{``start``, ``end``, ``frames_sampled``, ``face_frames``, ``mean``, ``min``}]} (null for a video
of one segment), ``segments_plot``}]. Missing values are ``null``, never NaN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FaithfulFacesError
from .embedding import DLIB_SAME_PERSON_DISTANCE
from .facesim import FaceSimEvaluator, ReferenceFace, VideoScore
from .sampling import ALL
from .summary import YAW_BINS

FORMAT = "faithfulfaces.facesim/1"
BIN_HEADERS = {"yaw_under_30": "|yaw|<30°", "yaw_30_60": "30–60°", "yaw_over_60": ">60°"}


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars → Python, NaN/inf → None, tuples → lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def embedding_dict(evaluator: FaceSimEvaluator) -> dict:
    source = evaluator.embedding
    return {
        "model": source.name,
        "kind": source.kind,
        "similarity": f"cosine similarity of {source.name} embeddings, clipped at 0",
        "distance": (
            f"Euclidean distance of dlib 128-D embeddings (same person below {DLIB_SAME_PERSON_DISTANCE})"
            if evaluator.reports_distance
            else None
        ),
    }


def protocol_dict(evaluator: FaceSimEvaluator, frames: int | None) -> dict:
    return {
        "frames": ALL if frames is None else int(frames),
        "sampling": "uniform (first and last frame included)",
        "clip_min": 0.0,
        "face": "largest face per frame; frames with several faces are counted",
        "pad_factor": evaluator.pad_factor,
        "pad_mode": evaluator.pad_mode,
        "enlarge": evaluator.enlarge,
        "yaw_bins": {key: label for key, label, _, _ in YAW_BINS},
        "mean_over": "frames with a face (no-face frames are counted; mean_counting_misses scores them 0)",
    }


def video_dict(score: VideoScore, *, path: str | None = None, plot: str | None = None,
               segments: dict | None = None, segments_plot: str | None = None) -> dict:
    several = {} if score.summary_mean is None else {"summary_mean_over_references": score.summary_mean.as_dict()}
    return {
        "name": score.name,
        "path": path,
        "frames_total": score.frames_total,
        "summary": score.summary.as_dict(),
        **several,
        "frames": [f.as_dict() for f in score.frames],
        "plot": plot,
        "segments": segments,
        "segments_plot": segments_plot,
    }


def build_report(
    evaluator: FaceSimEvaluator,
    reference: ReferenceFace | Sequence[ReferenceFace],
    videos: Sequence[dict],
    *,
    frames: int | None,
    reference_name: str = "reference",
) -> dict:
    """The whole JSON-able report; ``videos`` are ``video_dict`` entries.

    Several references: ``reference`` describes the first, ``references`` lists all.
    """
    references = [reference] if isinstance(reference, ReferenceFace) else list(reference)
    several = {} if len(references) == 1 else {"references": [r.as_dict() for r in references]}
    return _clean(
        {
            "format": FORMAT,
            "backend": evaluator.backend,
            "detector": evaluator.detector.name,
            "pose_estimator": evaluator.estimator.name,
            "embedding": embedding_dict(evaluator),
            "protocol": protocol_dict(evaluator, frames),
            "reference": {"name": reference_name, **references[0].as_dict()},
            **several,
            "videos": list(videos),
        }
    )


def write_json(report: dict, path: str | PathLike) -> Path:
    from ..checkpoints import atomic_write

    text = json.dumps(_clean(report), indent=2, ensure_ascii=False, allow_nan=False)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def summary_text(report: dict, video: int = 0, *, empty_value: float | None = None) -> str:
    """A few lines for people: backend, metric, counts, mean/min, yaw bins (and dlib distance).

    ``empty_value``: the number a caller outputs for a missing value (the node's -1.0); named in the text.
    """
    entry = report["videos"][video]
    s = entry["summary"]
    emb = report["embedding"]
    proto = report["protocol"]
    ref = report["reference"]
    missing = "none" if empty_value is None else f"none, output {empty_value:g}"
    lines = [
        f"FaceSim of '{entry['name']}' against '{ref['name']}' — backend {report['backend']}, "
        f"embeddings {emb['model']} ({emb['kind']})",
        f"metric: {emb['similarity']}" + (f"; also {emb['distance']}" if emb["distance"] else ""),
        f"frames: {s['frames_sampled']} of {entry['frames_total']} (sampling: {proto['frames']}, uniform); "
        f"with a face {s['face_frames']}, no face {s['no_face_frames']}, several faces {s['multi_face_frames']} "
        f"(largest used), found only after ×{proto['pad_factor']:g} padding {s['padded_frames']}",
    ]
    if s["mean"] is None:
        lines.append(f"mean: {missing} (no frame had a face); min: {missing}")
    else:
        lines.append(
            f"mean {s['mean']:.4f} (over face frames; no-face frames as 0: {s['mean_counting_misses']:.4f}), "
            f"min {s['min']:.4f}, max {s['max']:.4f}"
        )
    bins = []
    for key, label, _, _ in YAW_BINS:
        b = s["yaw_bins"][key]
        bins.append(f"{label}: " + (f"{b['mean']:.4f} ({b['frames']} frames)" if b["mean"] is not None
                                    else f"empty bin ({missing})"))
    lines.append("; ".join(bins))
    d = s.get("distance")
    if d:
        lines.append(
            f"dlib distance: mean {_num(d['mean'])}, max {_num(d['max'])}, same person (< {d['threshold']:g}) in "
            f"{d['same_person_frames']}/{s['face_frames']} face frames"
        )
    if entry.get("segments"):
        from .segments import segments_text

        lines.append(segments_text(entry["segments"]))
    mean_over = entry.get("summary_mean_over_references")
    if mean_over is not None:
        lines.append(
            f"{len(report['references'])} references: the numbers above are the best match per frame; mean over "
            f"references: mean {_num(mean_over['mean'], 4)}, "
            + "; ".join(f"{label}: {_num(mean_over['yaw_bins'][key]['mean'], 4)}" for key, label, _, _ in YAW_BINS)
        )
    lines.append(
        f"reference: {ref['faces']} face(s) (largest used){', found after padding' if ref['padded'] else ''}; "
        f"pose pitch {ref['pitch']:.1f}°, yaw {ref['yaw']:.1f}°, roll {ref['roll']:.1f}°"
    )
    return "\n".join(lines)


def table(report: dict):
    """A rich ``Table``: one row per video, the summaries side by side."""
    from rich.table import Table

    dlib = report["embedding"]["distance"] is not None
    t = Table(title=f"FaceSim vs {report['reference']['name']} — {report['backend']} ({report['embedding']['model']})")
    t.add_column("video", no_wrap=True)
    for column in ("frames", "face", "no face", "several", "padded", "mean", "min", *BIN_HEADERS.values()):
        t.add_column(column, justify="right", no_wrap=True)
    if dlib:
        t.add_column("dlib dist", justify="right", no_wrap=True)
        t.add_column("same person", justify="right", no_wrap=True)
    for entry in report["videos"]:
        s = entry["summary"]
        row = [
            entry["name"],
            f"{s['frames_sampled']}/{entry['frames_total']}",
            str(s["face_frames"]),
            str(s["no_face_frames"]),
            str(s["multi_face_frames"]),
            str(s["padded_frames"]),
            _num(s["mean"]),
            _num(s["min"]),
        ]
        for key, _, _, _ in YAW_BINS:
            b = s["yaw_bins"][key]
            row.append(f"{_num(b['mean'])} ({b['frames']})")
        if dlib:
            d = s["distance"]
            row += [_num(d["mean"]), f"{d['same_person_frames']}/{s['face_frames']}"]
        t.add_row(*row)
    return t


def report_for_frames(
    evaluator: FaceSimEvaluator,
    reference_image: np.ndarray | Sequence[np.ndarray],
    frames: Sequence[np.ndarray],
    *,
    count: int | None,
    name: str = "frames",
    reference_name: str = "reference",
) -> tuple[dict, VideoScore]:
    """FaceSim of in-memory ``frames`` (``F`` × ``[H, W, 3]`` uint8): sample ``count`` uniformly, score, report.

    More frames than one segment (81) also get FaceSim per segment (``segments.py``, overlap 16).
    ``reference_image``: one ``[H, W, 3]`` image or several (a list or ``[R, H, W, 3]``).
    """
    from .sampling import uniform_indices

    images = [reference_image] if isinstance(reference_image, np.ndarray) and reference_image.ndim == 3 else list(
        reference_image)
    reference = [evaluator.reference(im, name=f"the {reference_name} image" if len(images) == 1 else
                                     f"{reference_name} image {n + 1} of {len(images)}") for n, im in enumerate(images)]
    reference = reference[0] if len(reference) == 1 else reference
    indices = uniform_indices(len(frames), count)
    if not indices:
        raise FaithfulFacesError("No frames to evaluate: connect a batch of at least one image.")
    score = evaluator.score(reference, [frames[i] for i in indices], indices=indices,
                            frames_total=len(frames), name=name)
    from .segments import segment_report

    entry = video_dict(score, segments=segment_report(score)[0])
    report = build_report(evaluator, reference, [entry], frames=count, reference_name=reference_name)
    return report, score


def headline_numbers(report: dict, video: int = 0, *, empty: float = -1.0) -> tuple[float, ...]:
    """(mean, min, |yaw|<30, 30–60, >60) of one video as plain floats, ``empty`` where there is no value."""
    s = report["videos"][video]["summary"]
    values = [s["mean"], s["min"], *(s["yaw_bins"][key]["mean"] for key, _, _, _ in YAW_BINS)]
    return tuple(float(empty) if v is None else float(v) for v in values)
