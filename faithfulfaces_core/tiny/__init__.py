"""Tiny, randomly initialised models built with the real classes and written in the real file
layouts, for tests and the quick-start demo. Import the submodules on use (they import torch)."""
