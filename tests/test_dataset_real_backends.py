"""The pipeline on the real backends: InsightFace's FaceAnalysis on a fake pack and a random 6DRepNet,
built from specs inside two spawned workers, checked against ``estimate_face_poses`` run directly."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from faithfulfaces_core.dataset.backends import model_spec
from faithfulfaces_core.dataset.build import build_dataset
from faithfulfaces_core.dataset.captions import SidecarCaptioner
from faithfulfaces_core.dataset.curate import CurationSettings
from faithfulfaces_core.dataset.decode import FrameSampling, read_frames
from faithfulfaces_core.dataset.encode import write_video as encode_video
from faithfulfaces_core.dataset.manifest import load_manifest
from faithfulfaces_core.dataset.variation import pose_variation

pytest.importorskip("insightface")
pytest.importorskip("onnxruntime")

SIDE = 128
FRAME = 640  # the fake pack's box coordinates
FACE_A = (160.0, 160.0, 420.0, 460.0)  # -> (32, 32, 84, 92) in a 128 px frame
FACE_B = (480.0, 40.0, 600.0, 160.0)


def frame(seed: int, faces: list[tuple[float, float, float, float]]) -> np.ndarray:
    """Smooth random texture (dark: no face) with a bright marker at the centre of each present face."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 110, size=(8, 8, 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(low).resize((SIDE, SIDE), Image.BICUBIC)).copy()
    for box in faces:
        cx, cy = (int((box[0] + box[2]) / 2 * SIDE / FRAME), int((box[1] + box[3]) / 2 * SIDE / FRAME))
        image[cy - 4 : cy + 4, cx - 4 : cx + 4] = 255
    return image


def write_video(path, frames) -> None:
    encode_video(path, frames, fps=10)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from faithfulfaces_core.pose.sixdrepnet import save_sixdrepnet
    from faithfulfaces_core.tiny.insightface import FakeFace, build_fake_insightface_pack
    from faithfulfaces_core.tiny.pose import random_sixdrepnet, tiny_sixdrepnet_config

    root = tmp_path_factory.mktemp("real")
    pack = build_fake_insightface_pack(
        root / "insightface" / "models" / "antelopev2",
        [FakeFace(FACE_A), FakeFace(FACE_B)],
        recognition=False,
    )
    weights = save_sixdrepnet(
        random_sixdrepnet(3, config=tiny_sixdrepnet_config(64)), root / "6drepnet.safetensors"
    )
    videos = root / "videos"
    videos.mkdir()
    write_video(videos / "turning.mp4", [frame(s, [FACE_A]) for s in range(7)])
    write_video(
        videos / "gap.mp4", [frame(10, [FACE_A]), frame(11, []), frame(12, [FACE_A]), frame(13, [FACE_A])]
    )
    write_video(videos / "two.mp4", [frame(20, [FACE_A]), frame(21, [FACE_A, FACE_B]), frame(22, [FACE_A])])
    write_video(videos / "empty.mp4", [frame(s, []) for s in range(30, 33)])
    for name in ("turning", "gap", "two", "empty"):
        (videos / f"{name}.txt").write_text(f"{name} caption")
    return pack, weights, videos, root


def test_real_backends_in_workers_match_estimate_face_poses(setup):
    from faithfulfaces_core.pose.estimate import estimate_face_poses
    from faithfulfaces_core.pose.insightface_detector import InsightFaceDetector
    from faithfulfaces_core.pose.loading import load_pose_estimator

    pack, weights, videos, root = setup
    detector = model_spec(
        "detector", "insightface", {"pack_dir": str(pack), "det_sizes": [128], "device": "cpu"}
    )
    estimator = model_spec("pose", "6drepnet", {"path": str(weights), "device": "cpu"})
    result = build_dataset(
        [videos],
        root / "dataset",
        detector=detector,
        estimator=estimator,
        captioner=SidecarCaptioner(),
        settings=CurationSettings.paper(sampling=FrameSampling(every=1), threshold=0.0, batch_size=3),
        workers=2,
        threads_per_worker=1,
        progress=False,
        print_summary=False,
    )
    assert result.processed == 4 and len(result.records) == 2
    done = {d["key"]: d for d in map(json.loads, (root / "dataset" / "done.jsonl").read_text().splitlines())}
    assert {k: (d["outcome"], d["reason"]) for k, d in done.items()} == {
        "turning.mp4": ("kept", "pose_variation_ok"),
        "gap.mp4": ("kept", "pose_variation_ok"),
        "two.mp4": ("rejected", "multiple_faces"),
        "empty.mp4": ("rejected", "no_face"),
    }

    ref_detector = InsightFaceDetector(pack, det_sizes=[128], device="cpu", modules=["detection"])
    ref_estimator = load_pose_estimator(weights, device="cpu")
    records = {r.key: r for r in load_manifest(root / "dataset")}
    assert records.keys() == {"turning.mp4", "gap.mp4"}
    for key, indices in (("turning.mp4", list(range(7))), ("gap.mp4", [0, 2, 3])):
        record = records[key]
        assert record.backends.model_dump() == {
            "detector": "insightface",
            "pose": "6drepnet",
            "captioner": "sidecar.txt",
        }
        assert record.frame_indices == indices and record.prompt == f"{key[:-4]} caption"
        poses = estimate_face_poses(
            read_frames(videos / key, indices), ref_detector, ref_estimator, policy="error"
        )
        reference = np.array([p.angles.as_array() for p in poses], dtype=np.float64)
        np.testing.assert_allclose(record.angles_array(), reference, atol=2e-3)
        assert record.delta == pytest.approx(pose_variation(reference), abs=1e-2)
        assert record.delta > 1.0  # the random estimator does respond to the crops
        assert record.crop_boxes == [p.crop_box for p in poses]
        np.testing.assert_allclose(record.boxes, [p.face.box for p in poses], atol=1e-3)
        for path, pose in zip(record.crop_paths(root / "dataset"), poses, strict=True):
            np.testing.assert_array_equal(np.asarray(Image.open(path)), pose.crop)  # PNG is lossless
