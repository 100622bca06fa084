"""Throughput and memory of the 6DRepNet estimator (torch vs ONNX Runtime) and detection time.

    python benchmarks/bench_pose.py [--iterations 5] [--batches 1 32] [--threads 0]

Estimator: a randomly initialised full-size RepVGG-B1g2 (same compute as the released weights),
224×224 crops, on the CPU. Each (backend, batch) runs in a fresh subprocess so its peak resident
memory is its own: "peak RSS" is the process maximum, "model+run" the part above the process
after imports (weights, session, activations); times are the fastest of ``--iterations`` calls
after a warm-up call (the machine may be shared), detection times the median. Detection: the real ``FaceAnalysis`` pipeline on a
fake pack (tiny ONNX models), so it measures InsightFace's per-image work (resize, decode, NMS,
alignment, recognition/landmark calls) without SCRFD-10G's own convolution cost.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
import numpy as np


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    """This process's resident high-water mark (VmHWM; unlike ru_maxrss it does not inherit the parent's)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _crops(batch: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(batch, 224, 224, 3), dtype=np.uint8)


def worker(backend: str, batch: int, path: str, iterations: int, threads: int) -> dict:
    """Runs in its own process: load, warm up, time ``iterations`` calls of ``batch`` crops."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    from faithfulfaces_core.pose.onnx_estimator import OnnxPoseEstimator
    from faithfulfaces_core.pose.sixdrepnet import SixDRepNetEstimator, load_sixdrepnet

    crops = _crops(batch)
    base = _rss_mb()
    if backend == "torch":
        estimator = SixDRepNetEstimator(load_sixdrepnet(path), device="cpu", batch_size=batch)
    else:
        estimator = OnnxPoseEstimator(path, device="cpu", batch_size=batch)
        if threads:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            estimator.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    estimator.estimate(crops)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        estimator.estimate(crops)
        times.append(time.perf_counter() - start)
    seconds = min(times)  # the least disturbed call: the machine may be shared
    return {
        "backend": backend,
        "batch": batch,
        "crops_per_s": batch / seconds,
        "ms_per_call": seconds * 1000,
        "peak_mb": _peak_mb(),
        "model_run_mb": _peak_mb() - base,
        "threads": torch.get_num_threads() if backend == "torch" else (threads or os.cpu_count()),
    }


def detection_times(folder: Path, iterations: int) -> list[dict]:
    from faithfulfaces_core.pose.insightface_detector import InsightFaceDetector
    from faithfulfaces_core.tiny.insightface import FakeFace, build_fake_insightface_pack, paint_fake_faces

    faces = [FakeFace((200.0, 150.0, 360.0, 360.0))]
    pack = build_fake_insightface_pack(folder / "fake_pack", faces, landmark_pose=(0.0, 0.0, 0.0))
    image = paint_fake_faces(np.random.default_rng(0).integers(0, 100, (640, 640, 3), dtype=np.uint8), faces)
    dark = np.zeros((640, 640, 3), np.uint8)
    rows = []
    for label, modules, img in (
        ("detection only, 1 face", ("detection",), image),
        ("+ recognition + 3-D landmarks, 1 face", ("detection", "recognition", "landmark_3d_68"), image),
        ("no face: 4 sizes 640→256 tried", ("detection",), dark),
    ):
        detector = InsightFaceDetector(pack, device="cpu", modules=modules)
        detector.detect(img)
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            detector.detect(img)
            times.append(time.perf_counter() - start)
        rows.append({"case": label, "ms": float(np.median(times)) * 1000})
    return rows


def crop_floor() -> dict:
    """Crops/s at this machine's fp32 GEMM rate for the FLOPs ``torch.utils.flop_counter`` counts in one crop."""
    import torch

    from faithfulfaces_core.tiny.pose import random_sixdrepnet

    model = random_sixdrepnet(0).reparameterize().eval()
    x = torch.randn(1, 3, model.config.input_size, model.config.input_size)
    flops, rate = _common.count_flops(lambda: model(x)), _common.gemm_rate()
    return {"gflop": flops / 1e9, "rate": rate, "crops_per_s": rate / flops}


