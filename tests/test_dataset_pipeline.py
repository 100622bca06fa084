"""Dataset pipeline end to end on generated videos with scripted face and pose models.

Every frame is a solid gray level; the scripted detector and estimator read the level, so each
test knows exactly which faces and angles every frame yields, and therefore every decision.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faithfulfaces_core.dataset.build import build_dataset
from faithfulfaces_core.dataset.captions import SidecarCaptioner
from faithfulfaces_core.dataset.curate import CurationSettings
from faithfulfaces_core.dataset.decode import FrameSampling
from faithfulfaces_core.dataset.manifest import load_manifest
from faithfulfaces_core.dataset.merge import merge_datasets
from faithfulfaces_core.dataset.sources import Shard, shard_of
from faithfulfaces_core.errors import FaithfulFacesError
from faithfulfaces_core.tiny.scripted import ScriptedDetector, ScriptedPoseEstimator, write_gray_video

REPO = Path(__file__).resolve().parents[1]
BOX = (16.0, 16.0, 48.0, 48.0)
NO_FACE, TWO_FACES = 0, 248
# gray level -> (pitch, yaw, roll) of the one face it shows
ANGLES = {
    16: (0.0, 0.0, 0.0),
    24: (40.0, 50.0, 30.0),  # with 16: Δ = 120 exactly
    32: (40.0, 50.0, 29.5),  # with 16: Δ = 119.5
    40: (0.0, 170.0, 0.0),  # with 48: naive yaw range 340, circular 20
    48: (0.0, -170.0, 0.0),
    56: (0.0, 150.0, 0.0),  # 56, 64, 72: yaw {150, -150, 90}: circular range 120 across ±180
    64: (0.0, -150.0, 0.0),
    72: (0.0, 90.0, 0.0),
    80: (-60.0, 0.0, 0.0),
    88: (60.0, 70.0, -5.0),
}
FACES = {NO_FACE: [], TWO_FACES: [BOX, (0.0, 0.0, 12.0, 12.0)], **{k: [BOX] for k in ANGLES}}

# video name -> (gray levels per frame, expected (outcome, reason), expected kept frame indices)
CORPUS = {
    "at_threshold.mp4": ([16, 24, 16], ("kept", "pose_variation_ok"), [0, 1, 2]),
    "under_threshold.mp4": ([16, 32, 16], ("rejected", "low_pose_variation"), None),
    "multi_face.mp4": ([16, 24, TWO_FACES, 16], ("rejected", "multiple_faces"), None),
    "no_face.mp4": ([NO_FACE, NO_FACE, NO_FACE], ("rejected", "no_face"), None),
    "yaw_wrap_small.mp4": ([40, 48, 40], ("rejected", "low_pose_variation"), None),
    "yaw_wrap_large.mp4": ([56, 64, 72], ("kept", "pose_variation_ok"), [0, 1, 2]),
    "gaps.mp4": ([80, NO_FACE, 88, NO_FACE], ("kept", "pose_variation_ok"), [0, 2]),
    "sub/nested.mp4": ([16, NO_FACE, 24], ("kept", "pose_variation_ok"), [0, 2]),
}


def scripted_models() -> tuple[ScriptedDetector, ScriptedPoseEstimator]:
    return ScriptedDetector(FACES), ScriptedPoseEstimator(ANGLES, input_size=32)


def make_corpus(root: Path, *, corrupt: bool = True) -> Path:
    videos = root / "videos"
    for name, (levels, _, _) in CORPUS.items():
        path = videos / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_gray_video(path, levels)
        path.with_suffix(".txt").write_text(f"a person in {Path(name).stem}\n")
    if corrupt:
        (videos / "corrupt.mp4").write_bytes(os.urandom(3000))
        truncated = (videos / "at_threshold.mp4").read_bytes()
        (videos / "truncated.mp4").write_bytes(truncated[: len(truncated) // 3])
    return videos


def build(videos: Path, out: Path, models=None, **kwargs):
    detector, estimator = models or scripted_models()
    kwargs.setdefault("settings", CurationSettings.paper(sampling=FrameSampling(every=1), batch_size=2))
    return build_dataset(
        [videos],
        out,
        detector=detector,
        estimator=estimator,
        captioner=SidecarCaptioner(),
        progress=False,
        print_summary=False,
        **kwargs,
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def clean_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "dataset"
    return build(corpus, out)


def done_log(out: Path) -> dict[str, dict]:
    return {r["key"]: r for r in map(json.loads, (out / "done.jsonl").read_text().splitlines())}


def test_decisions_are_exact(clean_run):
    done = done_log(clean_run.directory)
    for name, (_, expected, _) in CORPUS.items():
        assert (done[name]["outcome"], done[name]["reason"]) == expected, name
    assert done["multi_face.mp4"]["detail"] == (
        "frame 2 has 2 faces (scores 1.000, 1.000; heights 32, 12 px) at min_face_score 0, min_face_size 0"
    )
    assert done["multi_face.mp4"]["frames_sampled"] == 3  # stopped at the first multi-face frame
    assert done["under_threshold.mp4"]["delta"] == 119.5
    assert done["under_threshold.mp4"]["ranges"] == [40.0, 50.0, 29.5]  # why it was rejected, per axis
    assert done["under_threshold.mp4"]["detail"] == "Δ = pitch 40.0 + yaw 50.0 + roll 29.5 = 119.50 < 120"
    assert done["yaw_wrap_small.mp4"]["delta"] == 20.0  # not 340
    kept = {r.key: r for r in clean_run.records}
    assert sorted(kept) == sorted(k for k, (_, e, _) in CORPUS.items() if e[0] == "kept")
    for key, record in kept.items():
        levels, _, frames = CORPUS[key]
        assert record.frame_indices == frames
        assert record.angles == [ANGLES[levels[i]] for i in frames]
        assert record.prompt == f"a person in {Path(key).stem}"
        assert record.backends.model_dump() == {
            "detector": "scripted-detector",
            "pose": "scripted-pose",
            "captioner": "sidecar.txt",
        }
        assert record.boxes == [BOX] * len(frames)
        assert record.crop_boxes == [(8, 8, 56, 56)] * len(frames)  # ×1.5 about the centre
    assert kept["at_threshold.mp4"].delta == 120.0
    assert kept["at_threshold.mp4"].ranges == (40.0, 50.0, 30.0)
    assert kept["yaw_wrap_large.mp4"].ranges == (0.0, 120.0, 0.0)
    assert kept["gaps.mp4"].ranges == (120.0, 70.0, 5.0)


def test_crops_are_the_estimator_inputs(clean_run):
    from PIL import Image

    for record in clean_run.records:
        levels = CORPUS[record.key][0]
        for index, path in zip(record.frame_indices, record.crop_paths(clean_run.directory), strict=True):
            crop = np.asarray(Image.open(path))
            assert crop.shape == (32, 32, 3)
            assert abs(int(np.median(crop)) - levels[index]) <= 1
    crop_dirs = sorted(p.name for p in (clean_run.directory / "crops").iterdir())
    assert len(crop_dirs) == len(clean_run.records)  # no crops left behind by rejected videos


def test_corrupt_files_are_reported_and_the_rest_processed(clean_run):
    done = done_log(clean_run.directory)
    assert done["corrupt.mp4"]["outcome"] == "error" and done["corrupt.mp4"]["reason"] == "unreadable"
    assert "corrupt.mp4" in done["corrupt.mp4"]["detail"] and "re-encode" in done["corrupt.mp4"]["detail"]
    assert done["truncated.mp4"]["outcome"] == "error"
    assert len(done) == len(CORPUS) + 2
    report = json.loads((clean_run.directory / "report.json").read_text())
    assert report["outcomes"] == {"kept": 4, "rejected": 4, "error": 2}
    reasons = {(r["outcome"], r["reason"]): r["count"] for r in report["reasons"]}
    assert reasons[("rejected", "low_pose_variation")] == 2
    assert reasons[("rejected", "multiple_faces")] == reasons[("rejected", "no_face")] == 1
    assert {e["key"] for e in report["errors"]} == {"corrupt.mp4", "truncated.mp4"}
    assert report["delta"]["count"] == 6 and report["delta"]["min"] == 20.0
    assert sum(report["delta"]["bin_counts"]) == 6
    # multi_face.mp4 had faces but no Δ: the title used to call the 6 Δs "6 videos with a face"
    assert report["delta"]["videos_with_face"] == 7
    from faithfulfaces_core.dataset.report import histogram_title

    assert histogram_title(report["delta"]) == "Pose variation Δ of 6 videos (7 had a face)"
    rejected = {r["key"]: r for r in report["rejected"]}
    assert sorted(rejected) == ["multi_face.mp4", "no_face.mp4", "under_threshold.mp4", "yaw_wrap_small.mp4"]
    assert rejected["under_threshold.mp4"]["ranges"] == [40.0, 50.0, 29.5]
    assert rejected["multi_face.mp4"]["detail"].startswith("frame 2 has 2 faces (scores 1.000, 1.000")
    assert report["throughput"]["videos"] == len(CORPUS) + 2
    png = (clean_run.directory / "delta_histogram.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_manifest_loads_for_the_trainer(clean_run):
    records = load_manifest(clean_run.directory)
    assert [r.key for r in records] == sorted(r.key for r in clean_run.records)
    for record in records:
        assert record.angles_array().shape == (len(record.crops), 3)
        assert all(p.is_file() for p in record.crop_paths(clean_run.directory))
        assert record.video_path().is_file()


def test_rerun_skips_everything(clean_run, corpus, tmp_path):
    before = (clean_run.directory / "manifest.jsonl").read_bytes()
    again = build(corpus, clean_run.directory)
    assert again.processed == 0 and again.skipped == len(CORPUS) + 2
    assert (clean_run.directory / "manifest.jsonl").read_bytes() == before


def test_retry_errors_after_a_file_was_fixed(clean_run, corpus, tmp_path):
    import shutil

    videos = tmp_path / "videos"
    shutil.copytree(corpus, videos)
    out = tmp_path / "dataset"
    shutil.copytree(clean_run.directory, out)
    write_gray_video(videos / "corrupt.mp4", [16, 24])  # re-encoded since
    (videos / "corrupt.txt").write_text("fixed")
    assert build(videos, out).processed == 0  # a plain resume does not retry
    again = build(videos, out, retry_errors=True)
    assert again.processed == 2 and again.skipped == len(CORPUS)
    done = done_log(out)
    assert len((out / "done.jsonl").read_text().splitlines()) == len(done) == len(CORPUS) + 2
    assert (done["corrupt.mp4"]["outcome"], done["truncated.mp4"]["outcome"]) == ("kept", "error")
    assert [r.key for r in load_manifest(out)] == sorted([r.key for r in clean_run.records] + ["corrupt.mp4"])
    assert again.report["outcomes"] == {"kept": 5, "rejected": 4, "error": 1}


def test_resume_with_other_settings_is_refused(clean_run, corpus):
    with pytest.raises(FaithfulFacesError, match="was built with other settings"):
        build(
            corpus,
            clean_run.directory,
            settings=CurationSettings.paper(sampling=FrameSampling(every=1), threshold=90),
        )


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_dataset_pipeline import build
from pathlib import Path
count = 0
def hook(result):
    global count
    count += 1
    if count == {after}:
        os.kill(os.getpid(), signal.SIGKILL)
build(Path({videos!r}), Path({out!r}), on_commit=hook)
"""


