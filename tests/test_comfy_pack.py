"""The pack inside a real ComfyUI server: it loads, registers every node, and survives missing extras."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap

import pytest

from faithfulfaces_core.host import PACK_ROOT, default_comfyui_dir, start_comfyui

pytestmark = pytest.mark.comfy


def pack_node_ids() -> set[str]:
    """Node ids declared in nodes/*.py, read from the source (independent of the running server)."""
    ids = set()
    for path in (PACK_ROOT / "nodes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "node_id" and isinstance(node.value, ast.Constant):
                ids.add(node.value.value)
    return ids


def import_failures(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if ("IMPORT FAILED" in line or "Cannot import" in line) and "custom_nodes/faithfulfaces" in line]


def test_pack_loads_and_every_node_is_registered(comfy, object_info):
    assert import_failures(comfy.log()) == []
    expected = pack_node_ids()
    assert len(expected) >= 8
    ours = {name: info for name, info in object_info.items() if name.startswith("FaithfulFaces")}
    assert set(ours) == expected
    for name, info in ours.items():
        assert info["category"].startswith("FaithfulFaces/"), name
        assert info["python_module"].startswith("custom_nodes."), name
    # ComfyUI's own Wan nodes are there too: the host is a complete ComfyUI.
    for core_node in ("WanVaceToVideo", "SaveVideo", "CreateVideo", "UNETLoader", "KSampler"):
        assert core_node in object_info


def test_web_extension_is_served(comfy):
    extensions = comfy.get("/extensions")
    assert any(e.endswith("/faithfulfaces.js") and "faithfulfaces" in e for e in extensions), extensions


def test_import_is_cheap():
    """Importing the pack's node modules builds no model and imports no heavy library."""
    code = textwrap.dedent(
        f"""
        import sys, types
        # a minimal stand-in for ComfyUI's folder_paths, so nodes/ imports outside a server
        fp = types.ModuleType("folder_paths"); fp.models_dir = "/nonexistent"
        fp.folder_names_and_paths = {{}}
        fp.get_folder_paths = lambda name: fp.folder_names_and_paths.get(name, ([],))[0]
        fp.add_model_folder_path = lambda n, p, is_default=False: None
        sys.modules["folder_paths"] = fp
        sys.path.insert(0, {str(default_comfyui_dir())!r})
        import importlib.util
        spec = importlib.util.spec_from_file_location(
            "faithfulfaces_pack", {str(PACK_ROOT / "__init__.py")!r},
            submodule_search_locations=[{str(PACK_ROOT)!r}])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["faithfulfaces_pack"] = mod
        spec.loader.exec_module(mod)
        heavy = [m for m in ("diffusers", "transformers", "insightface", "onnxruntime", "dlib", "cv2", "peft")
                 if m in sys.modules]
        print("HEAVY", heavy)
        print("NODES", len(mod.nodes.NODES) if hasattr(mod, "nodes") else "none")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout
    assert re.search(r"NODES \d+", out.stdout), out.stdout


HIDE_MODULES = textwrap.dedent(
    """
    import importlib.machinery
    import sys

    HIDDEN = {hidden!r}

    class _Missing:
        def create_module(self, spec):
            return None

        def exec_module(self, module):
            raise ModuleNotFoundError(f"No module named '{{module.__name__}}'", name=module.__name__)

    class _Hide:
        # A spec whose import fails as a missing package does (find_spec callers still work).
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HIDDEN:
                return importlib.machinery.ModuleSpec(name, _Missing())
            return None

    sys.meta_path.insert(0, _Hide())
    """
)


def test_pack_loads_without_optional_packages(tmp_path):
    """With insightface, onnxruntime and dlib hidden, the pack loads; their nodes say what to install."""
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_MODULES.format(hidden=["insightface", "onnxruntime", "dlib"]))
    base = tmp_path / "comfy"
    pack = base / "models" / "insightface" / "models" / "antelopev2"
    pack.mkdir(parents=True)
    (pack / "scrfd_10g_bnkps.onnx").write_bytes(b"not used: insightface is hidden")
    server = start_comfyui(base, env={"PYTHONPATH": str(hide)})
    try:
        log = server.log()
        assert import_failures(log) == [], log
        info = server.get("/object_info")
        assert pack_node_ids() <= set(info)
        # empty model folders: each loader's list says what to place where (the web extension shows it)
        aligner_options = info["FaithfulFacesLoadAligner"]["input"]["required"]["aligner"][1]["options"]
        assert aligner_options == ["(none found) place a FaithfulFaces aligner .safetensors in models/faithfulfaces/"]
        lora_options = info["FaithfulFacesApplyLoRA"]["input"]["required"]["lora"][1]["options"]
        assert lora_options == ["(none found) place a FaithfulFaces LoRA in models/loras/"]

        cases = {
            "insightface": ({"backend": "insightface", "insightface_pack": "antelopev2"},
                            "pip install insightface"),
            "dlib-hog": ({"backend": "dlib-hog", "insightface_pack": "antelopev2"},
                         "pip install -r requirements-offline.txt"),
        }
        for backend, (inputs, advice) in cases.items():
            prompt = {
                "1": {"class_type": "FaithfulFacesLoadFaceDetector",
                      "inputs": {**inputs, "provider": "auto", "det_size": 640}},
                "2": {"class_type": "FaithfulFacesLoadPoseEstimator",
                      "inputs": {"backend": "dlib-landmarks", "weights": "none", "device": "cpu"}},
                "3": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
                "4": {"class_type": "FaithfulFacesFacePose",
                      "inputs": {"image": ["3", 0], "face_detector": ["1", 0], "pose_estimator": ["2", 0],
                                 "multiple_faces": "largest", "enlarge": 1.5}},
                "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 5]}},
            }
            entry = server.run(prompt, timeout=120)
            assert entry["status"]["status_str"] == "error", backend
            messages = [m for m in entry["status"]["messages"] if m[0] == "execution_error"]
            assert messages, entry
            text = messages[0][1]["exception_message"]
            assert advice in text, text
            assert "is not installed" in text, text
    finally:
        server.stop()


def test_comfyui_reads_the_supported_versions_from_pyproject(comfy_dir):
    """``[tool.comfy] requires-comfyui`` is the key ComfyUI's own registry parser reads."""
    code = (
        f"import sys, json; sys.path.insert(0, {str(comfy_dir)!r})\n"
        "from comfy_config.config_parser import extract_node_configuration\n"
        f"config = extract_node_configuration({str(PACK_ROOT)!r})\n"
        "print(json.dumps({'comfyui': config.project.supported_comfyui_version,"
        " 'web': config.tool_comfy.web, 'publisher': config.tool_comfy.publisher_id}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "comfyui": ">=0.3.75", "web": "web", "publisher": "faithfulfaces"}


PATCHER_METHODS = ("clone", "get_model_object", "add_wrapper_with_key", "set_model_patch_replace", "add_patches")


def test_the_dynamic_vram_patcher_keeps_the_methods_the_native_patch_uses(comfy_dir):
    """On NVIDIA, 2026 ComfyUI wraps models in ``ModelPatcherDynamic`` (DynamicVRAM) by default.

    It cannot be built here: its constructor allocates comfy_aimdo host buffers, whose native
    library needs the NVIDIA driver, and on a CPU load device it hands back a plain
    ``ModelPatcher``. What the native patch relies on is checked instead: the class inherits
    every patcher method the patch calls unchanged (the patch calls the blocks' modules, so the
    weights DynamicVRAM casts per call, LoRA included, are the ones it sees).
    """
    code = (
        f"import sys, json; sys.path.insert(0, {str(comfy_dir)!r}); sys.argv = [sys.argv[0], '--cpu']\n"
        "import comfy.options; comfy.options.enable_args_parsing()\n"
        "import comfy.model_patcher as mp\n"
        "dynamic = getattr(mp, 'ModelPatcherDynamic', None)\n"
        f"print(json.dumps(None if dynamic is None else [m for m in {PATCHER_METHODS!r} if m in vars(dynamic)]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    overridden = json.loads(result.stdout.strip().splitlines()[-1])
    if overridden is None:
        pytest.skip("this ComfyUI has no ModelPatcherDynamic (added in 2026 releases)")
    assert overridden == []
