"""The native KSampler workflow in the real ComfyUI server, on the tiny native model set.

UNETLoader loads the tiny original-layout VACE checkpoint (ComfyUI's model detection must
accept it), VAELoader the tiny Wan2.1 VAE, and the example workflow runs through
``POST /prompt`` with the pack's face / pose / aligner nodes making the pose token.

ComfyUI builds its Wan text encoder from a fixed UMT5-XXL config (5.7 B parameters) whatever
the file holds, so nothing tiny loads through CLIPLoader. The test swaps the CLIPLoader and the
two CLIPTextEncode nodes for a test-only node that reads prompt embeddings of the width UMT5-XXL
gives (``tests/comfy_nodes``, the ``without_text_encoder`` fixture). Everything else is the
example workflow.
"""

from __future__ import annotations

import shutil

import av
import numpy as np
import pytest

from faithfulfaces_core.demo import load_api_workflow, reference_photo
from faithfulfaces_core.tiny import modelset
from faithfulfaces_core.tiny import native as tiny_native
from faithfulfaces_core.tiny.wan import TINY_FILE
from faithfulfaces_core.workflow import with_inputs

pytestmark = pytest.mark.comfy

WORKFLOW = "faithfulfaces_native_ksampler"
SIZE = {"width": 64, "height": 48, "length": 9}
STEPS = 2


@pytest.fixture(scope="module")
def tiny_prompt(comfy, tiny_native_settings, without_text_encoder):
    """``make(seed=4, **patch)``: the example workflow on the tiny native files, ``patch`` on the patch node."""
    shutil.copyfile(reference_photo(), comfy.input_dir / "ff_native_portrait.png")

    def make(*, seed: int = 4, **patch) -> dict:
        prompt = with_inputs(load_api_workflow(WORKFLOW), {
            **tiny_native_settings,
            "1": {"image": "ff_native_portrait.png"},
            "8": {**tiny_native_settings["8"], **patch},
            "13": SIZE,
            "14": {"steps": STEPS, "seed": seed},
        })
        return without_text_encoder(prompt, "ff_native", seed=3)

    return make


def run_frames(comfy, prompt: dict) -> np.ndarray:
    """Run ``prompt``; check its MP4 and return the decoded frames ``[T, H, W, 3]`` from lossless PNGs.

    (x264 does not encode the same frames to the same bytes twice, so frames are compared as PNGs.)
    """
    from PIL import Image

    prompt = {**prompt, "90": {"class_type": "SaveImage", "inputs": {"images": ["16", 0], "filename_prefix": "ff_native_frames"}}}
    entry = comfy.run(prompt, timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    files = list(comfy.output_files(entry))
    video = next(f for f in files if f.suffix == ".mp4")
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert sum(1 for _ in container.decode(stream)) == SIZE["length"]
        assert (stream.codec_context.width, stream.codec_context.height) == (SIZE["width"], SIZE["height"])
        assert float(stream.average_rate) == 16.0
    pngs = sorted(f for f in files if f.suffix == ".png" and f.name.startswith("ff_native_frames"))
    return np.stack([np.array(Image.open(f)) for f in pngs])


def test_tiny_native_files_are_listed_by_comfys_own_loaders(object_info):
    def options(node, name):
        spec = object_info[node]["input"]["required"][name]
        return spec[1]["options"] if spec[0] == "COMBO" else spec[0]  # V3 nodes / classic nodes

    assert TINY_FILE in options("UNETLoader", "unet_name")
    assert tiny_native.VAE_FILE in options("VAELoader", "vae_name")
    assert modelset.LORA_COMFY_FILE in options("FaithfulFacesNativeWanPatch", "lora")
    assert options("FaithfulFacesNativeWanPatch", "lora")[0] == "none"
    node = object_info["FaithfulFacesNativeWanPatch"]
    assert node["category"] == "FaithfulFaces/native" and node["output"] == ["MODEL"]


def test_native_workflow_runs_and_the_patch_acts(comfy, tiny_prompt):
    frames = run_frames(comfy, tiny_prompt())
    assert frames.shape == (SIZE["length"], SIZE["height"], SIZE["width"], 3)
    # the same graph with pose and LoRA at 0 is the plain native model, frame for frame
    off = run_frames(comfy, tiny_prompt(pose_strength=0.0, lora_strength=0.0))
    plain = tiny_prompt()
    plain["14"]["inputs"]["model"] = ["7", 0]
    del plain["8"]
    assert np.array_equal(off, run_frames(comfy, plain))
    assert not np.array_equal(frames, off)
    # pose tokens alone change the result too
    pose_only = run_frames(comfy, tiny_prompt(lora_strength=0.0))
    assert not np.array_equal(pose_only, off)
