"""A headless ComfyUI server driven through its HTTP API (the demo and the end-to-end tests).

This starts ComfyUI as a *subprocess* and talks HTTP/websocket to it; it never imports
ComfyUI, so the core stays free of it. The server gets its own base directory (models,
custom_nodes, input, output, user), a free loopback port and a log file.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FaithfulFacesError

PACK_ROOT = Path(__file__).resolve().parents[1]
PACK_DIRNAME = "faithfulfaces"


def default_comfyui_dir() -> Path:
    """The ComfyUI checkout that ``scripts/setup.sh`` provisioned (or ``$FF_COMFYUI``)."""
    if os.environ.get("FF_COMFYUI"):
        return Path(os.environ["FF_COMFYUI"])
    marker = Path(sys.prefix) / "comfyui-path"
    if marker.is_file():
        return Path(marker.read_text().strip())
    raise FaithfulFacesError(
        "No ComfyUI checkout found: run `bash scripts/setup.sh` (or `make setup`) first, or set "
        "FF_COMFYUI to the folder that holds ComfyUI's main.py."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ComfyServer:
    """A running ComfyUI; use :func:`start_comfyui` to make one and :meth:`stop` to end it."""

    base_dir: Path
    port: int
    process: subprocess.Popen
    log_path: Path
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def models_dir(self) -> Path:
        return self.base_dir / "models"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, **kwargs: Any) -> Any:
        import requests

        response = requests.get(self.url + path, timeout=kwargs.pop("timeout", 60), **kwargs)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, payload: Mapping[str, Any] | None = None) -> Any:
        import requests

        response = requests.post(self.url + path, json=payload, timeout=60)
        return response

    def queue(self, prompt: Mapping[str, Any], *, strict_combos: bool = True) -> dict[str, Any]:
        """``POST /prompt``; returns the JSON answer (``prompt_id`` and/or ``error``/``node_errors``).

        With ``strict_combos`` the prompt is first held to the rule of 2026 ComfyUI releases
        (every dropdown value in its list unless the node validates that input itself), so a
        prompt that only an older server would take fails here, whichever server runs.
        """
        if strict_combos:
            schemas = {c: self.get(f"/object_info/{c}").get(c, {}) for c in _class_types(prompt)}
            problems = combo_violations(prompt, schemas, self_validated_inputs())
            if problems:
                raise FaithfulFacesError("ComfyUI 2026 releases would refuse this prompt: " + "; ".join(problems))
        response = self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})
        body = response.json()
        body["status_code"] = response.status_code
        body.setdefault("node_errors", {})
        return body

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict[str, Any]:
        """Poll ``/history`` until the prompt finished (success or error); returns its entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited while running {prompt_id}:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s")

    def run(self, prompt: Mapping[str, Any], timeout: float = 600.0) -> dict[str, Any]:
        """Queue ``prompt`` and wait for it; raises with the server's message if it was refused."""
        answer = self.queue(prompt)
        if "prompt_id" not in answer or answer["node_errors"]:
            raise RuntimeError(f"ComfyUI refused (part of) the prompt: {json.dumps(answer, indent=1)}")
        return self.wait(answer["prompt_id"], timeout=timeout)

    def output_files(self, entry: Mapping[str, Any]) -> Iterator[Path]:
        """Every file a finished prompt wrote to the output folder (images, videos, ...)."""
        for node_output in entry.get("outputs", {}).values():
            for items in node_output.values():
                if not isinstance(items, list):
                    continue
                for item in items:
                    if isinstance(item, dict) and "filename" in item and item.get("type") == "output":
                        yield self.output_dir / item.get("subfolder", "") / item["filename"]

    def listen(self) -> WebsocketLog:
        """Start recording the server's websocket messages for this client (progress, status, ...)."""
        return WebsocketLog(f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# Core inputs whose nodes check the value themselves (ComfyUI's LoadImage validates its file).
CORE_SELF_VALIDATED = {"LoadImage": {"image"}, "LoadImageMask": {"image"}}


def self_validated_inputs(nodes_dir: Path = PACK_ROOT / "nodes") -> dict[str, set[str]]:
    """node_id → the inputs its ``validate_inputs`` names, read from the pack's source with ``ast``.

    ComfyUI skips its own list check for exactly those inputs; reading them from the source
    keeps this table from drifting from the nodes.
    """
    import ast

    found = {k: set(v) for k, v in CORE_SELF_VALIDATED.items()}
    for file in sorted(nodes_dir.glob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ClassDef):
                node_id = _schema_node_id(node)
                names = [a.arg for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "validate_inputs"
                         for a in f.args.args[1:]]
                if node_id and names:
                    found[node_id] = set(names)
    return found


def _schema_node_id(cls: Any) -> str | None:
    import ast

    for call in ast.walk(cls):
        if isinstance(call, ast.Call):
            for kw in call.keywords:
                if kw.arg == "node_id" and isinstance(kw.value, ast.Constant):
                    return kw.value.value
    return None


def _class_types(prompt: Mapping[str, Any]) -> set[str]:
    return {n["class_type"] for n in prompt.values() if isinstance(n, Mapping) and "class_type" in n}


def _combo_options(spec: Any) -> list | None:
    """The option list of an /object_info input spec, or None when the input is not a dropdown."""
    if not isinstance(spec, list) or not spec:
        return None
    if isinstance(spec[0], list):
        return spec[0]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], Mapping):
        return spec[1].get("options")
    return None


