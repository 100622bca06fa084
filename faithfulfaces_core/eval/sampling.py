"""Which frames FaceSim looks at: ``count`` frames spread uniformly over the video, or all.

Uniform sampling keeps the first and the last frame and spaces the rest evenly (rounded half
up), so two videos of the same length are always compared on the same frame positions.
"""

from __future__ import annotations

import math

from ..errors import FaithfulFacesError

DEFAULT_FRAMES = 16
ALL = "all"


def parse_frame_count(value: str | int | None) -> int | None:
    """``"all"`` / ``None`` / ``0`` → ``None`` (every frame); a whole number ≥ 1 → itself."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text == ALL:
            return None
        try:
            value = int(text)
        except ValueError:
            raise FaithfulFacesError(
                f"Frame count '{value}' is neither a whole number nor 'all'; use e.g. 16 (the usual FaceSim "
                "protocol) or 'all'."
            ) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FaithfulFacesError(
            f"Frame count must be a whole number >= 1 or 'all' (0 also means all); got {value!r}."
        )
    return None if value == 0 else value


def uniform_indices(total: int, count: int | None) -> list[int]:
    """``count`` distinct indices in ``0..total-1``, evenly spread, first and last included.

    ``count`` ``None`` or ≥ ``total`` gives every index; ``count == 1`` gives the first frame.
    """
    if total < 0:
        raise FaithfulFacesError(f"A video cannot have {total} frames.")
    if count is None or count >= total:
        return list(range(total))
    if count < 1:
        raise FaithfulFacesError(f"Sample at least one frame; got {count}.")
    if count == 1:
        return [0]
    step = (total - 1) / (count - 1)
    return [math.floor(k * step + 0.5) for k in range(count)]
