"""camera_info.images: rectified images use CameraInfo's rectified camera, raw ones the raw camera."""
import numpy as np
import pytest

from superpoint_ros.camera_models import (CameraModel, images_are_rectified, rectified_camera, rectify_points,
                                          undistort_points)
from superpoint_ros.rig import is_rectified


def raw_right_camera() -> CameraModel:
    K = np.array([[458.0, 0, 367.0], [0, 457.0, 248.0], [0, 0, 1]])
    angle = np.deg2rad(1.0)
    R = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    P = np.array([[435.0, 0, 360.0, -435.0 * 0.11], [0, 435.0, 250.0, 0], [0, 0, 1, 0]])
    return CameraModel(752, 480, K, [-0.28, 0.07, 2e-4, 1.8e-5, 0.0], "plumb_bob", R, P)


@pytest.mark.parametrize("topic, kind, expected", [
    ("/stereo/left/image_rect", "auto", True), ("/cam/image_rect_color", "auto", True),
    ("/cam0/image_raw", "auto", False), ("/camera/image", "auto", False),
    ("/cam0/image_raw", "rectified", True), ("/stereo/left/image_rect", "raw", False)])
def test_images_are_rectified_follows_image_proc_names_unless_told(topic, kind, expected):
    assert images_are_rectified(topic, kind) is expected


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="camera_info.images 'sideways'"):
        images_are_rectified("/image", "sideways")


def test_rectified_camera_maps_rectified_pixels_to_the_rays_the_raw_camera_gives():
    raw = raw_right_camera()
    rect = rectified_camera(raw)
    assert is_rectified(rect) and not is_rectified(raw)
    assert np.array_equal(rect.P, raw.P) and np.array_equal(rect.K, raw.P[:, :3])
    xy = np.stack(np.meshgrid(np.linspace(40, 700, 9), np.linspace(30, 450, 7)), -1).reshape(-1, 2)
    rectified_xy = rectify_points(raw, xy)  # where image_proc puts these raw pixels
    # the rectified image's pixel, through the rectified camera, is the raw pixel's ray rotated by R
    rays = np.c_[undistort_points(raw, xy), np.ones(len(xy))] @ raw.R.T
    expected = rays[:, :2] / rays[:, 2:]
    assert np.allclose(undistort_points(rect, rectified_xy), expected, atol=1e-6)
    # and rectifying already-rectified pixels again with the rectified camera changes nothing
    assert np.allclose(rectify_points(rect, rectified_xy), rectified_xy, atol=1e-6)
