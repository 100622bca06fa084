#!/usr/bin/env python
"""Training speed and memory on the CPU: seconds per optimizer step and peak memory of ``train()``.

Two model sizes, both built here with the real classes and random weights (nothing downloaded):

- ``tiny``: ``tiny.wan``'s pipeline (4 blocks, width 128), 32×32 × 5 frames, LoRA rank 4, the
  tiny aligner, aligner batch 3;
- ``small``: a CPU-sized Wan2.1-VACE (8 blocks + 4 VACE blocks, width 512, UMT5 with 512-wide
  states, a VAE with base width 32), 128×128 × 17 frames (6 latent frames incl. the reference
  slot: 384 tokens), LoRA rank 32, an aligner with d = 128, K = 1024 on 64-px crops, 16 pairs.

Each row runs in a fresh process on a synthetic dataset (``training.synthetic``): seconds per
step is the median over the steps after the first (from ``metrics.jsonl``); peak memory is the
process's peak RSS and its growth over the RSS after imports. Variants: the latent cache
(encoders freed before training) and gradient checkpointing.

``--memory`` prints the inputs of docs/training.md's memory arithmetic for the real Wan2.1-VACE
1.3B and 14B: parameter counts (the shipped configs built on the meta device: no memory), the
rank-128 LoRA and the aligner, and the activation memory autograd keeps per token for one
transformer block, *measured* on the CPU in bf16 (saved-tensor hooks, parameters excluded, the
slope between two sequence lengths so constant terms drop out); then the budget at
480×832 × 81 frames for one video per GPU.

    python benchmarks/bench_training.py [--steps 8] [--sizes tiny small] [--threads 2]
    python benchmarks/bench_training.py --memory
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _common

REPO = _common.REPO

SMALL_TRANSFORMER = {
    "patch_size": [1, 2, 2], "num_attention_heads": 8, "attention_head_dim": 64, "in_channels": 16,
    "out_channels": 16, "text_dim": 512, "freq_dim": 256, "ffn_dim": 1536, "num_layers": 8, "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "image_dim": None, "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024, "pos_embed_seq_len": None, "vace_layers": [0, 2, 4, 6], "vace_in_channels": 96,
}
SMALL_VAE = {"base_dim": 32, "z_dim": 16, "dim_mult": [1, 2, 2, 2], "num_res_blocks": 1,
             "temperal_downsample": [False, True, True]}
SMALL_TEXT = {"d_model": 512, "d_kv": 64, "d_ff": 1024, "num_layers": 2, "num_heads": 8,
              "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
              "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0}
SMALL_ALIGNER = {"image_size": 64, "patch_size": 8, "depth": 2, "num_heads": 4, "mlp_ratio": 4.0, "dim": 128,
                 "num_harmonics": 8, "dictionary_size": 1024, "num_tokens": 4}

VARIANTS = {
    "plain": [],
    "cache": ["data.cache_latents=true"],
    "cache+ckpt": ["data.cache_latents=true", "run.gradient_checkpointing=\"on\"",
                   "aligner.gradient_checkpointing=true"],
}


def build_small_pipeline(out: Path) -> Path:
    """A CPU-sized Wan2.1-VACE diffusers folder (real classes, random weights)."""
    import torch
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanVACEPipeline,
        WanVACETransformer3DModel,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    from faithfulfaces_core.tiny.wan import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    torch.manual_seed(0)
    pipe = WanVACEPipeline(
        tokenizer=tokenizer,
        text_encoder=UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1,
                                                 **SMALL_TEXT)),
        vae=AutoencoderKLWan(**SMALL_VAE),
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
        transformer=WanVACETransformer3DModel(**SMALL_TRANSFORMER),
    )
    folder = out / "Wan2.1-VACE-small-diffusers"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def prepare(size: str, work: Path) -> tuple[Path, Path, list[str]]:
    """(diffusers folder, dataset, size-specific overrides)."""
    from faithfulfaces_core.tiny.wan import build_tiny_pipeline
    from faithfulfaces_core.training.synthetic import tiny_overrides, write_synthetic_dataset

    if size == "tiny":
        folder = build_tiny_pipeline(work / "models", seed=0).diffusers_dir
        dataset = write_synthetic_dataset(work / "ds", identities=8, crops_per_identity=4, frames=9)
        return folder, dataset, tiny_overrides(folder, dataset, work / "out")
    folder = build_small_pipeline(work / "models")
    dataset = write_synthetic_dataset(work / "ds", identities=16, crops_per_identity=6, frames=17, size=128,
                                      crop_size=64)
    overrides = tiny_overrides(folder, dataset, work / "out", data__height=128, data__width=128,
                               data__num_frames=17, data__frame_stride=1, data__aligner_batch_size=16,
                               data__max_sequence_length=64, lora__rank=32, aligner__config=SMALL_ALIGNER)
    return folder, dataset, overrides


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(args: argparse.Namespace) -> None:
    """One measurement: train ``--steps`` steps, print a JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    from faithfulfaces_core.training.config import load_config
    from faithfulfaces_core.training.trainer import train

    base = rss_mb()
    overrides = json.loads(args.child) + [f"run.max_steps={args.steps}", f"run.checkpoint_every={args.steps}",
                                          "run.log_every=1000"]
    train(load_config(None, overrides), progress=False)
    out = Path(next(o.split("=", 1)[1] for o in overrides if o.startswith("run.output_dir=")).strip('"'))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": statistics.median(r["seconds"] for r in rows[1:]), "peak_mb": peak,
                      "growth_mb": peak - base, "loss": rows[-1]["loss"]}))


