"""Cost of the pose-token injection (and of an unfused vs fused LoRA) per denoising step.

A denoising step of WanVACEPipeline with CFG is two transformer calls (conditional, then
unconditional); this times exactly that on a randomly initialised WanVACETransformer3DModel
larger than the test one (CPU-sized), going through the real injection machinery (sampling
session, pass labelling, step window).

Timing is paired: each comparison alternates single steps of its two conditions (in a random
order within each pair) and reports the median of the per-pair time ratios, so the load of
other jobs on a shared machine cancels out; times are the process's CPU time on one torch thread
(``time.process_time``). A second table times one block self-attention call alone. Peak memory:
each condition runs once more in a fresh process, which resets the kernel's high-water mark
(``/proc/self/clear_refs``) after building the model and reports the peak resident set during
two steps (Linux).

    python benchmarks/bench_wan.py            # default CPU-sized configuration
    python benchmarks/bench_wan.py --quick    # fewer pairs
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common

CONDITIONS = {
    "plain": "no injection installed",
    "installed": "injection installed, no tokens",
    "tokens": "tokens in the cond pass (default)",
    "tokens_both": "tokens in cond + uncond pass",
    "tokens_s0.5": "tokens at strength 0.5 (logit bias)",
    "lora": "LoRA rank 128, unfused",
    "lora_fused": "LoRA rank 128, fused",
}
COMPARISONS = [("plain", "installed"), ("plain", "tokens"), ("plain", "tokens_both"), ("plain", "tokens_s0.5"),
               ("plain", "lora"), ("lora", "lora_fused"), ("plain", "lora_fused")]
TOKEN_SETTINGS = {"tokens": {}, "tokens_both": {"pose_on_negative": True}, "tokens_s0.5": {"strength": 0.5}}


def build(args):
    import torch
    from diffusers import WanVACETransformer3DModel

    torch.manual_seed(0)
    model = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=args.heads, attention_head_dim=args.head_dim, in_channels=16,
        out_channels=16, text_dim=args.text_dim, freq_dim=256, ffn_dim=args.ffn, num_layers=args.layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
        vace_layers=list(range(0, args.layers, 2)), vace_in_channels=96,
    ).eval()
    gen = torch.Generator().manual_seed(1)
    t, s = args.latent_frames, args.latent_side
    inputs = dict(
        hidden_states=torch.randn(1, 16, t, s, s, generator=gen),
        control_hidden_states=torch.randn(1, 96, t, s, s, generator=gen),
        timestep=torch.tensor([500.0]),
        return_dict=False,
    )
    cond = torch.randn(1, args.text_len, args.text_dim, generator=gen)
    uncond = torch.randn(1, args.text_len, args.text_dim, generator=gen)
    tokens = torch.randn(1, args.tokens, args.heads * args.head_dim, generator=gen)
    return model, inputs, cond, uncond, tokens


class Runner:
    """Moves one model between the conditions (fewest changes) and runs steps as the pipeline does."""

    def __init__(self, args):
        self.model, self.inputs, self.cond, self.uncond, self.tokens = build(args)
        self.injection = None
        self.condition = "plain"

    def setup(self, condition: str) -> None:
        import torch

        from faithfulfaces_core.wan.injection import install_pose_injection
        from faithfulfaces_core.wan.lora import LoraSpec, add_lora, lora_is_fused

        wants_injection = condition == "installed" or condition in TOKEN_SETTINGS
        if wants_injection and self.injection is None:
            self.injection = install_pose_injection(self.model)
        if not wants_injection and self.injection is not None:
            self.injection.remove()
            self.injection = None
        has_lora = bool(getattr(self.model, "peft_config", None))
        if condition.startswith("lora") and not has_lora:
            add_lora(self.model, LoraSpec(rank=128))
            with torch.no_grad():
                for name, p in self.model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(std=0.01)
        if has_lora and lora_is_fused(self.model) and condition != "lora_fused":
            self.model.unfuse_lora()
        if condition == "lora_fused" and not lora_is_fused(self.model):
            self.model.fuse_lora(lora_scale=1.0)
        if has_lora and not condition.startswith("lora"):
            self.model.delete_adapters(list(self.model.peft_config))
        self.condition = condition

    def steps(self, n: int) -> list[float]:
        import contextlib

        import torch

        settings = TOKEN_SETTINGS.get(self.condition)
        times = []
        with contextlib.ExitStack() as stack, torch.no_grad():
            if self.injection is not None:
                stack.enter_context(self.injection.use(self.tokens if settings is not None else None, **(settings or {})))
                stack.enter_context(self.injection.sampling(n, cfg=True))
            for i in range(n):
                start = time.process_time()
                self.model(encoder_hidden_states=self.cond, **self.inputs)
                self.model(encoder_hidden_states=self.uncond, **self.inputs)
                times.append(time.process_time() - start)
                if self.injection is not None:
                    self.injection.step_finished(i)
        return times


def paired_timing(args) -> tuple[dict[tuple[str, str], list[float]], dict[str, list[float]]]:
    """Per comparison: the time ratios B/A of adjacent single steps; per condition: all step times."""
    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    runner = Runner(args)
    runner.steps(1)  # warm-up
    rng = random.Random(0)
    ratios: dict[tuple[str, str], list[float]] = {c: [] for c in COMPARISONS}
    times: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    for a, b in tqdm(COMPARISONS, desc="comparisons"):
        for _ in range(args.pairs):
            pair = {}
            for condition in rng.sample([a, b], 2):
                runner.setup(condition)
                pair[condition] = runner.steps(1)[0]
                times[condition].append(pair[condition])
            ratios[(a, b)].append(pair[b] / pair[a])
    runner.setup("plain")
    return ratios, times


def attention_call(args, seq_frames: int, side: int, repeats: int) -> dict[str, float]:
    """Min CPU time (ms) of one block self-attention call: original processor vs the injection."""
    import torch
    from diffusers import WanVACETransformer3DModel

    from faithfulfaces_core.wan.injection import install_pose_injection

    torch.set_num_threads(args.threads)
    model = WanVACETransformer3DModel(
        num_attention_heads=args.heads, attention_head_dim=args.head_dim, text_dim=args.text_dim, ffn_dim=args.ffn,
        num_layers=1, vace_layers=[0],
    ).eval()
    attn = model.blocks[0].attn1
    rope = model.rope(torch.zeros(1, 16, seq_frames, side, side))
    hidden = torch.randn(1, rope[0].shape[1], args.heads * args.head_dim)
    tokens = torch.randn(1, args.tokens, args.heads * args.head_dim)
    injection = install_pose_injection(model)
    original = attn.processor.original
    calls = {"original": lambda: original(attn, hidden, None, None, rope)}
    calls |= {name: (lambda: attn(hidden, None, None, rope)) for name in ("installed", "tokens", "tokens_s0.5")}
    times: dict[str, list[float]] = {k: [] for k in calls}
    order = list(calls)
    rng = random.Random(1)
    with torch.no_grad():
        for _ in range(repeats):
            rng.shuffle(order)
            for name in order:
                injection.set_tokens(tokens if name in TOKEN_SETTINGS else None, **TOKEN_SETTINGS.get(name, {}))
                start = time.process_time()
                calls[name]()
                times[name].append(time.process_time() - start)
    injection.remove()
    return {"seq": rope[0].shape[1], **{k: min(v) * 1e3 for k, v in times.items()}}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_memory(condition: str) -> tuple[float, float] | None:
    """(RSS before, peak RSS during two steps) in MiB, in a fresh process; None off Linux."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    cmd = [sys.executable, __file__, "--child", condition] + [a for a in sys.argv[1:] if a not in ("--quick", "--tiny")]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["before_mib"], result["peak_mib"]


