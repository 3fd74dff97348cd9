"""Two-view geometry for the front-end: robust outlier rejection and rectified-stereo matching.

Points are ``(N, 2)`` float xy pixels in the package's pixel convention (keypoints.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np
import torch

from .matching import mutual_nn_match_candidates

#: OpenCV USAC flavours by parameter name (``ransac.method``).
USAC_METHODS = {
    "magsac": cv2.USAC_MAGSAC,
    "default": cv2.USAC_DEFAULT,
    "accurate": cv2.USAC_ACCURATE,
    "fast": cv2.USAC_FAST,
}
#: Fewest correspondences each model needs.
MIN_POINTS = {"fundamental": 8, "homography": 4}


@dataclass
class RansacResult:
    """``inliers``: ``(M,)`` bool; ``model``: the 3x3 F or H (``None`` when not estimated);
    ``verified``: whether a model was estimated (``False``: too few matches or degenerate data,
    every match kept)."""

    inliers: np.ndarray
    model: Optional[np.ndarray]
    verified: bool


def ransac_inliers(points0: np.ndarray, points1: np.ndarray, model: str = "fundamental",
                   method: str = "magsac", threshold: float = 1.0, confidence: float = 0.999,
                   max_iterations: int = 1000, min_matches: int = 15) -> RansacResult:
    """Inlier mask of correspondences ``points0[i] <-> points1[i]`` under a fundamental matrix
    (epipolar distance, general motion) or a homography (reprojection distance, planar scene or
    pure rotation), estimated with OpenCV's USAC.

    With fewer than ``max(min_matches, minimal sample)`` matches, or when OpenCV finds no model,
    every match is kept and ``verified`` is ``False``: a SLAM back-end can still use them, and it
    can tell them apart.
    """
    if model not in MIN_POINTS:
        raise ValueError(f"unknown geometric model {model!r} (use fundamental or homography)")
    if method not in USAC_METHODS:
        raise ValueError(f"unknown USAC method {method!r} (use {', '.join(USAC_METHODS)})")
    p0 = np.ascontiguousarray(points0, dtype=np.float64).reshape(-1, 2)
    p1 = np.ascontiguousarray(points1, dtype=np.float64).reshape(-1, 2)
    if p0.shape != p1.shape:
        raise ValueError(f"point sets differ in size: {p0.shape} vs {p1.shape}")
    keep_all = RansacResult(np.ones(len(p0), dtype=bool), None, False)
    if len(p0) < max(min_matches, MIN_POINTS[model]):
        return keep_all
    flag = USAC_METHODS[method]
    try:
        if model == "fundamental":
            matrix, mask = cv2.findFundamentalMat(p0, p1, flag, threshold, confidence, max_iterations)
        else:
            matrix, mask = cv2.findHomography(p0, p1, flag, threshold, maxIters=max_iterations,
                                              confidence=confidence)
    except cv2.error:  # degenerate configurations (e.g. all points on a line) can throw
        return keep_all
    if matrix is None or mask is None or matrix.shape != (3, 3):
        return keep_all
    return RansacResult(mask.reshape(-1).astype(bool), matrix, True)


def stereo_candidates(left_xy: torch.Tensor, right_xy: torch.Tensor, epipolar_tolerance: float,
                      min_disparity: float, max_disparity: float) -> torch.Tensor:
    """``(N, M)`` bool: which left/right keypoint pairs a *rectified* stereo pair allows.

    Rectified means matching points lie on the same row, so ``|y_l - y_r| <= epipolar_tolerance``,
    and the right camera sits to the right, so the disparity ``x_l - x_r`` lies in
    ``[min_disparity, max_disparity]``.
    """
    dy = (left_xy[:, None, 1] - right_xy[None, :, 1]).abs()
    disparity = left_xy[:, None, 0] - right_xy[None, :, 0]
    return (dy <= epipolar_tolerance) & (disparity >= min_disparity) & (disparity <= max_disparity)


#: px added to the row band searched for stereo candidates: the band only has to contain every pair
#: :func:`stereo_candidates` allows (float32 rounding of ``y +- tolerance`` is below 1e-3 px for
#: rows up to 8192); the exact test on each pair decides.
_BAND_MARGIN = 1e-2


def stereo_candidate_pairs(left_xy: torch.Tensor, right_xy: torch.Tensor, epipolar_tolerance: float,
                           min_disparity: float, max_disparity: float) -> torch.Tensor:
    """``(P, 2)`` long ``(left idx, right idx)``: exactly the pairs :func:`stereo_candidates`
    allows, found without the ``(N, M)`` mask: right keypoints sorted by row, each left keypoint's
    band of rows ``y +- epipolar_tolerance`` by binary search, then the same tests as the mask on
    those pairs only. ``left_xy`` ``(N, 2)``, ``right_xy`` ``(M, 2)`` float32 xy px on one
    device; rows sorted by left index."""
    device = left_xy.device
    order = torch.argsort(right_xy[:, 1], stable=True)
    right_rows = right_xy[order, 1].contiguous()
    reach = float(epipolar_tolerance) + _BAND_MARGIN
    start = torch.searchsorted(right_rows, left_xy[:, 1].contiguous() - reach, side="left")
    stop = torch.searchsorted(right_rows, left_xy[:, 1].contiguous() + reach, side="right")
    counts = stop - start
    left = torch.repeat_interleave(torch.arange(len(left_xy), device=device), counts)
    # position of each pair inside its left keypoint's band
    first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    right = order[torch.repeat_interleave(start, counts) + torch.arange(len(left), device=device) - first]
    dy = (left_xy[left, 1] - right_xy[right, 1]).abs()
    disparity = left_xy[left, 0] - right_xy[right, 0]
    keep = (dy <= epipolar_tolerance) & (disparity >= min_disparity) & (disparity <= max_disparity)
    return torch.stack([left[keep], right[keep]], dim=1)


def match_rectified_stereo(left_xy, left_desc, right_xy, right_desc, epipolar_tolerance: float,
                           min_disparity: float, max_disparity: float, ratio_test: Optional[float] = None,
                           max_distance: Optional[float] = None, device: Optional[torch.device] = None):
    """Stereo matches of a rectified pair: ``(indices (K, 2) int64 (left idx, right idx),
    distances (K,) float32, disparities (K,) float32 px)`` as numpy; every match obeys
    :func:`stereo_candidates` (mutual nearest neighbours among those pairs:
    :func:`superpoint_ros.matching.match_descriptors` with them as ``candidates``, so only the few
    pairs near each row are compared). Inputs are numpy or torch; the work runs on ``device``
    (default: the descriptors' device, CPU for numpy)."""
    if device is None:
        device = left_desc.device if isinstance(left_desc, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    lxy, rxy = (torch.as_tensor(xy, dtype=torch.float32, device=device) for xy in (left_xy, right_xy))
    pairs = stereo_candidate_pairs(lxy, rxy, epipolar_tolerance, min_disparity, max_disparity)
    indices, distances = mutual_nn_match_candidates(torch.as_tensor(left_desc, device=device),
                                                    torch.as_tensor(right_desc, device=device), pairs,
                                                    ratio_test, max_distance)
    disparities = lxy[indices[:, 0], 0] - rxy[indices[:, 1], 0]
    return (indices.cpu().numpy().astype(np.int64), distances.float().cpu().numpy(),
            disparities.cpu().numpy().astype(np.float32))


#: Fewest correspondences an essential matrix needs (the five-point solver).
MIN_POINTS_ESSENTIAL = 5


def essential_inliers(normalised0: np.ndarray, normalised1: np.ndarray, threshold_px: float, focal_px: float,
                      method: str = "magsac", confidence: float = 0.999, max_iterations: int = 1000,
                      min_matches: int = 15) -> RansacResult:
    """Inlier mask of ``normalised0[i] <-> normalised1[i]`` (``(M, 2)`` normalised undistorted
    camera coordinates, camera_models.undistort_points) under an essential matrix, estimated with
    OpenCV's USAC (MAGSAC++ by default). ``threshold_px``: the inlier threshold in pixels of a
    camera of focal length ``focal_px`` (its mean focal length), i.e. ``threshold_px / focal_px``
    in normalised units.

    The normalised points go to OpenCV as the pixels of a virtual distortion-free camera
    ``K = diag(f, f, 1)`` with the threshold in pixels: the same E, but OpenCV's MAGSAC++ is not
    scale-free, and on normalised points with an identity K and the threshold divided by f it
    keeps fewer inliers and returns a 6x worse E (synthetic 150 + 50 outliers, 0.2 px noise,
    50 seeds: median rotation error 0.297 vs 0.047 deg, test/test_essential.py).

    Returns a :class:`RansacResult` whose ``model`` is E (``x1^T E x0 = 0``, E = [t]x R with
    ``X1 = R X0 + t``). Rows with a non-finite coordinate (points the camera model could not
    undistort) are never inliers. Too few usable matches, or no model: every finite match kept,
    ``verified`` ``False`` (as :func:`ransac_inliers`).
    """
    if method not in USAC_METHODS:
        raise ValueError(f"unknown USAC method {method!r} (use {', '.join(USAC_METHODS)})")
    if not (threshold_px > 0 and focal_px > 0):
        raise ValueError(f"threshold_px and focal_px must be positive, got {threshold_px!r}, {focal_px!r}")
    p0 = np.ascontiguousarray(normalised0, dtype=np.float64).reshape(-1, 2)
    p1 = np.ascontiguousarray(normalised1, dtype=np.float64).reshape(-1, 2)
    if p0.shape != p1.shape:
        raise ValueError(f"point sets differ in size: {p0.shape} vs {p1.shape}")
    finite = np.all(np.isfinite(p0), axis=1) & np.all(np.isfinite(p1), axis=1)
    keep_finite = RansacResult(finite.copy(), None, False)
    if finite.sum() < max(min_matches, MIN_POINTS_ESSENTIAL):
        return keep_finite
    try:
        virtual_camera = np.diag([float(focal_px), float(focal_px), 1.0])
        matrix, mask = cv2.findEssentialMat(p0[finite] * focal_px, p1[finite] * focal_px, virtual_camera,
                                            USAC_METHODS[method], confidence, float(threshold_px), max_iterations)
    except cv2.error:  # degenerate configurations can throw
        return keep_finite
    if matrix is None or mask is None or matrix.shape != (3, 3):
        return keep_finite
    inliers = np.zeros(len(p0), dtype=bool)
    inliers[np.flatnonzero(finite)] = mask.reshape(-1).astype(bool)
    return RansacResult(inliers, matrix, True)