def measure(overrides: list[str], args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(overrides), "--steps", str(args.steps),
           "--threads", str(args.threads)]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


GIB = 2**30
UMT5_XXL_PARAMS = 5.68e9  # google/umt5-xxl encoder (the Wan release's 11.4 GB bf16 file)
WAN_VAE_PARAMS = 127e6  # Wan2.1_VAE.pth (508 MB in fp32)


def model_counts(name: str) -> dict:
    """Parameters of a released size: total, VACE part, rank-128 LoRA (with VACE blocks), aligner."""
    from accelerate import init_empty_weights
    from diffusers import WanVACETransformer3DModel

    from faithfulfaces_core.aligner import AlignerConfig, PoseSharedAligner
    from faithfulfaces_core.wan.loading import SHIPPED_CONFIGS, load_config_file
    from faithfulfaces_core.wan.lora import LoraSpec, target_module_names

    cfg = load_config_file(SHIPPED_CONFIGS[name])
    with init_empty_weights():
        model = WanVACETransformer3DModel.from_config(cfg)
        width = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        aligner = PoseSharedAligner(AlignerConfig(token_dim=width))
    modules = dict(model.named_modules())
    spec = LoraSpec()
    lora = sum(spec.rank * (modules[n].in_features + modules[n].out_features)
               for n in target_module_names(model, spec))
    params = dict(model.named_parameters())
    return {
        "config": cfg, "width": width, "total": sum(p.numel() for p in params.values()),
        "vace": sum(p.numel() for n, p in params.items() if n.startswith("vace_")),
        "lora": lora, "aligner": sum(p.numel() for p in aligner.parameters()),
        "main_blocks": cfg["num_layers"], "vace_blocks": len(cfg["vace_layers"]),
    }


