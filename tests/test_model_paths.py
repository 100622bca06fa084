"""Model dropdowns: names stay inside the model folders, and unused dropdowns never block a prompt."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from faithfulfaces_core.demo import load_api_workflow, reference_photo
from faithfulfaces_core.devices import resolve_device
from faithfulfaces_core.errors import FaithfulFacesError
from faithfulfaces_core.host import CORE_SELF_VALIDATED, combo_violations, self_validated_inputs
from faithfulfaces_core.model_paths import inside, safe_parts, safetensors_kind
from faithfulfaces_core.tiny.modelset import ALIGNER_FILE, LORA_FILE
from faithfulfaces_core.workflow import with_inputs

HOSTILE = ["/etc/passwd", "/etc/no_such_file", "../../../etc/passwd", "../no_such_file", "a/../../b",
           "C:\\Windows\\win.ini", "\\\\server\\share\\x", "", "x\x00y"]


@pytest.mark.parametrize("name", HOSTILE)
def test_names_that_leave_the_folder_are_refused(tmp_path, name):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("x")
    assert safe_parts(name) is None
    assert inside([tmp_path / "etc"], name) is None


def test_names_inside_resolve_and_follow_links_like_comfyui(tmp_path):
    root, elsewhere = tmp_path / "models", tmp_path / "elsewhere"
    (root / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    (root / "sub" / "a.safetensors").write_text("a")
    (elsewhere / "b.safetensors").write_text("b")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)
    (root / "dangling.safetensors").symlink_to(tmp_path / "gone.safetensors")
    assert inside([tmp_path / "first", root], "sub/a.safetensors") == root / "sub" / "a.safetensors"
    assert inside([root], "sub\\a.safetensors") == root / "sub" / "a.safetensors"
    assert inside([root], "./sub//a.safetensors") == root / "sub" / "a.safetensors"
    assert inside([root], "linked/b.safetensors") == root / "linked" / "b.safetensors"
    assert inside([root], "dangling.safetensors") is None


def test_safetensors_kind_reads_the_header_only(tmp_path):
    from faithfulfaces_core.tiny.modelset import write_tiny_model_set

    write_tiny_model_set(tmp_path)
    assert safetensors_kind(tmp_path / "loras" / LORA_FILE) == "lora"
    assert safetensors_kind(tmp_path / "faithfulfaces" / ALIGNER_FILE) == "aligner"
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    assert safetensors_kind(tmp_path / "junk.safetensors") is None
    assert safetensors_kind(tmp_path / "missing.safetensors") is None


@pytest.mark.parametrize("name", ["bogus", "meta", "cuda:x", ""])
def test_unknown_devices_get_the_packs_message(name):
    with pytest.raises(FaithfulFacesError, match="Unknown device .* use one of auto, cpu, cuda"):
        resolve_device(name)


def test_the_self_validated_table_is_read_from_the_nodes():
    table = self_validated_inputs()
    assert table["FaithfulFacesLoadFaceDetector"] == {"backend", "insightface_pack"}
    assert table["FaithfulFacesLoadPoseEstimator"] == {"backend", "weights"}
    assert table["FaithfulFacesLoadVACEPipeline"] == {"model", "components_from"}
    assert table["FaithfulFacesApplyLoRA"] == {"lora"}
    assert table["FaithfulFacesNativeWanPatch"] == {"lora"}


# ---- through a real ComfyUI ------------------------------------------------------------------


def _no_download_pose_prompt(image: str) -> dict:
    """The pose workflow on dlib, its file dropdowns left at the names of models nobody placed."""
    return with_inputs(load_api_workflow("faithfulfaces_pose_inspection"), {
        "1": {"image": image},
        "2": {"backend": "dlib-hog", "insightface_pack": "antelopev2"},
        "3": {"backend": "dlib-landmarks", "weights": "6DRepNet_300W_LP_AFLW2000.pth"},
    })


@pytest.fixture(scope="module")
def portrait(comfy) -> str:
    shutil.copyfile(reference_photo().parent / "Tom_Hanks_54745.png", comfy.input_dir / "ff_paths_portrait.png")
    return "ff_paths_portrait.png"


def _schemas(comfy, prompt: dict) -> dict:
    return {c: comfy.get(f"/object_info/{c}")[c] for c in {n["class_type"] for n in prompt.values()}}


@pytest.mark.comfy
def test_no_download_backends_run_with_unplaced_file_names(comfy, portrait):
    """The 2026 rule would refuse this prompt without the loaders' own checks; with them it runs."""
    prompt = _no_download_pose_prompt(portrait)
    old_rule = combo_violations(prompt, _schemas(comfy, prompt), CORE_SELF_VALIDATED)
    assert any("insightface_pack 'antelopev2'" in p for p in old_rule)
    assert any("weights '6DRepNet_300W_LP_AFLW2000.pth'" in p for p in old_rule)
    entry = comfy.run(prompt, timeout=300)  # checked with the 2026 rule first
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert entry["outputs"]["4"]["faithfulfaces_pose"][0]["backend"] == "dlib-hog+pnp"


