"""Shared fixtures: a real ComfyUI server (session-wide) and its log on failure."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from faithfulfaces_core.host import PACK_ROOT, ComfyServer, start_comfyui

NATIVE_SAMPLING_PREAMBLE = textwrap.dedent(
    """
    import json, sys
    comfy_dir, pack_root, work = sys.argv[1:4]
    sys.path[:0] = [comfy_dir, pack_root]
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import torch, comfy.sd, comfy.samplers, comfy.model_management, comfy.utils, comfy.context_windows as cw
    from pathlib import Path
    from safetensors.torch import load_file, save_file
    from faithfulfaces_core.native import patch_native_model, pose_patch

    work = Path(work)
    spec = json.loads((work / "spec.json").read_text())
    data = load_file(str(work / "inputs.safetensors"))
    base = comfy.sd.load_diffusion_model(spec["model"])
    cond_extra = {"vace_frames": [data["vace_frames"]], "vace_mask": [data["vace_mask"]], "vace_strength": [1.0]}
    positive = [[data["positive"], dict(cond_extra)]]
    negative = [[data["negative"], dict(cond_extra)]]
    """
)


def pytest_runtest_makereport(item, call):
    """Append the ComfyUI server log to the report of a failed test that used a server."""
    if call.when != "call" or call.excinfo is None:
        return
    for value in getattr(item, "funcargs", {}).values():
        if isinstance(value, ComfyServer):
            item.add_report_section("call", "comfyui log", value.log()[-8000:])


@pytest.fixture(scope="session")
def comfy_base(tmp_path_factory) -> Path:
    """The server's base directory; tests write their tiny models here before it starts."""
    return tmp_path_factory.mktemp("comfy")


