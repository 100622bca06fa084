#!/usr/bin/env python
"""Pose-shared aligner throughput, peak memory and cost split at the paper's K = 4096.

1. Throughput and peak memory for each batch size:
   - forward: B face crops through ``align`` (inference, no gradients);
   - forward + backward: a training step on B identity *pairs* (2B face crops), InfoNCE on the
     two views plus a stand-in gradient into the pose tokens (what the generator sends back).
   Each measurement runs in a fresh process: on CPU "peak" is the growth of the process's peak
   RSS over its RSS after building the model and inputs; on CUDA it is the growth of
   ``torch.cuda.max_memory_allocated``.
2. Cost split of one training step between tokenizer (resize, normalise, patch transformer),
   Euler embedding, dictionary (correlation, max-pool, softmax, G = w·D), token projection and
   loss: the step is cut at the stage boundaries (detached tensors) and every stage's forward and
   backward is timed on its own.
3. ``align()`` chunk size: 1024 faces (``--chunk-faces``) through ``align(batch_size=c)`` for each
   chunk size, interleaved round by round; per-round ratios to ``ALIGN_CHUNK`` (the default);
   beside each, the FLOP floor (FLOPs counted by ``torch.utils.flop_counter`` over this
   machine's measured fp32 GEMM rate).

    python benchmarks/bench_aligner.py [--device cpu] [--dtype fp32] [--batches 1 64 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import _common
import torch

from faithfulfaces_core.aligner import AlignerConfig, PoseSharedAligner, info_nce
from faithfulfaces_core.aligner.inputs import preprocess
from faithfulfaces_core.aligner.model import ALIGN_CHUNK

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MODES = ("forward", "train", "train-ckpt")
STAGES = ("tokenizer", "euler embedding", "dictionary", "projection", "loss")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(args: argparse.Namespace) -> PoseSharedAligner:
    torch.manual_seed(0)
    config = AlignerConfig(dictionary_size=args.dictionary_size, token_dim=args.token_dim)
    return PoseSharedAligner(config).to(device=args.device, dtype=DTYPES[args.dtype])


def make_inputs(n: int, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    crops = torch.rand(n, 3, args.crop_size, args.crop_size, generator=g)
    euler = (torch.rand(n, 3, generator=g) * 2 - 1) * 60
    return crops.to(args.device), euler.to(args.device)


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def train_step(aligner: PoseSharedAligner, crops: torch.Tensor, euler: torch.Tensor) -> None:
    out = aligner(crops, euler)
    g_a, g_b = out.g.chunk(2)
    loss = aligner.contrastive_loss(g_a, g_b)
    torch.autograd.backward([loss, out.tokens], [None, torch.ones_like(out.tokens) / out.tokens.numel()])
    aligner.zero_grad(set_to_none=True)


def worker(args: argparse.Namespace) -> dict:
    """One measurement in this (fresh) process: mode ``forward`` or ``train`` at ``args.batch``."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = torch.device(args.device)
    aligner = build(args)
    faces = args.batch if args.worker == "forward" else 2 * args.batch
    crops, euler = make_inputs(faces, args)
    small = make_inputs(2, args)
    if args.worker == "forward":
        run = lambda c, e: aligner.align(c, e)  # noqa: E731
    else:
        aligner.train()
        aligner.enable_gradient_checkpointing(args.worker == "train-ckpt")
        run = lambda c, e: train_step(aligner, c, e)  # noqa: E731
    run(*small)  # warm-up on a small batch: kernels, allocator, lazy init
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = rss_bytes()
    times: list[float] = []
    while not times or (sum(times) < args.min_time and len(times) < args.max_repeats):
        t0 = time.perf_counter()
        run(crops, euler)
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss_bytes()) - base
    best = min(times)
    return {"faces_per_s": faces / best, "seconds": best, "repeats": len(times), "peak_mib": peak / 2**20}