@pytest.mark.comfy
@pytest.mark.parametrize(("node", "values", "expected"), [
    ("2", {"backend": "insightface", "insightface_pack": "antelopev2"},
     "'antelopev2' is not one of the InsightFace packs ComfyUI lists in models/insightface/models/"),
    ("3", {"backend": "6drepnet", "weights": "6DRepNet_300W_LP_AFLW2000.pth"},
     "'6DRepNet_300W_LP_AFLW2000.pth' is not one of the model files ComfyUI lists in models/faithfulfaces/"),
    ("3", {"backend": "bogus"}, "backend must be one of 6drepnet, dlib-landmarks (got 'bogus')"),
    ("2", {"backend": "mtcnn"}, "backend must be one of insightface, dlib-hog, dlib-cnn (got 'mtcnn')"),
])
def test_a_dropdown_the_backend_needs_is_checked_at_queue_time(comfy, portrait, node, values, expected):
    prompt = with_inputs(_no_download_pose_prompt(portrait), {node: values})
    answer = comfy.queue(prompt)
    assert "prompt_id" not in answer
    assert expected in json.dumps(answer["node_errors"][node])


def _first_error(comfy, prompt: dict) -> str:
    answer = comfy.queue(prompt, strict_combos=False)
    if answer["node_errors"] or "prompt_id" not in answer:
        return json.dumps(answer["node_errors"] or answer)
    entry = comfy.wait(answer["prompt_id"], timeout=300)
    return next(m[1]["exception_message"] for m in entry["status"]["messages"] if m[0] == "execution_error")


@pytest.mark.comfy
@pytest.mark.parametrize(("node", "field"), [("3", "weights"), ("2", "insightface_pack")])
def test_paths_outside_the_model_folders_are_refused_alike(comfy, portrait, tmp_path, node, field):
    """An existing and a missing path outside the folders get the same answer, so nothing leaks."""
    real = tmp_path / "6DRepNet_secret.pth"
    real.write_bytes(b"not a model")
    backend = {"2": "insightface", "3": "6drepnet"}[node]
    answers = []
    for value in (str(real), str(tmp_path / "6DRepNet_absent.pth"), "../../" + real.name, "../../absent"):
        prompt = with_inputs(_no_download_pose_prompt(portrait), {node: {"backend": backend, field: value}})
        answers.append(_first_error(comfy, prompt).replace(value, "<name>"))
    assert len(set(answers)) == 1, answers
    assert "is not one of the" in answers[0] and "press R" in answers[0]


@pytest.mark.comfy
def test_the_aligner_loader_refuses_paths_outside_its_folder(comfy, portrait):
    """LoadAligner checks its file at queue time, with the pack's message on every host."""
    from faithfulfaces_core.demo import tiny_settings

    prompt = with_inputs(load_api_workflow("faithfulfaces_identity_video"), tiny_settings("dlib"))
    prompt = with_inputs(prompt, {"1": {"image": portrait}, "5": {"aligner": str(comfy.models_dir / "faithfulfaces"
                                                                                / ALIGNER_FILE)}})
    assert "is not one of the model files ComfyUI lists in models/faithfulfaces/" in _first_error(comfy, prompt)


@pytest.mark.comfy
def test_missing_vace_model_gets_the_missing_model_message(comfy):
    info = comfy.get("/object_info/FaithfulFacesLoadVACEPipeline")["FaithfulFacesLoadVACEPipeline"]
    placeholder = "(none found) place a diffusers Wan2.1-VACE folder in models/diffusers/ or a VACE " \
                  ".safetensors in models/diffusion_models/"
    assert placeholder not in info["input"]["required"]["model"][1]["options"]  # the tiny model is placed
    from faithfulfaces_core.demo import tiny_settings

    prompt = with_inputs(load_api_workflow("faithfulfaces_identity_video"), tiny_settings("dlib"))
    answer = comfy.queue(with_inputs(prompt, {"7": {"model": placeholder}}))
    text = json.dumps(answer["node_errors"]["7"])
    assert "No model file is selected: place a diffusers Wan2.1-VACE folder" in text
    assert "set components_from" not in text  # not taken for a single-file transformer


@pytest.mark.comfy
def test_native_lora_defaults_to_none_and_lists_faithfulfaces_loras_first(comfy):
    loras = Path(comfy.models_dir) / "loras"
    other = loras / "aaa_unrelated_style.safetensors"
    dangling = loras / "aab_dangling.safetensors"
    import torch
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(other))
    dangling.symlink_to(loras / "gone.safetensors")
    try:
        spec = comfy.get("/object_info/FaithfulFacesNativeWanPatch")["FaithfulFacesNativeWanPatch"]
        lora = spec["input"]["required"]["lora"]
        options = lora[1]["options"] if lora[0] == "COMBO" else lora[0]
        assert lora[1]["default"] == "none" and options[0] == "none"
        ours = [o for o in options[1:] if o.startswith("faithfulfaces_lora")]
        assert ours and options[1:1 + len(ours)] == ours
        assert options.index(other.name) > len(ours)
        assert dangling.name not in options
    finally:
        other.unlink()
        os.unlink(dangling)
