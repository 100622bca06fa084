"""The example workflows and the nodes inside a real ComfyUI, through its HTTP API and websocket."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import av
import numpy as np
import pytest
import requests

from faithfulfaces_core.demo import WORKFLOWS, load_api_workflow, tiny_settings
from faithfulfaces_core.host import default_comfyui_dir
from faithfulfaces_core.tiny.photos import GROUP, PORTRAIT, photo_path
from faithfulfaces_core.workflow import (
    SCHEMA_HOST_VERSION,
    api_to_ui,
    complete_prompt,
    ui_to_api,
    with_inputs,
)

pytestmark = pytest.mark.comfy

FILE_INPUTS = {"image", "insightface_pack", "weights", "aligner", "model", "components_from", "lora",
               "unet_name", "clip_name", "vae_name", "lora_name"}
SIZE = {"width": 64, "height": 48, "length": 9, "steps": 2}


@pytest.fixture(scope="module")
def images(comfy) -> dict[str, str]:
    """Reference images in the server's input folder: a portrait, a group, and no face at all."""
    from PIL import Image

    shutil.copyfile(photo_path(*PORTRAIT), comfy.input_dir / "ff_portrait.png")
    shutil.copyfile(photo_path(*GROUP), comfy.input_dir / "ff_group.jpg")
    Image.fromarray(np.full((128, 128, 3), 90, np.uint8)).save(comfy.input_dir / "ff_blank.png")
    return {"portrait": "ff_portrait.png", "group": "ff_group.jpg", "blank": "ff_blank.png"}


def identity_prompt(image: str, *, seed: int = 1, **sampler) -> dict:
    settings = tiny_settings("dlib")
    settings["1"] = {"image": image}
    settings["9"] = {**settings["9"], **SIZE, "seed": seed, **sampler}
    return with_inputs(load_api_workflow("faithfulfaces_identity_video"), settings)


def execution_error(entry: dict) -> str:
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors, f"expected an execution error, got {entry['status']}"
    return errors[0]["exception_message"]


