"""The paper's data pipeline (§3.4): raw videos → pose-diverse training samples.

Submodules (imported on use; this package imports nothing heavy):

- ``build``: ``build_dataset`` — the one call (shards, workers, resume, report)
- ``curate``: one video → kept / rejected (faces per frame, 6DRepNet angles, Δ threshold; face
  score / size thresholds, det size, one identity per sample)
- ``shots``: split raw videos at their cuts (PySceneDetect), each shot a sample
- ``variation``: Δ = Σ circular ranges of pitch, yaw, roll
- ``decode``: streaming PyAV decoding with frame sampling
- ``captions``: sidecar / table / Qwen2.5-VL captioners
- ``manifest``: ``VideoRecord`` and ``load_manifest`` — what the trainer reads
- ``merge``: ``merge_datasets`` for shards
- ``report``, ``directory``, ``journal``, ``sources``, ``backends``, ``outcomes``: the parts

``load_manifest``, ``VideoRecord``, ``build_dataset`` and ``merge_datasets`` are also reachable
from here (resolved lazily).
"""

from __future__ import annotations

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "load_manifest": "manifest",
    "read_manifest": "manifest",
    "VideoRecord": "manifest",
    "ManifestError": "manifest",
    "build_dataset": "build",
    "merge_datasets": "merge",
    "CurationSettings": "curate",
    "FrameSampling": "decode",
    "ModelSpec": "backends",
    "Shard": "sources",
})
