"""Curation steps beyond the paper's rule: face score / size thresholds, det size, one identity per sample.

Synthetic clips use the scripted models (gray level → faces, angles, identity vector), so every
decision is known; the identity step is also run on real photographs of different people
(shipped with insightface and scikit-image) arranged as a video, through dlib's HOG detector
and 128-D descriptors.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faithfulfaces_core.dataset.build import build_dataset
from faithfulfaces_core.dataset.captions import SidecarCaptioner
from faithfulfaces_core.dataset.curate import CurationSettings, _detect, counted_faces
from faithfulfaces_core.dataset.decode import FrameSampling
from faithfulfaces_core.dataset.encode import write_video
from faithfulfaces_core.errors import FaithfulFacesError
from faithfulfaces_core.identity import identity_clusters, identity_spread
from faithfulfaces_core.pose.types import Face
from faithfulfaces_core.tiny.scripted import ScriptedDetector, ScriptedPoseEstimator, write_gray_video

BOX = (16.0, 16.0, 48.0, 48.0)
ANGLES = {16: (0.0, 0.0, 0.0), 24: (40.0, 50.0, 30.0), 100: (-40.0, -50.0, -30.0), 108: (10.0, 60.0, 0.0)}


def _vectors(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, 128)) * 0.1  # dlib-like scale: different people ~1.4 apart
    return a, b


def _build(tmp_path: Path, levels: list[int], detector, settings: CurationSettings, name: str = "clip"):
    videos = tmp_path / f"videos_{name}"
    videos.mkdir()
    write_gray_video(videos / "clip.mp4", levels)
    (videos / "clip.txt").write_text("a person turns")
    return build_dataset(
        [videos],
        tmp_path / f"out_{name}",
        detector=detector,
        estimator=ScriptedPoseEstimator(ANGLES, input_size=32),
        captioner=SidecarCaptioner(),
        settings=settings,
        progress=False,
        print_summary=False,
    )


def _done(result) -> dict:
    return json.loads((result.directory / "done.jsonl").read_text().splitlines()[-1])


def test_a_clip_that_switches_person(tmp_path):
    seed = int(np.random.SeedSequence().entropy % 2**32)
    a, b = _vectors(seed)
    rng = np.random.default_rng(seed + 1)
    emb = {16: a, 24: a + 0.01 * rng.normal(size=128), 100: b, 108: b + 0.01 * rng.normal(size=128)}
    detector = ScriptedDetector({k: [BOX] for k in ANGLES}, embeddings={k: v.tolist() for k, v in emb.items()})
    levels = [16, 24, 16, 24, 100, 108, 100]  # person A for 4 frames, then person B for 3
    base = dict(sampling=FrameSampling(every=1), threshold=100.0, identity_threshold=0.6)

    rejected = _build(tmp_path, levels, detector, CurationSettings(identity="reject", **base), "reject")
    done = _done(rejected)
    assert (done["outcome"], done["reason"]) == ("rejected", "mixed_identity"), f"seed {seed}"
    assert done["detail"].startswith("2 people among 7 face frames (frames per person [4, 3]; identity spread")
    spread_all = identity_spread(np.stack([emb[lv] for lv in levels]))
    assert done["identity_spread"] == pytest.approx(spread_all)
    assert not (rejected.directory / "crops").exists() or not any((rejected.directory / "crops").iterdir())

    dominant = _build(tmp_path, levels, detector, CurationSettings(identity="dominant", **base), "dominant")
    (record,) = dominant.records
    assert record.frame_indices == [0, 1, 2, 3] and record.identity_dropped == [4, 5, 6]
    assert record.identity_spread == pytest.approx(identity_spread(np.stack([emb[lv] for lv in levels[:4]])))
    assert record.identity_spread < 0.6 < spread_all
    assert record.delta == 120.0  # Δ over person A's frames only (with B it is 250)
    assert record.thresholds == {"min_face_score": 0.0, "min_face_size": 0.25, "identity_distance": 0.6}
    assert sorted(p.name for p in (dominant.directory / "crops").rglob("*.png")) == [
        f"f{i:06d}.png" for i in range(4)
    ]

    paper = _build(tmp_path, levels, detector, CurationSettings.paper(**base), "paper")
    assert paper.records[0].frame_indices == list(range(7)) and paper.records[0].delta == 250.0


def test_dominant_needs_a_majority(tmp_path):
    a, b = _vectors(3)
    c = -a
    detector = ScriptedDetector({k: [BOX] for k in ANGLES}, embeddings={16: a, 24: c, 100: b, 108: b})
    settings = CurationSettings(sampling=FrameSampling(every=1), threshold=0.0, identity_threshold=0.6)
    result = _build(tmp_path, [16, 16, 100, 100, 24], detector, settings)  # the largest owns 2 of 5 < 0.5
    assert _done(result)["reason"] == "mixed_identity"
    assert "frames per person [2, 2, 1]" in _done(result)["detail"]


def test_identity_step_without_embeddings_names_the_fix(tmp_path):
    detector = ScriptedDetector({k: [BOX] for k in ANGLES})
    with pytest.raises(FaithfulFacesError, match="with_embeddings=True.*--identity off"):
        _build(tmp_path, [16, 24], detector, CurationSettings(sampling=FrameSampling(every=1), identity_threshold=0.6))
    with pytest.raises(FaithfulFacesError, match="no same-person distance for detector 'scripted-detector'"):
        CurationSettings().thresholds("scripted-detector")


def test_weak_and_small_second_faces(tmp_path):
    weak = (0.0, 0.0, 14.0, 14.0, 0.007)  # a background detection as dlib's HOG scores it
    small = (50.0, 50.0, 57.0, 57.0)  # 7 px high beside a 32 px face
    faces = {16: [BOX], 24: [BOX, weak], 100: [BOX, small], 108: [BOX]}
    detector = ScriptedDetector(faces)
    levels = [16, 24, 100, 108]
    base = dict(sampling=FrameSampling(every=1), threshold=0.0, identity="off")
    strict = _build(tmp_path, levels, detector, CurationSettings.paper(**base), "paper")
    assert _done(strict)["reason"] == "multiple_faces"
    assert "scores 1.000, 0.007" in _done(strict)["detail"]
    tuned = _build(tmp_path, levels, detector, CurationSettings(min_face_score=0.25, **base), "tuned")
    assert tuned.records[0].frame_indices == [0, 1, 2, 3]
    assert tuned.records[0].thresholds["min_face_score"] == 0.25
    only_size = _build(tmp_path, levels, detector, CurationSettings(min_face_score=0.0, **base), "size")
    assert _done(only_size)["detail"].startswith("frame 1 has 2 faces (scores 1.000, 0.007; heights 32, 14 px)")


def test_per_detector_score_defaults():
    """The builder used dlib HOG at min_score 0 although a score of 0.25 separates faces from texture."""
    settings = CurationSettings(identity="off")
    assert settings.thresholds("dlib-hog")["min_face_score"] == 0.25
    assert settings.thresholds("insightface")["min_face_score"] == 0.5
    assert CurationSettings.paper().thresholds("dlib-hog")["min_face_score"] == 0.0
    assert CurationSettings().thresholds("dlib-hog")["identity_distance"] == 0.6
    assert CurationSettings().thresholds("insightface")["identity_distance"] == 1.1
    main, second = Face(BOX, 0.3), Face((0.0, 0.0, 10.0, 10.0), 0.9)
    assert counted_faces([second, main], 0.25, 0.25) == [main, second]
    assert counted_faces([second, main], 0.25, 0.5) == [main]


def test_cli_asks_dlib_for_embeddings_and_records_the_thresholds():
    spec = importlib.util.spec_from_file_location(
        "build_dataset_cli", Path(__file__).resolve().parents[1] / "training" / "build_dataset.py"
    )
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args = cli.build_parser().parse_args(["build", "v", "--out", "o", "--detector", "dlib-hog", "--pose", "pnp"])
    detector, _, _ = cli.model_specs(args)
    assert detector.kwargs == {"model": "hog", "with_embeddings": True}
    paper = cli.build_parser().parse_args(["build", "v", "--out", "o", "--detector", "dlib-hog", "--paper-rules"])
    assert cli.model_specs(paper)[0].kwargs == {"model": "hog"}


class _Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, image: np.ndarray) -> list[Face]:
        self.shapes.append(image.shape)
        h, w = image.shape[:2]
        return [Face((w * 0.25, h * 0.5, w * 0.5, h * 0.75), 1.0, np.array([[w * 0.5, h * 0.5]], np.float32))]


def test_det_size_maps_boxes_back_to_the_full_frame():
    image = np.zeros((720, 1280, 3), np.uint8)
    detector = _Recorder()
    (face,) = _detect(detector, image, 640)
    assert detector.shapes == [(360, 640, 3)]
    np.testing.assert_allclose(face.box, (320.0, 360.0, 640.0, 540.0))
    np.testing.assert_allclose(face.keypoints, [[640.0, 360.0]])
    _detect(detector, image, 2000)  # never enlarged
    _detect(detector, image, None)
    assert detector.shapes[1:] == [(720, 1280, 3)] * 2


def test_identity_clusters_order_and_errors():
    a, b = _vectors(7)
    labels = identity_clusters(np.stack([b, a, a, a, b]), 0.6)
    assert labels.tolist() == [1, 0, 0, 0, 1]  # 0 = the largest cluster
    assert identity_clusters(a[None], 0.6).tolist() == [0]
    with pytest.raises(FaithfulFacesError, match="finite"):
        identity_spread(np.full((2, 3), np.nan))


# ----------------------------------------------------------------------------- real photographs


def _photo(package: str, relative: str) -> np.ndarray:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (it ships the test photograph {relative})")
    return np.asarray(Image.open(Path(next(iter(spec.submodule_search_locations))) / relative).convert("RGB"))


def _on_canvas(face: np.ndarray, side: int = 320) -> np.ndarray:
    """A face photo scaled to 240 px high on a plain ``side`` × ``side`` canvas (one frame)."""
    h, w = face.shape[:2]
    scaled = np.asarray(Image.fromarray(face).resize((round(w * 240 / h), 240), Image.BICUBIC))
    canvas = np.full((side, side, 3), 128, np.uint8)
    sw = min(scaled.shape[1], side)
    x0 = (side - sw) // 2
    canvas[40:280, x0 : x0 + sw] = scaled[:, (scaled.shape[1] - sw) // 2 :][:, :sw]
    return canvas


def test_real_people_arranged_as_a_video(tmp_path):
    pytest.importorskip("dlib")
    from faithfulfaces_core.pose.dlib_backend import DlibFaceDetector, LandmarkPoseEstimator

    hanks = _photo("insightface", "data/images/Tom_Hanks_54745.png")
    astronaut = _photo("skimage", "data/astronaut.png")[30:250, 130:330]  # her face, not the suit patch
    group = _photo("insightface", "data/images/t1.jpg")
    detector = DlibFaceDetector("hog", upsample=1, with_embeddings=True)
    people = []
    for face in detector.detect(group)[:2]:  # two other people of the group photo
        x1, y1, x2, y2 = (int(v) for v in face.box)
        m = (x2 - x1) // 2
        people.append(group[max(0, y1 - m) : y2 + m, max(0, x1 - m) : x2 + m])
    frames = [_on_canvas(hanks), _on_canvas(hanks[:, ::-1]), _on_canvas(hanks[4:, 6:]), _on_canvas(hanks[:-6, :-4])]
    frames += [_on_canvas(astronaut), *(_on_canvas(p) for p in people)]
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "people.mp4", frames, fps=4)
    (videos / "people.txt").write_text("people")

    def run(mode: str):
        return build_dataset(
            [videos],
            tmp_path / mode,
            detector=detector,
            estimator=LandmarkPoseEstimator(),
            captioner=SidecarCaptioner(),
            settings=CurationSettings(sampling=FrameSampling(every=1), threshold=0.0, identity=mode),
            progress=False,
            print_summary=False,
        )

    rejected = _done(run("reject"))
    assert rejected["reason"] == "mixed_identity", rejected
    assert rejected["detail"].startswith("4 people among 7 face frames (frames per person [4, 1, 1, 1]")
    assert rejected["identity_spread"] > 0.6
    (record,) = run("dominant").records
    assert record.frame_indices == [0, 1, 2, 3] and record.identity_dropped == [4, 5, 6]
    assert record.identity_spread < 0.6  # the same photograph, mirrored and shifted


# ----------------------------------------------------------------------------- shots

SHOT_ANGLES = {16: (0.0, 0.0, 0.0), 24: (40.0, 50.0, 30.0), 200: (0.0, 0.0, 0.0), 208: (5.0, 5.0, 5.0)}


def _shot_build(videos: Path, out: Path, **kwargs):
    return build_dataset(
        [videos],
        out,
        detector=ScriptedDetector({k: [BOX] for k in SHOT_ANGLES}),
        estimator=ScriptedPoseEstimator(SHOT_ANGLES, input_size=32),
        captioner=SidecarCaptioner(),
        settings=CurationSettings(
            sampling=FrameSampling(every=1), identity="off", shots=True, shot_min_frames=5
        ),
        progress=False,
        print_summary=False,
        **kwargs,
    )


def test_shots_are_samples_and_resume(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    # two cuts made here: a turning person (16/24), then a still one (200/208), then the first again
    levels = [16, 24] * 10 + [200, 208] * 10 + [24, 16] * 4
    write_gray_video(videos / "clip.mp4", levels)
    (videos / "clip.txt").write_text("a person turns")
    result = _shot_build(videos, tmp_path / "out")
    done = {r["key"]: r for r in map(json.loads, (result.directory / "done.jsonl").read_text().splitlines())}
    assert sorted(done) == ["clip.mp4#shot000", "clip.mp4#shot001", "clip.mp4#shot002"]
    assert all(r["source"] == "clip.mp4" and r["shots"] == 3 for r in done.values())
    assert done["clip.mp4#shot001"]["reason"] == "low_pose_variation"
    assert done["clip.mp4#shot001"]["ranges"] == [5.0, 5.0, 5.0]
    kept = {r.key: r for r in result.records}
    assert sorted(kept) == ["clip.mp4#shot000", "clip.mp4#shot002"]
    assert kept["clip.mp4#shot000"].frame_range == (0, 20) and kept["clip.mp4#shot000"].frame_indices == list(range(20))
    assert kept["clip.mp4#shot002"].frame_range == (40, 48) and kept["clip.mp4#shot002"].frame_indices == list(range(40, 48))
    assert (kept["clip.mp4#shot002"].first_frame, kept["clip.mp4#shot002"].length) == (40, 8)
    manifest = (result.directory / "manifest.jsonl").read_text()

    assert _shot_build(videos, tmp_path / "out").processed == 0  # every shot done: the video is skipped
    # a run killed part-way through a video: it is processed again, only the missing shot committed
    lines = [line for line in (result.directory / "done.jsonl").read_text().splitlines() if "shot001" not in line]
    (result.directory / "done.jsonl").write_text("\n".join(lines) + "\n")
    again = _shot_build(videos, tmp_path / "out")
    assert again.processed == 1 and (result.directory / "manifest.jsonl").read_text() == manifest


def test_shot_detection_without_cuts_and_on_a_broken_file(tmp_path):
    from faithfulfaces_core.dataset.decode import VideoReadError
    from faithfulfaces_core.dataset.shots import detect_shots

    write_gray_video(tmp_path / "still.mp4", [16, 24] * 6)
    assert detect_shots(tmp_path / "still.mp4", min_frames=5) == [(0, 12)]
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoReadError, match="broken.mp4"):
        detect_shots(tmp_path / "broken.mp4")