def stage_split(args: argparse.Namespace, pairs: int) -> dict[str, tuple[float, float]]:
    """Forward and backward seconds of each stage of one training step on ``pairs`` pairs."""
    device = torch.device(args.device)
    aligner = build(args).train()
    cfg = aligner.config
    mean, std = aligner.pixel_mean.float(), aligner.pixel_std.float()
    timings: dict[str, list[float]] = {}

    def timed(stage: str, index: int, fn):
        sync(device)
        t0 = time.perf_counter()
        result = fn()
        sync(device)
        timings.setdefault(stage, [0.0, 0.0])[index] += time.perf_counter() - t0
        return result

    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.detach().requires_grad_(True)

    def step(crops: torch.Tensor, euler: torch.Tensor) -> None:
        faces = timed("tokenizer", 0, lambda: aligner.tokenizer(
            preprocess(crops, cfg.image_size, mean, std).to(aligner.dtype)))
        faces_in = leaf(faces)
        embeddings = timed("euler embedding", 0, lambda: faces_in + aligner.pose_embedding(euler).unsqueeze(1))
        e_in = leaf(embeddings)
        g, _ = timed("dictionary", 0, lambda: aligner.dictionary(e_in))
        g_proj, g_loss = leaf(g), leaf(g)
        tokens = timed("projection", 0, lambda: aligner.projection(g_proj))
        loss = timed("loss", 0, lambda: info_nce(*g_loss.chunk(2), aligner.logit_scale, cfg.logit_scale_max))
        timed("loss", 1, lambda: loss.backward())
        timed("projection", 1, lambda: tokens.backward(torch.ones_like(tokens) / tokens.numel()))
        timed("dictionary", 1, lambda: g.backward(g_proj.grad + g_loss.grad))
        timed("euler embedding", 1, lambda: embeddings.backward(e_in.grad))
        timed("tokenizer", 1, lambda: faces.backward(faces_in.grad))
        aligner.zero_grad(set_to_none=True)

    step(*make_inputs(4, args))  # warm-up on a small batch
    inputs = make_inputs(2 * pairs, args)
    best: dict[str, list[float]] = {}
    for _ in range(3 if pairs <= 256 else 1):  # best of 3 per stage where that is affordable
        timings.clear()
        step(*inputs)
        best = {s: [min(pair) for pair in zip(timings[s], best.get(s, timings[s]), strict=True)] for s in STAGES}
    return {s: (best[s][0], best[s][1]) for s in STAGES}


