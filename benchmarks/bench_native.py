"""Cost of the native MODEL patch per CFG step in ComfyUI's own sampling code.

A randomly initialised Wan VACE transformer of Wan2.1-1.3B's width (12 heads × 128, FFN 8960,
4096-wide text) but only a few blocks is loaded with ComfyUI's ``load_diffusion_model_state_dict``
(what UNETLoader does), patched with ``patch_native_model`` and sampled through ``CFGGuider``
with CFG (positive and negative in one batch of 2). Every round runs each condition once (order
reversed in every other round): one model call right after the switch to that model, then
``--steps`` timed calls. The table reports the median CPU time (``time.process_time``, one torch
thread) of a timed call and the median, with quartiles, of the per-round ratios to the unpatched
model of the same round; the last column compares the first calls after a switch, which pay for
whatever the switch left to do (a merged LoRA's first call ran about 20 % slower than later ones).
ComfyUI runs in this process (a benchmark, not the pack), imported from the set-up checkout.

    python benchmarks/bench_native.py             # 4 blocks, 180 video tokens, 512 text tokens
    python benchmarks/bench_native.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import _common

CONDITIONS = {
    "plain": ("unpatched MODEL (also: the patch with no pose token)", {}),
    "lora": ("LoRA rank 128 via ComfyUI's loader (merged weights)", {"lora": True}),
    "pose": ("pose tokens, positive pass only (default)", {"tokens": True}),
    "pose_both": ("pose tokens, positive + negative pass", {"tokens": True, "uncond": True}),
    "pose_s0.5": ("pose tokens at strength 0.5 (logit bias)", {"tokens": True, "strength": 0.5}),
    "lora+pose": ("LoRA + pose tokens (the node's default)", {"lora": True, "tokens": True}),
}


def build(args, work: Path):
    """ComfyUI's ModelPatcher for a random transformer, and a LoRA file for it."""
    import torch
    from diffusers import WanVACETransformer3DModel

    from faithfulfaces_core.tiny.wan import TINY_TRANSFORMER_CONFIG
    from faithfulfaces_core.wan.keys import to_original_state_dict
    from faithfulfaces_core.wan.lora import LoraSpec, add_lora, save_lora

    config = {**TINY_TRANSFORMER_CONFIG, "num_attention_heads": 12, "attention_head_dim": 128, "ffn_dim": 8960,
              "text_dim": 4096, "num_layers": args.blocks, "vace_layers": list(range(0, args.blocks, 2)),
              "rope_max_seq_len": 1024}
    torch.manual_seed(0)
    transformer = WanVACETransformer3DModel(**config).eval()
    state = {k: v.detach().clone() for k, v in to_original_state_dict(transformer.state_dict()).items()}
    add_lora(transformer, LoraSpec(rank=128))
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.01)
    lora = save_lora(work / "bench_lora.safetensors", transformer, layout="original_wan")
    del transformer
    import comfy.sd

    return comfy.sd.load_diffusion_model_state_dict(state), lora


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--frames", type=int, default=3, help="latent frames")
    parser.add_argument("--side", type=int, default=(12, 20), nargs=2, help="latent height, width")
    parser.add_argument("--text", type=int, default=512, help="text tokens (ComfyUI pads Wan prompts to 512)")
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    _common.add_tiny_flag(parser)
    args = parser.parse_args()
    if args.quick:
        args.blocks, args.rounds, args.steps = 2, 4, 1
    if _common.is_tiny(args):
        args.blocks, args.rounds, args.steps, args.frames, args.side, args.text = 1, 2, 1, 1, (4, 4), 16

    from faithfulfaces_core.host import default_comfyui_dir

    sys.path.insert(0, str(default_comfyui_dir()))
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import tempfile

    import comfy.samplers
    import torch

    from faithfulfaces_core.native import patch_native_model

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp())
    base, lora = build(args, work)
    gen = torch.Generator().manual_seed(1)
    h, w = args.side
    shape = (1, 16, args.frames, h, w)
    extra = {"vace_frames": [torch.randn(1, 32, *shape[2:], generator=gen)],
             "vace_mask": [torch.ones(1, 64, *shape[2:])], "vace_strength": [1.0]}
    positive = [[torch.randn(1, args.text, 4096, generator=gen), dict(extra)]]
    negative = [[torch.randn(1, args.text, 4096, generator=gen), dict(extra)]]
    tokens = torch.randn(1, 4, 1536, generator=gen)
    noise, latent = torch.randn(shape, generator=gen), torch.zeros(shape)

    models = {}
    for name, (_, opts) in CONDITIONS.items():
        models[name] = patch_native_model(
            base, tokens if opts.get("tokens") else None, lora_path=lora if opts.get("lora") else None,
            strength=opts.get("strength", 1.0), pose_on_negative=opts.get("uncond", False),
        )
    times: dict[str, list[float]] = {name: [] for name in CONDITIONS}
    first: dict[str, list[float]] = {name: [] for name in CONDITIONS}

    def sampler(model, x, sigmas, extra_args=None, callback=None, disable=None):
        s_in = x.new_ones([x.shape[0]])
        for i in range(args.steps + 1):
            start = time.process_time()
            model(x, sigmas[0] * s_in, **extra_args)
            (first if i == 0 else times)[current].append(time.process_time() - start)
        return x

    ratios: dict[str, list[float]] = {name: [] for name in CONDITIONS}
    first_ratios: dict[str, list[float]] = {name: [] for name in CONDITIONS}
    for r in range(args.rounds):
        for current in list(CONDITIONS)[:: 1 if r % 2 == 0 else -1]:
            guider = comfy.samplers.CFGGuider(models[current])
            guider.set_conds(positive, negative)
            guider.set_cfg(5.0)
            guider.sample(noise, latent, comfy.samplers.KSAMPLER(sampler), torch.tensor([0.8, 0.0]), seed=0)
        this_round = {n: statistics.median(t[-args.steps:]) for n, t in times.items()}
        for n in CONDITIONS:
            ratios[n].append(this_round[n] / this_round["plain"])
            first_ratios[n].append(first[n][-1] / first["plain"][-1])

    plain = statistics.median(times["plain"])
    print(f"\nWan VACE {args.blocks} blocks × 1536 wide, {args.frames * h * w // 4} video + {args.text} text tokens, "
          f"4 pose tokens, CFG batch of 2, CPU 1 thread, {args.rounds} rounds × (1 + {args.steps}) calls; "
          f"{_common.machine()}\n")
    print(f"| {'condition':<52} | ms / CFG step | vs plain (median of per-round ratios, IQR) "
          f"| first call after a model switch, vs plain's |")
    print(f"|{'-' * 54}|--------------:|---|---|")
    for name, (label, _) in CONDITIONS.items():
        t = statistics.median(times[name])
        print(f"| {label:<52} | {t * 1000:13.1f} | {_common.ratio_stats(ratios[name])} "
              f"| {_common.ratio_stats(first_ratios[name])} |")
        if name != "plain":
            _common.summary("native", f"{label} vs plain (wall, paired)", f"{statistics.median(ratios[name]):.3f}",
                            note=str(_common.ratio_stats(ratios[name])))
    _common.summary("native", "plain CFG step", f"{plain * 1000:.0f} ms")


if __name__ == "__main__":
    main()