def test_kill_mid_run_then_rerun_equals_clean_run(clean_run, corpus, tmp_path):
    out = tmp_path / "killed"
    script = KILL_SCRIPT.format(tests=str(REPO / "tests"), after=3, videos=str(corpus), out=str(out))
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert len((out / "done.jsonl").read_text().splitlines()) == 3  # a kill loses nothing committed
    resumed = build(corpus, out)
    assert resumed.processed == len(CORPUS) + 2 - 3 and resumed.skipped == 3
    assert (out / "manifest.jsonl").read_bytes() == (clean_run.directory / "manifest.jsonl").read_bytes()
    assert sorted(done_log(out)) == sorted(done_log(clean_run.directory))
    assert len((out / "done.jsonl").read_text().splitlines()) == len(CORPUS) + 2


def test_interrupted_write_and_leftovers_are_repaired(clean_run, corpus, tmp_path):
    """A kill inside a manifest write leaves a truncated line; staging and orphan crop folders are dropped."""
    out = tmp_path / "torn"
    seen = []

    def stop_after_two(result):
        seen.append(result.ref.key)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(corpus, out, on_commit=stop_after_two)
    manifest = out / "manifest.jsonl"
    lines = manifest.read_bytes()
    full = (clean_run.directory / "manifest.jsonl").read_text().splitlines()
    with open(manifest, "ab") as fh:  # half of the next line, no newline
        fh.write(full[-1].encode()[:50])
    (out / "crops" / "stale.partial").mkdir()
    (out / "crops" / "stale.partial" / "f000000.png").write_bytes(b"x")
    (out / "crops" / "orphan-000000000000").mkdir()
    with pytest.warns(UserWarning, match="line .*truncated last line"):
        load_manifest(out, on_error="skip")
    resumed = build(corpus, out)
    assert resumed.skipped == 2
    assert manifest.read_bytes() == (clean_run.directory / "manifest.jsonl").read_bytes()
    assert len(lines) < manifest.stat().st_size
    assert sorted(p.name for p in (out / "crops").iterdir()) == sorted(
        p.name for p in (clean_run.directory / "crops").iterdir()
    )


