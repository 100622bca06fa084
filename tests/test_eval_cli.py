"""``python -m faithfulfaces_core.eval`` end to end with the dlib backend on real photographs
(PyAV-encoded videos of insightface's Tom_Hanks_54745.png, its mirror image, and another person),
plus video sampling and the CLI's error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faithfulfaces_core.dataset.encode import write_video
from faithfulfaces_core.eval.cli import main
from faithfulfaces_core.eval.plot import PLOT_HEIGHT, PLOT_WIDTH
from faithfulfaces_core.eval.video import count_frames, read_sampled_frames
from faithfulfaces_core.tiny.photos import GROUP, PORTRAIT, load_photo
from faithfulfaces_core.tiny.scripted import gray_level, write_gray_video

PACK_ROOT = Path(__file__).resolve().parents[1]


def _write_video(path: Path, frames: list[np.ndarray]) -> Path:
    return write_video(path, frames, fps=8, crf=12)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    pytest.importorskip("dlib")
    folder = tmp_path_factory.mktemp("facesim_cli")
    hanks = load_photo(*PORTRAIT)  # 112 x 112, one face
    group = load_photo(*GROUP)
    other = group[67 - 15 : 67 + 145, 870 - 15 : 870 + 145]  # another person's face, 160 x 160
    Image.fromarray(hanks).save(folder / "reference.png")
    flip = np.ascontiguousarray(hanks[:, ::-1])
    _write_video(folder / "hanks.mp4", [hanks, flip, hanks, flip, hanks, flip])
    _write_video(folder / "someone_else.mp4", [other, np.zeros_like(other), other[:, ::-1], np.zeros_like(other)])
    return folder


def test_cli_end_to_end_dlib_on_a_real_photograph(inputs):
    out = inputs / "report"
    result = subprocess.run(
        [sys.executable, "-m", "faithfulfaces_core.eval", str(inputs / "reference.png"), str(inputs / "hanks.mp4"),
         str(inputs / "someone_else.mp4"), "--backend", "dlib-hog", "--frames", "all", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=PACK_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "dlib-hog+pnp" in result.stdout and "hanks" in result.stdout and "someone_else" in result.stdout

    report = json.loads((out / "facesim.json").read_text())
    assert set(report) == {"format", "backend", "detector", "pose_estimator", "embedding", "protocol", "reference",
                           "videos"}
    assert report["format"] == "faithfulfaces.facesim/1"
    assert report["backend"] == "dlib-hog+pnp" and report["detector"] == "dlib-hog"
    assert report["embedding"]["model"] == "dlib-resnet128" and report["embedding"]["kind"] == "dlib"
    assert "cosine" in report["embedding"]["similarity"] and "0.6" in report["embedding"]["distance"]
    assert report["protocol"]["frames"] == "all" and report["protocol"]["pad_factor"] == 1.25
    assert set(report["reference"]) == {"name", "faces", "padded", "box", "image_size", "pitch", "yaw", "roll"}
    assert report["reference"]["faces"] == 1

    hanks, other = report["videos"]
    assert set(hanks) == {"name", "path", "frames_total", "frames_declared", "summary", "frames", "plot", "segments",
                          "segments_plot"}
    assert hanks["segments"] is None and hanks["segments_plot"] is None  # 6 frames: one segment
    assert set(hanks["summary"]) == {"frames_sampled", "face_frames", "no_face_frames", "multi_face_frames",
                                     "padded_frames", "mean", "min", "max", "mean_counting_misses", "yaw_bins",
                                     "distance"}
    assert set(hanks["summary"]["yaw_bins"]) == {"yaw_under_30", "yaw_30_60", "yaw_over_60"}
    assert set(hanks["frames"][0]) == {"index", "time", "faces", "padded", "box", "cosine", "similarity",
                                       "distance", "pitch", "yaw", "roll"}
    s = hanks["summary"]
    assert (hanks["frames_total"], s["frames_sampled"], s["face_frames"], s["no_face_frames"]) == (6, 6, 6, 0)
    assert hanks["frames_declared"] in (0, 6)  # the container's count (0 = not declared), never short of it
    assert s["mean"] > 0.97 and s["min"] > 0.95
    assert all(f["distance"] < 0.6 for f in hanks["frames"])  # dlib: the same person in every frame
    assert s["distance"]["same_person_frames"] == 6
    yaws = [f["yaw"] for f in hanks["frames"]]
    assert all(np.sign(yaws[i]) == -np.sign(yaws[i + 1]) for i in range(5))  # the mirror image turns the other way
    assert abs(abs(yaws[0]) - abs(yaws[1])) < 5.0

    o = other["summary"]
    assert (o["frames_sampled"], o["face_frames"], o["no_face_frames"]) == (4, 2, 2)
    assert o["mean"] < s["mean"] and o["distance"]["same_person_frames"] == 0
    assert o["mean_counting_misses"] == pytest.approx(o["mean"] / 2)
    assert all(f["distance"] > 0.6 for f in other["frames"] if f["faces"])

    for name in ("hanks.png", "someone_else.png", "comparison.png"):
        with Image.open(out / name) as png:
            assert png.size == (PLOT_WIDTH, PLOT_HEIGHT), name
    assert hanks["plot"] == "hanks.png"


def test_long_video_gets_similarity_per_segment_and_its_plot(inputs, capsys):
    """12 frames: the reference person in frames 0-5, someone else in 6-11; segments of 6, overlap 2."""
    hanks = load_photo(*PORTRAIT)
    group = load_photo(*GROUP)
    other = np.asarray(Image.fromarray(group[67 - 15 : 67 + 145, 870 - 15 : 870 + 145]).resize((112, 112)))
    flip = np.ascontiguousarray(hanks[:, ::-1])
    video = _write_video(inputs / "drift.mp4", [hanks, flip] * 3 + [other, other[:, ::-1]] * 3)
    out = inputs / "drift_report"
    assert main([str(inputs / "reference.png"), str(video), "--backend", "dlib-hog", "--frames", "all",
                 "--segment", "6", "--segment-overlap", "2", "--out", str(out)]) == 0
    entry = json.loads((out / "facesim.json").read_text())["videos"][0]
    seg = entry["segments"]
    assert (seg["length"], seg["overlap"]) == (6, 2)
    parts = seg["segments"]
    assert [(p["start"], p["end"], p["frames_sampled"]) for p in parts] == [(0, 5, 6), (4, 9, 6), (6, 11, 6)]
    sims = [f["similarity"] for f in entry["frames"]]
    for part in parts:
        inside = [s for s in sims[part["start"]:part["end"] + 1] if s is not None]
        assert part["face_frames"] == len(inside)
        assert part["mean"] == pytest.approx(float(np.mean(inside))) and part["min"] == pytest.approx(min(inside))
    assert parts[0]["mean"] > 0.95 and parts[2]["mean"] < parts[0]["mean"] - 0.1
    assert seg["drift"] == pytest.approx(parts[2]["mean"] - parts[0]["mean"])
    with Image.open(out / entry["segments_plot"]) as png:
        assert entry["segments_plot"] == "drift_segments.png" and png.size == (PLOT_WIDTH, PLOT_HEIGHT)
    assert main([str(inputs / "reference.png"), str(video), "--backend", "dlib-hog", "--segment", "4",
                 "--segment-overlap", "4", "--out", str(out)]) == 1  # EXIT_ERROR
    assert "Segments of 4 frames with overlap 4 are not possible" in capsys.readouterr().err


def test_sampled_frames_of_a_video(tmp_path):
    levels = [10, 40, 70, 100, 130, 160]
    write_gray_video(tmp_path / "gray.mp4", levels)
    assert count_frames(tmp_path / "gray.mp4") == 6
    video = read_sampled_frames(tmp_path / "gray.mp4", 4)
    assert video.frames_total == 6 and video.indices == [0, 2, 3, 5]
    assert [gray_level(im) for im in video.images] == pytest.approx([10, 70, 100, 160], abs=1)
    assert video.times == pytest.approx([0.0, 0.25, 0.375, 0.625])
    assert read_sampled_frames(tmp_path / "gray.mp4", None).indices == list(range(6))


def test_cli_errors_name_the_fix(tmp_path, capsys):
    ref = tmp_path / "ref.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(ref)
    write_gray_video(tmp_path / "v.mp4", [10, 20])
    assert main([str(ref), str(tmp_path / "v.mp4"), "--out", str(tmp_path / "o")]) == 1
    assert "needs --insightface-pack DIR" in capsys.readouterr().err
    assert main([str(ref), str(tmp_path / "missing.mp4"), "--backend", "dlib-hog"]) == 1
    assert "missing.mp4 does not exist" in capsys.readouterr().err
    assert main([str(tmp_path / "nope.png"), str(tmp_path / "v.mp4"), "--backend", "dlib-hog"]) == 1
    assert "nope.png does not exist" in capsys.readouterr().err
    assert main([str(ref), str(tmp_path / "v.mp4"), "--backend", "dlib-hog", "--frames", "many"]) == 1
    assert "neither a whole number nor 'all'" in capsys.readouterr().err
    pytest.importorskip("dlib")
    assert main([str(ref), str(tmp_path / "v.mp4"), "--backend", "dlib-hog", "--out", str(tmp_path / "o")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "No face found in reference image" in err and "padded" in err


def test_cli_with_several_references_takes_the_best_match(inputs):
    from faithfulfaces_core.eval.cli import main

    Image.fromarray(np.ascontiguousarray(load_photo(*PORTRAIT)[:, ::-1])).save(
        inputs / "mirrored.png")
    out = inputs / "two_refs"
    assert main([str(inputs / "reference.png"), str(inputs / "hanks.mp4"), "--reference", str(inputs / "mirrored.png"),
                 "--backend", "dlib-hog", "--frames", "all", "--out", str(out)]) == 0
    report = json.loads((out / "facesim.json").read_text())
    assert len(report["references"]) == 2
    frames = report["videos"][0]["frames"]
    assert [f["best_reference"] for f in frames] == [0, 1, 0, 1, 0, 1]  # each frame matches its own orientation
    assert all(f["similarity"] >= f["similarity_mean"] for f in frames)
    over = report["videos"][0]["summary_mean_over_references"]
    assert over["mean"] < report["videos"][0]["summary"]["mean"]
