"""Measure the dlib face backend: PnP accuracy and flips on synthetic landmarks, detector speed,
mirror symmetry and identity distances on the photographs installed packages ship.

    python benchmarks/bench_dlib.py [--trials 400] [--seed 0] [--skip-cnn]

Synthetic landmarks: MEAN_FACE_68, optionally deformed per trial by Gaussian 3-D offsets (a
face that is not the mean face), turned to known (pitch, yaw, roll), projected with the same
pinhole camera the estimator assumes, plus Gaussian pixel noise. Noise is given as a fraction of
the outer-eye-corner distance of the frontal face. All 68 points stay "visible": real landmarks
on a far cheek at large yaw are worse, so these numbers are a lower bound on the error.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from faithfulfaces_core.pose.dlib_backend import (
    MEAN_FACE_68,
    DlibFaceDetector,
    DlibFaceEmbedder,
    camera_matrix,
    camera_rotation_from_euler,
    euler_from_camera_rotation,
    identity_distance,
    pose_from_landmarks,
)
from faithfulfaces_core.pose.rotation import angle_difference

IMAGE_SIZE = (480, 640)
DISTANCE_MM = 600.0
YAW_BINS = [0, 15, 30, 45, 60, 70, 80, 88]


def photo(package: str, relative: str) -> np.ndarray | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return np.asarray(Image.open(path).convert("RGB")) if path.is_file() else None


def render(model: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """[68, 3] model -> [68, 2] pixels, principal point at the image centre."""
    height, width = IMAGE_SIZE
    cam = model @ camera_rotation_from_euler(angles).T + np.array([0.0, 0.0, DISTANCE_MM])
    focal = max(height, width)
    return np.stack(
        [width / 2 + focal * cam[:, 0] / cam[:, 2], height / 2 + focal * cam[:, 1] / cam[:, 2]], 1
    )


def iterative_pnp(points: np.ndarray, image_size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """OpenCV's default solver, for comparison with the SQPnP the backend uses."""
    k = camera_matrix(image_size, tuple(points.mean(axis=0)))
    _, rvec, _ = cv2.solvePnP(MEAN_FACE_68, points, k, None, flags=cv2.SOLVEPNP_ITERATIVE)
    return euler_from_camera_rotation(cv2.Rodrigues(rvec)[0])


def pose_with_depth(points: np.ndarray, image_size: tuple[int, int], depth_scale: float) -> np.ndarray:
    """pose_from_landmarks against MEAN_FACE_68 with its z (depth) scaled."""
    model = MEAN_FACE_68 * np.array([1.0, 1.0, depth_scale])
    k = camera_matrix(image_size, tuple(points.mean(axis=0)))
    _, rvec, _ = cv2.solvePnP(model, points, k, None, flags=cv2.SOLVEPNP_SQPNP)
    return euler_from_camera_rotation(cv2.Rodrigues(rvec)[0])


def geodesic(a: np.ndarray, b: np.ndarray) -> float:
    """Angle (degrees) of the rotation between two poses: free of Euler-angle gimbal effects."""
    relative = camera_rotation_from_euler(a).T @ camera_rotation_from_euler(b)
    return float(np.degrees(np.arccos(np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0))))


