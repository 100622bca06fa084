"""Headless joint training of the pose-shared aligner and the Wan2.1-VACE LoRA.

``L = L_flow_matching + λ·L_InfoNCE``: the LoRA, the pose-token projection and the aligner are
trained; the base model is frozen. Submodules (imported on use; this package imports nothing
heavy, so ``training/train_lora.py --help`` is instant):

- ``config``: ``TrainConfig`` (pydantic), config files, ``--set`` overrides, option help
- ``data``: dataset index and skip report, the seeded batch plan, step batches
- ``encoding``: VAE / text-encoder inputs built with ``WanVACEPipeline``'s own methods
- ``cache``: the optional on-disk latent / text-embedding cache
- ``objective``: shifted flow matching, ``JointModel`` (flow + InfoNCE)
- ``models``: loading the frozen encoders, the base transformer + LoRA + injection, the aligner
- ``checkpointing``: atomic, exactly resumable checkpoints (safetensors + JSON)
- ``feedback``: log file, metrics, loss-curve PNG, TensorBoard
- ``export``: the aligner and LoRA files the nodes load
- ``trainer``: ``train(config, resume=...)``
- ``synthetic``: a synthetic dataset directory for tests, benchmarks and the demo

See docs/training.md.
"""

from __future__ import annotations

from ..lazy import lazy_exports

__all__, __getattr__ = lazy_exports(__name__, {
    "TrainConfig": "config",
    "load_config": "config",
    "train": "trainer",
    "TrainingDiverged": "trainer",
    "StopRequested": "trainer",
    "write_synthetic_dataset": "synthetic",
})
