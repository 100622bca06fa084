"""Shared fixtures: a real ComfyUI server (session-wide) and its log on failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from faithfulfaces_core.host import ComfyServer, start_comfyui


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
def text_conditioning(comfy):
    """Swap a workflow's CLIPLoader + two CLIPTextEncode nodes for ``FFTestConditioning`` nodes.

    Returns ``swap(prompt, clip="9", positive="10", negative="11")``, which edits ``prompt`` in
    place: the two encoders become nodes reading random prompt embeddings ``[1, 12, 4096]`` (the
    width UMT5-XXL gives) from the server's input folder; their consumers keep their links.
    """
    import torch
    from safetensors.torch import save_file

    from faithfulfaces_core.tiny.wan import TINY_TRANSFORMER_CONFIG

    gen = torch.Generator().manual_seed(3)
    files = {}
    for name in ("positive", "negative"):
        files[name] = f"ff_test_{name}_embeds.safetensors"
        embeds = torch.randn(1, 12, TINY_TRANSFORMER_CONFIG["text_dim"], generator=gen)
        save_file({"embeds": embeds}, comfy.input_dir / files[name])

    def swap(prompt: dict, clip: str = "9", positive: str = "10", negative: str = "11") -> dict:
        assert prompt[clip]["class_type"] == "CLIPLoader", prompt[clip]
        del prompt[clip]
        for node, name in ((positive, "positive"), (negative, "negative")):
            assert prompt[node]["class_type"] == "CLIPTextEncode", prompt[node]
            prompt[node] = {"class_type": "FFTestConditioning", "inputs": {"file": files[name]}}
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