def synthetic_table(trials: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    frontal = render(MEAN_FACE_68, np.zeros(3))
    eye_px = np.linalg.norm(frontal[45] - frontal[36])
    print(f"\n## PnP on synthetic landmarks ({trials} trials per row; eye distance {eye_px:.0f} px)")
    print("pitch, roll uniform in ±20°; |yaw| = bin ± 2.5° with random sign; shape = 3-D offsets (mm, σ)")
    print("rotation err = angle between true and estimated rotation; flip = rotation err > 30°")
    print(
        "| noise (eye dist.) | shape σ mm | |yaw| | median err p/y/r (°) | 95th pct err p/y/r (°) "
        "| 95th pct rotation err (°) | flips SQPnP | flips iterative |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for noise, shape_sigma in [(0.0, 0.0), (0.02, 0.0), (0.05, 0.0), (0.02, 3.0), (0.05, 5.0)]:
        for yaw_bin in YAW_BINS:
            errors, rotation_errors, flips, flips_iter = [], [], 0, 0
            for _ in range(trials):
                yaw = np.clip(yaw_bin + rng.uniform(-2.5, 2.5), 0.0, 89.0) * rng.choice([-1.0, 1.0])
                truth = np.array([rng.uniform(-20, 20), yaw, rng.uniform(-20, 20)])
                model = MEAN_FACE_68 + rng.normal(0.0, shape_sigma, MEAN_FACE_68.shape)
                points = render(model, truth) + rng.normal(0.0, noise * eye_px, (68, 2))
                estimate = pose_from_landmarks(points, IMAGE_SIZE)
                errors.append(angle_difference(estimate, truth))
                rotation_errors.append(geodesic(estimate, truth))
                flips += rotation_errors[-1] > 30.0
                flips_iter += geodesic(iterative_pnp(points), truth) > 30.0
            e = np.array(errors)
            med = "/".join(f"{v:.1f}" for v in np.median(e, 0))
            p95 = "/".join(f"{v:.1f}" for v in np.percentile(e, 95, 0))
            print(
                f"| {noise:.2f} | {shape_sigma:.0f} | {yaw_bin} | {med} | {p95} | "
                f"{np.percentile(rotation_errors, 95):.1f} | {100 * flips / trials:.1f}% | "
                f"{100 * flips_iter / trials:.1f}% |"
            )


def focal_table(seed: int) -> None:
    """Bias when the real camera's focal length differs from the assumed max(H, W)."""
    rng = np.random.default_rng(seed)
    print("\n## Unknown focal length: true focal = factor × assumed (no noise, 200 poses, |yaw| ≤ 60)")
    print("| factor | median err p/y/r (°) | max err p/y/r (°) |")
    print("|---|---|---|")
    height, width = IMAGE_SIZE
    for factor in [0.5, 1.0, 2.0, 4.0, 16.0]:
        errs = []
        for _ in range(200):
            truth = rng.uniform([-20, -60, -20], [20, 60, 20])
            focal = factor * max(height, width)
            distance = DISTANCE_MM * factor  # same face size in the image
            cam = MEAN_FACE_68 @ camera_rotation_from_euler(truth).T + np.array([0.0, 0.0, distance])
            points = np.stack(
                [width / 2 + focal * cam[:, 0] / cam[:, 2], height / 2 + focal * cam[:, 1] / cam[:, 2]], 1
            )
            errs.append(angle_difference(pose_from_landmarks(points, IMAGE_SIZE), truth))
        e = np.array(errs)
        print(
            f"| {factor:g} | {'/'.join(f'{v:.1f}' for v in np.median(e, 0))} | {'/'.join(f'{v:.1f}' for v in e.max(0))} |"
        )


def matched(faces_a, faces_b, width: int):
    """Pairs (a, b) of faces where b is a's mirror image (box centres within 25% of the box width)."""
    pairs = []
    for fa in faces_a:
        ca = np.array([(fa.box[0] + fa.box[2]) / 2, (fa.box[1] + fa.box[3]) / 2])
        for fb in faces_b:
            cb = np.array([width - (fb.box[0] + fb.box[2]) / 2, (fb.box[1] + fb.box[3]) / 2])
            if np.linalg.norm(ca - cb) < 0.25 * (fa.box[2] - fa.box[0]):
                pairs.append((fa, fb))
    return pairs


def photo_tables(skip_cnn: bool) -> None:
    photos = {
        "Tom_Hanks_54745.png": photo("insightface", "data/images/Tom_Hanks_54745.png"),
        "t1.jpg": photo("insightface", "data/images/t1.jpg"),
        "astronaut.png": photo("skimage", "data/astronaut.png"),
    }
    photos = {k: v for k, v in photos.items() if v is not None}
    print("\n## Detection on the shipped photographs (faces found, seconds per image, this CPU)")
    print(
        "| detector | upsample | "
        + " | ".join(f"{k} {v.shape[1]}×{v.shape[0]}" for k, v in photos.items())
        + " |"
    )
    print("|---|---|" + "---|" * len(photos))
    configs = [("hog", 0), ("hog", 1), ("hog", 2)] + ([] if skip_cnn else [("cnn", 0), ("cnn", 1)])
    for model, upsample in tqdm(configs, desc="detectors", leave=False):
        det = DlibFaceDetector(model, upsample)
        cells = []
        for image in photos.values():
            if model == "cnn" and upsample == 1 and image.shape[1] > 1000:
                cells.append("(skipped)")
                continue
            start = time.perf_counter()
            faces = det.detect(image)
            cells.append(f"{len(faces)} in {time.perf_counter() - start:.2f} s")
        print(f"| {model} | {upsample} | " + " | ".join(cells) + " |")

    if not skip_cnn:
        print("\n## HOG vs CNN boxes and landmarks on the same faces: pose difference (°)")
        print("| image | HOG box | HOG pitch, yaw, roll | CNN pitch, yaw, roll | |difference| |")
        print("|---|---|---|---|---|")
        hog, cnn = DlibFaceDetector("hog", 1, min_score=0.25), DlibFaceDetector("cnn", 0)
        for name, image in photos.items():
            cnn_faces = cnn.detect(image)
            for face in hog.detect(image):
                centre = face.keypoints.mean(axis=0)
                other = min(cnn_faces, key=lambda f: np.linalg.norm(f.keypoints.mean(axis=0) - centre))
                a = pose_from_landmarks(face.keypoints, image.shape[:2])
                b = pose_from_landmarks(other.keypoints, image.shape[:2])
                box = ",".join(str(int(v)) for v in face.box)
                print(
                    f"| {name} | {box} | {', '.join(f'{v:.1f}' for v in a)} | {', '.join(f'{v:.1f}' for v in b)} "
                    f"| {', '.join(f'{v:.1f}' for v in np.abs(a - b))} |"
                )

    print("\n## Sensitivity to the generic face's depth: pose change when MEAN_FACE_68's z is scaled (°)")
    print("| image | box | pitch, yaw, roll (depth ×1) | change at depth ×0.8 | change at depth ×1.2 |")
    print("|---|---|---|---|---|")
    hog = DlibFaceDetector("hog", 1, min_score=0.25)
    for name, image in photos.items():
        for face in hog.detect(image):
            base = pose_from_landmarks(face.keypoints, image.shape[:2])
            changes = [
                pose_with_depth(face.keypoints.astype(np.float64), image.shape[:2], scale) - base
                for scale in (0.8, 1.2)
            ]
            box = ",".join(str(int(v)) for v in face.box)
            print(
                f"| {name} | {box} | {', '.join(f'{v:.1f}' for v in base)} | "
                + " | ".join(", ".join(f"{v:+.1f}" for v in c) for c in changes)
                + " |"
            )

    det = DlibFaceDetector("hog", 1, min_score=0.25, with_embeddings=True)
    print("\n## Pose and mirror symmetry (HOG, upsample 1, min_score 0.25)")
    print(
        "| image | box | pitch, yaw, roll | flipped image: pitch, yaw, roll | |Δpitch|, |yaw+yaw'|, |roll+roll'| "
        "| iterative solver instead: original; flipped |"
    )
    print("|---|---|---|---|---|---|")
    worst = np.zeros(3)
    embeddings: list[tuple[str, str, np.ndarray]] = []  # (person, view, embedding)
    for name, image in photos.items():
        flipped = np.ascontiguousarray(image[:, ::-1])
        faces, faces_f = det.detect(image), det.detect(flipped)
        for i, (fa, fb) in enumerate(matched(faces, faces_f, image.shape[1])):
            a = pose_from_landmarks(fa.keypoints, image.shape[:2])
            b = pose_from_landmarks(fb.keypoints, image.shape[:2])
            diff = np.abs([a[0] - b[0], a[1] + b[1], a[2] + b[2]])
            worst = np.maximum(worst, diff)
            box = ",".join(str(int(v)) for v in fa.box)
            iters = "; ".join(
                ", ".join(f"{v:.0f}" for v in iterative_pnp(f.keypoints.astype(np.float64), image.shape[:2]))
                for f in (fa, fb)
            )
            print(
                f"| {name} | {box} | {', '.join(f'{v:.1f}' for v in a)} | {', '.join(f'{v:.1f}' for v in b)} | "
                f"{', '.join(f'{v:.1f}' for v in diff)} | {iters} |"
            )
            embeddings += [
                (f"{name}#{i}", "original", fa.embedding),
                (f"{name}#{i}", "flipped", fb.embedding),
            ]
    print(
        f"worst mirror asymmetry |Δpitch|, |yaw+yaw'|, |roll+roll'|: {', '.join(f'{v:.1f}' for v in worst)}"
    )

    if "Tom_Hanks_54745.png" in photos:
        hanks = photos["Tom_Hanks_54745.png"]
        embedder = DlibFaceEmbedder()
        for size in (80, 224):
            scaled = np.asarray(Image.fromarray(hanks).resize((size, size), Image.BICUBIC))
            found = det.detect(scaled)
            if found:
                embeddings.append(("Tom_Hanks_54745.png#0", f"{size} px", embedder.embed(scaled, found[0])))
    same, different = [], []
    for i, (person_a, view_a, a) in enumerate(embeddings):
        for person_b, view_b, b in embeddings[i + 1 :]:
            pair = (identity_distance(a, b), f"{person_a} {view_a}", f"{person_b} {view_b}")
            (same if person_a == person_b else different).append(pair)
    print("\n## Identity distances (dlib threshold 0.6)")
    print(
        f"same face, other view (flipped / rescaled), {len(same)} pairs: max {max(same)[0]:.3f} ({max(same)[1]} vs {max(same)[2]})"
    )
    print(
        f"different faces, {len(different)} pairs: min {min(different)[0]:.3f} ({min(different)[1]} vs {min(different)[2]})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-cnn", action="store_true")
    _common.add_tiny_flag(parser)
    args = parser.parse_args()
    if _common.is_tiny(args):
        args.trials, args.skip_cnn = 10, True
    print(_common.machine())
    synthetic_table(args.trials, args.seed)
    focal_table(args.seed)
    photo_tables(args.skip_cnn)


if __name__ == "__main__":
    main()
