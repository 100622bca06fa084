"""FaithfulFaces core: pose-faithful facial identity preservation for Wan2.1-VACE.

Plain Python and torch; nothing here imports ComfyUI. Submodules are imported on use so
that ``import faithfulfaces_core`` stays cheap (ComfyUI imports the pack at start-up).
"""

__version__ = "0.1.0"
