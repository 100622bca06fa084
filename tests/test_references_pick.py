"""Pick Reference Faces: farthest-point sampling on known pose sets, the filters, real photographs.

The synthetic sets use a detector/estimator pair that reads a face's planned pose and identity
from the image it sees, so the best covering set is known by construction. The real
photographs are the ones installed packages ship, with the no-download dlib backend.
"""

from __future__ import annotations

import numpy as np
import pytest

from faithfulfaces_core.errors import FaithfulFacesError
from faithfulfaces_core.identity import majority_identity
from faithfulfaces_core.pose.types import Face
from faithfulfaces_core.references import (
    PickSettings,
    farthest_poses,
    laplacian_variance,
    pick_reference_faces,
)
from faithfulfaces_core.references.coverage import coverage_angle, head_directions
from faithfulfaces_core.references.plot import HEIGHT, WIDTH, plot_coverage
from faithfulfaces_core.tiny.photos import ASTRONAUT, GROUP, PORTRAIT, load_photo


class PlannedDetector:
    """Image ``i`` (pixel [0, 0, 0] == i) shows the faces ``plan[i]``: (box, identity vector)."""

    name = "planned"

    def __init__(self, plan):
        self.plan = plan

    def detect(self, image):
        return [Face(box=box, score=1.0, keypoints=np.array([[int(image[0, 0, 0]), n]], float), embedding=vec)
                for n, (box, vec) in enumerate(self.plan[int(image[0, 0, 0])])]


class PlannedEstimator:
    name = "planned-pose"
    input_size = 64

    def __init__(self, angles):
        self.angles = angles

    def estimate(self, crops, faces, image_sizes):
        return np.array([self.angles[int(f.keypoints[0, 0])][int(f.keypoints[0, 1])] for f in faces])


BOX = (20.0, 20.0, 120.0, 120.0)


def _images(n, rng, blur=()):
    images = rng.integers(0, 256, (n, 140, 140, 3), dtype=np.uint8)
    for i in blur:
        images[i] = images[i].mean().astype(np.uint8)
    images[:, 0, 0, 0] = np.arange(n)
    return images


def _pick(angles, k, rng, identities=None, blur=(), boxes=None, **settings):
    identity = rng.normal(size=128)
    identity *= 0.1 / np.linalg.norm(identity)
    vectors = identities or [identity + rng.normal(scale=0.002, size=128) for _ in angles]
    plan = {i: [((boxes or {}).get(i, BOX), vectors[i])] for i in range(len(angles))}
    detector = PlannedDetector(plan)
    estimator = PlannedEstimator({i: [a] for i, a in enumerate(angles)})
    return pick_reference_faces(_images(len(angles), rng, blur), detector, estimator,
                                PickSettings(k=k, **settings), embedder=_VectorOf())


class _VectorOf:
    name = "dlib-planned"

    def embed(self, image, face):
        return face.embedding


def _fresh():
    return np.random.default_rng(np.random.SeedSequence().entropy)


def test_farthest_points_on_known_sets():
    rng = _fresh()
    extremes = [(0, 0, 0), (0, 70, 0), (0, -70, 0), (45, 0, 0), (-45, 0, 0)]
    clutter = [(rng.uniform(-8, 8), rng.uniform(-8, 8), rng.uniform(-30, 30)) for _ in range(20)]
    angles = np.array(clutter + extremes, float)
    order = farthest_poses(angles, 5)
    assert order[0] == np.argmax(head_directions(angles)[:, 2])  # the most frontal seeds it
    assert set(order[1:]) == {21, 22, 23, 24}
    assert set(farthest_poses(angles, 3)[1:]) == {21, 22}  # the two widest yaws come next
    perm = rng.permutation(len(angles))
    assert sorted(perm[farthest_poses(angles[perm], 5)].tolist()) == sorted(order)  # order-independent set
    assert coverage_angle(angles, order) < 12.0
    with pytest.raises(FaithfulFacesError, match="K must be between 1 and 8"):
        farthest_poses(angles, 9)


def test_roll_does_not_move_the_head_direction():
    d = head_directions(np.array([[10, 20, 0], [10, 20, 45]]))
    assert np.allclose(d[0], d[1])
    assert np.allclose(np.linalg.norm(head_directions(_fresh().uniform(-90, 90, (50, 3))), axis=1), 1.0)


def test_picker_covers_the_known_poses_and_is_deterministic():
    rng = _fresh()
    angles = [(0, 3, 0), (2, -60, 5), (1, 60, -5), (-40, 0, 0), (1, 2, 0), (0, 4, 1), (35, 5, 0)]
    result = _pick(angles, 5, np.random.default_rng(7))
    assert result.chosen[0].image == 4  # the most frontal face seeds the choice
    assert {c.image for c in result.chosen[1:]} == {1, 2, 3, 6}
    again = _pick(angles, 5, np.random.default_rng(7))
    assert [c.image for c in again.chosen] == [c.image for c in result.chosen]
    assert all(c.reference.shape == (512, 512, 3) for c in result.chosen)
    assert all(c.pose.crop.shape == (64, 64, 3) for c in result.chosen)
    assert plot_coverage(result).shape == (HEIGHT, WIDTH, 3)
    few = _pick(angles[:2], 4, rng)
    assert len(few.chosen) == 2 and "only 2 faces passed" in few.summary()


