"""Convert the released 6DRepNet ``.pth`` into safetensors and/or ONNX.

    python -m faithfulfaces_core.pose.convert models/faithfulfaces/6DRepNet_300W_LP_AFLW2000.pth

writes ``6DRepNet_300W_LP_AFLW2000.safetensors`` and ``.onnx`` beside it (or where
``--safetensors`` / ``--onnx`` say). Training checkpoints are re-parameterised on the way.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import EXIT_OK, run_command
from .sixdrepnet import export_sixdrepnet_onnx, load_sixdrepnet, save_sixdrepnet


def convert(source: Path, *, safetensors: Path | None, onnx: Path | None) -> list[Path]:
    """Load ``source`` (.pth or .safetensors) and write the requested conversions."""
    model = load_sixdrepnet(source)
    written = []
    if safetensors is not None:
        written.append(save_sixdrepnet(model, safetensors, source=source.name))
    if onnx is not None:
        written.append(export_sixdrepnet_onnx(model, onnx))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "source", type=Path, help="6DRepNet_300W_LP_AFLW2000.pth (or a .safetensors conversion)"
    )
    parser.add_argument(
        "--safetensors", type=Path, default=None, help="output .safetensors (default: beside source)"
    )
    parser.add_argument("--onnx", type=Path, default=None, help="output .onnx (default: beside source)")
    parser.add_argument(
        "--only", choices=("safetensors", "onnx"), default=None, help="write just one of the two"
    )
    args = parser.parse_args(argv)
    st = args.safetensors or args.source.with_suffix(".safetensors")
    ox = args.onnx or args.source.with_suffix(".onnx")
    if args.only == "onnx" or st == args.source:
        st = None
    if args.only == "safetensors":
        ox = None

    def body() -> int:
        for path in convert(args.source, safetensors=st, onnx=ox):
            print(f"wrote {path}")
        return EXIT_OK

    return run_command(body, interrupted="interrupted")


if __name__ == "__main__":
    raise SystemExit(main())
