"""Bad input as a careless or hostile user gives it: through the real server and the command-line tools.

Every case asserts the pack's own message (what is wrong and what to do) and that nothing is
lost or left poisoned: a refused or failed run leaves the cached pipeline exactly as it was.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faithfulfaces_core.errors import FaithfulFacesError
from faithfulfaces_core.numbers import finite_number

pytestmark = pytest.mark.comfy

NAN, INF = float("nan"), float("inf")


def tiny_models() -> dict[str, str]:
    from faithfulfaces_core.tiny.modelset import LORA_FILE
    from faithfulfaces_core.tiny.wan import TINY_FOLDER

    return {"model": f"diffusers/{TINY_FOLDER}", "lora": LORA_FILE}


def video_prompt(prefix: str, *, strength: float = 1.0, **sampler) -> dict:
    """Load pipeline → LoRA → sampler (no reference, no pose token) → SaveImage of the frames."""
    names = tiny_models()
    settings = {"width": 32, "height": 32, "length": 5, "steps": 2, "cfg": 5.0, "seed": 3,
                "reference_strength": 1.0, "pose_strength": 1.0, "pose_start": 0.0, "pose_end": 1.0,
                "pose_on_negative": False, **sampler}
    return {
        "1": {"class_type": "FaithfulFacesLoadVACEPipeline",
              "inputs": {"model": names["model"], "components_from": names["model"], "dtype": "fp32",
                         "device": "cpu", "offload": "none", "vae_tiling": False, "attention": "default"}},
        "2": {"class_type": "FaithfulFacesApplyLoRA",
              "inputs": {"vace_pipeline": ["1", 0], "lora": names["lora"], "strength": strength}},
        "3": {"class_type": "FaithfulFacesVACESampler",
              "inputs": {"vace_pipeline": ["2", 0], "prompt": "a face", "negative_prompt": "blurry", **settings}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": f"bad_input/{prefix}"}},
    }


def run_raw(comfy, prompt: dict, timeout: float = 600) -> dict:
    """Queue ``prompt`` as a JSON text with ``NaN``/``Infinity`` literals (what a hostile client can send)."""
    import json

    import requests

    body = json.dumps({"prompt": prompt, "client_id": comfy.client_id}, allow_nan=True)
    answer = requests.post(comfy.url + "/prompt", data=body, headers={"Content-Type": "application/json"},
                           timeout=60).json()
    assert "prompt_id" in answer, answer
    try:
        return comfy.wait(answer["prompt_id"], timeout=timeout)
    finally:
        # A NaN literal left in /history breaks the browser's JSON.parse for every later page load.
        comfy.post("/history", {"delete": [answer["prompt_id"]]})


def frames_of(comfy, entry: dict) -> np.ndarray:
    from PIL import Image

    assert entry["status"]["status_str"] == "success", entry["status"]
    files = sorted(f for f in comfy.output_files(entry) if f.suffix == ".png")
    assert files, entry
    return np.stack([np.asarray(Image.open(f)) for f in files])


def execution_error(entry: dict) -> str:
    errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert errors, f"expected an execution error, got {entry['status']}"
    return errors[0]["exception_message"]


# --- the shared number check ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [NAN, INF, -INF, "1.0", None, True])
def test_finite_number_refuses_what_is_not_a_finite_number(value):
    with pytest.raises(FaithfulFacesError, match=r"LoRA strength .* is not allowed: use a finite number from 0 to 2"):
        finite_number(value, "LoRA strength", low=0, high=2)


def test_finite_number_keeps_numbers_in_range():
    assert finite_number(np.float32(0.5), "x", low=0, high=1) == 0.5
    assert finite_number(3, "x") == 3.0 and isinstance(finite_number(3, "x"), float)
    with pytest.raises(FaithfulFacesError, match="from 0 to 1"):
        finite_number(1.5, "x", low=0, high=1)


# --- NaN never poisons the cached pipeline (diffusers path, through the server) -----------------------


@pytest.fixture(scope="module")
def fresh_frames(comfy) -> np.ndarray:
    return frames_of(comfy, comfy.run(video_prompt("fresh"), timeout=600))


@pytest.mark.parametrize(("strength", "sampler", "message"), [
    (NAN, {}, r"LoRA strength nan is not allowed: use a finite number from 0 to 2"),
    (1.0, {"reference_strength": NAN}, r"conditioning_scale \(reference strength\) nan is not allowed"),
    (1.0, {"cfg": NAN}, r"guidance_scale \(cfg\) nan is not allowed"),
    (1.0, {"pose_strength": NAN}, r"Pose strength nan is not allowed"),
    (1.0, {"pose_start": NAN}, r"Pose start nan is not allowed"),
    (1.0, {"pose_end": NAN}, r"Pose end nan is not allowed"),
])
def test_nan_is_refused_and_the_next_run_is_unchanged(comfy, fresh_frames, strength, sampler, message):
    import re

    entry = run_raw(comfy, video_prompt("nan", strength=strength, **sampler))
    assert entry["status"]["status_str"] == "error"
    assert re.search(message, execution_error(entry)), execution_error(entry)
    after = frames_of(comfy, comfy.run(video_prompt("after"), timeout=600))
    np.testing.assert_array_equal(after, fresh_frames)


# --- a failed or refused run leaves the cached pipeline as it was (diffusers path, core) ----------------

GEN = dict(prompt="a face", negative_prompt="blurry", width=32, height=32, num_frames=5, steps=2,
           guidance_scale=5.0, seed=11)


@pytest.fixture(scope="module")
def lora_pipe(tmp_path_factory):
    """The tiny pipeline with a random LoRA whose scaling alpha/rank = 0.75 (not a power of two)."""
    from faithfulfaces_core.tiny.native import randomize_lora
    from faithfulfaces_core.tiny.wan import build_tiny_pipeline
    from faithfulfaces_core.wan import lora as wan_lora
    from faithfulfaces_core.wan.loading import load_pipeline

    tiny = build_tiny_pipeline(tmp_path_factory.mktemp("bad_input_wan"), seed=0)
    pipe = load_pipeline(tiny.diffusers_dir, device="cpu")
    wan_lora.add_lora(pipe.transformer, wan_lora.LoraSpec(rank=4, alpha=3.0))
    randomize_lora(pipe.transformer, seed=2, std=0.5)
    pipe.tiny = tiny
    return pipe


def scalings(pipe) -> list[dict]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [dict(m.scaling) for m in pipe.transformer.modules() if isinstance(m, BaseTunerLayer)]


def test_lora_scale_and_failed_runs_leave_the_cached_pipeline_exactly_as_it_was(lora_pipe):
    from faithfulfaces_core.wan.generate import GenerationCancelled, generate

    before = scalings(lora_pipe)
    assert before and all(set(v.values()) == {0.75} for v in before)
    first = generate(lora_pipe, lora_scale=0.7, **GEN).frames
    assert scalings(lora_pipe) == before  # x·0.7/0.7 is not x in floating point: restored, not divided back

    def cancel_after_first_step(calls=[0]) -> bool:  # noqa: B006 - a counter across the calls of one run
        calls[0] += 1
        return calls[0] > 1

    with pytest.raises(GenerationCancelled):
        generate(lora_pipe, lora_scale=0.7, cancel=cancel_after_first_step, **GEN)
    for bad in ({"lora_scale": NAN}, {"conditioning_scale": INF}, {"guidance_scale": NAN}, {"pose_end": NAN}):
        with pytest.raises(FaithfulFacesError, match="is not allowed: use a finite number"):
            generate(lora_pipe, **{**GEN, **bad})
    assert scalings(lora_pipe) == before
    np.testing.assert_array_equal(generate(lora_pipe, lora_scale=0.7, **GEN).frames, first)


def test_a_video_of_nan_pixels_is_an_error_not_a_success(lora_pipe):
    from faithfulfaces_core.wan.generate import check_decoded_frames, generate
    from faithfulfaces_core.wan.loading import load_pipeline

    pipe = load_pipeline(lora_pipe.tiny.diffusers_dir, device="cpu")
    with torch.no_grad():
        pipe.transformer.proj_out.weight[0, 0] = NAN
    with pytest.raises(FaithfulFacesError, match=r"non-finite pixels .* Use dtype bf16 or fp32"):
        generate(pipe, **GEN)
    with pytest.raises(FaithfulFacesError, match="one constant value"):
        check_decoded_frames(np.zeros((5, 32, 32, 3), np.float32))
    check_decoded_frames(np.random.default_rng(0).random((5, 32, 32, 3), dtype=np.float32))


@pytest.mark.parametrize("bad", [{"lora_strength": NAN}, {"strength": NAN}, {"start": INF}, {"end": NAN}])
def test_native_patch_refuses_non_finite_numbers_before_touching_the_model(bad):
    from faithfulfaces_core.native import patch_native_model

    with pytest.raises(FaithfulFacesError, match="is not allowed: use a finite number"):
        patch_native_model(object(), None, lora_path="unused.safetensors", **bad)


# --- untrusted aligner metadata allocates nothing; NaN weights are refused at load (server) -----------


def identity_prompt(aligner: str, image: str) -> dict:
    """Portrait → dlib face + pose → pose token from ``aligner`` → sampler → SaveImage."""
    from faithfulfaces_core.tiny.modelset import FAKE_PACK, POSE_FILE

    prompt = video_prompt("aligner")
    prompt.update({
        "10": {"class_type": "LoadImage", "inputs": {"image": image}},
        "11": {"class_type": "FaithfulFacesLoadFaceDetector",
               "inputs": {"backend": "dlib-hog", "insightface_pack": FAKE_PACK, "provider": "auto", "det_size": 640}},
        "12": {"class_type": "FaithfulFacesLoadPoseEstimator",
               "inputs": {"backend": "dlib-landmarks", "weights": POSE_FILE, "device": "cpu"}},
        "13": {"class_type": "FaithfulFacesFacePose",
               "inputs": {"image": ["10", 0], "face_detector": ["11", 0], "pose_estimator": ["12", 0],
                          "multiple_faces": "largest", "enlarge": 1.5}},
        "14": {"class_type": "FaithfulFacesLoadAligner", "inputs": {"aligner": aligner, "device": "cpu"}},
        "15": {"class_type": "FaithfulFacesPoseToken", "inputs": {"face_pose": ["13", 0], "aligner": ["14", 0]}},
    })
    prompt["3"]["inputs"]["pose_token"] = ["15", 0]
    return prompt


@pytest.fixture(scope="module")
def portrait(comfy) -> str:
    import shutil

    from faithfulfaces_core.demo import reference_photo

    shutil.copyfile(reference_photo(), comfy.input_dir / "bad_input_portrait.png")
    return "bad_input_portrait.png"


def hostile_aligner(comfy, name: str, *, config: dict | None = None, poison: bool = False) -> str:
    """The tiny aligner's tensors with a rewritten metadata config and/or one NaN weight."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from faithfulfaces_core.tiny.modelset import ALIGNER_FILE

    folder = comfy.models_dir / "faithfulfaces"
    with safe_open(str(folder / ALIGNER_FILE), framework="pt") as fh:
        metadata = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    if config:
        metadata["faithfulfaces.config"] = json.dumps({**json.loads(metadata["faithfulfaces.config"]), **config})
    if poison:
        key = next(k for k in sorted(tensors) if tensors[k].is_floating_point() and tensors[k].numel() > 1)
        tensors[key] = tensors[key].clone()
        tensors[key].view(-1)[1] = NAN
    save_file(tensors, str(folder / name), metadata=metadata)
    return name