def bf16_error(pairs: int, seeds: int) -> dict:
    """Angle error of bf16 vs fp32 on real face crops for random weights of ``seeds`` seeds (the
    tests' kind of weights; the released ones are not here), and the paired time ratio bf16 / fp32
    of one batch (seed 0)."""
    import torch

    from faithfulfaces_core.pose.rotation import angle_difference
    from faithfulfaces_core.pose.sixdrepnet import SixDRepNetEstimator
    from faithfulfaces_core.tiny.photos import photo_face_crops
    from faithfulfaces_core.tiny.pose import random_sixdrepnet

    crops = photo_face_crops(2 if _common.is_tiny() else 16)
    errors = []
    for seed in range(seeds):
        fp32 = SixDRepNetEstimator(random_sixdrepnet(seed), device="cpu")
        bf16 = SixDRepNetEstimator(random_sixdrepnet(seed), device="cpu", dtype=torch.bfloat16)
        errors.append(angle_difference(bf16.estimate(crops), fp32.estimate(crops)))
        if seed == 0:
            ratio = _common.paired(lambda a=fp32: a.estimate(crops), lambda b=bf16: b.estimate(crops), pairs)
    means, maxes = [float(e.mean()) for e in errors], [float(e.max()) for e in errors]
    return {"faces": len(crops), "seeds": seeds, "mean": (min(means), max(means)), "max": (min(maxes), max(maxes)),
            "ratio": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: library default)")
    parser.add_argument("--worker", nargs=3, metavar=("BACKEND", "BATCH", "PATH"), help=argparse.SUPPRESS)
    _common.add_tiny_flag(parser)
    args = parser.parse_args()
    if _common.is_tiny(args):
        args.iterations, args.batches = 1, [1]
    if args.worker:
        backend, batch, path = args.worker
        print(json.dumps(worker(backend, int(batch), path, args.iterations, args.threads)))
        return

    from tqdm import tqdm

    from faithfulfaces_core.pose.sixdrepnet import export_sixdrepnet_onnx, load_sixdrepnet
    from faithfulfaces_core.tiny.pose import build_random_sixdrepnet

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pth = build_random_sixdrepnet(folder / "6DRepNet_300W_LP_AFLW2000.pth", 0)
        onnx = export_sixdrepnet_onnx(load_sixdrepnet(pth), folder / "6DRepNet_300W_LP_AFLW2000.onnx")
        runs = [(b, batch) for batch in args.batches for b in ("torch", "onnx")]
        results = []
        for backend, batch in tqdm(runs, desc="estimator runs", unit="run"):
            path = pth if backend == "torch" else onnx
            iterations = max(1, args.iterations if batch < 8 else args.iterations // 2)
            command = [sys.executable, __file__, "--worker", backend, str(batch), str(path)]
            command += ["--iterations", str(iterations), "--threads", str(args.threads)]
            out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
        detection = detection_times(folder, args.iterations * 4)

    import onnxruntime
    import torch

    print(
        f"\nCPU: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}; RepVGG-B1g2 6DRepNet, 224x224 crops; {_common.machine()}\n"
    )
    print("| backend | batch | threads | crops/s | ms/call | peak RSS (MB) | model+run (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['backend']} | {r['batch']} | {r['threads']} | {r['crops_per_s']:.1f} | {r['ms_per_call']:.0f} "
            f"| {r['peak_mb']:.0f} | {r['model_run_mb']:.0f} |"
        )
    floor = crop_floor()
    print(f"\nFLOP floor: {floor['gflop']:.1f} GFLOP per crop at {floor['rate'] / 1e9:.0f} GFLOP/s fp32 GEMM "
          f"({torch.get_num_threads()} threads) = {floor['crops_per_s']:.1f} crops/s")
    e = bf16_error(1 if _common.is_tiny() else 3, 1 if _common.is_tiny() else 6)
    span = "{:.2f}–{:.2f}°".format
    print(f"\nbf16 vs fp32 on {e['faces']} real face crops, random weights of {e['seeds']} seeds: angle error "
          f"mean {span(*e['mean'])}, max {span(*e['max'])} over the seeds (6DRepNet's own MAE ≈ 4°); "
          f"bf16 / fp32 time {e['ratio']}")
    _common.summary("pose", f"6DRepNet bf16 vs fp32, angle error on real crops ({e['seeds']} weight seeds)",
                    f"mean {span(*e['mean'])}, max {span(*e['max'])}", note=f"time ratio {e['ratio']}")
    for r in results:
        _common.summary("pose", f"6DRepNet {r['backend']}, batch {r['batch']}, {r['threads']} threads",
                        f"{r['crops_per_s']:.1f} crops/s", f"{floor['crops_per_s']:.1f} crops/s")
    print("\n| InsightFace detection, 640x640 image, fake pack | ms/image |")
    print("|---|---:|")
    for r in detection:
        print(f"| {r['case']} | {r['ms']:.1f} |")


if __name__ == "__main__":
    main()