def read_video(path: Path) -> tuple[int, int, int, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.codec_context.width, stream.codec_context.height, float(stream.average_rate)


def host_throttles_progress() -> bool:
    """ComfyUI 0.33 and later send progress updates at most every 100 ms (``comfy/utils.py``)."""
    return "PROGRESS_THROTTLE_MIN_INTERVAL" in (default_comfyui_dir() / "comfy" / "utils.py").read_text()


def test_identity_workflow_writes_the_requested_video(comfy, images):
    with comfy.listen() as ws:
        answer = comfy.queue(identity_prompt(images["portrait"]))
        entry = comfy.wait(answer["prompt_id"], timeout=600)
    assert entry["status"]["status_str"] == "success", entry["status"]
    files = list(comfy.output_files(entry))
    video = next(f for f in files if f.suffix == ".mp4")
    assert read_video(video) == (SIZE["length"], SIZE["width"], SIZE["height"], 16.0)
    assert any("pose_preview" in f.name for f in files)
    progress = [p["value"] for p in ws.of_type("progress", answer["prompt_id"]) if p["node"] == "9"]
    assert all(p["max"] == SIZE["steps"] for p in ws.of_type("progress", answer["prompt_id"]) if p["node"] == "9")
    if host_throttles_progress():  # updates < 100 ms apart are dropped; the first and the last are always sent
        assert progress[0] == 1 and progress[-1] == SIZE["steps"] and progress == sorted(set(progress))
    else:
        assert progress == list(range(1, SIZE["steps"] + 1))
    # the pose node sends its angles to the web extension
    pose_ui = entry["outputs"]["4"]["faithfulfaces_pose"][0]
    assert pose_ui["backend"] == "dlib-hog+pnp" and abs(pose_ui["yaw"]) < 35  # a near-frontal portrait


def test_pose_inspection_workflow_on_insightface_and_6drepnet(comfy, images):
    """The paper's backends (fake InsightFace pack + random 6DRepNet, in bf16) through the server."""
    from PIL import Image

    from faithfulfaces_core.tiny.insightface import paint_fake_faces
    from faithfulfaces_core.tiny.modelset import FAKE_FACE_BOX

    marked = paint_fake_faces(np.zeros((480, 640, 3), np.uint8), [FAKE_FACE_BOX])
    Image.fromarray(marked).save(comfy.input_dir / "ff_marked.png")
    settings = {k: v for k, v in tiny_settings("tiny").items() if k in ("2", "3")}
    settings["3"] = {**settings["3"], "precision": "bf16"}
    prompt = with_inputs(load_api_workflow("faithfulfaces_pose_inspection"), {**settings, "1": {"image": "ff_marked.png"}})
    entry = comfy.run(prompt, timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
    pose = entry["outputs"]["4"]["faithfulfaces_pose"][0]
    assert pose["backend"] == "insightface+6drepnet"
    assert all(np.isfinite([pose["pitch"], pose["yaw"], pose["roll"]]))
    crop = next(f for f in comfy.output_files(entry) if "face_crop" in f.name)
    assert Image.open(crop).size == (64, 64)  # the tiny 6DRepNet's input size


@pytest.mark.parametrize("name", sorted(p.stem for p in (WORKFLOWS / "api").glob("*.json")))
def test_ui_workflow_matches_its_api_twin(comfy, object_info, name):
    """The shipped UI file is the generator's output on the CI host; on any host both convert alike."""
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    api = load_api_workflow(name)
    expected = complete_prompt(api, object_info)
    assert ui_to_api(api_to_ui(api, object_info), object_info, file_inputs=FILE_INPUTS) == expected
    loaded = ui_to_api(ui, object_info, file_inputs=FILE_INPUTS)  # loads on this host's schemas
    if comfy.get("/system_stats")["system"]["comfyui_version"] == SCHEMA_HOST_VERSION:
        assert ui == api_to_ui(api, object_info), "regenerate: python -m faithfulfaces_core.workflow"
        assert loaded == expected
    else:  # newer schemas: same graph; widgets a newer schema grew or renamed take its defaults
        assert {k: v["class_type"] for k, v in loaded.items()} == {k: v["class_type"] for k, v in api.items()}
        assert {(k, n): v for k, node in loaded.items() for n, v in node["inputs"].items() if isinstance(v, list)} \
            == {(k, n): v for k, node in api.items() for n, v in node["inputs"].items() if isinstance(v, list)}


def test_templates_are_listed(comfy):
    templates = comfy.get("/workflow_templates")
    assert set(templates["faithfulfaces"]) >= {"faithfulfaces_identity_video", "faithfulfaces_pose_inspection"}
    served = requests.get(f"{comfy.url}/api/workflow_templates/faithfulfaces/faithfulfaces_identity_video.json", timeout=30)
    assert served.ok and served.json()["nodes"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("blank", "No face found in input image 1 of 1"),
        ("group", "shows 6 faces, but exactly one is required"),
        ("frames", "num_frames 10 is not of the form 4k+1 (1, 5, 9, ..., 81), which Wan2.1 needs: use 9 or 13"),
        ("lora", "'faithfulfaces_missing.safetensors' is not one of the LoRA files ComfyUI lists in models/loras/"),
    ],
)
def test_bad_inputs_give_the_packs_message_and_the_server_goes_on(comfy, images, case, expected):
    prompt = identity_prompt(images["blank" if case == "blank" else "group" if case == "group" else "portrait"])
    if case == "frames":
        prompt["9"]["inputs"]["length"] = 10
    if case == "lora":
        prompt["8"]["inputs"]["lora"] = "faithfulfaces_missing.safetensors"
    answer = comfy.queue(prompt)
    if answer["node_errors"] or "prompt_id" not in answer:
        text = json.dumps(answer["node_errors"])
    else:
        text = execution_error(comfy.wait(answer["prompt_id"], timeout=300))
    assert expected in text
    assert comfy.run(identity_prompt(images["portrait"], seed=7), timeout=600)["status"]["status_str"] == "success"


def test_models_stay_cached_between_runs_and_are_freed_on_request(comfy, images):
    """A second run reuses the loaded pipeline; after ``POST /free`` it is loaded again."""

    def cached_nodes(seed: int) -> set[str]:
        with comfy.listen() as ws:
            answer = comfy.queue(identity_prompt(images["portrait"], seed=seed))
            entry = comfy.wait(answer["prompt_id"], timeout=600)
        assert entry["status"]["status_str"] == "success"
        return {n for m in ws.of_type("execution_cached", answer["prompt_id"]) for n in m["nodes"]}

    cached_nodes(seed=11)
    assert {"2", "3", "5", "7", "8"} <= cached_nodes(seed=12)  # loaders not re-run; the sampler is
    assert comfy.post("/free", {"unload_models": True, "free_memory": True}).ok
    time.sleep(1.0)  # the queue worker frees between prompts
    assert "7" not in cached_nodes(seed=13)


def test_interrupt_stops_sampling_within_two_steps(comfy, images):
    steps = 40  # at 256×256×33 a tiny step takes about 0.5 s, far above the websocket's latency
    with comfy.listen() as ws:
        prompt = identity_prompt(images["portrait"], steps=steps, seed=3, width=256, height=256, length=33)
        answer = comfy.queue(prompt)
        prompt_id = answer["prompt_id"]
        deadline = time.monotonic() + 300
        while not [p for p in ws.of_type("progress", prompt_id) if p["node"] == "9" and p["value"] >= 2]:
            assert time.monotonic() < deadline, "sampling never started"
            time.sleep(0.05)
        at_interrupt = max(p["value"] for p in ws.of_type("progress", prompt_id) if p["node"] == "9")
        comfy.post("/interrupt")
        entry = comfy.wait(prompt_id, timeout=300)
    assert entry["status"]["status_str"] == "error"
    assert any(m[0] == "execution_interrupted" for m in entry["status"]["messages"])
    last = max(p["value"] for p in ws.of_type("progress", prompt_id) if p["node"] == "9")
    assert last <= at_interrupt + 2 < steps


def test_ten_queued_prompts_all_complete_with_distinct_outputs(comfy, images):
    ids = [comfy.queue(identity_prompt(images["portrait"], seed=100 + i))["prompt_id"] for i in range(10)]
    videos = []
    for prompt_id in ids:
        entry = comfy.wait(prompt_id, timeout=900)
        assert entry["status"]["status_str"] == "success", entry["status"]
        video = next(f for f in comfy.output_files(entry) if f.suffix == ".mp4")
        assert read_video(video)[:3] == (SIZE["length"], SIZE["width"], SIZE["height"])
        videos.append(video)
    assert len(set(videos)) == 10
    with_frames = []
    for video in videos:
        with av.open(str(video)) as container:
            with_frames.append(np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]))
    assert all(not np.array_equal(with_frames[0], other) for other in with_frames[1:])


