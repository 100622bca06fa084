"""``python -m faithfulfaces_core.eval REF VIDEO...``: FaceSim of videos against a reference photo.

Prints one table row per video and writes ``facesim.json``, one plot per video
(``<video>.png``) and, for several videos, ``comparison.png`` into ``--out``. A video longer
than one segment (``--segment``, 81 frames) also gets FaceSim per segment in the report and
``<video>_segments.png`` (identity over time).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..cli import EXIT_OK, run_command
from ..errors import FaithfulFacesError
from ..pose.types import FaceDetector, PoseEstimator
from .padding import PAD_FACTOR, PAD_MODES
from .sampling import DEFAULT_FRAMES, parse_frame_count
from .segments import DEFAULT_SEGMENT

BACKENDS = ("insightface", "dlib-hog", "dlib-cnn")
REPORT_FILE = "facesim.json"
COMPARISON_FILE = "comparison.png"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m faithfulfaces_core.eval",
        description="Identity fidelity (FaceSim) of videos against a reference face, with head pose per frame.",
    )
    parser.add_argument("reference", metavar="REF", help="reference face image (PNG, JPEG, ...)")
    parser.add_argument("videos", metavar="VIDEO", nargs="+", help="videos to evaluate (compared side by side)")
    parser.add_argument("--reference", metavar="FILE", action="append", default=[], dest="more_references",
                        help="a further reference image of the same person (repeatable): each frame is scored by "
                             "its best match, and the mean over references is reported too")
    parser.add_argument("--backend", choices=BACKENDS, default="insightface",
                        help="insightface (ArcFace embeddings, 6DRepNet pose; the paper's) or the no-download "
                             "dlib backend (128-D embeddings, landmark pose)")
    parser.add_argument("--insightface-pack", metavar="DIR",
                        help="InsightFace pack folder, e.g. ComfyUI/models/insightface/models/antelopev2")
    parser.add_argument("--pose-weights", metavar="FILE",
                        help="6DRepNet weights (.pth/.safetensors/.onnx or a folder holding one); required for "
                             "insightface, optional for dlib (default there: pose from 68 landmarks)")
    parser.add_argument("--frames", default=str(DEFAULT_FRAMES),
                        help=f"frames sampled uniformly per video, or 'all' (default {DEFAULT_FRAMES})")
    parser.add_argument("--out", metavar="DIR", default="facesim", help="output folder (default ./facesim)")
    parser.add_argument("--pad", choices=PAD_MODES, default="black",
                        help=f"padding of the ×{PAD_FACTOR:g} retry canvas (default black)")
    parser.add_argument("--upsample", type=int, default=1, help="dlib detector upsampling (default 1)")
    parser.add_argument("--segment", type=int, default=DEFAULT_SEGMENT,
                        help=f"frames per segment for identity over time (default {DEFAULT_SEGMENT}, one Wan window)")
    parser.add_argument("--segment-overlap", type=int, default=16,
                        help="frames two segments share, as the context windows did (default 16)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="device for InsightFace / 6DRepNet (default auto)")
    return parser


def load_backend(
    backend: str,
    *,
    insightface_pack: str | None = None,
    pose_weights: str | None = None,
    device: str = "auto",
    upsample: int = 1,
) -> tuple[FaceDetector, PoseEstimator]:
    """The detector (with identity embeddings) and pose estimator for a ``--backend`` name."""
    if backend not in BACKENDS:
        raise FaithfulFacesError(f"Unknown backend '{backend}': use one of {', '.join(BACKENDS)}.")
    if backend == "insightface":
        if not insightface_pack or not pose_weights:
            raise FaithfulFacesError(
                "The insightface backend needs --insightface-pack DIR (the antelopev2 or buffalo_l folder) and "
                "--pose-weights FILE (6DRepNet_300W_LP_AFLW2000.pth or its conversion); or choose "
                "--backend dlib-hog, which needs no downloaded models."
            )
        from ..pose.insightface_detector import InsightFaceDetector
        from ..pose.loading import load_pose_estimator

        detector = InsightFaceDetector(insightface_pack, device=device, modules=("detection", "recognition"))
        return detector, load_pose_estimator(pose_weights, device=device)
    from ..pose.dlib_backend import DlibFaceDetector, LandmarkPoseEstimator

    detector = DlibFaceDetector(backend.removeprefix("dlib-"), upsample=upsample, with_embeddings=True)
    if pose_weights:
        from ..pose.loading import load_pose_estimator

        return detector, load_pose_estimator(pose_weights, device=device)
    return detector, LandmarkPoseEstimator()


def load_image(path: str | Path) -> np.ndarray:
    """An image file → ``[H, W, 3]`` uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FaithfulFacesError(f"Reference image {path} does not exist; check the path.")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise FaithfulFacesError(
            f"Cannot read the reference image {path} ({exc}); give a PNG or JPEG photo of the face."
        ) from exc


