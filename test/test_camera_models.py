"""Camera models from CameraInfo: parsing and its errors, undistortion against the forward models
(to 1e-4 normalised units over the whole image), rectification against OpenCV, velocities."""
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from superpoint_ros.camera_models import (CameraInfoError, CameraModel, UnsupportedDistortionModel,
                                          project_normalised, rectify_points, undistort_points)
from superpoint_ros.io.bags import camera_info_message

# Realistic strong lenses. EuRoC MAV cam0 (plumb_bob, published calibration); a wide lens in the
# rational model (~140 degrees across the diagonal, barrel); a TUM-VI-like equidistant fisheye
# whose image corners lie beyond 90 degrees off axis (a 180-degree-class lens).
EUROC = CameraModel(752, 480, [[458.654, 0, 367.215], [0, 457.296, 248.375], [0, 0, 1]],
                    [-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05, 0.0], "plumb_bob")
WIDE_RATIONAL = CameraModel(640, 480, [[300.0, 0, 319.5], [0, 300.0, 239.5], [0, 0, 1]],
                            [0.9, 0.05, 0.001, -0.0005, 0.0, 1.3, 0.2, 0.0], "rational_polynomial")
FISHEYE = CameraModel(512, 512, [[190.978, 0, 254.932], [0, 190.973, 256.897], [0, 0, 1]],
                      [0.0034823894, 0.00071503484, -0.0020532361, 0.00020293673], "equidistant")
CAMERAS = {"plumb_bob": EUROC, "rational_polynomial": WIDE_RATIONAL, "equidistant": FISHEYE}
#: Off-axis angle up to which the fisheye test asks for exact undistortion (x/z grows as tan).
FISHEYE_TEST_MAX_ANGLE = np.deg2rad(80)


# --- independent forward models (the textbook formulas, to pin OpenCV's coefficient order) ----------
def textbook_project(camera: CameraModel, normalised: np.ndarray) -> np.ndarray:
    x, y = normalised[:, 0], normalised[:, 1]
    d = np.zeros(8)
    d[:camera.D.size] = camera.D
    if camera.distortion_model == "equidistant":
        r = np.hypot(x, y)
        theta = np.arctan(r)
        k1, k2, k3, k4 = d[:4]
        theta_d = theta * (1 + k1 * theta ** 2 + k2 * theta ** 4 + k3 * theta ** 6 + k4 * theta ** 8)
        scale = np.where(r > 0, theta_d / np.maximum(r, 1e-300), 1.0)
        xd, yd = x * scale, y * scale
    else:
        k1, k2, p1, p2, k3, k4, k5, k6 = d
        r2 = x * x + y * y
        radial = (1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3) / (1 + k4 * r2 + k5 * r2 ** 2 + k6 * r2 ** 3)
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    K = camera.K
    return np.stack([K[0, 0] * xd + K[0, 1] * yd + K[0, 2], K[1, 1] * yd + K[1, 2]], axis=1)


def pixel_grid(camera: CameraModel, step: float = 4.0) -> np.ndarray:
    """Every ``step`` px over the whole image, the four outer corners ``(-0.5, -0.5)`` ... included."""
    xs = np.append(np.arange(-0.5, camera.width - 0.5, step), camera.width - 0.5)
    ys = np.append(np.arange(-0.5, camera.height - 0.5, step), camera.height - 0.5)
    return np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)


def fisheye_angle(camera: CameraModel, pixels: np.ndarray) -> np.ndarray:
    """Off-axis angle (rad) of each pixel of an equidistant camera, by inverting theta_d(theta)
    on a dense table (monotonic for these coefficients: asserted)."""
    theta = np.linspace(0, np.pi / 2 + 0.4, 200001)
    k1, k2, k3, k4 = camera.D
    theta_d = theta * (1 + k1 * theta ** 2 + k2 * theta ** 4 + k3 * theta ** 6 + k4 * theta ** 8)
    assert np.all(np.diff(theta_d) > 0)
    offset = (pixels - camera.K[:2, 2]) / np.diag(camera.K)[:2]
    return np.interp(np.hypot(offset[:, 0], offset[:, 1]), theta_d, theta)


# --- parsing -------------------------------------------------------------------------------------
def test_from_camera_info_reads_rosbags_and_ros1_style_messages():
    k = EUROC.K
    msg = camera_info_message(k, (480, 752), 0, "cam0", d=EUROC.D)
    camera = CameraModel.from_camera_info(msg)
    assert (camera.width, camera.height, camera.distortion_model) == (752, 480, "plumb_bob")
    np.testing.assert_array_equal(camera.K, k)
    np.testing.assert_array_equal(camera.D, EUROC.D)
    np.testing.assert_array_equal(camera.R, np.eye(3))
    np.testing.assert_array_equal(camera.P, np.hstack([k, np.zeros((3, 1))]))
    assert camera.same_calibration(EUROC) is False  # EUROC has no P
    ros1 = SimpleNamespace(width=752, height=480, distortion_model="plumb_bob", K=list(k.ravel()), D=list(EUROC.D),
                           R=[0.0] * 9, P=[0.0] * 12)  # ROS 1 names; zero R/P as mono drivers publish
    from_ros1 = CameraModel.from_camera_info(ros1)
    np.testing.assert_array_equal(from_ros1.R, np.eye(3))
    assert from_ros1.P is None and from_ros1.same_calibration(EUROC)
    assert not from_ros1.same_calibration(CameraModel(752, 480, k * 1.001, EUROC.D, "plumb_bob"))