def peak_rss_since_reset(pid: int):
    """Reset the process's peak resident size (``clear_refs`` 5), then read ``VmHWM`` back in bytes."""
    from pathlib import Path

    def read() -> int:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024

    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return read


@pytest.mark.parametrize(("config", "message"), [
    ({"dictionary_size": 2 ** 20}, r"dictionary_size must be a positive integer of at most 65536, got 1048576"),
    ({"dictionary_size": 2 ** 62}, r"dictionary_size must be a positive integer of at most 65536"),
    ({"token_dim": 2 ** 40}, r"token_dim must be a positive integer of at most 16384"),
    ({"mlp_ratio": 1e30}, r"mlp_ratio must lie in \(0, 16\]"),
    ({"dictionary_size": 65536, "dim": 1024}, r"aligner key '.*' has shape \(.*\), expected \(.*1024.*\)"),
])
def test_aligner_metadata_is_checked_before_anything_is_allocated(comfy, portrait, config, message):
    import re

    name = hostile_aligner(comfy, f"hostile_{abs(hash(str(config)))}.safetensors", config=config)
    peak = peak_rss_since_reset(comfy.process.pid)
    before = peak()
    entry = comfy.run(identity_prompt(name, portrait), timeout=600)
    text = execution_error(entry)
    assert re.search(message, text), text
    assert "Storage size" not in text and "\x1b[" not in text
    assert peak() - before < 128 * 2 ** 20  # the claimed 65536 x 1024 dictionary alone would be 256 MiB


