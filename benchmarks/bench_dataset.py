#!/usr/bin/env python
"""Dataset-builder throughput and memory on CPU.

Throughput: a corpus of generated videos (solid gray frames, so the scripted detector knows
where the face is) through ``build_dataset`` with
  1. the scripted detector and pose estimator (decode + detect + crop + write cost only),
  2. the same with two worker processes,
  3. the scripted detector and the real-architecture 6DRepNet (RepVGG-B1g2, 224 px input,
     random weights) on torch (the pose model's cost on top).
Memory: peak RSS of a fresh process building one short video and one 10× longer video (it
must stay flat: frames are streamed and crops are written as they are estimated).
Curation stages (``--stages``): a 1280×720 clip of real photographs (with cuts and face-less
frames) through dlib HOG + PnP with each stage beyond the paper on and off, beside decode alone
and decode + detection at the det size (the goal: the pipeline at >= 0.8 of the latter).

    python benchmarks/bench_dataset.py [--videos 8] [--frames 50] [--size 640x360]
    python benchmarks/bench_dataset.py --stages [--stage-frames 24] [--stage-rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
import numpy as np

from faithfulfaces_core.tiny.scripted import ScriptedDetector, ScriptedPoseEstimator, write_gray_video

LEVELS = list(range(16, 240, 8))


def scripted_tables(width: int, height: int) -> tuple[dict, dict]:
    side = min(width, height) / 2
    box = [(width / 2 - side / 2, height / 2 - side / 2, width / 2 + side / 2, height / 2 + side / 2)]
    faces = {lv: box for lv in LEVELS}
    angles = {lv: ((lv * 7) % 90 - 45.0, (lv * 13) % 180 - 90.0, (lv * 3) % 60 - 30.0) for lv in LEVELS}
    return faces, angles


def make_video(path: Path, frames: int, width: int, height: int, offset: int = 0) -> None:
    write_gray_video(
        path, [LEVELS[(i + offset) % len(LEVELS)] for i in range(frames)], size=(width, height), fps=25
    )


def run_build(videos: Path, out: Path, width: int, height: int, *, workers: int, estimator=None) -> dict:
    from faithfulfaces_core.dataset.build import build_dataset
    from faithfulfaces_core.dataset.curate import CurationSettings
    from faithfulfaces_core.dataset.decode import FrameSampling

    faces, angles = scripted_tables(width, height)
    estimator = estimator or ScriptedPoseEstimator(angles, input_size=224)
    captioner_dir = videos
    for video in captioner_dir.glob("*.mp4"):
        video.with_suffix(".txt").write_text("a person turns their head")
    from faithfulfaces_core.dataset.captions import SidecarCaptioner

    t0 = time.perf_counter()
    result = build_dataset(
        [videos],
        out,
        detector=ScriptedDetector(faces),
        estimator=estimator,
        captioner=SidecarCaptioner(),
        settings=CurationSettings.paper(sampling=FrameSampling(every=1)),
        workers=workers,
        progress=False,
        print_summary=False,
    )
    wall = time.perf_counter() - t0
    t = result.report["throughput"]
    return {
        "videos": t["videos"],
        "frames": t["frames_decoded"],
        "processing_s": t["wall_seconds"],
        "total_s": wall,
        "kept": len(result.records),
    }


def child_memory(video: str, out: str, width: int, height: int, pose: str) -> None:
    estimator = None
    if pose != "scripted":
        from faithfulfaces_core.pose.loading import load_pose_estimator

        estimator = load_pose_estimator(pose, device="cpu", batch_size=16)
    import faithfulfaces_core.checkpoints  # noqa: F401  (torch: the build imports it when it finishes)
    import faithfulfaces_core.dataset.build  # noqa: F401

    base = proc_status_mib("VmRSS")
    folder = Path(video).parent
    run_build(folder, Path(out), width, height, workers=1, estimator=estimator)
    print(json.dumps({"peak_mib": proc_status_mib("VmHWM"), "before_build_mib": base}))


def proc_status_mib(field: str) -> float:
    """``VmHWM`` (peak RSS of this process image) or ``VmRSS`` from /proc/self/status, in MiB.

    (``ru_maxrss`` is not used: on Linux it carries the parent's peak across fork + exec.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def measure_memory(tmp: Path, frames: int, width: int, height: int, pose: str) -> dict:
    folder = tmp / f"mem_{frames}_{Path(pose).stem}"
    folder.mkdir()
    make_video(folder / "v.mp4", frames, width, height)
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child-memory",
            str(folder / "v.mp4"),
            str(tmp / f"o{frames}_{Path(pose).stem}"),
            "--size",
            f"{width}x{height}",
            "--pose",
            pose,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _stage_clip(path: Path, frames: int) -> None:
    """1280×720: three people in turn (the astronaut, Tom Hanks, one of t1.jpg's group; two cuts),
    every 6th frame blank. One face per frame, so no rule stops a video early."""
    import importlib.util

    from PIL import Image

    from faithfulfaces_core.dataset.encode import write_video

    def photo(pkg: str, rel: str, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        root = Path(next(iter(importlib.util.find_spec(pkg).submodule_search_locations)))
        image = Image.open(root / rel).convert("RGB")
        image = image.crop(box) if box else image
        canvas = Image.new("RGB", (1280, 720), (90, 90, 90))
        canvas.paste(image.resize((round(image.width * 600 / image.height), 600)), (400, 60))
        return np.asarray(canvas)

    shots = [
        photo("skimage", "data/astronaut.png", (110, 0, 350, 260)),
        photo("insightface", "data/images/Tom_Hanks_54745.png"),
        photo("insightface", "data/images/t1.jpg", (820, 10, 1050, 260)),
    ]
    blank = np.full((720, 1280, 3), 90, np.uint8)
    write_video(path, [blank if i % 6 == 5 else shots[3 * i // frames] for i in range(frames)], fps=25)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


GOAL_ROW, GOAL_FLOOR = "pipeline, det size 640 + thresholds + identity", "decode + HOG at det size 640"
PAPER_ROW, PAPER_FLOOR = "pipeline, paper rules (HOG full size)", "decode + HOG at full size"


def stage_rows(tmp: Path, frames: int) -> list[tuple[str, object]]:
    """(name, zero-argument run) for every curation-stage row, on a clip written under ``tmp``."""
    from faithfulfaces_core.dataset.build import build_dataset
    from faithfulfaces_core.dataset.captions import SidecarCaptioner
    from faithfulfaces_core.dataset.curate import CurationSettings, _detect
    from faithfulfaces_core.dataset.decode import FrameSampling, VideoStream
    from faithfulfaces_core.pose.dlib_backend import DlibFaceDetector, LandmarkPoseEstimator

    corpus = tmp / "stages"
    corpus.mkdir()
    _stage_clip(corpus / "clip.mp4", frames)
    (corpus / "clip.txt").write_text("people")
    every = FrameSampling(every=1)
    hog = DlibFaceDetector("hog", 1, 0.25)
    hog_embed = DlibFaceDetector("hog", 1, 0.25, with_embeddings=True)

    def decode(det_size=None, detector=None):
        with VideoStream(corpus / "clip.mp4", every) as stream:
            for frame in stream:
                if detector is not None:
                    _detect(detector, frame.image, det_size)

    def pipeline(detector, **settings):
        out = tmp / f"stage_{len(list(tmp.iterdir()))}"
        build_dataset([corpus], out, detector=detector, estimator=LandmarkPoseEstimator(),
                      captioner=SidecarCaptioner(), settings=CurationSettings(sampling=every, threshold=0.0, **settings),
                      progress=False, print_summary=False)

    paper = dict(min_face_score=0.0, min_face_size=0.0, identity="off")
    return [
        ("decode only", lambda: decode()),
        (PAPER_FLOOR, lambda: decode(None, hog)),
        (PAPER_ROW, lambda: pipeline(hog, **paper)),
        (GOAL_FLOOR, lambda: decode(640, hog)),
        ("pipeline, det size 640", lambda: pipeline(hog, **{**paper, "det_size": 640})),
        ("pipeline, det size 640 + thresholds", lambda: pipeline(hog, det_size=640, identity="off")),
        (GOAL_ROW, lambda: pipeline(hog_embed, det_size=640)),
        ("pipeline, all of the above + shots", lambda: pipeline(hog_embed, det_size=640, shots=True)),
        ("pipeline, det size 640 + CNN retry on face-less frames",
         lambda: pipeline(DlibFaceDetector("hog", 1, 0.25, cnn_retry=True), det_size=640, identity="off")),
    ]


def curation_stages(tmp: Path, frames: int, rounds: int) -> None:
    """Every stage row ``rounds`` times, in alternating order; median seconds per row, and the
    per-round ratios of the pipeline's rate to its floor's (a row and its floor run close in time)."""
    rows = stage_rows(tmp, frames)
    times: dict[str, list[float]] = {name: [] for name, _ in rows}
    for r in range(rounds):
        for name, fn in rows[:: 1 if r % 2 == 0 else -1]:
            times[name].append(_timed(fn))
    print(f"curation stages, dlib HOG + PnP on one 1280×720 clip, {rounds} rounds (alternating order); "
          f"{_common.machine()}")
    print(f"\n| stage ({frames} frames 1280×720, every frame sampled, dlib HOG upsample 1 + PnP) "
          f"| s (median) | frames/s | rate / decode only |")
    print("|---|---:|---:|---:|")
    decode_s = statistics.median(times["decode only"])
    for name, _ in rows:
        seconds = statistics.median(times[name])
        print(f"| {name} | {seconds:.2f} | {frames / seconds:.1f} | {decode_s / seconds:.2f} |")
    for row, floor, label in ((PAPER_ROW, PAPER_FLOOR, "paper rules"), (GOAL_ROW, GOAL_FLOOR, "goal >= 0.8")):
        ratio = _common.ratio_stats([f / p for f, p in zip(times[floor], times[row], strict=True)])
        print(f"\n{row} / ({floor}), rate ratio per round: {ratio} ({label})")
        _common.summary("dataset", f"curation: {row} / ({floor})", f"{ratio.median:.2f}",
                        note=f"{label}; {ratio}")


def decode_only(corpus: Path) -> tuple[int, float]:
    """Frames and seconds to decode every video of ``corpus`` with PyAV: curation's floor."""
    import av

    frames, t0 = 0, time.perf_counter()
    for video in sorted(corpus.glob("*.mp4")):
        with av.open(str(video)) as container:
            for frame in container.decode(video=0):
                frame.to_ndarray(format="rgb24")
                frames += 1
    return frames, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=8, help="videos in the throughput corpus")
    parser.add_argument(
        "--frames", type=int, default=50, help="frames per video (the long memory video has 10×)"
    )
    parser.add_argument("--size", default="640x360", help="frame size WxH")
    parser.add_argument(
        "--pose-videos", type=int, default=2, help="videos for the 6DRepNet run (slow on CPU)"
    )
    parser.add_argument("--stages", action="store_true", help="only the curation-stage table (real dlib models)")
    parser.add_argument("--stage-frames", type=int, default=24, help="frames of the curation-stage clip")
    parser.add_argument("--stage-rounds", type=int, default=3, help="rounds of the curation-stage rows")
    parser.add_argument("--child-memory", nargs=2, metavar=("VIDEO", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--pose", default="scripted", help=argparse.SUPPRESS)
    _common.add_tiny_flag(parser)
    args = parser.parse_args()
    if _common.is_tiny(args):
        args.videos, args.frames, args.size, args.pose_videos = 2, 4, "128x96", 1
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.child_memory:
        child_memory(*args.child_memory, width, height, args.pose)
        return
    if args.stages:
        with tempfile.TemporaryDirectory() as tmp_name:
            curation_stages(Path(tmp_name), args.stage_frames, args.stage_rounds)
        return

    import torch

    from faithfulfaces_core.pose.sixdrepnet import SixDRepNetConfig, SixDRepNetEstimator, save_sixdrepnet
    from faithfulfaces_core.tiny.pose import random_sixdrepnet

    print(
        f"CPU: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"videos {width}x{height} @ 25 fps, every frame sampled; {_common.machine()}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        corpus = tmp / "corpus"
        corpus.mkdir()
        for i in range(args.videos):
            make_video(corpus / f"v{i:03d}.mp4", args.frames, width, height, offset=i)
        for workers in (1, 2):
            r = run_build(corpus, tmp / f"scripted_w{workers}", width, height, workers=workers)
            rows.append((f"scripted detector + scripted pose, workers={workers}", r))
        weights = save_sixdrepnet(
            random_sixdrepnet(0, config=SixDRepNetConfig()), tmp / "6drepnet.safetensors"
        )
        pose_corpus = tmp / "pose_corpus"
        pose_corpus.mkdir()
        for i in range(args.pose_videos):
            make_video(pose_corpus / f"v{i:03d}.mp4", args.frames, width, height, offset=i)
        estimator = SixDRepNetEstimator(
            random_sixdrepnet(0, config=SixDRepNetConfig()), device="cpu", batch_size=16
        )
        r = run_build(pose_corpus, tmp / "sixdrepnet", width, height, workers=1, estimator=estimator)
        rows.append(("scripted detector + 6DRepNet B1g2 (random, torch CPU), workers=1", r))

        decoded, seconds = decode_only(corpus)
        rows.append(("floor: PyAV decode only (no detection, crops or writing)",
                     {"videos": args.videos, "frames": decoded, "processing_s": seconds}))
        print("\n| run | videos | frames | wall s (processing) | videos/s | frames/s |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, r in rows:
            s = r["processing_s"]
            print(
                f"| {name} | {r['videos']} | {r['frames']} | {s:.2f} | {r['videos'] / s:.2f} | {r['frames'] / s:.1f} |"
            )

        for name, r in rows:
            _common.summary("dataset", name, f"{r['frames'] / r['processing_s']:.1f} frames/s",
                            f"{decoded / seconds:.1f} frames/s (decode only)")
        print("\n| peak RSS of one build process | frames | peak MiB | MiB before the build |")
        print("|---|---:|---:|---:|")
        for pose, label in (("scripted", "scripted models"), (str(weights), "6DRepNet B1g2")):
            for frames in (args.frames, 10 * args.frames):
                m = measure_memory(tmp, frames, width, height, pose)
                print(
                    f"| {label}, {frames}-frame video | {frames} | {m['peak_mib']:.0f} | {m['before_build_mib']:.0f} |"
                )


if __name__ == "__main__":
    main()
