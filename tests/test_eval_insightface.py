"""FaceSim through the real InsightFace FaceAnalysis on a fake pack (and a random tiny 6DRepNet):
a video identical to the reference scores 1.0 per frame; the plot PNG; a pack without recognition."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from faithfulfaces_core.dataset.encode import write_video
from faithfulfaces_core.errors import FaithfulFacesError
from faithfulfaces_core.eval.facesim import FaceSimEvaluator
from faithfulfaces_core.eval.plot import PLOT_HEIGHT, PLOT_WIDTH, plot_comparison, plot_video, save_png
from faithfulfaces_core.eval.report import report_for_frames
from faithfulfaces_core.pose.insightface_detector import InsightFaceDetector, insightface_pack_dir
from faithfulfaces_core.pose.sixdrepnet import SixDRepNetEstimator
from faithfulfaces_core.tiny.insightface import FakeFace, build_fake_insightface_pack, paint_fake_faces
from faithfulfaces_core.tiny.pose import random_sixdrepnet, tiny_sixdrepnet_config

FACE = FakeFace((200.0, 160.0, 440.0, 480.0), score=0.9)
OTHER = FakeFace((60.0, 60.0, 140.0, 160.0), score=0.9)


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("insightface")
    return build_fake_insightface_pack(insightface_pack_dir(root, "buffalo_l"), [FACE, OTHER])


@pytest.fixture(scope="module")
def estimator():
    return SixDRepNetEstimator(random_sixdrepnet(0, config=tiny_sixdrepnet_config(64)), device="cpu")


def _portrait(seed: int, faces=(FACE,)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 100, size=(320, 320, 3), dtype=np.uint8)
    image = paint_fake_faces(image, faces)
    x1, y1, x2, y2 = (int(v / 2) for v in faces[0].box)
    image[y1 + 20 : y2 - 20, x1 + 20 : x2 - 20] = rng.integers(100, 256, size=(y2 - y1 - 40, x2 - x1 - 40, 3))
    return image


def test_video_identical_to_the_reference_scores_one(pack, estimator, tmp_path):
    evaluator = FaceSimEvaluator(InsightFaceDetector(pack, device="cpu", det_sizes=(320,)), estimator)
    assert evaluator.embedding.name == "insightface:w600k_r50.onnx" and evaluator.embedding.kind == "arcface"
    reference = _portrait(seed=int(np.random.SeedSequence().entropy % 2**32))
    report, score = report_for_frames(evaluator, reference, [reference.copy() for _ in range(5)], count=None)
    assert report["backend"] == "insightface+6drepnet" and report["embedding"]["distance"] is None
    for frame in score.frames:
        assert frame.faces == 1 and not frame.padded
        assert frame.cosine == pytest.approx(1.0, abs=1e-5) and frame.similarity == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(frame.box, np.array(FACE.box) / 2, atol=1e-2)
        ref = report["reference"]
        assert (frame.angles.pitch, frame.angles.yaw, frame.angles.roll) == pytest.approx(
            (ref["pitch"], ref["yaw"], ref["roll"]), abs=1e-3)
    assert score.summary.mean == pytest.approx(1.0, abs=1e-5) and score.summary.min == pytest.approx(1.0, abs=1e-5)
    # another picture of "someone else" (different pixels in the face) scores lower
    _, other = report_for_frames(evaluator, reference, [_portrait(seed=12345)], count=None)
    assert other.frames[0].similarity < 0.9999

    plot = plot_video(score)
    assert plot.shape == (PLOT_HEIGHT, PLOT_WIDTH, 3) and plot.dtype == np.uint8
    assert plot.std() > 10  # something was drawn
    path = save_png(plot, tmp_path / "plots" / "video.png")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (PLOT_WIDTH, PLOT_HEIGHT)
        np.testing.assert_array_equal(np.asarray(png.convert("RGB")), plot)
    both = plot_comparison([score, other])
    assert both.shape == (PLOT_HEIGHT, PLOT_WIDTH, 3)


def test_multi_face_frames_use_the_largest_face_and_are_counted(pack, estimator):
    evaluator = FaceSimEvaluator(InsightFaceDetector(pack, device="cpu", det_sizes=(320,)), estimator)
    reference = _portrait(seed=3)
    two = _portrait(seed=3, faces=(FACE, OTHER))  # the same large face plus a small one
    _, score = report_for_frames(evaluator, reference, [two, two], count=None)
    assert score.summary.multi_face_frames == 2 and score.summary.face_frames == 2
    np.testing.assert_allclose(score.frames[0].box, np.array(FACE.box) / 2, atol=1e-2)


def test_pack_without_recognition_names_the_fix(tmp_path, estimator):
    pack = build_fake_insightface_pack(tmp_path / "models" / "nofr", [FACE], recognition=False)
    evaluator = FaceSimEvaluator(InsightFaceDetector(pack, device="cpu", det_sizes=(320,)), estimator)
    with pytest.raises(FaithfulFacesError, match=r"glintr100.onnx in antelopev2, w600k_r50.onnx in buffalo_l"):
        evaluator.reference(_portrait(seed=1))



def _write_video(path, frames):
    return write_video(path, frames, fps=8)


def test_cli_insightface_backend_with_placed_files(pack, tmp_path, capsys):
    """The CLI's insightface path: a user-placed pack folder and a 6DRepNet .safetensors file."""
    import json

    from faithfulfaces_core.eval.cli import main
    from faithfulfaces_core.pose.sixdrepnet import save_sixdrepnet

    weights = save_sixdrepnet(random_sixdrepnet(1, config=tiny_sixdrepnet_config(64)), tmp_path / "6drepnet.safetensors")
    reference = _portrait(seed=5)
    Image.fromarray(reference).save(tmp_path / "ref.png")
    video = _write_video(tmp_path / "clip.mp4", [reference, np.zeros_like(reference), reference])
    args = [str(tmp_path / "ref.png"), str(video), "--insightface-pack", str(pack), "--pose-weights", str(weights),
            "--device", "cpu", "--out", str(tmp_path / "out")]
    assert main(args) == 0, capsys.readouterr().err
    assert "insightface+6drepnet" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "facesim.json").read_text())
    assert report["backend"] == "insightface+6drepnet"
    assert report["embedding"] == {
        "model": "insightface:w600k_r50.onnx", "kind": "arcface",
        "similarity": "cosine similarity of insightface:w600k_r50.onnx embeddings, clipped at 0", "distance": None}
    s = report["videos"][0]["summary"]
    assert (s["frames_sampled"], s["face_frames"], s["no_face_frames"]) == (3, 2, 1)
    assert s["min"] > 0.95  # the same picture through lossless-ish H.264
    assert (tmp_path / "out" / "clip.png").is_file()