def test_an_aligner_with_nan_weights_is_refused_at_load(comfy, portrait):
    name = hostile_aligner(comfy, "hostile_nan_weights.safetensors", poison=True)
    text = execution_error(comfy.run(identity_prompt(name, portrait), timeout=600))
    assert "holds 1 NaN or infinite value(s)" in text and "Use an earlier checkpoint or re-train" in text, text


# --- curation workers die with their parent; SIGTERM stops a build like Ctrl-C (CLI) -------------------

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def children_of(pid: int) -> list[int]:
    from pathlib import Path

    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def slow_corpus(tmp_path_factory):
    from faithfulfaces_core.tiny.scripted import write_gray_video

    videos = tmp_path_factory.mktemp("slow_corpus")
    for i in range(12):
        write_gray_video(videos / f"clip{i:02d}.mp4", [16, 24, 16, 24])
        (videos / f"clip{i:02d}.txt").write_text("a person\n")
    return videos


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_killing_the_build_ends_its_workers_and_releases_stdout(slow_corpus, tmp_path, sig):
    import json
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    box = [[16, 16, 48, 48]]
    command = [
        sys.executable, str(REPO / "training" / "build_dataset.py"), "build", str(slow_corpus),
        "--out", str(tmp_path / "dataset"), "--workers", "2", "--every", "1", "--no-progress", "--identity", "off",
        "--detector", "faithfulfaces_core.tiny.scripted:ScriptedDetector",
        "--detector-arg", "faces=" + json.dumps({"16": box, "24": box}), "--detector-arg", "delay=0.3",
        "--pose", "faithfulfaces_core.tiny.scripted:ScriptedPoseEstimator",
        "--pose-arg", 'angles={"16": [0, 0, 0], "24": [40, 50, 30]}', "--pose-arg", "input_size=32",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 90
        while len(children_of(proc.pid)) < 3 and time.monotonic() < deadline:  # 2 workers + resource tracker
            time.sleep(0.1)
        while not (tmp_path / "dataset" / "done.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = children_of(proc.pid)
        assert len(workers) >= 3 and proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.poll() else ""
        proc.send_signal(getattr(signal, sig))
        out: list[bytes] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read() + proc.stderr.read()), daemon=True)
        reader.start()
        reader.join(timeout=60)
        assert not reader.is_alive(), "stdout/stderr still held open 60 s after the parent was killed"
        deadline = time.monotonic() + 20
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in workers if alive(p)], "workers outlived their parent"
        proc.wait(timeout=20)
        if sig == "SIGTERM":
            assert proc.returncode == 130, out
            assert b"interrupted: finished videos are saved; rerun the same command to resume" in out[0]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the session this test started, if anything is left
        except ProcessLookupError:
            pass


