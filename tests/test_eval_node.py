"""The FaceSim node (V3 schema) executed with scripted models, in a subprocess that imports ComfyUI's
``comfy_api`` (so this test session stays free of ComfyUI's modules)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from faithfulfaces_core.host import PACK_ROOT, default_comfyui_dir

SCRIPT = textwrap.dedent(
    """
    import dataclasses, json, math, sys, types
    sys.path.insert(0, {comfyui!r})
    import torch
    from comfy_api.latest import io
    pkg = types.ModuleType("ff_nodes"); pkg.__path__ = [{nodes!r}]; sys.modules["ff_nodes"] = pkg
    from ff_nodes.evaluation import FaceSimEvaluate
    from faithfulfaces_core.tiny.scripted import ScriptedDetector, ScriptedEmbedder, ScriptedPoseEstimator

    BOX = [8.0, 8.0, 56.0, 56.0]
    SCRIPT = {{240: ([1, 0, 0, 0], 0.0), 20: ([1, 0, 0, 0], 10.0), 50: ([0.6, 0.8, 0, 0], -45.0),
              170: ([0.5, 0.5, 0.5, 0.5], 30.0)}}

    class EmbeddingDetector:  # faces carry their embedding, as InsightFace's do
        name = "scripted"
        def __init__(self):
            levels = {{lv: [BOX] for lv in SCRIPT}} | {{110: []}}
            self.detector = ScriptedDetector(levels)
            self.embedder = ScriptedEmbedder({{lv: v for lv, (v, _) in SCRIPT.items()}})
        def detect(self, image):
            return [dataclasses.replace(f, embedding=self.embedder.embed(image, f)) for f in self.detector.detect(image)]

    estimator = ScriptedPoseEstimator({{lv: (0.0, yaw, 0.0) for lv, (_, yaw) in SCRIPT.items()}})
    def solid(levels):
        return torch.stack([torch.full((64, 64, 3), lv / 255.0) for lv in levels])

    schema = FaceSimEvaluate.GET_SCHEMA()
    info = FaceSimEvaluate.GET_NODE_INFO_V1()
    out = FaceSimEvaluate.execute(solid({refs}), solid([20, 50, 110, 170]), EmbeddingDetector(), estimator,
                                  {frames}, "black")
    floats, text, report, plot = out.args[:5], out.args[5], out.args[6], out.args[7]
    print(json.dumps({{"node_id": schema.node_id, "category": schema.category,
                      "inputs": list(info["input"]["required"]), "outputs": info["output_name"],
                      "output_types": info["output"], "floats": floats,
                      "finite": all(isinstance(v, float) and math.isfinite(v) for v in floats),
                      "text": text, "report": json.loads(report), "plot": [list(plot.shape), str(plot.dtype),
                      float(plot.min()), float(plot.max())]}}))
    """
)


def _run(frames: int, refs: tuple[int, ...] = (240,)) -> dict:
    code = SCRIPT.format(comfyui=str(default_comfyui_dir()), nodes=str(PACK_ROOT / "nodes"), frames=frames,
                       refs=list(refs))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=PACK_ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_facesim_node_outputs():
    out = _run(frames=0)  # 0 = all frames
    assert out["node_id"] == "FaithfulFacesFaceSim" and out["category"] == "FaithfulFaces/evaluation"
    assert out["inputs"] == ["reference", "frames", "face_detector", "pose_estimator", "sample_frames", "padding"]
    assert out["outputs"] == ["mean", "min", "yaw_under_30", "yaw_30_60", "yaw_over_60", "summary", "report_json",
                              "plot"]
    assert out["output_types"] == ["FLOAT"] * 5 + ["STRING", "STRING", "IMAGE"]
    mean, low, b0, b1, b2 = out["floats"]
    assert out["finite"]
    assert mean == pytest.approx((1.0 + 0.6 + 0.5) / 3, abs=1e-6) and low == pytest.approx(0.5, abs=1e-6)
    assert b0 == pytest.approx(1.0, abs=1e-6) and b1 == pytest.approx(0.55, abs=1e-6)
    assert b2 == -1.0  # the empty > 60° bin
    assert "|yaw| > 60°: empty bin (none, output -1)" in out["text"]
    assert "no face 1" in out["text"] and "backend scripted+scripted-pose" in out["text"]
    assert "references" not in out["text"] and "references" not in out["report"]
    report = out["report"]
    assert report["backend"] == "scripted+scripted-pose" and report["protocol"]["frames"] == "all"
    assert report["videos"][0]["summary"]["no_face_frames"] == 1
    assert out["plot"][0] == [1, 600, 1000, 3] and out["plot"][1] == "torch.float32"
    assert 0.0 <= out["plot"][2] < out["plot"][3] <= 1.0


def test_facesim_node_scores_the_best_of_several_references():
    out = _run(frames=0, refs=(240, 50))  # embeddings [1, 0, 0, 0] and [0.6, 0.8, 0, 0]
    mean, low, b0, b1, b2 = out["floats"]  # best match: 1.0 (yaw 10°), 1.0 (yaw -45°), 0.7 (yaw 30°)
    assert mean == pytest.approx(0.9, abs=1e-6) and low == pytest.approx(0.7, abs=1e-6)
    assert b0 == pytest.approx(1.0, abs=1e-6) and b1 == pytest.approx(0.85, abs=1e-6) and b2 == -1.0
    video = out["report"]["videos"][0]
    assert [f.get("best_reference") for f in video["frames"]] == [0, 1, None, 1]
    over = video["summary_mean_over_references"]  # per frame (1+0.6)/2, (0.6+1)/2, (0.5+0.7)/2
    assert over["mean"] == pytest.approx((0.8 + 0.8 + 0.6) / 3, abs=1e-6)
    assert over["yaw_bins"]["yaw_30_60"]["mean"] == pytest.approx(0.7, abs=1e-6)
    assert len(out["report"]["references"]) == 2
    assert "2 references: the numbers above are the best match per frame; mean over references: mean 0.7333" in \
        out["text"]