def test_filters_drop_small_blurred_and_other_identities():
    rng = _fresh()
    angles = [(0, 0, 0), (0, 50, 0), (0, -50, 0), (0, 30, 0), (0, -30, 0), (0, 70, 0)]
    base = rng.normal(size=128)
    base *= 0.1 / np.linalg.norm(base)
    stranger = rng.normal(size=128)
    vectors = [base + rng.normal(scale=0.002, size=128) for _ in angles]
    vectors[5] = stranger / np.linalg.norm(stranger)
    result = _pick(angles, 8, rng, identities=vectors, blur=(1,), boxes={2: (20.0, 20.0, 50.0, 50.0)})
    reasons = {c.image: c.reason for c in result.candidates}
    assert reasons == {0: None, 1: "too blurred", 2: "too small", 3: None, 4: None, 5: "other identity"}
    assert {c.image for c in result.chosen} == {0, 3, 4}
    assert result.counts()["other identity"] == 1


def test_nothing_usable_is_a_clear_error():
    with pytest.raises(FaithfulFacesError, match="No usable reference face among 2 images.*too blurred: 2"):
        _pick([(0, 0, 0), (0, 10, 0)], 2, _fresh(), blur=(0, 1))


def test_majority_identity_is_the_largest_group():
    rng = _fresh()
    a, b = rng.normal(size=(2, 16))
    vectors = np.stack([a, a + 0.01, b, a - 0.01, b + 0.01])
    members, distance = majority_identity(vectors, "euclidean", 0.5)
    assert members.tolist() == [True, True, False, True, False]
    assert distance[members].max() <= 0.5


def test_sharpness_falls_with_blur():
    import cv2

    image = _fresh().integers(0, 256, (200, 200, 3), dtype=np.uint8)
    box = (10.0, 10.0, 190.0, 190.0)
    values = [laplacian_variance(image if s == 0 else cv2.GaussianBlur(image, (0, 0), s), box) for s in (0, 1, 2, 4)]
    assert values == sorted(values, reverse=True)
    assert values[-1] < PickSettings().min_sharpness < values[0]


def test_real_photographs_reject_the_group_and_the_stranger():
    pytest.importorskip("dlib")
    import cv2

    from faithfulfaces_core.pose.backends import build_backend

    hanks = load_photo(*PORTRAIT)
    group = load_photo(*GROUP)
    astronaut = load_photo(*ASTRONAUT)
    mirrored = hanks[:, ::-1].copy()
    larger = cv2.resize(hanks, (224, 224), interpolation=cv2.INTER_CUBIC)
    blurred = cv2.GaussianBlur(larger, (0, 0), 4.0)
    blank = np.full((120, 120, 3), 128, np.uint8)
    images = [hanks, group, mirrored, astronaut, larger, blurred, blank]
    names = ["hanks", "group", "mirrored", "astronaut", "larger", "blurred", "blank"]
    detector = build_backend("detector", "dlib-hog", with_embeddings=True)
    estimator = build_backend("pose", "pnp")
    result = pick_reference_faces(images, detector, estimator, PickSettings(k=3), names=names)
    by_image = {}
    for c in result.candidates:
        by_image.setdefault(names[c.image], []).append(c.reason)
    assert by_image["group"] == ["other identity"] * 6  # every face of the group photo
    assert set(by_image["astronaut"]) == {"other identity"}
    assert by_image["blurred"] == ["too blurred"]
    assert result.dropped == {6: "no face"}
    assert sorted(names[c.image] for c in result.chosen) == ["hanks", "larger", "mirrored"]
    yaws = {names[c.image]: c.pose.angles.yaw for c in result.chosen}
    assert yaws["mirrored"] * yaws["hanks"] < 0  # the mirror turns the other way
    again = pick_reference_faces(images, detector, estimator, PickSettings(k=3), names=names)
    assert [c.pose.image_name for c in again.chosen] == [c.pose.image_name for c in result.chosen]


def test_cli_writes_crops_plot_and_report(tmp_path):
    pytest.importorskip("dlib")
    import json

    from PIL import Image

    from faithfulfaces_core.references.cli import main

    hanks = load_photo(*PORTRAIT)
    paths = []
    for name, image in (("a.png", hanks), ("b.png", hanks[:, ::-1]), ("group.jpg",
                                                                      load_photo(*GROUP))):
        Image.fromarray(np.ascontiguousarray(image)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    out = tmp_path / "out"
    assert main([*paths, "--backend", "dlib-hog", "--k", "2", "--out", str(out), "--crop-size", "128"]) == 0
    report = json.loads((out / "references.json").read_text())
    assert report["counts"]["other identity"] == 6 and report["metric"] == "euclidean"
    assert sorted(f["image"] for f in report["faces"] if f["chosen"]) == ["a.png", "b.png"]
    assert np.asarray(Image.open(out / "reference_01.png")).shape == (128, 128, 3)
    assert (out / "coverage.png").is_file()
    assert main([paths[0], "--backend", "dlib-hog", "--k", "9", "--out", str(out)]) == 2