# --- training and file writing (CLI) ----------------------------------------------------------------------

TRAIN = REPO / "training" / "train_lora.py"
DISK_FULL = """
import runpy, sys
import safetensors.torch as st
from safetensors import SafetensorError
real = st.save_file
def full(tensors, filename, metadata=None):
    if "step-" in str(filename):
        open(filename, "wb").write(b"partial")
        raise SafetensorError('Error while serializing: IoError(Os {{ code: 28, kind: StorageFull, '
                              'message: "No space left on device" }})')
    return real(tensors, filename, metadata=metadata)
st.save_file = full
sys.argv = ["train_lora.py", *{args!r}]
runpy.run_path({script!r}, run_name="__main__")
"""


def train_cli(*args: str, code: str | None = None, timeout: float = 300):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    command = [sys.executable, "-c", code] if code else [sys.executable, str(TRAIN), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


@pytest.mark.parametrize(("option", "message"), [
    ("optim.learning_rate=Infinity", "optim.learning_rate: Input should be a finite number"),
    ("optim.learning_rate=NaN", "optim.learning_rate: Input should be a finite number"),
    ("optim.learning_rate=10", "optim.learning_rate: Input should be less than or equal to 1"),
    ("objective.flow_shift=-Infinity", "objective.flow_shift: Input should be a finite number"),
    ("objective.infonce_weight=NaN", "objective.infonce_weight: Input should be a finite number"),
    ("data.min_pose_difference=Infinity", "data.min_pose_difference: Input should be a finite number"),
])
def test_non_finite_training_numbers_are_refused_up_front(option, message):
    result = train_cli("--set", option, "model.diffusers_dir=/x", "data.dataset_dir=/y", "--print-config")
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert "--resume" not in result.stderr and "Traceback" not in result.stderr


def test_an_output_dir_under_a_file_is_the_packs_error(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    result = train_cli("--set", "model.diffusers_dir=/x", "data.dataset_dir=/y",
                       f"run.output_dir={tmp_path / 'a_file' / 'run'}", timeout=120)
    assert result.returncode == 1, result.stderr
    assert f"{tmp_path / 'a_file'} is a file, not a folder. Choose another output folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_full_disk_at_a_checkpoint_is_the_packs_error_and_stale_temporaries_go(tmp_path):
    from faithfulfaces_core.tiny.wan import build_tiny_pipeline
    from faithfulfaces_core.training.synthetic import tiny_overrides, write_synthetic_dataset

    tiny = build_tiny_pipeline(tmp_path / "models", seed=0)
    dataset = write_synthetic_dataset(tmp_path / "ds", identities=4, crops_per_identity=4, frames=9)
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".faithfulfaces_lora.safetensors.k1ll3d.tmp"  # what a kill during the final export leaves
    stale.write_bytes(b"half a LoRA")
    args = ["--no-progress", "--set", *tiny_overrides(tiny.diffusers_dir, dataset, out, run__max_steps=2,
                                                       run__checkpoint_every=1)]
    result = train_cli(code=DISK_FULL.format(args=args, script=str(TRAIN)))
    assert result.returncode == 1, result.stderr[-3000:]
    assert "the disk is full (no space left on device). Nothing already written was changed" in result.stderr
    assert "free some space or choose an output folder on another disk" in result.stderr
    assert "Traceback" not in result.stderr
    assert not stale.exists()
    assert not [p for p in out.rglob("*.tmp") if p.is_file()]  # the failed write removed its temporary file


def test_written_files_respect_the_umask(tmp_path):
    import os
    import stat

    from faithfulfaces_core.checkpoints import atomic_write, save_checkpoint

    before = os.umask(0o027)
    try:
        path = save_checkpoint(tmp_path / "a.safetensors", {"w": torch.ones(2)}, kind="test", format=1, config={})
        text = atomic_write(tmp_path / "manifest.jsonl", lambda tmp: open(tmp, "w").write("{}\n"))
    finally:
        os.umask(before)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and stat.S_IMODE(text.stat().st_mode) == 0o640
    os.chmod(text, 0o604)
    atomic_write(text, lambda tmp: open(tmp, "w").write("{}\n"))  # a replaced file keeps its mode
    assert stat.S_IMODE(text.stat().st_mode) == 0o604


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"echo {self.marker}",))


