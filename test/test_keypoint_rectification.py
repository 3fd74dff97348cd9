"""Rectifying keypoints of a raw stereo pair lands them where the detector finds them on the
rectified pair (camera_models.rectify_points, issue 16's raw-stereo path).

The raw pair is made from a real rectified one (scikit-image's Middlebury motorcycle): each
camera gets a known distortion (left plumb_bob, EuRoC-like; right equidistant), its own
intrinsics and a small rotation; its raw image is the rectified image sampled where OpenCV's
``undistortPoints(K, D, R, P)`` (the rectification ``image_proc`` applies) sends each raw pixel.
So the rectified pair is known exactly, and the check is independent of how rectify_points
composes undistortion, R and P.

What is measured: SuperPoint (shipped weights, fp32, sub-pixel) keypoints of the raw image,
rectified, against those of the rectified image: mutual nearest neighbours within 3 px
("repeated"), their median distance, and the same for a control that resamples the rectified
image through the raw intrinsics only (no distortion, no rotation). The control is the
detector's own noise under resampling (measured 0.60 px median, 85% repeated; the rectified raw
keypoints 0.57 / 0.65 px, 88-89%), so the raw path must match it, not zero.
"""
import cv2
import numpy as np
import pytest
from scipy.spatial import cKDTree

from superpoint_ros.camera_models import CameraModel, rectify_points

pytestmark = pytest.mark.slow

RECTIFIED_FOCAL_PX = 800.0
BASELINE_M = 0.1
TIGHT = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
MARGIN_PX = 12  # keypoints this close to the rectified image's edge may have no partner there


@pytest.fixture(scope="module")
def rectified_pair():
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    return [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in (left, right)]


def rectified_projection(size_hw, right: bool) -> np.ndarray:
    height, width = size_hw
    p = np.array([[RECTIFIED_FOCAL_PX, 0, (width - 1) / 2, 0], [0, RECTIFIED_FOCAL_PX, (height - 1) / 2, 0],
                  [0, 0, 1, 0]])
    p[0, 3] = -RECTIFIED_FOCAL_PX * BASELINE_M if right else 0.0
    return p


def raw_camera(size_hw, right: bool, distorted: bool = True) -> CameraModel:
    """The raw camera of one side: its own K, a known distortion and rotation (or, with
    ``distorted=False``, the same K with neither: the resampling control)."""
    height, width = size_hw
    k = np.array([[830.0, 0, (width - 1) / 2 + 4.0], [0, 828.3, (height - 1) / 2 - 3.0], [0, 0, 1]])
    p = rectified_projection(size_hw, right)
    if not distorted:
        return CameraModel(width, height, k, [], "", R=None, P=p)
    if right:
        d, model, rotvec = [0.02, -0.01, 0.003, -0.0005], "equidistant", [-0.012, 0.01, -0.006]
    else:
        d, model, rotvec = [-0.28, 0.07, 2e-4, 2e-5, 0.0], "plumb_bob", [0.01, -0.015, 0.008]
    return CameraModel(width, height, k, d, model, R=cv2.Rodrigues(np.array(rotvec))[0], P=p)


def raw_image(rectified: np.ndarray, camera: CameraModel) -> np.ndarray:
    """What ``camera`` sees: each raw pixel samples the rectified image where OpenCV rectifies it."""
    height, width = rectified.shape
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    pixels = np.stack([xs, ys], axis=-1).reshape(-1, 1, 2)
    if camera.is_fisheye:
        where = cv2.fisheye.undistortPoints(pixels, camera.K, camera.D, R=camera.R, P=camera.P, criteria=TIGHT)
    elif camera.is_distorted:
        where = cv2.undistortPoints(pixels, camera.K, camera.D, R=camera.R, P=camera.P, criteria=TIGHT)
    else:
        where = cv2.undistortPoints(pixels, camera.K, None, R=camera.R, P=camera.P)
    where = where.reshape(height, width, 2).astype(np.float32)
    return cv2.remap(rectified, where[..., 0], where[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def repeated(points: np.ndarray, reference: np.ndarray, radius: float = 3.0):
    """``(distances of mutual nearest neighbours within radius px, fraction of points repeated)``."""
    distance, nearest = cKDTree(reference).query(points)
    _, back = cKDTree(points).query(reference)
    mutual = (back[nearest] == np.arange(len(points))) & (distance <= radius)
    return distance[mutual], mutual.mean()


def inside(points: np.ndarray, size_hw) -> np.ndarray:
    height, width = size_hw
    return np.all((points >= MARGIN_PX) & (points <= [width - 1 - MARGIN_PX, height - 1 - MARGIN_PX]), axis=1)


@pytest.fixture(scope="module")
def extractor():
    from superpoint_ros.extractor import FeatureExtractor

    return FeatureExtractor(device="cpu", precision="fp32", max_keypoints=1000, subpixel=True)


@pytest.fixture(scope="module")
def reference_keypoints(rectified_pair, extractor):
    """Keypoints of the rectified left and right images, ``[(N, 2) xy px] * 2``."""
    return [extractor(image).keypoints for image in rectified_pair]


@pytest.fixture(scope="module")
def detector_noise_px(rectified_pair, extractor, reference_keypoints):
    """Median localisation difference of repeated keypoints after resampling the left rectified
    image through the raw K alone (the detector's noise, not the geometry's)."""
    size = rectified_pair[0].shape
    control = raw_camera(size, right=False, distorted=False)
    points = rectify_points(control, extractor(raw_image(rectified_pair[0], control)).keypoints)
    distances, fraction = repeated(points[inside(points, size)], reference_keypoints[0])
    assert fraction > 0.75 and 0.2 < np.median(distances) < 1.0  # a real detector with real noise
    return float(np.median(distances))


@pytest.mark.parametrize("right", [False, True], ids=["left_plumb_bob", "right_equidistant"])
def test_rectified_raw_keypoints_land_on_the_rectified_detections(rectified_pair, extractor, reference_keypoints,
                                                                  detector_noise_px, right):
    rectified = rectified_pair[int(right)]
    size = rectified.shape
    camera = raw_camera(size, right)
    raw_keypoints = extractor(raw_image(rectified, camera)).keypoints
    reference = reference_keypoints[int(right)]
    points = rectify_points(camera, raw_keypoints)
    keep = inside(points, size)
    assert keep.sum() > 500
    distances, fraction = repeated(points[keep], reference)
    assert fraction > 0.8
    assert np.median(distances) < detector_noise_px + 0.1, (np.median(distances), detector_noise_px)
    # the test can tell: leaving out the distortion, or the rotation, or both misplaces them by pixels
    wrong = [CameraModel(camera.width, camera.height, camera.K, [], "", R=camera.R, P=camera.P),
             CameraModel(camera.width, camera.height, camera.K, camera.D, camera.distortion_model, R=None, P=camera.P)]
    for model in wrong:
        misplaced = rectify_points(model, raw_keypoints)[keep]
        assert np.median(cKDTree(reference).query(misplaced)[0]) > 3.0
    assert np.median(cKDTree(reference).query(raw_keypoints[keep])[0]) > 3.0