def _unique_names(paths: Sequence[Path]) -> list[str]:
    stems = [p.stem for p in paths]
    return [s if stems.count(s) == 1 else f"{i + 1:02d}_{s}" for i, s in enumerate(stems)]


def segment_entry(score, length: int, overlap: int, png: Path) -> dict:
    """``segments`` (and their plot, written to ``png``) for a video longer than one segment, else nothing."""
    from .plot import save_png
    from .segments import plot_segments, segment_report

    entry, parts = segment_report(score, length, overlap)
    if entry is None:
        return {}
    return {"segments": entry, "segments_plot": save_png(plot_segments(score, parts), png).name}


def run(args: argparse.Namespace) -> dict:
    """Evaluate, write the files, return the report (``dict``)."""
    from .facesim import FaceSimEvaluator
    from .plot import plot_comparison, plot_video, save_png
    from .report import build_report, video_dict, write_json
    from .video import read_sampled_frames

    frames = parse_frame_count(args.frames)
    reference_paths = [args.reference, *args.more_references]
    reference_images = [load_image(p) for p in reference_paths]
    videos = [Path(v) for v in args.videos]
    for video in videos:
        if not video.is_file():
            raise FaithfulFacesError(f"Video {video} does not exist (or is not a file); check the path.")
    detector, estimator = load_backend(
        args.backend,
        insightface_pack=args.insightface_pack,
        pose_weights=args.pose_weights,
        device=args.device,
        upsample=args.upsample,
    )
    evaluator = FaceSimEvaluator(detector, estimator, pad_mode=args.pad)
    references = [evaluator.reference(im, name=f"reference image {p}")
                  for p, im in zip(reference_paths, reference_images, strict=True)]
    reference = references[0] if len(references) == 1 else references
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entries, scores = [], []
    for path, name in zip(videos, _unique_names(videos), strict=True):
        sampled = read_sampled_frames(path, frames)
        score = evaluator.score(reference, sampled.images, indices=sampled.indices, times=sampled.times,
                                frames_total=sampled.frames_total, name=name, progress=True)
        plot = save_png(plot_video(score), out / f"{name}.png")
        entries.append({**video_dict(score, path=str(path), plot=plot.name,
                                     **segment_entry(score, args.segment, args.segment_overlap,
                                                     out / f"{name}_segments.png")),
                        "frames_declared": sampled.frames_declared})
        scores.append(score)
    if len(scores) > 1:
        save_png(plot_comparison(scores), out / COMPARISON_FILE)
    report = build_report(evaluator, reference, entries, frames=frames, reference_name=Path(args.reference).name)
    write_json(report, out / REPORT_FILE)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console

    from .report import table

    console = Console()
    if not console.is_terminal:  # a file or pipe: full rows, not an 80-column wrap
        console = Console(width=max(console.width, 160))

    def body() -> int:
        report = run(args)
        console.print(table(report))
        written = [REPORT_FILE] + [v["plot"] for v in report["videos"]] + [
            v["segments_plot"] for v in report["videos"] if v.get("segments_plot")]
        if len(report["videos"]) > 1:
            written.append(COMPARISON_FILE)
        console.print(f"wrote {', '.join(written)} to {Path(args.out)}", highlight=False)
        return EXIT_OK

    return run_command(body, interrupted="interrupted")
