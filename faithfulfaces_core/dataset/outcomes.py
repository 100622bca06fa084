"""What happened to each video: the done-log record and the fixed set of outcomes and reasons.

Every processed video, kept or not, gets one line in ``done.jsonl``; a resumed run skips the
keys found there (and in the manifest). The report counts these records.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

KEPT = "kept"
REJECTED = "rejected"
ERROR = "error"

# reason codes (outcome -> reasons)
POSE_VARIATION_OK = "pose_variation_ok"
MULTIPLE_FACES = "multiple_faces"
NO_FACE = "no_face"
LOW_POSE_VARIATION = "low_pose_variation"
MIXED_IDENTITY = "mixed_identity"
NO_CAPTION = "no_caption"
UNREADABLE = "unreadable"
DECODE_FAILED = "decode_failed"

REASONS: dict[str, tuple[str, ...]] = {
    KEPT: (POSE_VARIATION_OK,),
    REJECTED: (MULTIPLE_FACES, NO_FACE, MIXED_IDENTITY, LOW_POSE_VARIATION, NO_CAPTION),
    ERROR: (UNREADABLE, DECODE_FAILED),
}

REASON_TEXT = {
    POSE_VARIATION_OK: "Δ ≥ threshold",
    MULTIPLE_FACES: "a frame has more than one face",
    NO_FACE: "no sampled frame has a face",
    MIXED_IDENTITY: "the face frames show more than one person",
    LOW_POSE_VARIATION: "Δ < threshold",
    NO_CAPTION: "the captioner has no caption",
    UNREADABLE: "cannot open the file / no frames",
    DECODE_FAILED: "decoding failed part-way",
}


class DoneRecord(BaseModel):
    """One line of ``done.jsonl``."""

    model_config = ConfigDict(extra="forbid")

    key: str
    video: str
    outcome: Literal["kept", "rejected", "error"]
    reason: str
    detail: str = ""
    frames_decoded: int = 0
    frames_declared: int = 0  # the container's count (0 = unknown); above frames_decoded = truncated file
    frames_sampled: int = 0
    frames_with_face: int = 0
    delta: float | None = None
    ranges: tuple[float, float, float] | None = None  # circular range of pitch, yaw, roll
    identity_spread: float | None = None
    source: str | None = None  # for a shot: the key of its video
    shots: int | None = None  # for a shot: how many shots its video has
    seconds: float = 0.0

    @model_validator(mode="after")
    def _reason_fits(self) -> DoneRecord:
        if self.reason not in REASONS[self.outcome]:
            raise ValueError(f"reason '{self.reason}' does not belong to outcome '{self.outcome}'")
        return self
