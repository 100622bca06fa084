#!/usr/bin/env python
"""Instruction-count ratios (valgrind callgrind) of the pose-token injection and the LoRA.

Wall time on a shared machine moves by ±7 %, more than the effects measured here; the number of
instructions a process executes does not depend on the load. Each condition runs in its own
process under ``valgrind --tool=callgrind --instr-atstart=no``: imports, model building and a
warm-up call run uninstrumented (instrumenting a torch import alone takes over ten minutes); a
two-function C helper, compiled here against ``valgrind/callgrind.h``, switches instrumentation on
for the ``N`` measured forward calls only, so callgrind's ``Collected`` count is theirs. The model is a
``WanVACETransformer3DModel`` with one transformer block (and its VACE block) at Wan2.1-1.3B's
width (12 heads × 128 = 1536, FFN 8960, 4096-wide text) on ≥ 1.5k video tokens; one torch thread.

Valgrind emulates fused multiply-add slowly (about 5 M instructions/s on MKL's AVX2 kernels:
over two hours per condition here), so the children run MKL, oneDNN and ATen on their SSE
kernels (``KERNEL_ENV``): 12× less time per FLOP under valgrind, the same arithmetic in more
instructions.
The counts are therefore those of an SSE build, larger than an AVX-512 run executes; the ratios
between conditions, which compare the same kernels, are the figure.

    python benchmarks/bench_instructions.py            # real width (valgrind: slow, minutes per condition)
    python benchmarks/bench_instructions.py --tiny     # small width (still a torch import under valgrind)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import _common

# SSE kernels everywhere (see the module docstring); one thread, so the count is one stream's
KERNEL_ENV = {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41", "ATEN_CPU_CAPABILITY": "default",
              "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

CONDITIONS = {
    "plain": "plain transformer",
    "tokens": "pose-token injection, 4 tokens (strength 1)",
    "lora": "LoRA rank 128, unfused",
    "lora_fused": "LoRA rank 128, fused into the weights",
    "plain_again": "plain transformer again, another process (the count's own spread)",
}


def child(args) -> None:
    import torch
    from diffusers import WanVACETransformer3DModel

    from faithfulfaces_core.wan.injection import install_pose_injection
    from faithfulfaces_core.wan.lora import LoraSpec, add_lora

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=args.heads, attention_head_dim=128, in_channels=16,
        out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=args.ffn, num_layers=1, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024, vace_layers=[0], vace_in_channels=96,
    ).eval()
    t, h, w = args.frames, args.side, args.side
    inputs = dict(hidden_states=torch.randn(1, 16, t, h, w), control_hidden_states=torch.randn(1, 96, t, h, w),
                  timestep=torch.tensor([500.0]), encoder_hidden_states=torch.randn(1, args.text, 4096),
                  return_dict=False)
    if args.child == "tokens":
        install_pose_injection(model).set_tokens(torch.randn(1, 4, args.heads * 128))
    if args.child in ("lora", "lora_fused"):
        add_lora(model, LoraSpec(rank=128))
    if args.child == "lora_fused":
        model.fuse_lora(lora_scale=1.0)
    import ctypes

    probe = ctypes.CDLL(args.probe)
    with torch.no_grad():
        model(**inputs)  # warm-up, uninstrumented
        probe.ff_start()
        for _ in range(args.calls):
            model(**inputs)
        probe.ff_stop()
    print(json.dumps({"video_tokens": t * (h // 2) * (w // 2)}))


PROBE_C = """#include <valgrind/callgrind.h>
void ff_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void ff_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
"""


def build_probe(folder: str) -> str:
    """The shared library whose two functions switch callgrind's instrumentation on and off."""
    source, library = os.path.join(folder, "probe.c"), os.path.join(folder, "probe.so")
    with open(source, "w") as fh:
        fh.write(PROBE_C)
    subprocess.run(["cc", "-shared", "-fPIC", "-O1", source, "-o", library], check=True)
    return library


def instructions(args, condition: str, probe: str) -> int:
    """Instructions callgrind collected during the child's measured forward calls."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={tmp}/cg.out",
               sys.executable, __file__, "--probe", probe,
               "--child", condition, "--calls", str(args.calls), "--heads", str(args.heads), "--ffn", str(args.ffn),
               "--frames", str(args.frames), "--side", str(args.side), "--text", str(args.text)]
        env = dict(os.environ, **KERNEL_ENV)
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        found = re.findall(r"Collected\s*:\s*(\d+)", done.stderr)
        if done.returncode != 0 or not found:
            raise RuntimeError(f"callgrind run of '{condition}' failed (exit {done.returncode}): "
                               f"{done.stderr.strip().splitlines()[-3:]}")
        print(f"  {condition}: {int(found[-1]):,} instructions "
              f"({time.perf_counter() - start:.0f} s under valgrind)", flush=True)
        return int(found[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=12, help="attention heads of width 128 (1.3B: 12)")
    parser.add_argument("--ffn", type=int, default=8960)
    parser.add_argument("--frames", type=int, default=4, help="latent frames")
    parser.add_argument("--side", type=int, default=40, help="latent height = width (tokens: frames·(side/2)²)")
    parser.add_argument("--text", type=int, default=64, help="text tokens")
    parser.add_argument("--calls", type=int, default=1, help="measured forward calls N")
    parser.add_argument("--jobs", type=int, default=2, help="valgrind processes at a time")
    parser.add_argument("--conditions", nargs="+", choices=list(CONDITIONS), default=list(CONDITIONS),
                        help="a subset (plain is always run: the ratios are to it)")
    parser.add_argument("--child", choices=list(CONDITIONS), help=argparse.SUPPRESS)
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    _common.add_tiny_flag(parser)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if _common.is_tiny(args):
        args.heads, args.ffn, args.frames, args.side, args.text = 1, 256, 1, 8, 8
    seq = args.frames * (args.side // 2) ** 2
    print(f"one-block WanVACETransformer3DModel, width {args.heads * 128}, ffn {args.ffn}, {seq} video tokens, "
          f"{args.text} text tokens; instructions of {args.calls} forward call(s) after a warm-up; "
          f"{_common.machine()}")
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        probe = build_probe(tmp)
        chosen = ["plain"] + [c for c in CONDITIONS if c in args.conditions and c != "plain"]
        counts = dict(zip(chosen, pool.map(lambda c: instructions(args, c, probe), chosen), strict=True))
    per_call = {c: counts[c] / args.calls for c in chosen}
    print()
    print("| condition | instructions per forward call | vs plain |")
    print("|---|---:|---:|")
    for c in chosen:
        label = CONDITIONS[c]
        ratio = per_call[c] / per_call["plain"]
        print(f"| {label} | {per_call[c]:,.0f} | {ratio:.5f} ({(ratio - 1) * 100:+.3f} %) |")
        if c != "plain":
            _common.summary("instructions", f"{label} vs plain (callgrind, {seq} tokens, width {args.heads * 128})",
                            f"{ratio:.5f}", note="instruction-count ratio, load-independent")


if __name__ == "__main__":
    main()
