"""Cost of context windows per video frame: a long video in windows vs one window, on CPU.

Times one transformer call (what a denoising pass costs) of a randomly initialised
WanVACETransformer3DModel of Wan2.1-1.3B's width on three inputs, each with 1 reference frame
in front: one window of ``--window`` latent frames (a plain 81-frame video), the long video of
``--frames`` latent frames in windows of ``--window`` with ``--overlap`` (``run_windows``: what
``generate(context_frames=...)`` does), and the long video as one call over all its frames.
Reports the median CPU time (``time.process_time``, one torch thread) per call and per latent
video frame, and the ratios to one window. Rounds alternate the three conditions in a random
order, so the load of other jobs on a shared machine spreads evenly.

    python benchmarks/bench_windows.py              # 41 latent frames (161 video frames), windows of 21 / overlap 4
    python benchmarks/bench_windows.py --quick
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import _common  # noqa: E402  (puts the repository on the import path)


def build(args):
    import torch
    from diffusers import WanVACETransformer3DModel

    torch.manual_seed(0)
    return WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=args.heads, attention_head_dim=128, in_channels=16,
        out_channels=16, text_dim=64, freq_dim=256, ffn_dim=args.ffn, num_layers=args.layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
        vace_layers=[0], vace_in_channels=96,
    ).eval()


def inputs(frames: int, side: int) -> dict:
    import torch

    gen = torch.Generator().manual_seed(1)
    return dict(
        hidden_states=torch.randn(1, 16, frames, side, side, generator=gen),
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 16, 64, generator=gen),
        control_hidden_states=torch.randn(1, 96, frames, side, side, generator=gen),
        control_hidden_states_scale=torch.ones(1),
        return_dict=False,
    )


def main(argv=None) -> int:
    import torch

    from faithfulfaces_core.wan.windows import ContextWindows, run_windows

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=41, help="latent video frames of the long video (41 = 161 frames)")
    parser.add_argument("--window", type=int, default=21, help="latent frames per window (21 = 81 frames)")
    parser.add_argument("--overlap", type=int, default=4, help="latent frames of overlap (4 = 16 frames)")
    parser.add_argument("--side", type=int, default=8, help="latent height = width (8 = 64 pixels)")
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--ffn", type=int, default=8960)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    _common.add_tiny_flag(parser)
    args = parser.parse_args(argv)
    if _common.is_tiny(args):
        args.frames, args.window, args.overlap, args.side, args.heads, args.ffn, args.layers = 5, 3, 1, 4, 1, 64, 1
        args.quick = True
    rounds = 2 if args.quick else args.rounds
    torch.set_num_threads(1)
    model = build(args)
    spec = ContextWindows(args.window, args.overlap)
    windows = len(spec.windows(args.frames))
    cases = {
        "one window": (args.window, lambda x: model(**x)),
        f"{windows} windows": (args.frames, lambda x: (run_windows(model.forward, x, spec, reference_frames=1),)),
        "one call, all frames": (args.frames, lambda x: model(**x)),
    }
    data = {name: inputs(1 + frames, args.side) for name, (frames, _) in cases.items()}
    times = {name: [] for name in cases}
    with torch.no_grad():
        for name, (_, run) in cases.items():  # warm-up
            run(data[name])
        for _ in range(rounds):
            for name in random.sample(list(cases), len(cases)):
                start = time.process_time()
                cases[name][1](data[name])
                times[name].append(time.process_time() - start)
    base = statistics.median(times["one window"]) / args.window
    print(_common.machine())
    print(f"width {args.heads * 128}, {args.layers} blocks, latent {args.side}×{args.side} "
          f"({args.side ** 2 // 4} tokens a frame), 1 reference frame, windows of {args.window} overlap {args.overlap}, "
          f"{rounds} rounds, 1 CPU thread")
    print(f"{'input':<24}{'latent frames':>14}{'s per call':>12}{'ms per frame':>14}{'× one window':>14}")
    for name, (frames, _) in cases.items():
        per_call = statistics.median(times[name])
        print(f"{name:<24}{frames:>14}{per_call:>12.3f}{1000 * per_call / frames:>14.1f}{per_call / frames / base:>14.2f}")
        _common.summary("windows", f"{name}: time per frame", f"{per_call / frames / base:.2f} × one window")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
