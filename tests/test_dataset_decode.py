"""Streaming decoding, frame sampling, corpus discovery and shard assignment."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from faithfulfaces_core.dataset.decode import FrameSampling, VideoReadError, VideoStream, read_frames
from faithfulfaces_core.dataset.sources import Shard, VideoRef, discover_videos, shard_of
from faithfulfaces_core.errors import FaithfulFacesError
from faithfulfaces_core.tiny.scripted import gray_level, write_gray_video

LEVELS = [10 * i + 20 for i in range(16)]  # 16 frames at 8 fps


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("decode") / "ramp.mp4"
    write_gray_video(path, LEVELS, size=(48, 32), fps=8)
    return path


def sampled(path: Path, sampling: FrameSampling) -> list[tuple[int, int]]:
    with VideoStream(path, sampling) as stream:
        return [(f.index, gray_level(f.image)) for f in stream]


def test_info_and_every_frame(video):
    with VideoStream(video, FrameSampling(every=1)) as stream:
        assert (stream.info.width, stream.info.height, stream.info.fps) == (48, 32, 8.0)
        frames = list(stream)
        assert stream.frames_decoded == 16
    assert [f.index for f in frames] == list(range(16))
    assert all(f.image.shape == (32, 48, 3) and f.image.dtype == np.uint8 for f in frames)
    assert [abs(gray_level(f.image) - lv) <= 1 for f, lv in zip(frames, LEVELS, strict=True)] == [True] * 16
    np.testing.assert_allclose([f.time for f in frames], np.arange(16) / 8.0)


@pytest.mark.parametrize("every", [2, 3, 5, 16, 40])
def test_every_nth_frame(video, every):
    assert [i for i, _ in sampled(video, FrameSampling(every=every))] == list(range(0, 16, every))


@pytest.mark.parametrize("fps", [1.0, 2.0, 3.0, 5.0, 8.0, 30.0])
def test_frames_per_second(video, fps):
    # reference: the first frame at or after each time k / fps (frames at i / 8 s)
    expected = sorted(
        {math.ceil(k * 8 / fps - 1e-9) for k in range(100) if math.ceil(k * 8 / fps - 1e-9) < 16}
    )
    got = sampled(video, FrameSampling(fps=fps))
    assert [i for i, _ in got] == expected
    assert all(abs(level - LEVELS[i]) <= 1 for i, level in got)


def test_decoding_is_lazy(video):
    with VideoStream(video, FrameSampling(every=1)) as stream:
        first = next(iter(stream))
        assert first.index == 0 and stream.frames_decoded == 1


def test_read_frames_in_any_order(video):
    frames = read_frames(video, [7, 2, 7, 0])
    assert [gray_level(f) for f in frames] == [pytest.approx(LEVELS[i], abs=1) for i in (7, 2, 7, 0)]
    with pytest.raises(VideoReadError, match="has 16 frames, but frame 99 was asked for"):
        read_frames(video, [3, 99])


def test_sampling_validation():
    for kwargs, match in [
        ({}, "exactly one"),
        ({"every": 2, "fps": 1.0}, "exactly one"),
        ({"every": 0}, ">= 1"),
        ({"fps": -1.0}, "positive"),
        ({"fps": float("nan")}, "positive"),
    ]:
        with pytest.raises(FaithfulFacesError, match=match):
            FrameSampling(**kwargs)


def test_unreadable_files(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(2000))
    for path in (junk, tmp_path / "missing.mp4"):
        with pytest.raises(VideoReadError, match=f"Cannot open video {path}.*re-encode it"):
            with VideoStream(path, FrameSampling(every=1)):
                pass


def test_discover_folders_files_and_lists(tmp_path, video):
    root = tmp_path / "corpus"
    (root / "a" / "b").mkdir(parents=True)
    for rel in ("x.mp4", "a/y.MOV", "a/b/z.mkv", "a/notes.txt", "a/b/img.png"):
        (root / rel).write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\n\n{video}\nrel/clip.webm\n")
    refs = discover_videos([root, listing])
    assert [r.key for r in refs] == sorted(["x.mp4", "a/y.MOV", "a/b/z.mkv", str(video), "rel/clip.webm"])
    by_key = {r.key: r.path for r in refs}
    assert by_key["rel/clip.webm"] == tmp_path / "rel" / "clip.webm"
    assert by_key["a/b/z.mkv"] == root / "a" / "b" / "z.mkv"
    assert [r.key for r in discover_videos([root], extensions=[".mkv"])] == ["a/b/z.mkv"]
    with pytest.raises(FaithfulFacesError, match="same video key 'x.mp4'"):
        other = tmp_path / "other"
        other.mkdir()
        (other / "x.mp4").write_bytes(b"")
        discover_videos([root, other])
    with pytest.raises(FaithfulFacesError, match="does not exist"):
        discover_videos([tmp_path / "nope"])


def test_slugs_are_unique_and_safe():
    a, b = VideoRef("a/clip 1.mp4", Path("x")), VideoRef("b/clip 1.mp4", Path("y"))
    assert a.slug != b.slug and a.slug.startswith("clip_1-") and "/" not in a.slug


def test_shards_partition_keys_stably_across_processes():
    keys = [f"folder{i % 7}/video_{i}.mp4" for i in range(2000)]
    shards = [shard_of(k, 4) for k in keys]
    counts = np.bincount(shards, minlength=4)
    assert counts.min() > 400  # ~500 each
    assert all(
        Shard(s, 4).holds(k) and not Shard((s + 1) % 4, 4).holds(k) for k, s in zip(keys, shards, strict=True)
    )
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from faithfulfaces_core.dataset.sources import shard_of; "
        f"print([shard_of(k, 4) for k in {keys[:50]!r}])"
    )
    repo = str(Path(__file__).resolve().parents[1])
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code, repo],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        assert out.strip() == str(shards[:50])


def test_shard_parsing():
    assert Shard.parse(" 3 / 8 ") == Shard(3, 8)
    for text, match in [
        ("8/8", "out of range"),
        ("1/0", "out of range"),
        ("a/b", "form i/n"),
        ("1", "form i/n"),
    ]:
        with pytest.raises(FaithfulFacesError, match=match):
            Shard.parse(text)


def garbled_copy(source: Path, target: Path) -> Path:
    """``source`` with random bytes over 20 % of its media data (header and index intact)."""
    data = bytearray(source.read_bytes())
    start = data.find(b"mdat") + 8
    size = len(data) - start
    a, b = start + int(0.3 * size), start + int(0.5 * size)
    data[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    target.write_bytes(bytes(data))
    return target


class OneFace:
    name = "one-face"

    def detect(self, image):
        from faithfulfaces_core.pose.types import Face

        return [Face(box=(8.0, 8.0, 56.0, 56.0), score=1.0)]


class ZeroPose:
    name, input_size = "zero-pose", 32

    def estimate(self, crops, faces, image_sizes):
        return np.zeros((len(crops), 3), np.float32)


def test_decoding_failure_part_way(tmp_path):
    from faithfulfaces_core.dataset.curate import CurationSettings, curate_video, staging_folder

    levels = list(range(10, 250, 8))
    write_gray_video(tmp_path / "good.mp4", levels, size=64)
    bad = garbled_copy(tmp_path / "good.mp4", tmp_path / "bad.mp4")
    with pytest.raises(VideoReadError, match=f"Cannot decode frame \\d+ of video {bad}"):
        with VideoStream(bad, FrameSampling(every=1)) as stream:
            for _ in stream:
                pass
    assert 0 < stream.frames_decoded < len(levels)
    ref = VideoRef("bad.mp4", bad)
    settings = CurationSettings.paper(sampling=FrameSampling(every=1), batch_size=2)
    result = curate_video(ref, OneFace(), ZeroPose(), settings, tmp_path / "dataset")
    assert (result.outcome, result.reason) == ("error", "decode_failed")
    assert result.frames_decoded > 2 and len(result.frames) >= 2  # crops had been written before the failure
    assert "Cannot decode frame" in result.detail
    assert not staging_folder(tmp_path / "dataset", ref).exists()  # and are gone
    good = curate_video(
        VideoRef("good.mp4", tmp_path / "good.mp4"), OneFace(), ZeroPose(), settings, tmp_path / "d2"
    )
    assert (good.outcome, good.reason, good.frames_decoded) == ("rejected", "low_pose_variation", len(levels))


def test_what_encoding_keeps(tmp_path):
    """yuv420p at CRF 0 keeps gray levels within ±1 but not colour detail; lossless=True keeps all."""
    from faithfulfaces_core.dataset.encode import write_video

    rng = np.random.default_rng()
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    gray = np.full((64, 64, 3), int(rng.integers(10, 245)), np.uint8)
    for name, image, lossy_max in (("noise", noise, 100), ("gray", gray, 1)):
        write_video(tmp_path / f"{name}.mp4", [image, image])
        error = np.abs(read_frames(tmp_path / f"{name}.mp4", [0])[0].astype(int) - image).max()
        assert (error > lossy_max) if name == "noise" else (error <= lossy_max)
        write_video(tmp_path / f"{name}_rgb.mp4", [image, image], lossless=True)
        np.testing.assert_array_equal(read_frames(tmp_path / f"{name}_rgb.mp4", [0, 1])[1], image)
