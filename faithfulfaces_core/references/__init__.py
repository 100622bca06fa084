"""Several reference faces: pick the photos or frames of one person that cover the head poses
(filters, identity majority, farthest-point sampling on the sphere of head directions)."""

from .coverage import MAX_REFERENCES, farthest_poses, head_directions
from .pick import REASONS, Candidate, PickResult, PickSettings, laplacian_variance, pick_reference_faces

__all__ = ["MAX_REFERENCES", "REASONS", "Candidate", "PickResult", "PickSettings", "farthest_poses",
           "head_directions", "laplacian_variance", "pick_reference_faces"]
