"""InsightFace detection through the real FaceAnalysis on a fake pack; estimate_face_poses policies."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms

from faithfulfaces_core.errors import CheckpointError, MissingModelError, MultipleFacesError, NoFaceError
from faithfulfaces_core.pose.estimate import estimate_face_poses
from faithfulfaces_core.pose.insightface_detector import (
    DetectedFace,
    InsightFaceDetector,
    check_insightface_pack,
    insightface_pack_dir,
    retry_det_sizes,
)
from faithfulfaces_core.pose.sixdrepnet import SixDRepNetEstimator
from faithfulfaces_core.pose.types import EulerAngles, FaceDetector
from faithfulfaces_core.tiny.insightface import FakeFace, build_fake_insightface_pack, paint_fake_faces
from faithfulfaces_core.tiny.pose import random_sixdrepnet, tiny_sixdrepnet_config

BIG = FakeFace((100.0, 120.0, 220.0, 280.0), score=0.95)  # 120 x 160
SMALL = FakeFace((400.0, 100.0, 480.0, 212.0), score=0.8)  # 80 x 112
EDGE = FakeFace((0.0, 500.0, 100.0, 632.0), score=0.7)  # its 1.5x box crosses the left and bottom borders
POSE = (12.0, -25.0, 8.0)


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("insightface")
    return build_fake_insightface_pack(
        insightface_pack_dir(root, "buffalo_l"), [BIG, SMALL, EDGE], landmark_pose=POSE
    )


@pytest.fixture(scope="module")
def detector(pack):
    return InsightFaceDetector(pack, device="cpu")


@pytest.fixture(scope="module")
def estimator():
    return SixDRepNetEstimator(random_sixdrepnet(0, config=tiny_sixdrepnet_config(224)), device="cpu")


def _dark(side=640, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 100, size=(side, side, 3), dtype=np.uint8)


def test_fake_pack_loads_through_real_faceanalysis(detector, pack):
    assert isinstance(detector, FaceDetector)
    assert sorted(p.name for p in check_insightface_pack(pack)) == [
        "1k3d68.onnx",
        "det_10g.onnx",
        "w600k_r50.onnx",
    ]
    assert set(detector.tasks) == {"detection", "recognition", "landmark_3d_68"}
    assert type(detector.app).__module__ == "insightface.app.face_analysis"


def test_detection_returns_scripted_boxes_keypoints_scores(detector):
    image = paint_fake_faces(_dark(), [BIG, SMALL])
    faces = sorted(detector.detect(image), key=lambda f: f.box[0])
    assert len(faces) == 2
    for face, scripted in zip(faces, (BIG, SMALL), strict=True):
        assert isinstance(face, DetectedFace)
        np.testing.assert_allclose(face.box, scripted.box, atol=1e-3)
        assert face.score == pytest.approx(scripted.score, abs=1e-6)
        np.testing.assert_allclose(face.keypoints, scripted.five_points(), atol=1e-3)
        assert face.embedding.shape == (512,) and np.linalg.norm(face.embedding) == pytest.approx(
            1.0, abs=1e-5
        )
        assert face.det_size == 640
    # embeddings depend on the face crop: the two faces see different pixels
    assert abs(float(faces[0].embedding @ faces[1].embedding)) < 0.9999


def test_boxes_scale_with_the_image(detector):
    image = paint_fake_faces(_dark(1280), [BIG])
    (face,) = detector.detect(image)
    np.testing.assert_allclose(face.box, np.array(BIG.box) * 2, atol=2e-3)
    portrait = paint_fake_faces(np.zeros((960, 640, 3), np.uint8), [BIG])  # scales with the longer side
    (face,) = detector.detect(portrait)
    np.testing.assert_allclose(face.box, np.array(BIG.box) * 1.5, atol=2e-3)


def test_estimate_largest_face_crop_and_angles(detector, estimator):
    images = [paint_fake_faces(_dark(seed=1), [BIG, SMALL]), paint_fake_faces(_dark(seed=2), [SMALL])]
    poses = estimate_face_poses(images, detector, estimator, names=["ref.png", "frame_1"])
    first, second = poses
    assert [p.image_name for p in poses] == ["ref.png", "frame_1"]
    assert len(first.faces) == 2 and first.chosen == 0
    np.testing.assert_allclose(first.face.box, BIG.box, atol=1e-3)  # largest first
    # 1.5x about the centre (160, 200): 180 x 240
    assert first.crop_box == (70, 80, 250, 320)
    assert second.crop_box == (380, 72, 500, 240)
    assert first.backend == "insightface+6drepnet"
    # the crop is the released Resize(224) + CenterCrop(224) of the enlarged box
    x1, y1, x2, y2 = first.crop_box
    reference = transforms.CenterCrop(224)(transforms.Resize(224)(Image.fromarray(images[0][y1:y2, x1:x2])))
    np.testing.assert_array_equal(first.crop, np.asarray(reference))
    # one batched estimator call over both crops gives the same angles as calling it directly
    direct = estimator.estimate(np.stack([first.crop, second.crop]))
    np.testing.assert_allclose([p.angles.as_array() for p in poses], direct, atol=1e-5)


def test_batched_estimator_call(detector, estimator):
    calls = []

    class Counting:
        name, input_size = estimator.name, estimator.input_size

        def estimate(self, crops, faces, image_sizes):
            calls.append((crops.shape, len(faces), list(image_sizes)))
            return estimator.estimate(crops, faces, image_sizes)

    images = np.stack([paint_fake_faces(_dark(seed=s), [BIG]) for s in range(3)])
    estimate_face_poses(images, detector, Counting())
    assert calls == [((3, 224, 224, 3), 3, [(640, 640)] * 3)]


def test_enlarged_box_is_clipped_to_the_image(detector, estimator):
    image = paint_fake_faces(_dark(seed=3), [EDGE])
    (pose,) = estimate_face_poses([image], detector, estimator)
    # centre (50, 566), 150 x 198 → (-25, 467, 125, 665) → clipped
    assert pose.crop_box == (0, 467, 125, 640)
    assert pose.crop.shape == (224, 224, 3)


def test_no_face_names_the_image(detector, estimator):
    images = [paint_fake_faces(_dark(seed=4), [BIG]), _dark(seed=5)]
    assert detector.detect(images[1]) == []
    with pytest.raises(NoFaceError) as info:
        estimate_face_poses(images, detector, estimator, names=["a.png", "b.png"])
    assert str(info.value).startswith("No face found in b.png (detector: insightface). Use an image where")
    with pytest.raises(NoFaceError, match=r"^No face found in image 1 \("):
        estimate_face_poses(images, detector, estimator)


def test_multiple_faces_policy(detector, estimator):
    image = paint_fake_faces(_dark(seed=6), [BIG, SMALL, EDGE])
    with pytest.raises(MultipleFacesError) as info:
        estimate_face_poses([image], detector, estimator, policy="error", names=["group.jpg"])
    assert str(info.value).startswith("group.jpg shows 3 faces, but exactly one is required here.")
    assert "choose the face policy 'largest'" in str(info.value)
    (single,) = estimate_face_poses(
        [paint_fake_faces(_dark(seed=6), [SMALL])], detector, estimator, policy="error"
    )
    np.testing.assert_allclose(single.face.box, SMALL.box, atol=1e-3)
    (largest,) = estimate_face_poses([image], detector, estimator, policy="largest")
    assert [round(f.area) for f in largest.faces] == [19200, 13200, 8960]


def test_insightface_pose_is_a_second_opinion(detector, estimator):
    (pose,) = estimate_face_poses([paint_fake_faces(_dark(seed=7), [BIG])], detector, estimator)
    second = pose.extra["insightface_pose"]
    assert isinstance(second, EulerAngles)
    np.testing.assert_allclose(second.as_array(), POSE, atol=0.05)


def test_retry_at_smaller_det_size(tmp_path, estimator):
    late = FakeFace((200.0, 150.0, 440.0, 470.0), score=0.9, max_det_size=384)
    pack = build_fake_insightface_pack(tmp_path / "late", [late], recognition=False)
    image = paint_fake_faces(_dark(seed=8), [late])
    (face,) = InsightFaceDetector(pack, device="cpu").detect(image)
    assert face.det_size == 384 and face.embedding is None and face.pose is None
    np.testing.assert_allclose(face.box, late.box, atol=1e-3)
    assert InsightFaceDetector(pack, device="cpu", det_sizes=(640, 512)).detect(image) == []


def test_each_det_size_is_tried_once(tmp_path):
    assert retry_det_sizes(640) == (640, 512, 384, 256)
    assert retry_det_sizes(512) == (512, 384, 256)
    assert retry_det_sizes(448) == (448, 384, 256)
    assert retry_det_sizes(128) == (128,)
    never = FakeFace((200.0, 150.0, 440.0, 470.0), score=0.9, max_det_size=128)
    pack = build_fake_insightface_pack(tmp_path / "never", [never], recognition=False)
    detector = InsightFaceDetector(pack, device="cpu", det_sizes=(512, 512, 384))
    tried, detect = [], detector.app.det_model.detect
    detector.app.det_model.detect = lambda bgr, input_size, max_num: tried.append(input_size[0]) or detect(
        bgr, input_size=input_size, max_num=max_num)
    assert detector.detect(paint_fake_faces(_dark(seed=9), [never])) == []
    assert tried == [512, 384]


def test_presence_always_and_bad_images(tmp_path, estimator):
    pack = build_fake_insightface_pack(tmp_path / "always", [BIG], presence="always", recognition=False)
    detector = InsightFaceDetector(pack, device="cpu")
    (face,) = detector.detect(np.zeros((640, 640, 3), np.uint8))
    np.testing.assert_allclose(face.box, BIG.box, atol=1e-3)
    with pytest.raises(Exception, match=r"image 0: expected uint8 pixels \(0\.\.255\), got float32"):
        estimate_face_poses([np.zeros((64, 64, 3), np.float32)], detector, estimator)
    with pytest.raises(Exception, match=r"Unknown face policy 'first': use one of largest, error"):
        estimate_face_poses([np.zeros((64, 64, 3), np.uint8)], detector, estimator, policy="first")


def test_missing_pack_errors(tmp_path):
    missing = tmp_path / "models" / "antelopev2"
    with pytest.raises(MissingModelError) as info:
        InsightFaceDetector(missing)
    message = str(info.value)
    assert f"InsightFace model pack folder {missing} does not exist." in message
    assert (
        "antelopev2: scrfd_10g_bnkps.onnx, glintr100.onnx" in message and "buffalo_l: det_10g.onnx" in message
    )
    assert "InsightFace's model zoo" in message and "never downloads" in message
    missing.mkdir(parents=True)
    with pytest.raises(MissingModelError, match=r"antelopev2 has no \.onnx files\. Expected files"):
        InsightFaceDetector(missing)
    build_fake_insightface_pack(
        missing / "antelopev2", [BIG], recognition=False
    )  # zip unpacked one level deep
    with pytest.raises(
        MissingModelError, match=r"are in the sub-folder .*antelopev2/antelopev2 .*move them up"
    ):
        InsightFaceDetector(missing)


def test_pack_without_detector(tmp_path):
    pack = build_fake_insightface_pack(tmp_path / "recognition_only", [BIG])
    (pack / "det_10g.onnx").unlink()
    with pytest.raises(CheckpointError, match=r"found no face-detection model in .*\['w600k_r50.onnx'\]"):
        InsightFaceDetector(pack, device="cpu")


def test_nothing_is_downloaded(pack, monkeypatch):
    import insightface.app.face_analysis as face_analysis
    import insightface.utils.storage as storage

    # an absolute pack path short-circuits InsightFace's own lookup (insightface 0.7.3 and 2.x alike)
    assert storage.ensure_available("models", str(pack), root="/nonexistent") == str(pack)

    def refuse(*args, **kwargs):
        raise AssertionError("insightface tried to download")

    for module in (face_analysis, storage):
        for name in ("ensure_available", "download", "download_file"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)
    InsightFaceDetector(pack, device="cpu")
