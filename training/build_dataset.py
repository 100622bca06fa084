#!/usr/bin/env python
"""Build a FaithfulFaces training dataset from raw videos (paper §3.4), headless.

    python training/build_dataset.py build VIDEOS... --out DATASET [options]
    python training/build_dataset.py merge SHARD_DIR... --out DATASET

``build`` samples frames, rejects videos with more than one face in a frame or no face at all,
crops each face (box ×1.5), estimates its head pose with 6DRepNet, keeps a video iff
Δ = Σ range(pitch, yaw, roll) ≥ --threshold, captions the kept ones and writes the manifest the
trainer reads (faithfulfaces_core.dataset.manifest.load_manifest). Rerun the same command to
resume after a crash or kill; split a corpus over machines with --shard i/n and merge the
shard directories with ``merge``. See docs/dataset.md.

exit status: 0 done, 1 error (the message says what to change), 2 usage error,
130 interrupted (finished videos are kept; rerun the same command to resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from faithfulfaces_core.cli import run_command  # noqa: E402
from faithfulfaces_core.errors import FaithfulFacesError  # noqa: E402


def _kwargs(pairs: list[str], flag: str) -> dict:
    """``KEY=VALUE`` pairs → dict; values are parsed as JSON when they parse, else kept as text."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise FaithfulFacesError(f"{flag} expects KEY=VALUE, got '{pair}'.")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build_dataset.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.ArgumentDefaultsHelpFormatter
    build = sub.add_parser("build", help="curate videos into a dataset directory", formatter_class=fmt)
    _curation_options(build.add_argument_group("videos and curation"))
    _add_curation_steps(build.add_argument_group("curation steps beyond the paper"))
    _face_model_options(build.add_argument_group("face detector and pose estimator"))
    _captioner_options(build.add_argument_group("captions"))
    _running_options(build.add_argument_group("running"))
    merge = sub.add_parser("merge", help="merge shard dataset directories into one", formatter_class=fmt)
    merge.add_argument("sources", nargs="+", help="the shard dataset directories")
    merge.add_argument("--out", required=True, help="the new, empty merged dataset directory")
    merge.add_argument(
        "--link", action="store_true", help="hard-link crop files instead of copying (same file system)"
    )
    return parser


def _add_curation_steps(b: argparse._ArgumentGroup) -> None:
    """The steps beyond the paper's rule (docs/dataset.md); --paper-rules turns them all off."""
    b.add_argument(
        "--paper-rules",
        action="store_true",
        help="the paper's rule exactly: every detected face counts, full-size detection, no identity step, "
        "no shots (overrides the options below)",
    )
    b.add_argument(
        "--min-face-score",
        type=float,
        default=None,
        help="detections scoring below this are not faces; None means the detector's default "
        "(dlib-hog 0.25, dlib-cnn 0, insightface 0.5)",
    )
    b.add_argument(
        "--min-face-size",
        type=float,
        default=0.25,
        help="a second face counts for the multi-face rule only if its height is at least this fraction "
        "of the main face's (0 = every face, as in the paper)",
    )
    b.add_argument(
        "--det-size",
        type=int,
        default=None,
        help="detect faces on frames scaled so the longer side is this many pixels (crops stay full "
        "resolution); None means full frames",
    )
    b.add_argument(
        "--identity",
        choices=("dominant", "reject", "off"),
        default="dominant",
        help="one person per sample: keep the dominant person's frames only, reject videos with more "
        "than one person, or off",
    )
    b.add_argument(
        "--identity-threshold",
        type=float,
        default=None,
        help="identity-vector distance below which two faces are the same person; None means the "
        "recognition model's (dlib 0.6, ArcFace 1.1)",
    )
    b.add_argument(
        "--shots",
        action="store_true",
        help="first split each video at its cuts (PySceneDetect content detector) and curate each shot "
        "as its own sample",
    )
    b.add_argument("--shot-threshold", type=float, default=27.0, help="content-detector threshold for a cut")
    b.add_argument("--shot-min-frames", type=int, default=15, help="shortest shot, in frames")


def _factory_arg_option(g: argparse._ArgumentGroup, flag: str, what: str) -> None:
    g.add_argument(flag, action="append", default=[], metavar="KEY=VALUE",
                   help=f"extra keyword argument for the {what} factory (repeatable; JSON values allowed)")