def chunk_sweep(args: argparse.Namespace) -> tuple[dict[int, float], dict[int, _common.PairedRatio], float]:
    """faces/s of ``align`` per chunk size, per-round ratios (time / time at ALIGN_CHUNK), floor faces/s."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    aligner = build(args).eval()
    crops, euler = make_inputs(args.chunk_faces, args)
    sizes = sorted(set(args.chunks) | {ALIGN_CHUNK, args.chunk_faces})
    aligner.align(crops[:2], euler[:2])
    with torch.no_grad():
        flops = _common.count_flops(lambda: aligner(crops[:4], euler[:4])) / 4
    times: dict[int, list[float]] = {c: [] for c in sizes}
    for r in range(args.rounds):
        for c in sizes[:: 1 if r % 2 == 0 else -1]:
            t0 = time.perf_counter()
            aligner.align(crops, euler, batch_size=c)
            times[c].append(time.perf_counter() - t0)
    ratios = {c: _common.ratio_stats([t / d for t, d in zip(times[c], times[ALIGN_CHUNK], strict=True)])
              for c in sizes}
    rates = {c: args.chunk_faces / min(times[c]) for c in sizes}
    return rates, ratios, _common.gemm_rate() / flops


def run_worker(args: argparse.Namespace, mode: str, batch: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--batch", str(batch), "--device", args.device,
           "--dtype", args.dtype, "--dictionary-size", str(args.dictionary_size), "--token-dim",
           str(args.token_dim), "--crop-size", str(args.crop_size), "--min-time", str(args.min_time),
           "--max-repeats", str(args.max_repeats), "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"killed by signal {-done.returncode}"]
        print(f"worker {mode} B={batch} failed (exit {done.returncode}): {tail[0]}", file=sys.stderr)
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    parser.add_argument("--split-batches", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--dictionary-size", type=int, default=4096)
    parser.add_argument("--token-dim", type=int, default=AlignerConfig.token_dim)
    parser.add_argument("--crop-size", type=int, default=224, help="input crop side (resized inside)")
    parser.add_argument("--min-time", type=float, default=5.0, help="seconds to repeat each measurement")
    parser.add_argument("--max-repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--chunk-faces", type=int, default=1024, help="faces for the align() chunk sweep")
    parser.add_argument("--chunks", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256, 512])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the chunk sweep")
    parser.add_argument("--sweep-only", action="store_true", help="only the align() chunk sweep (section 3)")
    _common.add_tiny_flag(parser)
    args = parser.parse_args()
    if _common.is_tiny(args):
        args.batches, args.split_batches, args.min_time, args.max_repeats = [2], [2], 0.0, 1
        args.dictionary_size, args.crop_size, args.chunk_faces, args.chunks, args.rounds = 64, 32, 8, [2], 2
        args.token_dim = 64
    return args


def throughput_table(args: argparse.Namespace, console) -> None:
    from rich.table import Table

    table = Table(title="Aligner throughput and peak memory "
                        "(forward: B faces; fwd+bwd: a training step on B pairs = 2B faces)")
    table.add_column("batch B", justify="right")
    for col in ("forward", "fwd+bwd", "fwd+bwd, grad. ckpt"):
        table.add_column(f"{col} faces/s", justify="right")
        table.add_column(f"{col} peak MiB", justify="right")
    for batch in args.batches:
        row = [str(batch)]
        for mode in MODES:
            with console.status(f"B={batch}: {mode}"):
                result = run_worker(args, mode, batch)
            row += [f"{result['faces_per_s']:.1f}", f"{result['peak_mib']:.0f}"] if result else ["failed", "-"]
        table.add_row(*row)
    console.print(table)


def split_table(args: argparse.Namespace, console) -> None:
    from rich.table import Table

    split = Table(title="Training-step cost split (ms; B pairs = 2B faces; fwd / bwd)")
    split.add_column("stage")
    results = {}
    for pairs in args.split_batches:
        with console.status(f"cost split at B={pairs}"):
            results[pairs] = stage_split(args, pairs)
        split.add_column(f"B={pairs} fwd / bwd", justify="right")
        split.add_column(f"B={pairs} share", justify="right")
    for stage in STAGES:
        row = [stage]
        for pairs in args.split_batches:
            f, b = results[pairs][stage]
            total = sum(sum(v) for v in results[pairs].values())
            row += [f"{1e3 * f:.1f} / {1e3 * b:.1f}", f"{100 * (f + b) / total:.1f} %"]
        split.add_row(*row)
    split.add_row("total", *sum(([f"{1e3 * sum(sum(v) for v in results[p].values()):.0f}", ""]
                                 for p in args.split_batches), []))
    console.print(split)


def sweep_table(args: argparse.Namespace, console) -> None:
    from rich.table import Table

    with console.status("align() chunk sweep"):
        rates, ratios, floor = chunk_sweep(args)
    sweep = Table(title=f"align() on {args.chunk_faces} faces by chunk size (forward; FLOP floor {floor:.0f} faces/s "
                        f"at {_common.gemm_rate() / 1e9:.0f} GFLOP/s fp32 GEMM; {args.rounds} rounds; "
                        f"{_common.machine()})")
    for col in ("chunk", "faces/s (best round)", "of floor", f"time vs chunk {ALIGN_CHUNK} (median, IQR)"):
        sweep.add_column(col, justify="right")
    for c, rate in rates.items():
        sweep.add_row(str(c) + (" (default)" if c == ALIGN_CHUNK else ""), f"{rate:.1f}", f"{rate / floor:.2f}",
                      str(ratios[c]))
    console.print(sweep)
    best = max(rates, key=rates.get)
    _common.summary("aligner", f"align() {args.chunk_faces} faces, chunk {ALIGN_CHUNK} (default)",
                    f"{rates[ALIGN_CHUNK]:.1f} faces/s", f"{floor:.0f} faces/s",
                    note=f"fastest chunk {best}; one piece: {ratios[args.chunk_faces]}")


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    from rich.console import Console

    console = Console()
    cfg = AlignerConfig(dictionary_size=args.dictionary_size, token_dim=args.token_dim)
    n_params = sum(p.numel() for p in PoseSharedAligner(cfg).parameters())
    console.print(
        f"aligner: d={cfg.dim}, {cfg.depth}-layer patch transformer, N={(cfg.image_size // cfg.patch_size) ** 2} "
        f"tokens of {cfg.image_size}px crops, K={cfg.dictionary_size}, M={cfg.num_tokens}x C={cfg.token_dim}, "
        f"{n_params / 1e6:.2f} M parameters; device {args.device}, {args.dtype}, "
        f"{args.threads or torch.get_num_threads()} threads, input crops {args.crop_size}px; {_common.machine()}"
    )
    if not args.sweep_only:
        throughput_table(args, console)
        split_table(args, console)
    sweep_table(args, console)

if __name__ == "__main__":
    main()