def test_two_shards_merged_equal_one_run(clean_run, corpus, tmp_path):
    keys = [k for k in CORPUS] + ["corrupt.mp4", "truncated.mp4"]
    assert {shard_of(k, 2) for k in keys} == {0, 1}  # the split is not trivial
    shards = [build(corpus, tmp_path / f"shard{i}", shard=Shard(i, 2)) for i in range(2)]
    assert sorted(k for s in shards for k in done_log(s.directory)) == sorted(keys)
    for i, s in enumerate(shards):
        assert all(shard_of(k, 2) == i for k in done_log(s.directory))
    records, report = merge_datasets([s.directory for s in shards], tmp_path / "merged", print_summary=False)
    merged = tmp_path / "merged"
    assert (merged / "manifest.jsonl").read_bytes() == (clean_run.directory / "manifest.jsonl").read_bytes()
    assert report["outcomes"] == {"kept": 4, "rejected": 4, "error": 2}
    assert len(load_manifest(merged)) == 4  # crop files were carried over
    assert json.loads((merged / "build.json").read_text())["shard"] == "0/1"
    with pytest.raises(FaithfulFacesError, match="is in both"):
        merge_datasets([shards[0].directory, shards[0].directory], tmp_path / "twice", print_summary=False)


def test_workers_give_the_same_manifest(clean_run, corpus, tmp_path):
    detector, estimator = scripted_models()
    result = build(corpus, tmp_path / "two_workers", models=(detector, estimator), workers=2)
    assert detector.calls == 0 and estimator.batches == []  # the work ran in the worker processes
    assert result.processed == len(CORPUS) + 2
    assert (result.directory / "manifest.jsonl").read_bytes() == (
        clean_run.directory / "manifest.jsonl"
    ).read_bytes()
    assert done_log(result.directory).keys() == done_log(clean_run.directory).keys()


