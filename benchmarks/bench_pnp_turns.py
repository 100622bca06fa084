#!/usr/bin/env python
"""Does the no-download pose read head turns at full size? Yaw gain and error of the three PnP fits.

Synthetic: heads at known angles (|yaw| <= 60°, |pitch|, |roll| <= 10°) whose jaw points are the
outline of a 3-D jaw (``tiny.landmarks.silhouette_landmarks``), with landmark noise of 0 and 2%
of the eye distance. Gain = least-squares slope of estimated on true yaw. Δ: a head sweeping
yaw -60° → 60° (true Δ 120 plus the small pitch/roll ranges). Real: the faces of the photographs
installed packages ship, and their mirror images (yaw and roll must change sign).

    python benchmarks/bench_pnp_turns.py
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import _common
import numpy as np

from faithfulfaces_core.dataset.variation import pose_ranges
from faithfulfaces_core.pose import dlib_backend as db
from faithfulfaces_core.tiny.landmarks import silhouette_landmarks

SIZE = (480, 640)
FITS = ("all", "rigid", "contour")


def synthetic(noise: float, rng: np.random.Generator, n: int = 200) -> dict[str, tuple[float, np.ndarray]]:
    truth = np.stack([rng.uniform(-10, 10, n), rng.uniform(-60, 60, n), rng.uniform(-10, 10, n)], 1)
    marks = []
    for a in truth:
        p = silhouette_landmarks(a, SIZE)
        eye = np.linalg.norm(p[45] - p[36]) / np.cos(np.radians(a[1]))
        marks.append(p + rng.normal(0.0, noise * eye, p.shape))
    out = {}
    for fit in FITS:
        est = np.array([db.pose_from_landmarks(p, SIZE, points=fit) for p in marks])
        out[fit] = (float(truth[:, 1] @ est[:, 1] / (truth[:, 1] @ truth[:, 1])), np.abs(est - truth).mean(0))
    return out


def sweep_delta(noise: float, rng: np.random.Generator) -> dict[str, float]:
    truth = np.stack([np.zeros(25), np.linspace(-60, 60, 25), np.zeros(25)], 1)
    out = {"true": float(pose_ranges(truth).sum())}
    marks = []
    for a in truth:
        p = silhouette_landmarks(a, SIZE)
        marks.append(p + rng.normal(0.0, noise * np.linalg.norm(p[45] - p[36]), p.shape))
    for fit in FITS:
        out[fit] = float(pose_ranges(np.array([db.pose_from_landmarks(p, SIZE, points=fit) for p in marks])).sum())
    return out


def photographs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    from PIL import Image

    found = []
    for pkg, rel in (("insightface", "data/images/Tom_Hanks_54745.png"), ("insightface", "data/images/t1.jpg"),
                     ("skimage", "data/astronaut.png")):
        spec = importlib.util.find_spec(pkg)
        if spec and spec.submodule_search_locations:
            path = Path(next(iter(spec.submodule_search_locations))) / rel
            found.append((path.stem, np.asarray(Image.open(path).convert("RGB"))))
    detector = db.DlibFaceDetector("hog", upsample=1, min_score=0.25)
    rows = []
    for name, image in found:
        flipped = np.ascontiguousarray(image[:, ::-1])
        mirrored = detector.detect(flipped)
        for face in detector.detect(image):
            cx = (face.box[0] + face.box[2]) / 2
            twin = min(mirrored, key=lambda f: abs(image.shape[1] - (f.box[0] + f.box[2]) / 2 - cx))
            a = np.array([db.pose_from_landmarks(face.keypoints, image.shape[:2], points=f) for f in FITS])
            b = np.array([db.pose_from_landmarks(twin.keypoints, image.shape[:2], points=f) for f in FITS])
            rows.append((f"{name} x={int(face.box[0])}", a, b))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common.add_tiny_flag(parser)
    _common.is_tiny(parser.parse_args())
    print(_common.machine())
    rng = np.random.default_rng(0)
    print("| landmark noise | fit | yaw gain | mean abs error p / y / r (°) |")
    print("|---|---|---:|---|")
    for noise in (0.0, 0.02):
        for fit, (gain, err) in synthetic(noise, rng).items():
            print(f"| {noise:.0%} | {fit} | {gain:.3f} | {err[0]:.2f} / {err[1]:.2f} / {err[2]:.2f} |")
            _common.summary("pnp_turns", f"yaw gain, {fit} fit, {noise:.0%} noise", f"{gain:.3f}", note="target 0.9-1.1")
    print("\n| landmark noise | true Δ | " + " | ".join(f"Δ {f}" for f in FITS) + " |")
    print("|---|---:|" + "---:|" * len(FITS))
    for noise in (0.0, 0.02):
        d = sweep_delta(noise, rng)
        print(f"| {noise:.0%} | {d['true']:.1f} | " + " | ".join(f"{d[f]:.1f}" for f in FITS) + " |")
    print("\n| face | " + " | ".join(f"{f} p, y, r" for f in FITS) + " | worst mirror error (y+y', r+r') |")
    print("|---|" + "---|" * (len(FITS) + 1))
    for name, a, b in photographs():
        cells = " | ".join(f"{p:.1f}, {y:.1f}, {r:.1f}" for p, y, r in a)
        mirror = np.abs(np.stack([a[:, 1] + b[:, 1], a[:, 2] + b[:, 2]], 1)).max()
        print(f"| {name} | {cells} | {mirror:.1f} |")


if __name__ == "__main__":
    main()
