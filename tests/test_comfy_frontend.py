"""The served frontend in headless Chromium, with two frontends and both node renderers.

``pinned``: the frontend the host's requirements pin (the installed ``comfyui-frontend-package``),
classic LiteGraph canvas. ``newest``: the newest ``comfyui-frontend-package`` release, which
``scripts/setup.sh`` installs into the cache (``$FF_FRONTEND_NEWEST`` or ``.venv/frontend-newest-path``
names its ``static/`` folder), served with ``main.py --front-end-root`` and Nodes 2.0 (the Vue node
renderer, setting ``Comfy.VueNodes.Enabled``) on. Every UI workflow loads with no missing node and
no console error; a pose run from the browser shows its read-out in either renderer, with the axes
Python computed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from faithfulfaces_core.demo import PHOTO_NAMES, REFERENCE_NAME, WORKFLOWS, reference_photo
from faithfulfaces_core.host import PACK_ROOT, ComfyServer, start_comfyui
from faithfulfaces_core.pose.draw import head_axes_2d

pytestmark = pytest.mark.comfy
ARTIFACTS = PACK_ROOT / "artifacts"
# Console noise that is ComfyUI's own, not the pack's: its frontend asks for optional files and
# looks nodes up in the online registry (unreachable here).
IGNORED_CONSOLE = ("favicon", "/api/userdata", "/user.css", "net::ERR_NAME_NOT_RESOLVED")
# The newest frontend asks the 0.3.75 backend for endpoints it does not have yet (its job-queue
# panel stays empty); nothing the pack draws or queues depends on them.
IGNORED_ON_NEWEST = ("/api/jobs", "JobsApiError", "vite:preloadError")
FRONTENDS = {"pinned": False, "newest": True}  # frontend → Nodes 2.0 on
GIZMO = 72


def newest_frontend_root() -> Path | None:
    if os.environ.get("FF_FRONTEND_NEWEST"):
        return Path(os.environ["FF_FRONTEND_NEWEST"])
    marker = Path(sys.prefix) / "frontend-newest-path"
    return Path(marker.read_text().strip()) if marker.is_file() else None


def need(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI needs {what}: scripts/setup.sh provides it")
    pytest.skip(f"{what} not provisioned (scripts/setup.sh)")


@pytest.fixture(scope="module", params=list(FRONTENDS))
def served(request, comfy, tmp_path_factory) -> tuple[str, ComfyServer]:
    """(frontend name, a server that serves it); the pinned one is the session's server."""
    if request.param == "pinned":
        yield "pinned", comfy
        return
    root = newest_frontend_root()
    if root is None or not (root / "index.html").is_file():
        need("the newest comfyui-frontend-package")
    from faithfulfaces_core.tiny.modelset import write_tiny_model_set

    base = tmp_path_factory.mktemp("comfy_newest_frontend")
    write_tiny_model_set(base / "models")
    server = start_comfyui(base, env={"FF_TEST_SERVER": "1"}, extra_args=("--front-end-root", str(root)))
    yield "newest", server
    server.stop()


@pytest.fixture(scope="module")
def browser(served, tmp_path_factory):
    name, server = served
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        need("Debian's chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1920,1300", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    for setting, value in (("Comfy.TutorialCompleted", True), ("Comfy.VueNodes.Enabled", FRONTENDS[name])):
        assert requests.post(f"{server.url}/settings/{setting}", json=value, timeout=30).ok
    yield driver
    driver.quit()


def wait_for(driver, script: str, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.25)
    raise TimeoutError(f"timed out waiting for: {script}")


def open_workflow(driver, server: ComfyServer, name: str, edit=None) -> dict:
    """Load UI workflow ``name`` (after ``edit(workflow)`` if given) into a fresh page."""
    for target in (REFERENCE_NAME, *PHOTO_NAMES):  # the workflows' LoadImage files
        shutil.copyfile(reference_photo(), server.input_dir / target)
    if driver.current_url.startswith(server.url):
        # the frontend restores the last open workflow from storage, after a load of ours (1.49 raced it)
        driver.execute_script("localStorage.clear(); sessionStorage.clear();")
    driver.get(server.url)
    wait_for(driver, "return !!(window.app && window.app.graph && window.LiteGraph"
                     " && Object.keys(LiteGraph.registered_node_types).length > 400)")
    driver.get_log("browser")  # drop start-up messages
    workflow = json.loads((WORKFLOWS / f"{name}.json").read_text())
    if edit:
        edit(workflow)
    assert driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "window.app.loadGraphData(arguments[0]).then(() => done(true), (e) => done(String(e)));",
        workflow,
    ) is True
    return workflow