def test_a_pth_that_pickles_code_is_refused_in_the_packs_words(comfy, portrait):
    marker = "ff-bad-input-code-ran"
    torch.save({"model_state_dict": _RunsCode(marker)}, comfy.models_dir / "faithfulfaces" / "hostile_code.pth")
    prompt = identity_prompt(__import__("faithfulfaces_core.tiny.modelset", fromlist=["x"]).ALIGNER_FILE, portrait)
    prompt["12"]["inputs"].update({"backend": "6drepnet", "weights": "hostile_code.pth"})
    text = execution_error(comfy.run(prompt, timeout=600))
    assert "hostile_code.pth is not a plain state dict: it pickles Python code or objects (posix.system), " \
           "which FaithfulFaces never runs" in text, text
    assert "\x1b[" not in text and "two options" not in text and "weights_only` set to `False`" not in text
    assert marker not in comfy.log()


# --- a truncated MP4 whose index is at the start: warned about and recorded (CLI and evaluation) ---------


def truncated_faststart_mp4(path, frames: int = 55, keep: float = 0.4):
    """An MP4 whose index (moov) precedes the data, cut to ``keep`` of its bytes: it opens and declares
    ``frames`` frames, but only the first part decodes."""
    import av

    levels = [16 if i % 2 == 0 else 24 for i in range(frames)]
    rng = np.random.default_rng(0)
    whole = path.with_name("whole_" + path.name)
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        for level in levels:
            image = np.full((64, 64, 3), level, np.uint8)
            image[:4] = rng.integers(0, 255, (4, 64, 3), dtype=np.uint8)  # some bytes in every frame
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = whole.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    whole.unlink()
    return path


