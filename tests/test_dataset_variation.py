"""Δ = Σ circular ranges: wrap-around at ±180°, agreement with max − min, a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest

from faithfulfaces_core.dataset.variation import circular_range, pose_ranges, pose_variation


def smallest_arc_reference(angles: np.ndarray) -> float:
    """Brute force: for each sample as the arc's start, the arc reaching every other sample counter-clockwise."""
    a = np.asarray(angles, dtype=np.float64) % 360.0
    if a.size <= 1:
        return 0.0
    return float(min(np.max((a - start) % 360.0) for start in a))


@pytest.mark.parametrize(
    ("angles", "expected"),
    [
        ([179.0, -179.0], 2.0),
        ([170.0, -170.0, 170.0], 20.0),
        ([150.0, -150.0, 90.0], 120.0),
        ([-10.0, 10.0], 20.0),
        ([0.0, 90.0, 180.0, 270.0], 270.0),
        ([5.0], 0.0),
        ([], 0.0),
        ([-180.0, 180.0], 0.0),
        ([30.0, 30.0 + 360.0, 30.0 - 720.0], 0.0),
    ],
)
def test_known_ranges(angles, expected):
    assert circular_range(np.array(angles)) == pytest.approx(expected, abs=1e-12)


def test_matches_brute_force_on_random_sets():
    rng = np.random.default_rng(1234)
    for _ in range(300):
        n = int(rng.integers(2, 12))
        centre, spread = rng.uniform(-180, 180), rng.uniform(0, 400)
        angles = centre + rng.uniform(-spread / 2, spread / 2, size=n)
        assert circular_range(angles) == pytest.approx(smallest_arc_reference(angles), abs=1e-9)


def test_equals_max_minus_min_bit_for_bit_inside_a_half_circle():
    rng = np.random.default_rng(7)
    for _ in range(200):
        angles = rng.uniform(-90, 90, size=int(rng.integers(2, 20))).astype(np.float32).astype(np.float64)
        assert circular_range(angles) == float(angles.max() - angles.min())


def test_invariant_to_full_turns_and_rotation():
    rng = np.random.default_rng(3)
    angles = rng.uniform(-180, 180, size=7)
    base = circular_range(angles)
    turned = angles + 360.0 * rng.integers(-3, 4, size=7)
    assert circular_range(turned) == pytest.approx(base, abs=1e-9)
    assert circular_range(angles + 123.4) == pytest.approx(base, abs=1e-9)


def test_pose_variation_sums_the_three_axes():
    angles = np.array([[10.0, 175.0, -5.0], [-20.0, -175.0, 5.0], [0.0, 180.0, 0.0]])
    np.testing.assert_allclose(pose_ranges(angles), [30.0, 10.0, 10.0], atol=1e-12)
    assert pose_variation(angles) == pytest.approx(50.0, abs=1e-12)
    naive = float((angles.max(0) - angles.min(0)).sum())
    assert naive == pytest.approx(395.0)  # what a plain max − min would have kept


def test_bad_shapes_and_values():
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        pose_ranges(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="finite"):
        circular_range(np.array([1.0, np.nan]))