def console_errors(driver, frontend: str) -> list[str]:
    ignored = IGNORED_CONSOLE + (IGNORED_ON_NEWEST if frontend == "newest" else ())
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" and not any(s in entry["message"] for s in ignored)]


def renderer(driver) -> str:
    """``vue`` when Nodes 2.0 draws the nodes as DOM elements, else ``classic``."""
    return "vue" if driver.execute_script("return !!document.querySelector('.lg-node[data-node-id]')") else "classic"


@pytest.mark.parametrize("name", sorted(p.stem for p in WORKFLOWS.glob("*.json")))
def test_ui_workflow_loads_in_the_frontend(served, browser, name):
    frontend, server = served
    workflow = open_workflow(browser, server, name)
    state = browser.execute_script(
        "const nodes = window.app.graph._nodes;"
        "return {count: nodes.length, types: nodes.map(n => n.type),"
        " missing: nodes.filter(n => !LiteGraph.registered_node_types[n.type]).map(n => n.type)};"
    )
    assert state["missing"] == []
    assert state["count"] == len(workflow["nodes"])
    assert sorted(state["types"]) == sorted(n["type"] for n in workflow["nodes"])
    assert console_errors(browser, frontend) == []
    assert renderer(browser) == ("vue" if FRONTENDS[frontend] else "classic")
    browser.execute_script(  # a readable zoom from the top-left corner for the screenshot
        "const ds = window.app.canvas.ds; ds.scale = 0.62; ds.offset = [110, 200];"
        "window.app.canvas.setDirty(true, true);"
    )
    time.sleep(1.0)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"frontend_{frontend}_{name}.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def readout(driver, node_id: int) -> dict:
    return driver.execute_script(
        "const el = document.querySelector(`[data-ff-readout='${arguments[0]}']`);"
        "if (!el) return null;"
        "const r = el.getBoundingClientRect();"
        "const c = el.querySelector('canvas.ff-readout-gizmo');"
        "return {text: el.innerText, visible: el.checkVisibility() && r.width > 50 && r.height > 20"
        "  && r.bottom > 0 && r.right > 0 && r.top < innerHeight && r.left < innerWidth,"
        " gizmo: c && c.checkVisibility() ? Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)"
        "  : null};",
        node_id,
    )


def drawn_axis_directions(rgba: list[int], size: int = GIZMO) -> np.ndarray:
    """``[3, 2]`` unit image-plane directions of the red, green and blue strokes of the gizmo."""
    pixels = np.asarray(rgba, np.float64).reshape(size, size, 4)[..., :3]
    ys, xs = np.mgrid[0:size, 0:size]
    directions = []
    for channel in range(3):
        others = [c for c in range(3) if c != channel]
        mask = (pixels[..., channel] > 150) & (pixels[..., others].max(-1) < 110)
        offsets = np.stack([xs[mask], ys[mask]], -1) - (size / 2 - 0.5)
        far = offsets[np.linalg.norm(offsets, axis=-1) > 6]  # off the shared centre
        assert len(far), f"no stroke of colour channel {channel} on the gizmo"
        mean = far.mean(0)
        directions.append(mean / np.linalg.norm(mean))
    return np.stack(directions)


def test_pose_readout_shows_in_the_renderer_with_pythons_axes(served, browser):
    """Queued from the browser: the node shows the angles and draws the axes Python computed."""
    frontend, server = served
    open_workflow(browser, server, "faithfulfaces_pose_inspection")
    assert readout(browser, 4)["visible"]  # the read-out is there before a run, too
    browser.execute_script(  # the no-download backend, as a user without an InsightFace pack would pick
        "const set = (id, name, value) => { window.app.graph.getNodeById(id).widgets"
        "  .find(w => w.name === name).value = value; };"
        "set(2, 'backend', 'dlib-hog'); set(3, 'backend', 'dlib-landmarks');"
        "window.app.queuePrompt(0, 1);"
    )
    pose = wait_for(browser, "return window.app.graph.getNodeById(4).ffPose || null;", timeout=180)
    assert pose["backend"] == "dlib-hog+pnp"
    assert all(abs(pose[k]) < 45 for k in ("pitch", "yaw", "roll"))  # a frontal portrait
    expected = head_axes_2d([pose["pitch"], pose["yaw"], pose["roll"]])
    np.testing.assert_allclose(np.asarray(pose["axes"]), expected, atol=1e-5)
    browser.execute_script("const ds = window.app.canvas.ds; ds.scale = 1.0; ds.offset = [-250, 120];"
                           "window.app.canvas.setDirty(true, true);")
    shown = wait_for(browser, "return (document.querySelector(\"[data-ff-readout='4'] canvas\") || {}).style"
                              "?.display === 'block';")
    assert shown
    time.sleep(1.0)
    view = readout(browser, 4)
    assert view["visible"], f"the read-out is not visible in the {renderer(browser)} renderer"
    for key in ("pitch", "yaw", "roll"):
        assert f"{key}".ljust(5) + f" {pose[key]:.1f}°" in view["text"]
    assert view["gizmo"] is not None
    drawn = drawn_axis_directions(view["gizmo"])
    for axis in range(3):
        length = np.linalg.norm(expected[axis])
        if length > 0.3:  # a foreshortened axis is too short a stroke to read a direction from
            np.testing.assert_allclose(drawn[axis], expected[axis] / length, atol=0.12)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"frontend_{frontend}_{renderer(browser)}_pose_readout.png"))
    assert console_errors(browser, frontend) == []


