#!/usr/bin/env python
"""Train the FaithfulFaces LoRA and the pose-shared identity aligner jointly, headless.

    python training/train_lora.py --config train.yaml [--set SECTION.KEY=VALUE ...] [--resume [CHECKPOINT]]
    accelerate launch --multi_gpu --num_processes 8 training/train_lora.py --config train.yaml
    accelerate launch --config_file fsdp_14b.yaml training/train_lora.py --config train.yaml

L = L_flow_matching (Wan2.1-VACE, reference face as the VACE reference image, global pose tokens
injected) + λ·L_InfoNCE (two crops of one identity at different poses). Trains the LoRA, the
pose-token projection and the aligner; the base model stays frozen. The config file may be
YAML, TOML or JSON; --set overrides single options (values parse as JSON when they can).
Writes to run.output_dir: config.json, train.log, metrics.jsonl, loss_curve.png,
data_report.json, checkpoints/step-N/ (resume with --resume) and, at the end,
faithfulfaces_aligner.safetensors, faithfulfaces_lora.safetensors (diffusers layout) and
faithfulfaces_lora_comfy.safetensors (original Wan layout for ComfyUI). See docs/training.md.

exit status: 0 done, 1 error (bad config, data or model; the message says what to change),
2 usage error, 3 stopped by --stop-after-step, 4 diverged (NaN/inf loss; the last good checkpoint
is kept), 130 interrupted (resume with --resume).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from faithfulfaces_core.cli import EXIT_DIVERGED, EXIT_OK, EXIT_STOPPED, run_command  # noqa: E402
from faithfulfaces_core.training.config import load_config, options_help  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_lora.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="options (SECTION.KEY = default, then what it does):\n" + options_help(),
    )
    parser.add_argument("--config", metavar="FILE", help="YAML (.yaml/.yml), TOML (.toml) or JSON (.json) config file")
    parser.add_argument("--set", metavar="SECTION.KEY=VALUE", nargs="+", action="extend", default=[],
                        help="override options, e.g. --set data.batch_size=2 optim.learning_rate=5e-5")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                        help="continue from the newest checkpoint in run.output_dir, or from CHECKPOINT")
    parser.add_argument("--stop-after-step", type=int, metavar="N",
                        help="stop abruptly after step N, as a kill would (same as --set run.stop_after_step=N)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines still go to the terminal)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = list(args.set)
    if args.stop_after_step is not None:
        overrides.append(f"run.stop_after_step={args.stop_after_step}")

    def body() -> int:
        config = load_config(args.config, overrides)
        if args.print_config:
            print(config.to_json())
            return EXIT_OK
        from faithfulfaces_core.training.trainer import StopRequested, TrainingDiverged, train

        try:
            train(config, resume=args.resume, progress=not args.no_progress)
        except StopRequested as exc:
            print(exc, file=sys.stderr)
            return EXIT_STOPPED
        except TrainingDiverged as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_DIVERGED
        return EXIT_OK

    return run_command(body, interrupted="interrupted; resume with --resume (from the last checkpoint)")


if __name__ == "__main__":
    sys.exit(main())
