"""Shots: split a raw video at its cuts so that each shot is curated as its own sample.

A cut changes the person, the framing or the place; pairs "two crops of the same video" across a
cut may be two people. PySceneDetect's content detector (HSV frame differences, on PyAV — the
decoder the builder uses, so its frame numbers are the builder's frame ordinals) finds the cuts.
A shot is ``(start, end)``: decoded-frame ordinals, ``end`` exclusive.
"""

from __future__ import annotations

from os import PathLike

from ..deps import require
from .decode import VideoReadError

SHOT_SEPARATOR = "#shot"


def shot_key(video_key: str, index: int) -> str:
    """The sample key of shot ``index`` of a video: ``<video key>#shot003``."""
    return f"{video_key}{SHOT_SEPARATOR}{index:03d}"


def detect_shots(path: str | PathLike, *, threshold: float = 27.0, min_frames: int = 15) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` covering the whole video; a video without cuts is one shot.

    ``threshold``: ContentDetector's score (mean HSV change, 0-255) above which a frame starts a new
    shot (27 is PySceneDetect's default); ``min_frames``: the shortest shot it creates.
    """
    require("scenedetect", "Shot detection (--shots)")
    from scenedetect import ContentDetector, SceneManager, open_video

    try:
        video = open_video(str(path), backend="pyav")
        manager = SceneManager()
        manager.add_detector(ContentDetector(threshold=threshold, min_scene_len=min_frames))
        manager.detect_scenes(video, show_progress=False)
    except Exception as exc:  # PySceneDetect wraps decoder failures in several types
        raise VideoReadError(f"Cannot find the shots of video {path}: {exc}.") from exc
    scenes = manager.get_scene_list(start_in_scene=True)
    shots = [(int(start.frame_num), int(end.frame_num)) for start, end in scenes]
    return [s for s in shots if s[1] > s[0]]