@pytest.mark.ros
def test_from_camera_info_reads_rclpy_messages():
    CameraInfo = pytest.importorskip("sensor_msgs.msg").CameraInfo
    msg = CameraInfo(width=512, height=512, distortion_model="equidistant", d=list(FISHEYE.D),
                     k=list(FISHEYE.K.ravel()), r=list(np.eye(3).ravel()), p=[0.0] * 12)
    camera = CameraModel.from_camera_info(msg)
    assert camera.is_fisheye and camera.is_distorted and camera.same_calibration(FISHEYE)


def info(**changes):
    fields = dict(width=640, height=480, distortion_model="plumb_bob", d=[0.1, 0.01, 0.0, 0.0, 0.0],
                  k=[500.0, 0, 319.5, 0, 500.0, 239.5, 0, 0, 1], r=list(np.eye(3).ravel()), p=[0.0] * 12)
    fields.update(changes)
    return SimpleNamespace(**fields)


@pytest.mark.parametrize("changes, error, message", [
    (dict(k=[0.0] * 9), CameraInfoError, "uncalibrated"),
    (dict(k=[500.0, 0, 319.5, 0, 500.0, 239.5, 0, 0]), CameraInfoError, "K has 8 values, expected 9"),
    (dict(k=[500.0, 0, np.nan, 0, 500.0, 239.5, 0, 0, 1]), CameraInfoError, "K has non-finite"),
    (dict(k=[-500.0, 0, 319.5, 0, 500.0, 239.5, 0, 0, 1]), CameraInfoError, "focal lengths must be positive"),
    (dict(d=[0.1, 0.01, 0.0]), CameraInfoError, "takes 4 or 5 coefficients, camera info D has 3"),
    (dict(d=[0.1, np.inf, 0.0, 0.0, 0.0]), CameraInfoError, "D has non-finite"),
    (dict(r=[1.0, 0, 0]), CameraInfoError, "R has 3 values"),
    (dict(r=[2.0, 0, 0, 0, 2.0, 0, 0, 0, 2.0]), CameraInfoError, "R is not a rotation"),
    (dict(p=[1.0] * 9), CameraInfoError, "P has 9 values, expected 12"),
    (dict(width=0), CameraInfoError, "size 0x480"),
    (dict(distortion_model="equidistant"), CameraInfoError, "takes 4 coefficients"),
    (dict(distortion_model="fov"), UnsupportedDistortionModel, "unsupported distortion_model 'fov'"),
    (dict(distortion_model=""), UnsupportedDistortionModel, "no distortion_model"),
])
def test_unusable_camera_info_raises_a_specific_error(changes, error, message):
    with pytest.raises(error, match=message):
        CameraModel.from_camera_info(info(**changes))


def test_unsupported_model_is_a_camera_info_error_but_a_distinct_type():
    """The node catches UnsupportedDistortionModel (pixel-only output) apart from malformed info."""
    assert issubclass(UnsupportedDistortionModel, CameraInfoError)
    with pytest.raises(CameraInfoError) as caught:
        CameraModel.from_camera_info(info(d=[0.1]))
    assert not isinstance(caught.value, UnsupportedDistortionModel)


def test_missing_field_is_named():
    broken = info()
    del broken.k
    with pytest.raises(CameraInfoError, match="no field 'k'"):
        CameraModel.from_camera_info(broken)


# --- undistortion --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CAMERAS)
def test_opencv_forward_model_is_the_textbook_one(name):
    """Pins the coefficient order: OpenCV's projectPoints equals the written-out formulas."""
    camera = CAMERAS[name]
    normalised = np.random.default_rng(0).uniform(-1.2, 1.2, (500, 2))
    np.testing.assert_allclose(project_normalised(camera, normalised), textbook_project(camera, normalised),
                               rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", CAMERAS)
def test_undistortion_inverts_the_forward_model_over_the_whole_image(name):
    """Known normalised points, projected by OpenCV's forward model (projectPoints /
    fisheye.projectPoints) onto every part of the image, corners included, come back to 1e-4."""
    camera = CAMERAS[name]
    corners = np.array([[-0.5, -0.5], [camera.width - 0.5, -0.5], [-0.5, camera.height - 0.5],
                        [camera.width - 0.5, camera.height - 0.5]])
    # wide enough to cover every image pixel: tan(80 deg) for the fisheye, past the corner rays otherwise
    reach = np.tan(FISHEYE_TEST_MAX_ANGLE) if camera.is_fisheye else \
        1.1 * np.abs(undistort_points(camera, corners)).max()
    grid = np.linspace(-1, 1, 601)
    truth = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2) * reach
    if camera.is_fisheye:
        truth = truth[np.hypot(truth[:, 0], truth[:, 1]) <= reach]
    pixels = project_normalised(camera, truth)
    inside = np.all((pixels >= -0.5) & (pixels <= [camera.width - 0.5, camera.height - 0.5]), axis=1)
    truth, pixels = truth[inside], pixels[inside]
    if not camera.is_fisheye:  # the test points reach every corner (the fisheye's are beyond 90 deg)
        assert all(np.min(np.linalg.norm(pixels - c, axis=1)) < 3.0 for c in corners)
    assert len(truth) > 20000
    recovered = undistort_points(camera, pixels)
    error = np.abs(recovered - truth).max()
    assert error < 1e-4, f"{name}: max error {error:.2e} normalised units"


