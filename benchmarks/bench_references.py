"""Pick Reference Faces throughput on CPU: faces per second for 64 and 256 input frames.

    python benchmarks/bench_references.py [--frames 64 256] [--size 160] [--k 4]

Frames are made from the Tom Hanks portrait the insightface wheel ships: random crops, scales
and mirrors on a 160×160 canvas, a few blurred, so every stage (detection, landmarks + PnP pose,
sharpness, 128-D identity vectors, majority, farthest-point sampling) does real work. Backend:
the no-download dlib HOG detector with landmark pose. Prints one row per frame count and the
time of the selection stage alone (identity majority + farthest-point sampling).
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import _common
import cv2
import numpy as np
from PIL import Image

from faithfulfaces_core.identity import majority_identity
from faithfulfaces_core.pose.backends import build_backend
from faithfulfaces_core.references import PickSettings, farthest_poses, pick_reference_faces


def frames(count: int, size: int, seed: int) -> list[np.ndarray]:
    spec = importlib.util.find_spec("insightface")
    photo = np.asarray(Image.open(Path(spec.origin).parent / "data/images/Tom_Hanks_54745.png").convert("RGB"))
    rng = np.random.default_rng(seed)
    out = []
    for n in range(count):
        scale = rng.uniform(1.0, 1.4)
        side = int(size * scale / 1.4)
        image = cv2.resize(photo, (side, side), interpolation=cv2.INTER_CUBIC)
        image = image[:, ::-1] if n % 2 else image
        canvas = np.full((size, size, 3), 127, np.uint8)
        y, x = rng.integers(0, size - side + 1, 2)
        canvas[y:y + side, x:x + side] = image
        out.append(cv2.GaussianBlur(canvas, (0, 0), 3.0) if n % 7 == 3 else canvas)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    _common.add_tiny_flag(parser)
    args = parser.parse_args()
    if _common.is_tiny(args):
        args.frames = [4]
    print(_common.machine())
    detector = build_backend("detector", "dlib-hog", with_embeddings=True)
    estimator = build_backend("pose", "pnp")
    print(f"{'frames':>7} {'faces':>6} {'chosen':>6} {'seconds':>8} {'faces/s':>8} {'select ms':>9}")
    for count in args.frames:
        images = frames(count, args.size, args.seed)
        start = time.perf_counter()
        result = pick_reference_faces(images, detector, estimator, PickSettings(k=args.k))
        seconds = time.perf_counter() - start
        accepted = np.array([c.pose.angles.as_array() for c in result.candidates if c.reason is None])
        vectors = np.random.default_rng(0).normal(size=(len(result.candidates), 128))
        t0 = time.perf_counter()
        majority_identity(vectors, "euclidean", 0.6)
        farthest_poses(accepted, args.k)
        select = (time.perf_counter() - t0) * 1000
        faces = len(result.candidates)
        print(f"{count:>7} {faces:>6} {len(result.chosen):>6} {seconds:>8.2f} {faces / seconds:>8.1f} {select:>9.2f}")
        _common.summary("references", f"Pick Reference Faces, {count} frames", f"{faces / seconds:.1f} faces/s")


if __name__ == "__main__":
    main()
