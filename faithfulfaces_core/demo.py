"""The quick-start job: the identity-video workflow in a real, headless ComfyUI on tiny models.

``python -m faithfulfaces_core.demo`` (``make demo``) writes a tiny, randomly initialised
model set into the server's models folders, copies a real photograph that an installed
package ships into its input folder, queues ``workflows/api/faithfulfaces_identity_video.json``
through ``POST /prompt`` and prints where the MP4 and the pose preview are. Nothing is
downloaded. Faces and head pose come from the no-download dlib backend, so detection and
angles are real; the aligner and the video model are random, so the video is noise.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from .host import PACK_ROOT, ComfyServer, start_comfyui

WORKFLOWS = PACK_ROOT / "workflows"
REFERENCE_NAME = "faithfulfaces_reference.png"
PHOTO_NAMES = ("faithfulfaces_photo_1.png", "faithfulfaces_photo_2.png", "faithfulfaces_photo_3.png")  # several refs


def reference_photo() -> Path:
    """Tom Hanks' portrait from InsightFace's wheel (a real, single, frontal face)."""
    from .tiny.photos import PORTRAIT, photo_path

    return photo_path(*PORTRAIT)


def load_api_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def tiny_settings(face_backend: str = "dlib", *, width: int = 128, height: int = 128, length: int = 17,
                  steps: int = 4) -> dict[str, dict]:
    """Widget values that point the identity-video workflow at the tiny model set.

    ``face_backend``: ``dlib`` (real detection and PnP pose, no download) or ``tiny`` (the fake
    InsightFace pack + random 6DRepNet, which finds a face wherever a white patch marks it).
    """
    from .tiny.modelset import ALIGNER_FILE, FAKE_PACK, LORA_FILE, POSE_FILE
    from .tiny.wan import TINY_FOLDER

    if face_backend == "dlib":
        faces = {"2": {"backend": "dlib-hog", "insightface_pack": FAKE_PACK},
                 "3": {"backend": "dlib-landmarks", "weights": POSE_FILE}}
    else:
        faces = {"2": {"backend": "insightface", "insightface_pack": FAKE_PACK},
                 "3": {"backend": "6drepnet", "weights": POSE_FILE}}
    model = f"diffusers/{TINY_FOLDER}"
    return {
        **faces,
        "5": {"aligner": ALIGNER_FILE},
        "7": {"model": model, "components_from": model},
        "8": {"lora": LORA_FILE},
        "9": {"width": width, "height": height, "length": length, "steps": steps},
    }


def prepare(base: Path) -> None:
    """Tiny models into ``base/models`` (once) and the reference photo into ``base/input``."""
    from .tiny.modelset import write_tiny_model_set

    stamp = base / "models" / ".tiny-model-set"
    if not stamp.exists():
        print("[demo] writing the tiny, randomly initialised model set (labelled TINY_RANDOM_MODELS.txt)")
        write_tiny_model_set(base / "models")
        stamp.write_text("written by faithfulfaces_core.demo\n")
    (base / "input").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(reference_photo(), base / "input" / REFERENCE_NAME)


def run_demo(base: Path) -> dict[str, Path]:
    """Run the identity-video workflow; returns the written files by kind (``video``, ``preview``)."""
    from .workflow import with_inputs

    prepare(base)
    print(f"[demo] starting ComfyUI (headless, CPU) with base directory {base}")
    server: ComfyServer = start_comfyui(base)
    try:
        prompt = with_inputs(load_api_workflow("faithfulfaces_identity_video"), tiny_settings("dlib"))
        started = time.monotonic()
        entry = server.run(prompt, timeout=900)
        if entry["status"]["status_str"] != "success":
            errors = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
            raise SystemExit(f"[demo] the workflow failed: {errors[0]['exception_message'] if errors else entry['status']}")
        print(f"[demo] workflow finished in {time.monotonic() - started:.1f} s")
        files = list(server.output_files(entry))
    finally:
        server.stop()
    return {
        "video": next(f for f in files if f.suffix == ".mp4"),
        "preview": next(f for f in files if "pose_preview" in f.name),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PACK_ROOT / "out" / "demo",
                        help="ComfyUI base directory for the demo (models, input, output)")
    args = parser.parse_args(argv)
    files = run_demo(args.out.resolve())
    print()
    print(f"  video (MP4):        {files['video']}")
    print(f"  pose preview (PNG): {files['preview']}")
    print()
    print("The video comes from TINY RANDOM models, so it is noise; face detection and head pose are real (dlib).")
    print("For real results place the real files (README → Models) in your ComfyUI models folders and load")
    print(f"{WORKFLOWS / 'faithfulfaces_identity_video.json'} in ComfyUI (drag and drop, or Browse Templates).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
