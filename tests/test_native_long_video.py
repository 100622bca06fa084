"""The long-video workflow (native model + ComfyUI's WanContextWindowsManual) in the real server.

The shipped workflow makes 161 frames in windows of 81 with overlap 16; here the tiny model set
runs it at 17 frames in windows of 9 with overlap 4 (5 latent video frames, windows of 3 with
overlap 1: two windows), with the CLIP nodes swapped for the test-only conditioning node as in
``test_native_workflow.py``.
"""

from __future__ import annotations

import re
import shutil

import av
import numpy as np
import pytest

from faithfulfaces_core.demo import load_api_workflow, reference_photo
from faithfulfaces_core.workflow import complete_prompt, with_inputs

pytestmark = pytest.mark.comfy

WORKFLOW = "faithfulfaces_native_long_video"
SIZE = {"width": 32, "height": 32, "length": 17}
WINDOW = {"context_length": 9, "context_overlap": 4}


def test_shipped_workflow_is_161_frames_in_windows_of_81():
    prompt = load_api_workflow(WORKFLOW)
    assert prompt["13"]["inputs"]["length"] == 161
    assert prompt["20"]["class_type"] == "WanContextWindowsManual"
    assert {k: prompt["20"]["inputs"][k] for k in ("context_length", "context_overlap")} == {
        "context_length": 81, "context_overlap": 16}
    assert prompt["14"]["inputs"]["model"] == ["20", 0] and prompt["20"]["inputs"]["model"] == ["8", 0]
    assert prompt["8"]["inputs"]["reference_frames"] == ["13", 3]  # WanVaceToVideo's trim_latent


@pytest.fixture(scope="module")
def tiny_prompt(comfy, object_info, tiny_native_settings, without_text_encoder):
    """``make(**window)``: the workflow on the tiny native files, ``window`` on its context-windows node,
    completed with this host's defaults as its frontend would queue it (0.33 added required widgets)."""
    shutil.copyfile(reference_photo(), comfy.input_dir / "ff_long_portrait.png")

    def make(**window) -> dict:
        prompt = with_inputs(load_api_workflow(WORKFLOW), {
            **tiny_native_settings,
            "1": {"image": "ff_long_portrait.png"},
            "13": SIZE,
            "14": {"steps": 2, "seed": 5},
            "18": {"filename_prefix": "ff_long/video"},
            "20": {**WINDOW, **window},
        })
        prompt = without_text_encoder(complete_prompt(prompt, object_info), "ff_long", seed=8)
        prompt["90"] = {"class_type": "SaveImage", "inputs": {"images": ["16", 0], "filename_prefix": "ff_long_frames"}}
        return prompt

    return make


def run_frames(comfy, prompt: dict) -> np.ndarray:
    from PIL import Image

    entry = comfy.run(prompt, timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    files = list(comfy.output_files(entry))
    video = next(f for f in files if f.suffix == ".mp4")
    with av.open(str(video)) as container:
        assert sum(1 for _ in container.decode(container.streams.video[0])) == SIZE["length"]
    pngs = sorted(f for f in files if f.suffix == ".png" and f.name.startswith("ff_long_frames"))
    return np.stack([np.array(Image.open(f)) for f in pngs])


def test_long_video_workflow_runs_in_windows(comfy, tiny_prompt):
    before = len(comfy.log())
    windowed = run_frames(comfy, tiny_prompt())
    assert windowed.shape == (SIZE["length"], SIZE["height"], SIZE["width"], 3)
    # video frames only, no reference (0.3.75: "Using context windows 3 for 5 frames.", 0.33 words it longer)
    assert re.search(r"Using context windows.* 3 .*for 5 frames\.", comfy.log()[before:])
    # one window as long as the video is the graph without the context-windows node, frame for frame
    whole = run_frames(comfy, tiny_prompt(context_length=SIZE["length"]))
    plain = tiny_prompt()
    plain["14"]["inputs"]["model"] = ["8", 0]
    del plain["20"]
    assert np.array_equal(whole, run_frames(comfy, plain))
    assert not np.array_equal(windowed, whole)