def test_a_truncated_video_is_warned_about_and_recorded_in_curation(tmp_path):
    import json
    import os
    import subprocess
    import sys

    videos = tmp_path / "videos"
    videos.mkdir()
    truncated_faststart_mp4(videos / "cut.mp4")
    (videos / "cut.txt").write_text("a person\n")
    box = [[16, 16, 48, 48]]
    result = subprocess.run([
        sys.executable, str(REPO / "training" / "build_dataset.py"), "build", str(videos),
        "--out", str(tmp_path / "dataset"), "--every", "1", "--no-progress", "--threshold", "10", "--identity", "off",
        "--detector", "faithfulfaces_core.tiny.scripted:ScriptedDetector",
        "--detector-arg", "faces=" + json.dumps({"16": box, "24": box}),
        "--pose", "faithfulfaces_core.tiny.scripted:ScriptedPoseEstimator",
        "--pose-arg", 'angles={"16": [0, 0, 0], "24": [40, 50, 30]}', "--pose-arg", "input_size=32",
    ], capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    done = json.loads((tmp_path / "dataset" / "done.jsonl").read_text().splitlines()[0])
    assert done["frames_declared"] == 55 and 0 < done["frames_decoded"] < 55, done
    assert (f"cut.mp4 is truncated: only {done['frames_decoded']} of the 55 frames its header declares could be "
            "decoded") in result.stderr


def test_a_truncated_video_is_warned_about_in_evaluation(tmp_path):
    from faithfulfaces_core.dataset.decode import TruncatedVideoWarning
    from faithfulfaces_core.eval.video import read_sampled_frames

    path = truncated_faststart_mp4(tmp_path / "cut.mp4")
    with pytest.warns(TruncatedVideoWarning, match=r"cut.mp4 is truncated: only \d+ of the 55 frames"):
        sampled = read_sampled_frames(path, 16)
    assert sampled.frames_declared == 55 and 0 < sampled.frames_total < 55


def test_a_nan_face_box_enlargement_is_refused(comfy, portrait):
    """Infinity already fails ComfyUI's own max check; NaN passes it and reaches the pack."""
    from faithfulfaces_core.tiny.modelset import ALIGNER_FILE

    prompt = identity_prompt(ALIGNER_FILE, portrait)
    prompt["13"]["inputs"]["enlarge"] = NAN
    text = execution_error(run_raw(comfy, prompt))
    assert "The face-box enlargement nan is not allowed: use a finite number ≥ 0 (the paper uses 1.5)" in text