def _cli():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_dataset_cli", REPO / "training" / "build_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_build_and_merge(clean_run, corpus, tmp_path, capsys):
    faces = json.dumps({str(k): v for k, v in FACES.items()})
    angles = json.dumps({str(k): v for k, v in ANGLES.items()})
    script = str(REPO / "training" / "build_dataset.py")

    def args(i: int) -> list[str]:
        return [
            "build",
            str(corpus),
            "--out",
            str(tmp_path / f"s{i}"),
            "--every",
            "1",
            "--shard",
            f"{i}/2",
            "--detector",
            "faithfulfaces_core.tiny.scripted:ScriptedDetector",
            "--detector-arg",
            f"faces={faces}",
            "--pose",
            "faithfulfaces_core.tiny.scripted:ScriptedPoseEstimator",
            "--pose-arg",
            f"angles={angles}",
            "--paper-rules",
            "--no-progress",
        ]

    proc = subprocess.run([sys.executable, script, *args(0)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]  # the script runs standalone from a checkout
    assert (
        "processed now, 0 already done" in proc.stdout and "low_pose_variation" in proc.stderr
    )  # rich table
    cli = _cli()
    assert cli.main(args(1)) == 0
    assert cli.main(["merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m")]) == 0
    assert "4 videos in" in capsys.readouterr().out
    assert (tmp_path / "m" / "manifest.jsonl").read_text() == (
        clean_run.directory / "manifest.jsonl"
    ).read_text()
    assert cli.main(["build", str(corpus), "--out", str(tmp_path / "x"), "--shard", "2/2"]) == 1
    assert "Shard 2/2 is out of range" in capsys.readouterr().err
    assert cli.main(["build", str(corpus), "--out", str(tmp_path / "x"), "--captioner", "qwen2.5-vl"]) == 1
    assert "needs --qwen-path DIR" in capsys.readouterr().err
    missing = tmp_path / "no_models"
    assert (
        cli.main(
            [
                "build",
                str(corpus),
                "--out",
                str(tmp_path / "y"),
                "--models-dir",
                str(missing),
                "--detector",
                "faithfulfaces_core.tiny.scripted:ScriptedDetector",
                "--detector-arg",
                f"faces={faces}",
                "--paper-rules",
                "--no-progress",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert f"6DRepNet weight file {missing / 'faithfulfaces'} does not exist" in err
    # nothing was recorded, so the fixed command may use other models in the same directory
    assert cli.main(args(0)[:3] + [str(tmp_path / "y")] + args(0)[4:]) == 0
    assert (tmp_path / "y" / "manifest.jsonl").read_text() == (tmp_path / "s0" / "manifest.jsonl").read_text()


def test_one_writer_per_directory(corpus, tmp_path):
    from faithfulfaces_core.dataset.directory import DatasetDirectory

    with DatasetDirectory(tmp_path / "busy").locked():
        with pytest.raises(FaithfulFacesError, match="Another build is writing into"):
            build(corpus, tmp_path / "busy")
    assert build(corpus, tmp_path / "busy").processed == len(CORPUS) + 2