def combo_violations(prompt: Mapping[str, Any], schemas: Mapping[str, Any],
                     self_validated: Mapping[str, set[str]]) -> list[str]:
    """Dropdown values a 2026 ComfyUI would refuse: not in their option list, and not checked by the node."""
    problems = []
    for node_id, node in prompt.items():
        schema, own = schemas.get(node["class_type"], {}), self_validated.get(node["class_type"], set())
        specs = {**schema.get("input", {}).get("required", {}), **schema.get("input", {}).get("optional", {})}
        for name, value in node.get("inputs", {}).items():
            options = _combo_options(specs.get(name))
            if options is None or name in own or isinstance(value, list):
                continue
            if value not in options:
                problems.append(f"node {node_id} ({node['class_type']}): {name} '{value}' is not in {options[:8]}")
    return problems


class WebsocketLog:
    """JSON messages from ComfyUI's websocket, recorded by a background thread until ``close()``."""

    def __init__(self, url: str) -> None:
        import threading

        import websocket

        self.messages: list[dict[str, Any]] = []
        self._socket = websocket.create_connection(url, timeout=30)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                raw = self._socket.recv()
            except Exception:
                return
            if not raw:  # the connection was closed
                return
            if isinstance(raw, str):  # binary frames are preview images
                self.messages.append(json.loads(raw))

    def of_type(self, kind: str, prompt_id: str | None = None) -> list[dict[str, Any]]:
        return [m["data"] for m in list(self.messages)
                if m.get("type") == kind and (prompt_id is None or m["data"].get("prompt_id") == prompt_id)]

    def close(self) -> None:
        self._socket.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> WebsocketLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_comfyui(
    base_dir: str | os.PathLike,
    *,
    comfyui_dir: str | os.PathLike | None = None,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
    timeout: float = 300.0,
) -> ComfyServer:
    """Start ComfyUI on CPU with ``base_dir`` as its base directory and this pack linked in.

    Waits until ``/object_info`` answers. ``env`` entries are added to the server's
    environment (the tests use it to hide optional packages).
    """
    base = Path(base_dir).resolve()
    comfy = Path(comfyui_dir) if comfyui_dir else default_comfyui_dir()
    for sub in ("models", "custom_nodes", "input", "output", "user", "temp"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIRNAME
    if not link.exists():
        link.symlink_to(PACK_ROOT, target_is_directory=True)
    port = port or free_port()
    log_path = base / "comfyui.log"
    cmd = [
        sys.executable, str(comfy / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
        "--base-directory", str(base), "--disable-auto-launch", "--database-url", "sqlite:///:memory:",
        *extra_args,
    ]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    log = open(log_path, "w")  # noqa: SIM115 - handed to the child, closed with the process
    process = subprocess.Popen(cmd, cwd=comfy, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    server = ComfyServer(base_dir=base, port=port, process=process, log_path=log_path)
    _wait_until_ready(server, timeout)
    return server


def _wait_until_ready(server: ComfyServer, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"ComfyUI exited during start-up:\n{server.log()[-6000:]}")
        try:
            if requests.get(server.url + "/object_info", timeout=10).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    server.stop()
    raise TimeoutError(f"ComfyUI did not answer /object_info within {timeout} s:\n{server.log()[-6000:]}")