UNLISTED = {"insightface_pack": "antelopev2", "weights": "6DRepNet_300W_LP_AFLW2000.pth"}  # not placed here


def combos_off_their_list(driver) -> list:
    """``[node type, widget, value]`` of every combo widget whose value is not in its list (drawn red)."""
    return driver.execute_script(
        "return window.app.graph._nodes.flatMap(n => (n.widgets || [])"
        "  .filter(w => Array.isArray(w.options?.values) && !w.options.values.includes(w.value))"
        "  .map(w => [n.type, w.name, w.value]));"
    )


def queue_from_browser(driver, server: ComfyServer) -> str:
    """Press Run (``app.queuePrompt``) and return the id of the prompt the server received."""
    before = set(server.get("/history"))
    driver.execute_script("window.app.queuePrompt(0, 1);")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        queue = server.get("/queue")
        ids = {item[1] for item in queue["queue_running"] + queue["queue_pending"]} | (set(server.get("/history")) - before)
        if ids:
            return ids.pop()
        time.sleep(0.25)
    raise TimeoutError("the browser queued no prompt")


def choose(driver, node_id: int, name: str, value: str) -> None:
    """Pick ``value`` in a widget as a user does: set it and call the widget's callback."""
    driver.execute_script(
        "const w = window.app.graph.getNodeById(arguments[0]).widgets.find(w => w.name === arguments[1]);"
        "w.value = arguments[2]; w.callback?.(w.value);", node_id, name, value)


def test_a_no_download_workflow_flags_nothing_and_runs(served, browser):
    """dlib backends with unplaced files in the unused dropdowns: nothing is flagged, the run succeeds,
    and choosing a backend that reads a dropdown puts its value back."""
    frontend, server = served

    def dlib(workflow: dict) -> None:
        for node in workflow["nodes"]:
            if node["type"] == "FaithfulFacesLoadFaceDetector":
                node["widgets_values"][:2] = ["dlib-hog", UNLISTED["insightface_pack"]]
            if node["type"] == "FaithfulFacesLoadPoseEstimator":
                node["widgets_values"][:2] = ["dlib-landmarks", UNLISTED["weights"]]

    open_workflow(browser, server, "faithfulfaces_pose_inspection", edit=dlib)
    time.sleep(2.0)  # the frontend's missing-model scan runs after loading
    assert combos_off_their_list(browser) == []
    assert "is missing" not in browser.find_element("tag name", "body").text
    saved = browser.execute_script("return window.app.graph.serialize().nodes"
                                   ".map(n => [n.id, n.properties?.faithfulfaces_parked]);")
    assert dict(map(tuple, saved))[2] == {"insightface_pack": UNLISTED["insightface_pack"]}
    assert dict(map(tuple, saved))[3] == {"weights": UNLISTED["weights"]}
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"frontend_{frontend}_{renderer(browser)}_no_download.png"))

    entry = server.wait(queue_from_browser(browser, server), timeout=180)
    assert entry["status"]["status_str"] == "success", entry["status"]

    choose(browser, 3, "backend", "6drepnet")
    assert browser.execute_script("return window.app.graph.getNodeById(3).widgets"
                                  ".find(w => w.name === 'weights').value;") == UNLISTED["weights"]
    assert combos_off_their_list(browser) == [["FaithfulFacesLoadPoseEstimator", "weights", UNLISTED["weights"]]]
    assert console_errors(browser, frontend) == []