@pytest.mark.parametrize("name", CAMERAS)
def test_every_pixel_round_trips_or_is_nan_outside_the_valid_region(name):
    camera = CAMERAS[name]
    pixels = pixel_grid(camera)
    normalised = undistort_points(camera, pixels)
    valid = np.all(np.isfinite(normalised), axis=1)
    if camera.is_fisheye:
        angle = fisheye_angle(camera, pixels)
        assert valid[angle < FISHEYE_TEST_MAX_ANGLE].all()
        assert not valid[angle > np.pi / 2 + 0.01].any()  # behind the image plane: no x/z exists
        assert (angle > np.pi / 2 + 0.01).sum() > 100      # and the test did look at such pixels
    else:
        assert valid.all()  # corners included
    reprojected = project_normalised(camera, normalised[valid])
    assert np.abs(reprojected - pixels[valid]).max() < 1e-6


def test_no_distortion_is_the_inverse_of_k():
    k = np.array([[400.0, 0.5, 300.0], [0, 410.0, 200.0], [0, 0, 1]])
    pixels = pixel_grid(CameraModel(600, 400, k, [], ""), step=37)
    for camera in (CameraModel(600, 400, k, [], ""), CameraModel(600, 400, k, np.zeros(5), "plumb_bob"),
                   CameraModel(600, 400, k, np.zeros(4), "equidistant")):
        assert not camera.is_distorted
        normalised = undistort_points(camera, pixels)
        back = np.hstack([normalised, np.ones((len(pixels), 1))]) @ k.T
        np.testing.assert_allclose(back[:, :2], pixels, rtol=0, atol=1e-9)


def test_bad_point_arrays_are_rejected():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        undistort_points(EUROC, np.zeros((3, 3)))
    assert undistort_points(EUROC, np.zeros((0, 2))).shape == (0, 2)


# --- rectification --------------------------------------------------------------------------------
def stereo_rectification(camera: CameraModel, right: bool):
    """R, P of one camera of a stereo pair rectified by OpenCV (a small rotation between them)."""
    size = (camera.width, camera.height)
    rotation = cv2.Rodrigues(np.array([0.01, -0.02, 0.005]))[0]
    translation = np.array([[-0.11], [0.002], [0.001]])
    if camera.is_fisheye:
        r1, r2, p1, p2, _ = cv2.fisheye.stereoRectify(camera.K, camera.D, camera.K, camera.D, size, rotation,
                                                      translation, flags=cv2.CALIB_ZERO_DISPARITY)
    else:
        r1, r2, p1, p2, *_ = cv2.stereoRectify(camera.K, camera.D, camera.K, camera.D, size, rotation, translation,
                                               alpha=0)
    return (r2, p2) if right else (r1, p1)


@pytest.mark.parametrize("name", CAMERAS)
@pytest.mark.parametrize("right", [False, True])
def test_rectify_points_matches_opencvs_rectification(name, right):
    base = CAMERAS[name]
    r, p = stereo_rectification(base, right)
    camera = CameraModel(base.width, base.height, base.K, base.D, base.distortion_model, R=r, P=p)
    pixels = pixel_grid(camera, step=16)
    if camera.is_fisheye:
        pixels = pixels[fisheye_angle(camera, pixels) < FISHEYE_TEST_MAX_ANGLE]
        expected = cv2.fisheye.undistortPoints(pixels.reshape(-1, 1, 2), camera.K, camera.D, R=r, P=p,
                                               criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12))
    else:
        expected = cv2.undistortPoints(pixels.reshape(-1, 1, 2), camera.K, camera.D, R=r, P=p,
                                       criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12))
    rectified = rectify_points(camera, pixels)
    np.testing.assert_allclose(rectified, expected.reshape(-1, 2), rtol=0, atol=1e-4)


def test_rectify_needs_a_projection_matrix():
    with pytest.raises(CameraInfoError, match="no projection matrix"):
        rectify_points(EUROC, np.zeros((1, 2)))