@pytest.fixture(scope="session")
def comfy(comfy_base) -> ComfyServer:
    """A real ComfyUI (``main.py --cpu``) on a free loopback port, with this pack loaded."""
    from faithfulfaces_core.tiny.modelset import write_tiny_model_set

    write_tiny_model_set(comfy_base / "models")
    test_node = Path(__file__).parent / "comfy_nodes" / "ff_test_conditioning.py"
    (comfy_base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    (comfy_base / "custom_nodes" / test_node.name).symlink_to(test_node)
    server = start_comfyui(comfy_base, env={"FF_TEST_SERVER": "1"})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def object_info(comfy) -> dict:
    return comfy.get("/object_info")


@pytest.fixture(scope="session")
def tiny_native_settings() -> dict[str, dict]:
    """Widget values that point a native example workflow at the tiny native files: dlib faces (real
    detection and PnP pose, no download), the tiny aligner, Wan transformer file, ComfyUI-layout LoRA, VAE."""
    from faithfulfaces_core.tiny import modelset
    from faithfulfaces_core.tiny import native as tiny_native
    from faithfulfaces_core.tiny.wan import TINY_FILE

    return {
        "2": {"backend": "dlib-hog"},
        "3": {"backend": "dlib-landmarks"},
        "5": {"aligner": modelset.ALIGNER_FILE},
        "7": {"unet_name": TINY_FILE},
        "8": {"lora": modelset.LORA_COMFY_FILE},
        "12": {"vae_name": tiny_native.VAE_FILE},
    }


@pytest.fixture(scope="session")
def without_text_encoder(comfy):
    """``swap(prompt, name, seed)``: a native example workflow (API format) whose CLIPLoader (node 9) and
    text encodes (10, 11) give way to the test-only ``FFTestConditioning`` node (``tests/comfy_nodes``),
    which reads random prompt embeddings ``[1, 12, 4096]`` (the width UMT5-XXL gives; the tiny model set
    has no UMT5 file) from the input folder; node 13's positive / negative links stay as they are.

    The files ``<name>_positive`` / ``<name>_negative.safetensors`` are written once per ``name``, from ``seed``.
    """
    import torch
    from safetensors.torch import save_file

    from faithfulfaces_core.tiny.wan import TINY_TRANSFORMER_CONFIG

    written: dict[str, dict[str, str]] = {}

    def files(name: str, seed: int) -> dict[str, str]:
        gen = torch.Generator().manual_seed(seed)
        out = {}
        for side in ("positive", "negative"):
            out[side] = f"{name}_{side}.safetensors"
            embeds = torch.randn(1, 12, TINY_TRANSFORMER_CONFIG["text_dim"], generator=gen)
            save_file({"embeds": embeds}, comfy.input_dir / out[side])
        return out

    def swap(prompt: dict, name: str, seed: int) -> dict:
        if name not in written:
            written[name] = files(name, seed)
        assert prompt["9"]["class_type"] == "CLIPLoader" and prompt["10"]["inputs"]["clip"] == ["9", 0]
        assert prompt["13"]["inputs"]["positive"] == ["10", 0] and prompt["13"]["inputs"]["negative"] == ["11", 0]
        prompt = copy.deepcopy(prompt)
        del prompt["9"]
        for node, side in (("10", "positive"), ("11", "negative")):
            prompt[node] = {"class_type": "FFTestConditioning", "inputs": {"file": written[name][side]}}
        return prompt

    return swap


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread, and test numbers do not depend on the core count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def comfy_dir() -> Path:
    """The ComfyUI checkout that scripts/setup.sh provisioned (tests that run its code in a subprocess)."""
    from faithfulfaces_core.host import default_comfyui_dir

    path = default_comfyui_dir()
    assert (path / "comfy" / "ldm" / "wan" / "model.py").is_file(), f"no ComfyUI checkout at {path}: run make setup"
    return path


@pytest.fixture(scope="session")
def comfy_script():
    """``run(script, comfy_dir, *args, stdin=None, timeout=300)``: ``python -c script comfy_dir *args`` from
    the pack root (ComfyUI's modules stay out of this session), and the JSON of the last ``RESULT `` line
    it printed; a failed run, or one that printed no result, fails the test with its stderr."""

    def run(script: str, comfy_dir: Path, *args: Any, stdin: str | None = None, timeout: int = 300) -> Any:
        proc = subprocess.run([sys.executable, "-c", script, str(comfy_dir), *(str(a) for a in args)], input=stdin,
                              capture_output=True, text=True, timeout=timeout, cwd=PACK_ROOT)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, proc.stderr[-6000:]
        return json.loads(lines[-1][len("RESULT "):])

    return run


@pytest.fixture(scope="session")
def native_sampling(comfy_dir, comfy_script):
    """``run(work, body, spec, *, seed, frames, reference_frame=False)`` for the native patch inside ComfyUI's own sampling code.

    Writes random sampling inputs (pose tokens ``[1, 3, W]`` and ``[1, 2, W]``, prompt embeddings
    ``[1, 7, 4096]``, noise and latent ``[1, 16, frames, 4, 4]``, VACE frames ``[1, 32, ...]`` and mask
    ``[1, 64, ...]``, 0 on the first frame with ``reference_frame``) and ``spec`` (``spec["model"]``: the transformer file) to ``work``, then runs
    ``NATIVE_SAMPLING_PREAMBLE`` (``base``, ``positive``, ``negative``, ``data``, ``spec`` ...) followed
    by ``body``, which saves its tensors to ``work / "out.safetensors"`` and prints ``RESULT <json>``.
    Returns (that JSON, those tensors, the inputs).
    """
    import torch
    from safetensors.torch import load_file, save_file

    from faithfulfaces_core.tiny.wan import TINY_TRANSFORMER_CONFIG, TINY_WIDTH

    def run(work: Path, body: str, spec: dict, *, seed: int, frames: int,
            reference_frame: bool = False) -> tuple[Any, dict, dict]:
        gen = torch.Generator().manual_seed(seed)
        side, text, text_dim = 4, 7, TINY_TRANSFORMER_CONFIG["text_dim"]
        inputs = {
            "tokens": torch.randn(1, 3, TINY_WIDTH, generator=gen),
            "tokens2": torch.randn(1, 2, TINY_WIDTH, generator=gen),
            "positive": torch.randn(1, text, text_dim, generator=gen),
            "negative": torch.randn(1, text, text_dim, generator=gen),
            "noise": torch.randn(1, 16, frames, side, side, generator=gen),
            "latent": torch.randn(1, 16, frames, side, side, generator=gen),
            "vace_frames": torch.randn(1, 32, frames, side, side, generator=gen),
            "vace_mask": torch.rand(1, 64, frames, side, side, generator=gen),
        }
        if reference_frame:  # the first latent frame is a VACE reference, as WanVaceToVideo writes it
            inputs["vace_mask"][:, :, 0] = 0
        save_file(inputs, str(work / "inputs.safetensors"))
        (work / "spec.json").write_text(json.dumps(spec))
        results = comfy_script(NATIVE_SAMPLING_PREAMBLE + textwrap.dedent(body), comfy_dir, PACK_ROOT, work)
        return results, load_file(str(work / "out.safetensors")), inputs

    return run
