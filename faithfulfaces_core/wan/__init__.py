"""The Wan2.1-VACE generator on diffusers: loading (``loading``), pose-token injection
(``injection``), the FaithfulFaces LoRA (``lora``) and ``generate`` (``generate``).

Kept light: the submodules import torch / diffusers, so import them on use. See docs/generator.md.
"""