def test_vace_sampler_makes_a_long_video_in_context_windows(comfy, images):
    """13 frames in windows of 9 overlapping by 4 (latent: 4 frames, windows of 3, overlap 1)."""
    from PIL import Image

    def frames(answer_entry: dict) -> np.ndarray:
        pngs = sorted(f for f in comfy.output_files(answer_entry) if f.name.startswith("ff_long_vace"))
        return np.stack([np.array(Image.open(f)) for f in pngs])

    def prompt(**sampler) -> dict:
        out = identity_prompt(images["portrait"], length=13, **sampler)
        out["90"] = {"class_type": "SaveImage", "inputs": {"images": ["9", 0], "filename_prefix": "ff_long_vace"}}
        return out

    with comfy.listen() as ws:
        answer = comfy.queue(prompt(context_frames=9, context_overlap=4))
        windowed = comfy.wait(answer["prompt_id"], timeout=600)
    assert windowed["status"]["status_str"] == "success", windowed["status"]
    video = next(f for f in comfy.output_files(windowed) if f.suffix == ".mp4")
    assert read_video(video)[0] == 13
    progress = [p for p in ws.of_type("progress", answer["prompt_id"]) if p["node"] == "9"]
    calls = SIZE["steps"] * 2 * 2  # steps × (cond, uncond) × windows
    assert progress and progress[-1]["value"] == calls and all(p["max"] == calls for p in progress)
    one_window = comfy.run(prompt(context_frames=13, context_overlap=4), timeout=600)
    plain = comfy.run(prompt(), timeout=600)
    assert np.array_equal(frames(one_window), frames(plain))
    assert not np.array_equal(frames(windowed), frames(plain))
