"""Box enlargement and clipping, the released crop pipeline, and the head-axes preview."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation
from torchvision import transforms

from faithfulfaces_core.errors import FaithfulFacesError
from faithfulfaces_core.pose.crop import crop_face, enlarge_box
from faithfulfaces_core.pose.draw import AXIS_COLORS, BOX_COLOR, draw_face_pose, draw_head_axes, head_axes_2d
from faithfulfaces_core.pose.preprocess import crops_to_input, resize_center_crop
from faithfulfaces_core.pose.types import EulerAngles


@pytest.fixture
def rng():
    seed = np.random.SeedSequence().entropy % 2**32
    print("seed", seed)
    return np.random.default_rng(seed)


def test_enlarge_box_exact():
    assert enlarge_box((100, 100, 200, 220), 1.5, (480, 640)) == (75, 70, 225, 250)
    assert enlarge_box((100, 100, 200, 220), 1.0, (480, 640)) == (100, 100, 200, 220)
    assert enlarge_box((100, 100, 200, 220), 2.0, (480, 640)) == (50, 40, 250, 280)
    # x: 10.5 ± 7.5 → 3 .. 18; y: 10.5 ± 6 → 4.5 .. 16.5, halves round up → 5 .. 17
    assert enlarge_box((8, 8.5, 13, 12.5), 3.0, (100, 100)) == (3, 5, 18, 17)
    # clipped to the image, never padded
    assert enlarge_box((-10, 400, 90, 470), 1.5, (480, 640)) == (0, 383, 115, 480)
    assert enlarge_box((600, 0, 640, 20), 1.5, (480, 640)) == (590, 0, 640, 25)


def test_enlarge_box_validation():
    with pytest.raises(FaithfulFacesError, match="enlargement must be positive, got 0; the paper uses 1.5"):
        enlarge_box((0, 0, 10, 10), 0, (20, 20))
    image = np.zeros((50, 60, 3), np.uint8)
    with pytest.raises(FaithfulFacesError, match=r"lies outside the 60x50 image; nothing to crop"):
        crop_face(image, (100, 100, 120, 130))


@pytest.mark.parametrize("shape", [(300, 180), (180, 300), (224, 224), (90, 97), (1000, 501)])
def test_released_resize_center_crop_matches_torchvision(rng, shape):
    image = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    reference = transforms.CenterCrop(224)(transforms.Resize(224)(Image.fromarray(image)))
    np.testing.assert_array_equal(resize_center_crop(image, 224), np.asarray(reference))


def test_crop_face_cuts_the_enlarged_box(rng):
    image = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    crop, box = crop_face(image, (300.2, 100.4, 380.6, 210.1), enlarge=1.5, size=112)
    assert box == (280, 73, 401, 238)
    np.testing.assert_array_equal(crop, resize_center_crop(image[73:238, 280:401], 112))
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8


def test_crops_to_input_validation():
    with pytest.raises(FaithfulFacesError, match=r"must be uint8 \(0\.\.255\), got float32"):
        crops_to_input(np.zeros((1, 224, 224, 3), np.float32), 224)
    with pytest.raises(
        FaithfulFacesError, match=r"must be an array \[B, S, S, 3\] of RGB images, got shape \(224, 224, 3\)"
    ):
        crops_to_input(np.zeros((224, 224, 3), np.uint8), 224)
    assert crops_to_input(np.zeros((0, 224, 224, 3), np.uint8), 224).shape == (0, 3, 224, 224)


def test_head_axes_match_the_released_preview_convention(rng):
    # 6DRepNet/Hopenet previews draw the columns of Rx(pitch)·Ry(-yaw)·Rz(roll) (intrinsic XYZ)
    for pitch, yaw, roll in rng.uniform(-80, 80, size=(20, 3)):
        reference = Rotation.from_euler("XYZ", [pitch, -yaw, roll], degrees=True).as_matrix()[:2, :].T
        np.testing.assert_allclose(head_axes_2d((pitch, yaw, roll)), reference, atol=1e-12)
    np.testing.assert_allclose(head_axes_2d(EulerAngles(0, 0, 0)), [[1, 0], [0, 1], [0, 0]], atol=1e-15)
    np.testing.assert_allclose(head_axes_2d((0, 30, 0))[2], [-0.5, 0], atol=1e-12)  # nose to the image's left
    np.testing.assert_allclose(head_axes_2d((30, 0, 0))[2], [0, -0.5], atol=1e-12)  # nose up
    np.testing.assert_allclose(head_axes_2d((0, 0, 30))[0], [np.sqrt(3) / 2, 0.5], atol=1e-12)  # clockwise


def test_draw_axes_colours_and_copy():
    image = np.zeros((200, 200, 3), np.uint8)
    out = draw_head_axes(image, (0, 0, 0), (100, 100), 60, thickness=3)
    assert not image.any()  # the input is left alone
    assert tuple(out[100, 150]) == AXIS_COLORS[0]  # x: red, to the right
    assert tuple(out[150, 100]) == AXIS_COLORS[1]  # y: green, down
    assert not out[100, 40].any() and not out[40, 100].any()
    out = draw_head_axes(image, (0, 45, 0), (100, 100), 60, thickness=3)
    assert tuple(out[100, 70]) == AXIS_COLORS[2]  # z: blue, swung to the left by positive yaw


def test_draw_face_pose_box_keypoints_label():
    image = np.full((300, 300, 3), 40, np.uint8)
    keypoints = np.array([[120.0, 130.0], [180.0, 130.0], [150.0, 160.0], [125.0, 190.0], [175.0, 190.0]])
    out = draw_face_pose(image, (100, 100, 200, 220), EulerAngles(5, -10, 3), keypoints=keypoints)
    assert tuple(out[160, 100]) == BOX_COLOR and tuple(out[220, 130]) == BOX_COLOR
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[125:135, 115:125] != 40).any()  # a keypoint dot
    assert (out[80:97, 100:200] != 40).any()  # the label above the box
