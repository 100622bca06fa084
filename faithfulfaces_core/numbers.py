"""The one check every number from a user goes through: finite, and inside its range.

ComfyUI checks a widget's min/max with ``<``/``>``, which NaN passes, and JSON parsers accept
``NaN`` and ``Infinity``; a NaN strength or scale then silently gives a black video (or poisons
state that later runs reuse). Every float input of the nodes, the generator, the native patch
and the command-line configs calls ``finite_number`` before anything is touched.
"""

from __future__ import annotations

import math
from numbers import Real

from .errors import FaithfulFacesError


def _range_text(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" from {low:g} to {high:g}"
    if low is not None:
        return f" ≥ {low:g}"
    if high is not None:
        return f" ≤ {high:g}"
    return ""


def finite_number(
    value: object, name: str, *, low: float | None = None, high: float | None = None, hint: str = ""
) -> float:
    """``value`` as a float, or a ``FaithfulFacesError`` naming ``name``, the range and the fix.

    Refuses NaN, ±Infinity, booleans, non-numbers and values outside ``[low, high]``. ``hint``
    (e.g. ``"1 = as trained"``) is added to the message in parentheses.
    """
    number = float(value) if isinstance(value, Real) and not isinstance(value, bool) else math.nan
    if math.isfinite(number) and (low is None or number >= low) and (high is None or number <= high):
        return number
    shown = repr(value) if not isinstance(value, Real) or isinstance(value, bool) else f"{value}"
    extra = f" ({hint})" if hint else ""
    raise FaithfulFacesError(f"{name} {shown} is not allowed: use a finite number{_range_text(low, high)}{extra}.")
