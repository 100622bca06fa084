"""``python -m faithfulfaces_core.references IMAGE... --k 4 --out DIR``: pick reference faces.

Writes the chosen crops (``reference_01.png`` …, in the order picked), ``coverage.png`` and
``references.json`` (every face with its pose, sharpness, identity distance and verdict).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import FaithfulFacesError
from ..eval.cli import BACKENDS, load_backend, load_image
from .coverage import MAX_REFERENCES
from .pick import POLICIES, PickResult, PickSettings

REPORT_FILE = "references.json"
PLOT_FILE = "coverage.png"


def build_parser() -> argparse.ArgumentParser:
    d = PickSettings()
    parser = argparse.ArgumentParser(prog="python -m faithfulfaces_core.references",
                                     description="Choose K reference faces of one person that cover the head poses.")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="photos or extracted frames of one person")
    parser.add_argument("--k", type=int, default=d.k, help=f"faces to choose, 1..{MAX_REFERENCES} (default {d.k})")
    parser.add_argument("--out", metavar="DIR", default="references", help="output folder (default ./references)")
    parser.add_argument("--backend", choices=BACKENDS, default="insightface",
                        help="insightface (needs --insightface-pack and --pose-weights) or the no-download dlib")
    parser.add_argument("--insightface-pack", metavar="DIR")
    parser.add_argument("--pose-weights", metavar="FILE")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--multiple-faces", choices=POLICIES, default=d.multiple_faces)
    parser.add_argument("--min-face", type=int, default=d.min_face, help=f"pixels (default {d.min_face})")
    parser.add_argument("--min-sharpness", type=float, default=d.min_sharpness,
                        help=f"variance of the Laplacian at 112×112 (default {d.min_sharpness:g})")
    parser.add_argument("--crop-size", type=int, default=d.crop_size)
    return parser


def report(result: PickResult) -> dict:
    """Every face and its verdict, JSON-ready."""
    chosen = {id(c): n + 1 for n, c in enumerate(result.chosen)}
    faces = [{"image": c.pose.image_name, "box": [round(float(v), 1) for v in c.pose.face.box],
              "pitch": c.pose.angles.pitch, "yaw": c.pose.angles.yaw, "roll": c.pose.angles.roll,
              "sharpness": c.sharpness, "identity_distance": c.identity_distance, "rejected": c.reason,
              "chosen": chosen.get(id(c))} for c in result.candidates]
    return {"images": result.images, "embedding": result.embedding, "metric": result.metric,
            "threshold": result.threshold, "coverage_deg": result.coverage, "counts": result.counts(),
            "dropped_images": {str(i): r for i, r in result.dropped.items()}, "faces": faces}


def run(args: argparse.Namespace) -> PickResult:
    from PIL import Image

    from .pick import pick_reference_faces
    from .plot import plot_coverage

    images = [load_image(p) for p in args.images]
    detector, estimator = load_backend(args.backend, insightface_pack=args.insightface_pack,
                                       pose_weights=args.pose_weights, device=args.device)
    settings = PickSettings(k=args.k, multiple_faces=args.multiple_faces, min_face=args.min_face,
                            min_sharpness=args.min_sharpness, crop_size=args.crop_size)
    result = pick_reference_faces(images, detector, estimator, settings, names=[Path(p).name for p in args.images],
                                  progress=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for n, c in enumerate(result.chosen):
        Image.fromarray(c.reference).save(out / f"reference_{n + 1:02d}.png")
    Image.fromarray(plot_coverage(result)).save(out / PLOT_FILE)
    (out / REPORT_FILE).write_text(json.dumps(report(result), indent=2, ensure_ascii=False))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except FaithfulFacesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.summary())
    print(f"wrote {len(result.chosen)} reference crops, {PLOT_FILE} and {REPORT_FILE} to {args.out}")
    return 0