def _curation_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument("inputs", nargs="+",
                   help="folders of videos (searched recursively), video files, or text files listing one video "
                   "path per line")
    g.add_argument("--out", required=True, help="the dataset directory to write (or resume)")
    g.add_argument("--extensions", default=".mp4,.mov,.mkv,.webm,.avi,.m4v",
                   help="comma-separated video file extensions looked for in input folders")
    sampling = g.add_mutually_exclusive_group()
    sampling.add_argument("--sample-fps", type=float, default=None,
                          help="frames per second of video to look at; None means 4.0 unless --every is given")
    sampling.add_argument("--every", type=int, default=None, help="look at every N-th frame instead")
    g.add_argument("--threshold", type=float, default=120.0,
                   help="keep a video iff Δ = Σ range(pitch, yaw, roll) in degrees is at least this")
    g.add_argument("--enlarge", type=float, default=1.5, help="face-box enlargement before cropping")
    g.add_argument("--batch-size", type=int, default=16, help="face crops per pose-estimator call")
    g.add_argument("--crop-format", choices=("png", "jpg"), default="png",
                   help="image format of the face crops")
    g.add_argument("--jpeg-quality", type=int, default=95,
                   help="JPEG quality of the crops (with --crop-format jpg)")


def _face_model_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--models-dir", default="models",
                   help="ComfyUI's models folder: default place of the InsightFace pack and the 6DRepNet weights")
    g.add_argument("--detector", default="insightface",
                   help="face detector: insightface, dlib-hog, dlib-cnn, dlib-hog+cnn (HOG, CNN on frames where HOG "
                   "finds no face), or a factory package.module:callable")
    g.add_argument("--insightface-pack", default=None,
                   help="InsightFace pack folder; None means MODELS_DIR/insightface/models/antelopev2")
    _factory_arg_option(g, "--detector-arg", "detector")
    g.add_argument("--pose", default="6drepnet",
                   help="pose estimator: 6drepnet, pnp (dlib landmarks), or a factory package.module:callable")
    g.add_argument("--pose-weights", default=None,
                   help="6DRepNet weights file or folder (.pth/.safetensors/.onnx); None means MODELS_DIR/faithfulfaces")
    _factory_arg_option(g, "--pose-arg", "pose-estimator")


def _captioner_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--captioner", default="sidecar",
                   help="captioner: sidecar (clip.txt next to clip.mp4), table (--captions FILE), qwen2.5-vl "
                   "(--qwen-path DIR), or a factory package.module:callable")
    g.add_argument("--captions", default=None,
                   help="CSV (video,caption) or JSONL caption table, needed by --captioner table")
    g.add_argument("--qwen-path", default=None,
                   help="local Qwen2.5-VL Instruct model folder, needed by --captioner qwen2.5-vl")
    g.add_argument("--qwen-frames", type=int, default=8, help="frames shown to Qwen2.5-VL per video")
    g.add_argument("--qwen-max-new-tokens", type=int, default=256, help="caption length limit in tokens")
    g.add_argument("--qwen-prompt", default=None,
                   help="instruction for Qwen2.5-VL; None means the built-in prompt (appearance, actions, "
                   "background: faithfulfaces_core.dataset.captions.DEFAULT_CAPTION_PROMPT)")
    _factory_arg_option(g, "--captioner-arg", "captioner")


