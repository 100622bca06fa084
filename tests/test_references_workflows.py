"""The several-references workflows (diffusers and native) in a real ComfyUI on the tiny model set.

Photos → Pick Reference Faces → VACE with several references → FaceSim, with the no-download dlib
backend on real photographs: Tom Hanks' portrait, its mirror image (the other head direction) and
a face cropped from the group photo t1.jpg (another person, which the picker must reject).
"""

from __future__ import annotations

import numpy as np
import pytest

from faithfulfaces_core.demo import load_api_workflow, tiny_settings
from faithfulfaces_core.tiny.photos import GROUP, PORTRAIT, load_photo
from faithfulfaces_core.workflow import with_inputs

pytestmark = pytest.mark.comfy

SIZE = {"width": 64, "height": 48, "length": 9}
PHOTOS = {"1": "ff_refs_portrait.png", "20": "ff_refs_mirrored.png", "21": "ff_refs_stranger.png"}


@pytest.fixture(scope="module")
def photos(comfy) -> dict[str, dict]:
    from PIL import Image

    portrait, group = load_photo(*PORTRAIT), load_photo(*GROUP)
    Image.fromarray(portrait).save(comfy.input_dir / PHOTOS["1"])
    Image.fromarray(np.ascontiguousarray(portrait[:, ::-1])).save(comfy.input_dir / PHOTOS["20"])
    Image.fromarray(group[52:212, 855:1015]).resize((112, 112)).save(comfy.input_dir / PHOTOS["21"])
    return {node: {"image": name} for node, name in PHOTOS.items()}


def _shown(prompt: dict, sources: dict[str, list]) -> dict:
    """``prompt`` with a PreviewAny for each ``{id: [node, output]}`` (its text comes back in the history)."""
    return {**prompt, **{k: {"class_type": "PreviewAny", "inputs": {"source": v}} for k, v in sources.items()}}


def _check(comfy, prompt: dict, sampler_notes: list | None) -> dict:
    shown = {"91": ["4", 3], "92": ["12" if "12" in prompt and prompt["12"]["class_type"] == "FaithfulFacesFaceSim"
                                   else "24", 5]}
    if sampler_notes:
        shown["93"] = sampler_notes
    prompt = _shown(prompt, shown)
    prompt["90"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "ff_refs_chosen"}}
    entry = comfy.run(prompt, timeout=900)
    assert entry["status"]["status_str"] == "success", entry["status"]
    files = list(comfy.output_files(entry))
    assert any(f.suffix == ".mp4" for f in files)
    assert any("reference_coverage" in f.name for f in files) and any("facesim" in f.name for f in files)
    assert len([f for f in files if f.name.startswith("ff_refs_chosen")]) == 2  # the stranger was rejected
    text = {k: "".join(entry["outputs"][k]["text"]) for k in shown}
    assert text["91"].startswith("2 reference faces chosen from 3 images (3 faces; identity: dlib-resnet128")
    assert "dropped for other identity: 1" in text["91"]
    assert "2 references: the numbers above are the best match per frame" in text["92"]
    return text


def test_diffusers_workflow_with_several_references(comfy, photos):
    settings = tiny_settings("dlib")
    settings["9"] = {**settings["9"], **SIZE, "steps": 2}
    prompt = with_inputs(load_api_workflow("faithfulfaces_several_references"), {**settings, **photos})
    text = _check(comfy, prompt, ["9", 2])
    assert text["93"].startswith("2 reference image(s); ")


def test_native_workflow_with_several_references(comfy, photos, tiny_native_settings, without_text_encoder):
    prompt = with_inputs(load_api_workflow("faithfulfaces_several_references_native"), {
        **photos, **tiny_native_settings, "13": SIZE, "14": {"steps": 2},
    })
    prompt = without_text_encoder(prompt, "ff_refs", seed=5)
    _check(comfy, prompt, None)
