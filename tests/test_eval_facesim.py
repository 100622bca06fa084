"""FaceSim core on scripted models: summaries and yaw bins against hand-computed and independent values,
face-less / multi-face / padded-retry frames, sampling, padding geometry, report and errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from faithfulfaces_core.errors import FaithfulFacesError, NoFaceError
from faithfulfaces_core.eval.facesim import FaceSimEvaluator
from faithfulfaces_core.eval.padding import pad_amounts, pad_image, unpad_face
from faithfulfaces_core.eval.report import (
    build_report,
    headline_numbers,
    report_for_frames,
    summary_text,
    video_dict,
)
from faithfulfaces_core.eval.sampling import parse_frame_count, uniform_indices
from faithfulfaces_core.eval.summary import summarize
from faithfulfaces_core.pose.types import Face
from faithfulfaces_core.tiny.scripted import ScriptedDetector, ScriptedEmbedder, ScriptedPoseEstimator

SIDE = 64
FULL = (8.0, 8.0, 56.0, 56.0)
REF_LEVEL = 240
REF_VECTOR = [1.0, 0.0, 0.0, 0.0]


def solid(level: int, side: int = SIDE) -> np.ndarray:
    return np.full((side, side, 3), level, np.uint8)


# level: (boxes, embeddings, yaw) — hand-computed cosines to REF_VECTOR in the comments
SCRIPT = {
    20: ([FULL], [1.0, 0.0, 0.0, 0.0], 10.0),  # cos 1.0, bin < 30
    50: ([FULL], [0.6, 0.8, 0.0, 0.0], -45.0),  # cos 0.6, bin 30-60
    80: ([FULL], [-1.0, 0.0, 0.0, 0.0], 70.0),  # cos -1 -> clipped 0, bin > 60
    110: ([], None, None),  # no face, not even after padding
    # two faces: the large one (cos 0.8) is used, not the small one (cos 1.0)
    140: ([(4.0, 4.0, 60.0, 60.0), (0.0, 0.0, 10.0, 10.0)],
          {(4.0, 4.0, 60.0, 60.0): [0.8, 0.6, 0.0, 0.0], (0.0, 0.0, 10.0, 10.0): [1.0, 0.0, 0.0, 0.0]}, -20.0),
    170: ([FULL], [0.5, 0.5, 0.5, 0.5], 30.0),  # cos 0.5, |yaw| = 30 is in the middle bin
    200: ([FULL], [0.28, 0.96, 0.0, 0.0], -61.0),  # cos 0.28, bin > 60
}


def scripted_models(script=SCRIPT, embedder_name="scripted-embedder"):
    faces = {REF_LEVEL: [FULL], **{level: boxes for level, (boxes, _, _) in script.items()}}
    vectors = {REF_LEVEL: REF_VECTOR, **{level: v for level, (_, v, _) in script.items() if v is not None}}
    angles = {REF_LEVEL: (1.0, 2.0, 3.0), **{level: (5.0, yaw, -5.0) for level, (_, _, yaw) in script.items()
                                              if yaw is not None}}
    return (ScriptedDetector(faces), ScriptedPoseEstimator(angles, input_size=32),
            ScriptedEmbedder(vectors, name=embedder_name))


def test_hand_computed_summaries_yaw_bins_and_counts():
    detector, estimator, embedder = scripted_models()
    evaluator = FaceSimEvaluator(detector, estimator, embedder=embedder)
    reference = evaluator.reference(solid(REF_LEVEL))
    assert reference.faces == 1 and not reference.padded and reference.box == FULL
    assert (reference.angles.pitch, reference.angles.yaw, reference.angles.roll) == (1.0, 2.0, 3.0)
    levels = list(SCRIPT)
    score = evaluator.score(reference, [solid(level) for level in levels], name="scripted")
    s = score.summary
    assert (s.frames_sampled, s.face_frames, s.no_face_frames, s.multi_face_frames, s.padded_frames) == (7, 6, 1, 1, 0)
    assert s.mean == pytest.approx((1.0 + 0.6 + 0.0 + 0.8 + 0.5 + 0.28) / 6, abs=1e-6)
    assert s.mean_counting_misses == pytest.approx((1.0 + 0.6 + 0.0 + 0.8 + 0.5 + 0.28) / 7, abs=1e-6)
    assert s.min == pytest.approx(0.0, abs=1e-7) and s.max == pytest.approx(1.0, abs=1e-6)
    assert [(b.key, b.frames) for b in s.yaw_bins] == [("yaw_under_30", 2), ("yaw_30_60", 2), ("yaw_over_60", 2)]
    assert s.bin("yaw_under_30").mean == pytest.approx((1.0 + 0.8) / 2, abs=1e-6)
    assert s.bin("yaw_30_60").mean == pytest.approx((0.6 + 0.5) / 2, abs=1e-6)
    assert s.bin("yaw_over_60").mean == pytest.approx((0.0 + 0.28) / 2, abs=1e-6)
    assert s.distance is None  # not a dlib embedding
    by_level = dict(zip(levels, score.frames, strict=True))
    assert by_level[80].cosine == pytest.approx(-1.0, abs=1e-6) and by_level[80].similarity == 0.0
    assert by_level[110].faces == 0 and by_level[110].similarity is None and by_level[110].angles is None
    assert by_level[140].faces == 2 and by_level[140].box == (4.0, 4.0, 60.0, 60.0)
    assert by_level[140].similarity == pytest.approx(0.8, abs=1e-6)
    assert by_level[200].angles.yaw == -61.0
    # the no-face frame was retried on the padded canvas: two detector calls for it
    assert detector.calls == 1 + len(levels) + 1
    # one estimator call for all face frames (the reference had its own)
    assert estimator.batches == [1, 6]


def test_dlib_embeddings_add_euclidean_distance():
    script = {20: ([FULL], [2.0, 0.0, 0.0, 0.0], 0.0), 50: ([FULL], [0.0, 0.0, 3.0, 4.0], 40.0)}
    detector, estimator, embedder = scripted_models(script, embedder_name="dlib-scripted")
    evaluator = FaceSimEvaluator(detector, estimator, embedder=embedder)
    score = evaluator.score(evaluator.reference(solid(REF_LEVEL)), [solid(20), solid(50)])
    first, second = score.frames
    assert first.cosine == pytest.approx(1.0) and first.distance == pytest.approx(1.0)  # |(2,0,0,0) - (1,0,0,0)|
    assert second.cosine == pytest.approx(0.0) and second.distance == pytest.approx(math.sqrt(1 + 9 + 16))
    d = score.summary.distance
    assert d.mean == pytest.approx((1.0 + math.sqrt(26)) / 2) and d.max == pytest.approx(math.sqrt(26))
    assert d.same_person_frames == 0 and d.same_person_rate == 0.0 and d.threshold == 0.6
    report = build_report(evaluator, evaluator.reference(solid(REF_LEVEL)), [video_dict(score)], frames=None)
    assert report["embedding"]["kind"] == "dlib" and "Euclidean" in report["embedding"]["distance"]
    assert "dlib distance: mean" in summary_text(report)


def _fresh_rng():
    seed = int(np.random.SeedSequence().entropy % 2**32)
    return np.random.default_rng(seed), seed


def test_random_scripts_match_an_independent_computation():
    rng, seed = _fresh_rng()
    levels = list(range(10, 250, 10))  # 24 levels, 10 apart
    reference_vector = rng.normal(size=32)
    script = {}
    for level in levels[:-1]:
        if rng.random() < 0.2:
            script[level] = ([], None, None)
        else:
            script[level] = ([FULL], rng.normal(size=32), float(rng.uniform(-100, 100)))
    faces = {levels[-1]: [FULL], **{lv: b for lv, (b, _, _) in script.items()}}
    vectors = {levels[-1]: reference_vector, **{lv: v for lv, (_, v, _) in script.items() if v is not None}}
    angles = {levels[-1]: (0.0, 0.0, 0.0), **{lv: (0.0, y, 0.0) for lv, (_, _, y) in script.items() if y is not None}}
    evaluator = FaceSimEvaluator(ScriptedDetector(faces), ScriptedPoseEstimator(angles),
                                 embedder=ScriptedEmbedder(vectors))
    order = rng.permutation(levels[:-1])
    score = evaluator.score(evaluator.reference(solid(levels[-1])), [solid(int(lv)) for lv in order])

    sims, yaws = [], []
    for lv in order:
        _, v, y = script[int(lv)]
        if v is not None:
            c = float(np.dot(v, reference_vector) / np.linalg.norm(v) / np.linalg.norm(reference_vector))
            sims.append(max(c, 0.0))
            yaws.append(abs(y))
    sims, yaws = np.array(sims), np.array(yaws)
    s = score.summary
    msg = f"seed {seed}"
    assert s.face_frames == len(sims) and s.no_face_frames == len(order) - len(sims), msg
    if len(sims):
        assert s.mean == pytest.approx(sims.mean(), abs=1e-6), msg
        assert s.min == pytest.approx(sims.min(), abs=1e-6), msg
    for key, mask in (("yaw_under_30", yaws < 30), ("yaw_30_60", (yaws >= 30) & (yaws <= 60)),
                      ("yaw_over_60", yaws > 60)):
        b = s.bin(key)
        assert b.frames == int(mask.sum()), msg
        assert (b.mean is None) if not mask.any() else b.mean == pytest.approx(sims[mask].mean(), abs=1e-6), msg
    np.testing.assert_allclose(score.series("similarity")[~np.isnan(score.series("similarity"))], sims, atol=1e-6)


class BorderShyDetector:
    """Finds the bright region (> 127) as a face only when it does not touch the image border,
    as real detectors miss faces that fill the frame; the face carries an embedding by its level."""

    name = "border-shy"

    def __init__(self, vectors):
        self.vectors = vectors
        self.shapes = []

    def detect(self, image):
        self.shapes.append(image.shape[:2])
        ys, xs = np.nonzero(image[..., 0] > 127)
        if not len(ys):
            return []
        y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        h, w = image.shape[:2]
        if y1 == 0 or x1 == 0 or y2 == h or x2 == w:
            return []
        level = int(image[(y1 + y2) // 2, (x1 + x2) // 2, 0])
        return [Face((float(x1), float(y1), float(x2), float(y2)), 1.0, embedding=np.asarray(self.vectors[level]))]


def _patch(level, box, side=SIDE):
    image = np.zeros((side, side, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = level
    return image


def test_padded_retry_counts_a_face_found_only_after_padding():
    vectors = {230: [1.0, 0.0], 200: [1.0, 1.0], 150: [0.0, 1.0]}
    detector = BorderShyDetector(vectors)
    estimator = ScriptedPoseEstimator({200: (0.0, 40.0, 0.0), 150: (0.0, -10.0, 0.0), 230: (0.0, 0.0, 0.0)})
    evaluator = FaceSimEvaluator(detector, estimator)  # embeddings come with the faces
    reference = evaluator.reference(_patch(230, (16, 16, 48, 48)))
    filling = solid(200)  # the face fills the whole frame
    inside = _patch(150, (16, 16, 48, 48))
    empty = solid(0)
    score = evaluator.score(reference, [filling, inside, empty])
    a, b, c = score.frames
    assert a.faces == 1 and a.padded and a.box == (0.0, 0.0, 64.0, 64.0)  # mapped back from the 80 x 80 canvas
    assert a.similarity == pytest.approx(1 / math.sqrt(2), abs=1e-6) and a.angles.yaw == 40.0
    assert b.faces == 1 and not b.padded and b.similarity == pytest.approx(0.0, abs=1e-7)
    assert c.faces == 0 and not c.padded and c.similarity is None
    assert detector.shapes[1:] == [(64, 64), (80, 80), (64, 64), (64, 64), (80, 80)]
    s = score.summary
    assert (s.face_frames, s.no_face_frames, s.padded_frames) == (2, 1, 1)
    assert s.bin("yaw_30_60").mean == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    # edge padding repeats the face to the border, so the frame stays face-less there
    edge = FaceSimEvaluator(BorderShyDetector(vectors), estimator, pad_mode="edge")
    frame = edge.score(reference, [filling]).frames[0]
    assert frame.faces == 0 and frame.similarity is None


def test_padding_geometry_and_unpad():
    rng, seed = _fresh_rng()
    h, w = int(rng.integers(20, 200)), int(rng.integers(20, 200))
    image = rng.integers(1, 256, size=(h, w, 3), dtype=np.uint8)
    padded, (left, top) = pad_image(image)
    assert padded.shape == (math.floor(h * 1.25 + 0.5), math.floor(w * 1.25 + 0.5), 3), seed
    assert sum(pad_amounts(h, 1.25)) == padded.shape[0] - h and top == pad_amounts(h, 1.25)[0]
    np.testing.assert_array_equal(padded[top:top + h, left:left + w], image)
    assert (padded[:top] == 0).all() and (padded[:, :left] == 0).all() and (padded[top + h:] == 0).all()
    edge, offset = pad_image(image, mode="edge")
    assert offset == (left, top)
    np.testing.assert_array_equal(edge[0, left:left + w], image[0])
    np.testing.assert_array_equal(edge[top:top + h, -1], image[:, -1])
    face = Face((left + 3.0, top - 2.0, left + w + 5.0, top + 10.0), 0.9, keypoints=np.array([[left + 1.0, top + 2.0]]))
    back = unpad_face(face, (left, top), (h, w))
    assert back.box == (3.0, 0.0, float(w), 10.0)
    np.testing.assert_allclose(back.keypoints, [[1.0, 2.0]])
    with pytest.raises(FaithfulFacesError, match="Unknown padding mode 'reflect'"):
        pad_image(image, mode="reflect")
    with pytest.raises(FaithfulFacesError, match="use a finite number ≥ 1"):
        pad_image(image, factor=0.9)


def test_uniform_sampling():
    idx = uniform_indices(81, 16)
    assert len(idx) == 16 and idx[0] == 0 and idx[-1] == 80 and len(set(idx)) == 16
    assert idx == [math.floor(k * 80 / 15 + 0.5) for k in range(16)]
    assert uniform_indices(10, None) == list(range(10)) == uniform_indices(10, 16)
    assert uniform_indices(10, 1) == [0] and uniform_indices(6, 4) == [0, 2, 3, 5]
    for total in range(1, 60):
        for count in range(1, total + 1):
            got = uniform_indices(total, count)
            assert len(got) == count and got == sorted(set(got)) and got[-1] == (total - 1 if count > 1 else 0)
    assert parse_frame_count("all") is None and parse_frame_count("16") == 16 and parse_frame_count(0) is None
    with pytest.raises(FaithfulFacesError, match="neither a whole number nor 'all'"):
        parse_frame_count("some")
    with pytest.raises(FaithfulFacesError, match="whole number >= 1"):
        parse_frame_count(-3)


def test_summaries_without_faces_are_none_never_nan():
    s = summarize(np.array([np.nan, np.nan]), np.array([np.nan, np.nan]), np.array([0, 0]), np.array([False, False]))
    assert s.mean is None and s.min is None and s.mean_counting_misses == 0.0
    assert all(b.mean is None and b.frames == 0 for b in s.yaw_bins)
    json.dumps(s.as_dict(), allow_nan=False)


def test_report_text_and_node_numbers_for_frames_in_memory():
    detector, estimator, embedder = scripted_models()
    evaluator = FaceSimEvaluator(detector, estimator, embedder=embedder)
    frames = [solid(lv) for lv in (20, 110, 50, 20, 170)]
    report, score = report_for_frames(evaluator, solid(REF_LEVEL), frames, count=3)
    assert [f.index for f in score.frames] == [0, 2, 4]  # uniform: first, middle, last
    text = json.dumps(report, allow_nan=False)
    for key in ("format", "backend", "detector", "pose_estimator", "embedding", "protocol", "reference", "videos"):
        assert key in report
    assert report["backend"] == "scripted-detector+scripted-pose" and report["protocol"]["frames"] == 3
    assert report["videos"][0]["frames_total"] == 5 and "NaN" not in text
    mean, low, b0, b1, b2 = headline_numbers(report, empty=-1.0)
    assert mean == pytest.approx((1.0 + 0.6 + 0.5) / 3) and low == pytest.approx(0.5)
    assert (b0, b1, b2) == (pytest.approx(1.0), pytest.approx(0.55), -1.0)
    words = summary_text(report, empty_value=-1.0)
    assert "|yaw| > 60°: empty bin (none, output -1)" in words and "scripted-detector+scripted-pose" in words


def test_errors_name_the_problem_and_the_fix():
    detector, estimator, embedder = scripted_models()
    evaluator = FaceSimEvaluator(detector, estimator, embedder=embedder)
    with pytest.raises(NoFaceError, match=r"No face found in the reference image .*not even on the ×1.25 padded"):
        evaluator.reference(solid(110))
    with pytest.raises(FaithfulFacesError, match="expected uint8 pixels"):
        evaluator.reference(solid(REF_LEVEL).astype(np.float32))
    bare = FaceSimEvaluator(detector, estimator)  # a detector whose faces carry no embedding
    with pytest.raises(FaithfulFacesError, match="recognition model .*'recognition' module"):
        bare.reference(solid(REF_LEVEL))
    short = ScriptedEmbedder({REF_LEVEL: REF_VECTOR, 20: [1.0, 0.0]})
    mixed = FaceSimEvaluator(detector, estimator, embedder=short)
    with pytest.raises(FaithfulFacesError, match="different sizes .*same recognition model"):
        mixed.score(mixed.reference(solid(REF_LEVEL)), [solid(20)])
    with pytest.raises(FaithfulFacesError, match="2 indices"):
        evaluator.score(evaluator.reference(solid(REF_LEVEL)), [solid(20)], indices=[0, 1])


def test_more_frames_than_one_segment_get_facesim_per_segment():
    """100 frames: cos 1.0 in frames 0-49, 0.6 in 50-99; segments of 81 overlapping by 16: 0-80, 19-99."""
    detector, estimator, embedder = scripted_models()
    evaluator = FaceSimEvaluator(detector, estimator, embedder=embedder)
    frames = [solid(20)] * 50 + [solid(50)] * 50
    report, _ = report_for_frames(evaluator, solid(REF_LEVEL), frames, count=None)
    entry = report["videos"][0]["segments"]
    assert (entry["length"], entry["overlap"]) == (81, 16)
    parts = entry["segments"]
    assert [(p["start"], p["end"], p["frames_sampled"], p["face_frames"]) for p in parts] == [(0, 80, 81, 81),
                                                                                             (19, 99, 81, 81)]
    assert parts[0]["mean"] == pytest.approx((50 + 31 * 0.6) / 81) and parts[0]["min"] == pytest.approx(0.6)
    assert parts[1]["mean"] == pytest.approx((31 + 50 * 0.6) / 81)
    assert entry["drift"] == pytest.approx(parts[1]["mean"] - parts[0]["mean"])
    assert f"segments of 81 frames (overlap 16): 0–80: {parts[0]['mean']:.4f}, 19–99: {parts[1]['mean']:.4f}; " \
           f"drift {entry['drift']:+.4f}" in summary_text(report)
    short, _ = report_for_frames(evaluator, solid(REF_LEVEL), frames[:81], count=None)
    assert short["videos"][0]["segments"] is None and "segments of" not in summary_text(short)