def _running_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--device", default="auto", help="device for the models: auto, cpu, cuda, cuda:1, ...")
    g.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine (each loads the models)")
    g.add_argument("--threads-per-worker", type=int, default=None,
                   help="CPU threads per worker for torch / OpenMP; None means CPU cores / workers")
    g.add_argument("--shard", default="0/1",
                   help="process only shard i of n (0-based, videos assigned by a hash of their key); give each "
                   "shard its own --out and merge them")
    g.add_argument("--retry-errors", action="store_true",
                   help="on resume, process again the videos that could not be decoded before (e.g. re-encoded since)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def model_specs(args: argparse.Namespace) -> tuple:
    from faithfulfaces_core.dataset.backends import model_spec

    models = Path(args.models_dir)
    det_kwargs = _kwargs(args.detector_arg, "--detector-arg")
    if args.detector == "insightface":
        det_kwargs.setdefault(
            "pack_dir", args.insightface_pack or str(models / "insightface" / "models" / "antelopev2")
        )
        det_kwargs.setdefault("device", args.device)
    if args.identity != "off" and not args.paper_rules:  # the identity step reads Face.embedding
        if args.detector == "insightface":
            det_kwargs.setdefault("modules", ["detection", "recognition"])
        elif args.detector in ("dlib-hog", "dlib-cnn", "dlib-hog+cnn"):
            det_kwargs.setdefault("with_embeddings", True)
    pose_kwargs = _kwargs(args.pose_arg, "--pose-arg")
    if args.pose == "6drepnet":
        pose_kwargs.setdefault("path", args.pose_weights or str(models / "faithfulfaces"))
        pose_kwargs.setdefault("device", args.device)
        pose_kwargs.setdefault("batch_size", args.batch_size)
    cap_kwargs = _kwargs(args.captioner_arg, "--captioner-arg")
    if args.captioner == "table":
        if not args.captions:
            raise FaithfulFacesError("--captioner table needs --captions FILE (CSV video,caption or JSONL).")
        cap_kwargs.setdefault("path", args.captions)
    if args.captioner == "qwen2.5-vl":
        if not args.qwen_path:
            raise FaithfulFacesError(
                "--captioner qwen2.5-vl needs --qwen-path DIR: a local Qwen2.5-VL Instruct folder "
                "(e.g. huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct --local-dir DIR). Nothing is downloaded."
            )
        cap_kwargs.setdefault("model_path", args.qwen_path)
        cap_kwargs.setdefault("num_frames", args.qwen_frames)
        cap_kwargs.setdefault("max_new_tokens", args.qwen_max_new_tokens)
        cap_kwargs.setdefault("device", args.device)
        if args.qwen_prompt:
            cap_kwargs.setdefault("prompt", args.qwen_prompt)
    return (
        model_spec("detector", args.detector, det_kwargs),
        model_spec("pose", args.pose, pose_kwargs),
        model_spec("captioner", args.captioner, cap_kwargs),
    )


def run_build(args: argparse.Namespace) -> int:
    from faithfulfaces_core.dataset.build import build_dataset
    from faithfulfaces_core.dataset.curate import CurationSettings
    from faithfulfaces_core.dataset.decode import FrameSampling
    from faithfulfaces_core.dataset.sources import Shard

    sampling = (
        FrameSampling(every=args.every)
        if args.every is not None
        else FrameSampling(fps=args.sample_fps or 4.0)
    )
    common = dict(
        sampling=sampling,
        threshold=args.threshold,
        enlarge=args.enlarge,
        batch_size=args.batch_size,
        crop_format=args.crop_format,
        jpeg_quality=args.jpeg_quality,
    )
    settings = (
        CurationSettings.paper(**common)
        if args.paper_rules
        else CurationSettings(
            **common,
            min_face_score=args.min_face_score,
            min_face_size=args.min_face_size,
            det_size=args.det_size,
            identity=args.identity,
            identity_threshold=args.identity_threshold,
            shots=args.shots,
            shot_threshold=args.shot_threshold,
            shot_min_frames=args.shot_min_frames,
        )
    )
    detector, estimator, captioner = model_specs(args)
    result = build_dataset(
        args.inputs,
        args.out,
        detector=detector,
        estimator=estimator,
        captioner=captioner,
        settings=settings,
        workers=args.workers,
        shard=Shard.parse(args.shard),
        progress=not args.no_progress,
        extensions=[e.strip() for e in args.extensions.split(",") if e.strip()],
        threads_per_worker=args.threads_per_worker,
        retry_errors=args.retry_errors,
    )
    print(
        f"{len(result.records)} videos in {result.directory / 'manifest.jsonl'} "
        f"({result.processed} processed now, {result.skipped} already done)"
    )
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from faithfulfaces_core.dataset.merge import merge_datasets

    records, _ = merge_datasets(args.sources, args.out, link=args.link)
    print(f"{len(records)} videos in {Path(args.out) / 'manifest.jsonl'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from faithfulfaces_core.dataset.lifetime import sigterm_as_interrupt

    args = build_parser().parse_args(argv)
    with sigterm_as_interrupt():
        return run_command(lambda: run_build(args) if args.command == "build" else run_merge(args),
                           interrupted="interrupted: finished videos are saved; rerun the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
