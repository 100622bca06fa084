"""The long-video workflow (native model + ComfyUI's WanContextWindowsManual) in the real server.

The shipped workflow makes 161 frames in windows of 81 with overlap 16; here the tiny model set
runs it at 17 frames in windows of 9 with overlap 4 (5 latent video frames, windows of 3 with
overlap 1: two windows), with the CLIP nodes swapped for ``LoadTrainingDataset`` as in
``test_native_workflow.py``.
"""

from __future__ import annotations

import shutil

import av
import numpy as np
import pytest
import torch

from faithfulfaces_core.demo import load_api_workflow, reference_photo
from faithfulfaces_core.tiny import modelset
from faithfulfaces_core.tiny import native as tiny_native
from faithfulfaces_core.tiny.wan import TINY_FILE, TINY_TRANSFORMER_CONFIG
from faithfulfaces_core.workflow import with_inputs

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
def conditioning(comfy) -> dict[str, str]:
    gen = torch.Generator().manual_seed(8)
    folders = {}
    for name in ("positive", "negative"):
        folder = comfy.output_dir / f"ff_long_{name}"
        folder.mkdir(parents=True, exist_ok=True)
        embeds = torch.randn(1, 12, TINY_TRANSFORMER_CONFIG["text_dim"], generator=gen)
        torch.save({"latents": [{"samples": torch.zeros(1, 16, 1, 1, 1)}], "conditioning": [[[embeds, {}]]]},
                   folder / "shard_0000.pkl")
        folders[name] = folder.name
    shutil.copyfile(reference_photo(), comfy.input_dir / "ff_long_portrait.png")
    return folders


def tiny_prompt(conditioning: dict[str, str], **window) -> dict:
    prompt = with_inputs(load_api_workflow(WORKFLOW), {
        "1": {"image": "ff_long_portrait.png"},
        "2": {"backend": "dlib-hog"},
        "3": {"backend": "dlib-landmarks"},
        "5": {"aligner": modelset.ALIGNER_FILE},
        "7": {"unet_name": TINY_FILE},
        "8": {"lora": modelset.LORA_COMFY_FILE},
        "12": {"vae_name": tiny_native.VAE_FILE},
        "13": SIZE,
        "14": {"steps": 2, "seed": 5},
        "18": {"filename_prefix": "ff_long/video"},
        "20": {**WINDOW, **window},
    })
    del prompt["9"]
    for node, name in (("10", "positive"), ("11", "negative")):
        prompt[node] = {"class_type": "LoadTrainingDataset", "inputs": {"folder_name": conditioning[name]}}
    prompt["13"]["inputs"].update(positive=["10", 1], negative=["11", 1])
    prompt["90"] = {"class_type": "SaveImage", "inputs": {"images": ["16", 0], "filename_prefix": "ff_long_frames"}}
    return prompt


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


def test_long_video_workflow_runs_in_windows(comfy, conditioning):
    before = len(comfy.log())
    windowed = run_frames(comfy, tiny_prompt(conditioning))
    assert windowed.shape == (SIZE["length"], SIZE["height"], SIZE["width"], 3)
    assert "Using context windows 3 for 5 frames." in comfy.log()[before:]  # video frames only, no reference
    # one window as long as the video is the graph without the context-windows node, frame for frame
    whole = run_frames(comfy, tiny_prompt(conditioning, context_length=SIZE["length"]))
    plain = tiny_prompt(conditioning)
    plain["14"]["inputs"]["model"] = ["8", 0]
    del plain["20"]
    assert np.array_equal(whole, run_frames(comfy, plain))
    assert not np.array_equal(windowed, whole)