def block_bytes_per_token(cfg: dict, lengths: tuple[int, int] = (390, 780)) -> float:
    """Activation bytes autograd saves per video token in one WanTransformerBlock (bf16, CPU)."""
    import torch
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformerBlock

    width = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    torch.manual_seed(0)
    block = WanTransformerBlock(width, cfg["ffn_dim"], cfg["num_attention_heads"], cfg["qk_norm"],
                                cfg["cross_attn_norm"], cfg["eps"], None).to(torch.bfloat16).requires_grad_(False)
    rope = WanRotaryPosEmbed(cfg["attention_head_dim"], cfg["patch_size"], cfg["rope_max_seq_len"])
    params = {p.untyped_storage().data_ptr() for p in block.parameters()}
    saved = []
    for length in lengths:
        seen: dict = {}

        def pack(t, seen=seen):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in params:
                seen[ptr] = max(seen.get(ptr, 0), t.untyped_storage().nbytes())
            return t

        x = torch.randn(1, length, width, dtype=torch.bfloat16, requires_grad=True)
        text = torch.randn(1, 512, width, dtype=torch.bfloat16)
        temb = torch.randn(1, 6, width)
        rotary = rope(torch.zeros(1, 16, 1, 60, 2 * length // 30))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            block(x, text, temb, rotary)
        saved.append(sum(seen.values()))
    return (saved[1] - saved[0]) / (lengths[1] - lengths[0])


def memory_report(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    frames, height, width = 81, 480, 832
    tokens = (1 + (frames - 1) // 4 + 1) * (height // 16) * (width // 16)  # reference slot + 21 latent frames
    print(f"480x832 x 81 frames: {tokens} video tokens (22 latent frames incl. the reference slot x 30 x 52)\n")
    for name in ("Wan2.1-VACE-1.3B", "Wan2.1-VACE-14B"):
        c = model_counts(name)
        per_token = block_bytes_per_token(c["config"])
        blocks = c["main_blocks"] + c["vace_blocks"]
        width_c = c["width"]
        base = 2 * c["total"]
        lora = 16 * c["lora"]  # fp32 weight + grad + AdamW m, v
        aligner = 16 * c["aligner"]
        ckpt = (c["main_blocks"] + 2 * c["vace_blocks"]) * tokens * width_c * 2  # block inputs (+ VACE hints)
        recompute = per_token * tokens  # one block's activations while it is recomputed
        full = per_token * tokens * blocks
        encoders = 2 * UMT5_XXL_PARAMS + 4 * WAN_VAE_PARAMS
        print(f"{name}: {c['total'] / 1e9:.2f}B parameters ({c['vace'] / 1e9:.2f}B in VACE), width {width_c}, "
              f"{c['main_blocks']} + {c['vace_blocks']} VACE blocks")
        print(f"  LoRA rank 128 (blocks + VACE blocks): {c['lora'] / 1e6:.0f}M parameters; aligner + projection "
              f"{c['aligner'] / 1e6:.1f}M")
        print(f"  measured: {per_token / 1024:.1f} KiB saved per token per block "
              f"({per_token / width_c:.1f} bytes per token per channel)")
        rows = [
            ("frozen base weights (bf16)", base),
            ("LoRA: fp32 weights + grads + AdamW moments", lora),
            ("aligner + projection: same", aligner),
            ("activations, checkpointing on: block inputs", ckpt),
            ("  + one block being recomputed", recompute),
            ("activations, checkpointing off", full),
            ("UMT5-XXL (bf16) + VAE (fp32), without the cache", encoders),
        ]
        for label, value in rows:
            print(f"  {label:<52} {value / GIB:8.1f} GiB")
        total = base + lora + aligner + ckpt + recompute
        print(f"  total with bf16 + checkpointing + cache, 1 video/GPU: {total / GIB:.1f} GiB "
              f"(+ CUDA context and allocator slack, ~2-4 GiB)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per measurement")
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], choices=["tiny", "small"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--memory", action="store_true", help="print the memory arithmetic for 1.3B and 14B")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    _common.add_tiny_flag(parser)
    args = parser.parse_args()
    if _common.is_tiny(args):
        args.steps, args.sizes, args.variants = 2, ["tiny"], list(VARIANTS)[:1]  # medians skip step 1
    if args.memory:
        memory_report(args)
        return
    if args.child:
        child(args)
        return
    import torch

    print(f"torch {torch.__version__}, {args.threads} thread(s), CPU, fp32, {args.steps} steps per row; "
          f"{_common.machine()}\n")
    print(f"{'model':<6} {'variant':<11} {'s/step':>8} {'peak RSS MB':>12} {'growth MB':>10} {'last loss':>10}")
    for size in args.sizes:
        work = Path(tempfile.mkdtemp(prefix=f"bench_training_{size}_"))
        try:
            _, _, overrides = prepare(size, work)
            for variant in args.variants:
                shutil.rmtree(work / "out", ignore_errors=True)
                row = measure(overrides + VARIANTS[variant], args)
                print(f"{size:<6} {variant:<11} {row['seconds']:>8.3f} {row['peak_mb']:>12.0f} "
                      f"{row['growth_mb']:>10.0f} {row['loss']:>10.4f}", flush=True)
                _common.summary("training", f"{size} model, {variant}", f"{row['seconds']:.3f} s/step",
                                note=f"peak RSS {row['peak_mb']:.0f} MB")
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