def child(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    runner = Runner(args)
    runner.setup(args.child)
    with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
        fh.write("5")
    before = _status_kib("VmRSS")
    runner.steps(2)
    print(json.dumps({"before_mib": before / 1024, "peak_mib": _status_kib("VmHWM") / 1024}))


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--ffn", type=int, default=1024)
    parser.add_argument("--text-dim", type=int, default=256)
    parser.add_argument("--text-len", type=int, default=512, help="the pipeline pads prompts to 512 tokens")
    parser.add_argument("--latent-frames", type=int, default=4, help="latent frames incl. the reference frame")
    parser.add_argument("--latent-side", type=int, default=24, help="latent height = width (pixels / 8)")
    parser.add_argument("--tokens", type=int, default=4, help="pose tokens M (the aligner's default)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=15, help="step pairs per comparison")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", choices=list(CONDITIONS))
    _common.add_tiny_flag(parser)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        args.pairs = 4
    if _common.is_tiny(args):
        args.layers, args.heads, args.ffn, args.text_dim, args.text_len = 2, 1, 128, 64, 16
        args.latent_frames, args.latent_side, args.pairs = 2, 4, 2

    seq = args.latent_frames * (args.latent_side // 2) ** 2
    print(f"WanVACETransformer3DModel: {args.layers} blocks ({len(range(0, args.layers, 2))} VACE), width "
          f"{args.heads * args.head_dim}, ffn {args.ffn}; video sequence {seq} tokens, text {args.text_len}, "
          f"pose tokens {args.tokens}; {args.threads} CPU thread(s); a step = cond + uncond call; "
          f"{args.pairs} step pairs per comparison; {_common.machine()}")
    ratios, times = paired_timing(args)
    peaks = {c: peak_memory(c) for c in CONDITIONS}
    print()
    print("| condition | CPU ms / step (median) | peak RSS during steps, MiB (above RSS before) |")
    print("|---|---:|---:|")
    for c, label in CONDITIONS.items():
        mem = "n/a" if peaks[c] is None else f"{peaks[c][1]:.0f} (+{peaks[c][1] - peaks[c][0]:.0f})"
        print(f"| {label} | {statistics.median(times[c]) * 1e3:.0f} | {mem} |")
    print()
    print("| comparison (B vs A, paired steps) | B / A median | quartiles |")
    print("|---|---:|---:|")
    for a, b in COMPARISONS:
        lo, mid, hi = _quartiles(ratios[(a, b)])
        print(f"| {CONDITIONS[b]} vs {CONDITIONS[a]} | {mid:.3f} ({(mid - 1) * 100:+.1f}%) | {lo:.3f} – {hi:.3f} |")
    print()
    print("One self-attention call (CPU ms, min over repeats), original processor vs injection:")
    print()
    print("| video tokens L | original | installed, no tokens | tokens (strength 1) | tokens (strength 0.5) |")
    print("|---:|---:|---:|---:|---:|")
    for frames, side in ((args.latent_frames, args.latent_side), (args.latent_frames, args.latent_side * 2)):
        r = attention_call(args, frames, side, 2 if _common.is_tiny() else max(20, args.pairs * 4))
        cells = " | ".join(f"{r[k]:.2f} ({(r[k] / r['original'] - 1) * 100:+.1f}%)" for k in ("installed", "tokens", "tokens_s0.5"))
        print(f"| {r['seq']} | {r['original']:.2f} | {cells} |")
    print()
    for a, b in COMPARISONS:
        _common.summary("wan", f"{CONDITIONS[b]} vs {CONDITIONS[a]} (CPU time, paired)",
                        f"{statistics.median(ratios[(a, b)]):.3f}", note=str(_common.ratio_stats(ratios[(a, b)])))
    stats = _common.ratio_stats(ratios[("plain", "tokens")])
    verdict = ("met" if stats.q3 < 1.03 else "NOT met" if stats.q1 > 1.03 else
               "not resolved by CPU time (the quartiles span 1.03; bench_instructions.py counts instructions)")
    print(f"injection (default: tokens in the cond pass) costs {(stats.median - 1) * 100:+.2f}% of a step (median of "
          f"paired ratios, IQR {stats.q1:.3f}–{stats.q3:.3f}); target < 3%: {verdict}")


if __name__ == "__main__":
    main()
