"""The SuperPoint paper's homography metrics, as plain numpy functions over one image pair.

Conventions: keypoints are ``(N, 2)`` float xy pixels with integers at pixel centres (the package
convention, also OpenCV's), so an image of size ``(H, W)`` spans ``[-0.5, W-0.5] x [-0.5, H-0.5]``.
``H`` is the 3x3 ground-truth homography mapping image-0 pixels to image-1 pixels. Matches are
``(M, 2)`` int rows ``(index in image 0, index in image 1)``. Sizes are ``(height, width)``.

Definitions (DeTone et al. 2018, Sec. 7; MMA as in Dusmanu et al. 2019):

- *repeatability*: keypoints of each image that fall inside the other image after warping (the
  shared region) are kept; a point is repeated if a point of the other image lies within
  ``threshold`` px after warping. ``(repeated_0 + repeated_1) / (n_0 + n_1)``.
- *localisation error*: mean distance (px) of those repeated nearest neighbours.
- *homography accuracy*: ``H`` estimated from the matches with OpenCV RANSAC; the mean distance of
  image 0's four corner pixels warped by the estimate vs. the ground truth is the corner error; a
  pair is correct at ``eps`` px if corner error <= eps (no estimate = infinite error).
- *matching score*: correct matches (reprojection error <= threshold) with both ends in the
  shared region, divided by the number of shared keypoints, averaged over both images.
- *MMA@t*: fraction of all matches whose reprojection error (image-0 point warped by ``H`` vs its
  image-1 match) is <= t px; 0 for a pair with no matches.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

#: Pixel thresholds of the MMA curve and of homography accuracy (the paper's values).
MMA_THRESHOLDS = tuple(range(1, 11))
HOMOGRAPHY_THRESHOLDS = (1, 3, 5)


def warp_points(points: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """``(N, 2)`` xy points mapped by a 3x3 homography -> ``(N, 2)`` float64. Points that go to
    infinity (w ~ 0) come back as ``inf``."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    h = np.asarray(homography, np.float64)
    if h.shape != (3, 3):
        raise ValueError(f"homography must be 3x3, got shape {h.shape}")
    projected = points @ h[:, :2].T + h[:, 2]
    w = projected[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = projected[:, :2] / w
    out[np.abs(w[:, 0]) < 1e-12] = np.inf
    return out


def inside_image(points: np.ndarray, image_size: Tuple[int, int]) -> np.ndarray:
    """``(N,)`` bool: point lies in the image area ``[-0.5, W-0.5] x [-0.5, H-0.5]``."""
    height, width = image_size
    x, y = points[:, 0], points[:, 1]
    return (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)


def shared_masks(keypoints0, keypoints1, homography, size0, size1) -> Tuple[np.ndarray, np.ndarray]:
    """Which keypoints of each image are visible in the other one (the shared viewpoint region)."""
    visible0 = inside_image(warp_points(keypoints0, homography), size1)
    visible1 = inside_image(warp_points(keypoints1, np.linalg.inv(homography)), size0)
    return visible0, visible1


def _pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)


def repeatability(keypoints0, keypoints1, homography, size0, size1, threshold: float = 3.0) -> Dict[str, float]:
    """Repeatability and localisation error (px) of one pair; see the module docstring.

    Returns ``{"repeatability", "localization_error", "num_shared0", "num_shared1"}``;
    repeatability is 0 when no keypoint is in the shared region, localisation error NaN when no
    point is repeated.
    """
    kp0, kp1 = np.asarray(keypoints0, np.float64), np.asarray(keypoints1, np.float64)
    visible0, visible1 = shared_masks(kp0, kp1, homography, size0, size1)
    warped0 = warp_points(kp0[visible0], homography)
    kp1 = kp1[visible1]
    n0, n1 = len(warped0), len(kp1)
    result = {"num_shared0": n0, "num_shared1": n1, "repeatability": 0.0, "localization_error": float("nan")}
    if n0 == 0 or n1 == 0:
        return result
    dist = _pairwise_distances(warped0, kp1)
    nearest0, nearest1 = dist.min(axis=1), dist.min(axis=0)
    repeated0, repeated1 = nearest0 <= threshold, nearest1 <= threshold
    result["repeatability"] = float((repeated0.sum() + repeated1.sum()) / (n0 + n1))
    errors = np.concatenate([nearest0[repeated0], nearest1[repeated1]])
    if len(errors):
        result["localization_error"] = float(errors.mean())
    return result


def match_reprojection_errors(keypoints0, keypoints1, matches, homography) -> np.ndarray:
    """``(M,)`` px distance between each match's image-0 point warped by ``homography`` and its
    image-1 point."""
    matches = np.asarray(matches, np.int64).reshape(-1, 2)
    if len(matches) == 0:
        return np.zeros(0)
    warped = warp_points(np.asarray(keypoints0)[matches[:, 0]], homography)
    return np.linalg.norm(warped - np.asarray(keypoints1, np.float64)[matches[:, 1]], axis=1)


def mean_matching_accuracy(errors: np.ndarray, thresholds: Sequence[float] = MMA_THRESHOLDS) -> np.ndarray:
    """``(T,)`` fraction of matches with error <= each threshold; zeros when there are no matches."""
    errors = np.asarray(errors, np.float64)
    if errors.size == 0:
        return np.zeros(len(thresholds))
    return np.array([(errors <= t).mean() for t in thresholds])


def matching_score(keypoints0, keypoints1, matches, homography, size0, size1, threshold: float = 3.0) -> float:
    """Correct matches in the shared region over shared keypoints, averaged over both images."""
    kp0, kp1 = np.asarray(keypoints0, np.float64), np.asarray(keypoints1, np.float64)
    matches = np.asarray(matches, np.int64).reshape(-1, 2)
    visible0, visible1 = shared_masks(kp0, kp1, homography, size0, size1)
    n0, n1 = int(visible0.sum()), int(visible1.sum())
    if n0 == 0 or n1 == 0:
        return 0.0
    in_shared = visible0[matches[:, 0]] & visible1[matches[:, 1]] if len(matches) else np.zeros(0, bool)
    errors = match_reprojection_errors(kp0, kp1, matches, homography)
    correct = int((in_shared & (errors <= threshold)).sum())
    return 0.5 * (correct / n0 + correct / n1)


def estimate_homography(points0: np.ndarray, points1: np.ndarray, ransac_threshold: float = 3.0
                        ) -> Optional[np.ndarray]:
    """RANSAC homography from matched ``(M, 2)`` point arrays (OpenCV), or None if it fails.

    Reproducible without seeding: OpenCV's RANSAC draws from a fixed-seed generator of its own,
    not from the global RNG (tested in test/test_backends.py).
    """
    if len(points0) < 4:
        return None
    h, _ = cv2.findHomography(np.asarray(points0, np.float32), np.asarray(points1, np.float32), cv2.RANSAC,
                              ransac_threshold)
    if h is None or not np.isfinite(h).all() or abs(h[2, 2]) < 1e-12:
        return None
    return h / h[2, 2]


def image_corners(image_size: Tuple[int, int]) -> np.ndarray:
    """The four corner pixel centres ``(4, 2)`` xy of an image of size (H, W)."""
    height, width = image_size
    return np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], np.float64)


def corner_error(estimated: Optional[np.ndarray], ground_truth: np.ndarray, image_size: Tuple[int, int]) -> float:
    """Mean px distance of image 0's corners warped by the estimate vs. the ground truth (inf if
    there is no estimate)."""
    if estimated is None:
        return float("inf")
    corners = image_corners(image_size)
    error = np.linalg.norm(warp_points(corners, estimated) - warp_points(corners, ground_truth), axis=1).mean()
    return float(error) if np.isfinite(error) else float("inf")


def evaluate_pair(keypoints0: np.ndarray, keypoints1: np.ndarray, matches: np.ndarray, homography: np.ndarray,
                  size0: Tuple[int, int], size1: Tuple[int, int], detector_top_k: Optional[int] = None,
                  correct_threshold: float = 3.0, ransac_threshold: float = 3.0,
                  mma_thresholds: Sequence[float] = MMA_THRESHOLDS,
                  homography_thresholds: Sequence[float] = HOMOGRAPHY_THRESHOLDS) -> dict:
    """Every metric for one pair.

    ``keypoints*`` must be sorted by decreasing score: the detector metrics (repeatability,
    localisation error) use the first ``detector_top_k`` of each (all when None), the descriptor
    metrics use all keypoints and ``matches``.
    """
    kp0, kp1 = np.asarray(keypoints0, np.float64).reshape(-1, 2), np.asarray(keypoints1, np.float64).reshape(-1, 2)
    matches = np.asarray(matches, np.int64).reshape(-1, 2)
    k = detector_top_k if detector_top_k and detector_top_k > 0 else None
    detector = repeatability(kp0[:k], kp1[:k], homography, size0, size1, correct_threshold)
    errors = match_reprojection_errors(kp0, kp1, matches, homography)
    estimate = estimate_homography(kp0[matches[:, 0]], kp1[matches[:, 1]], ransac_threshold) if len(matches) else None
    c_error = corner_error(estimate, homography, size0)
    return {
        "repeatability": detector["repeatability"],
        "localization_error": detector["localization_error"],
        "num_keypoints": 0.5 * (len(kp0) + len(kp1)),
        "num_matches": int(len(matches)),
        "matching_score": matching_score(kp0, kp1, matches, homography, size0, size1, correct_threshold),
        "mma": mean_matching_accuracy(errors, mma_thresholds).tolist(),
        "corner_error": c_error,
        "homography_correct": {str(t): bool(c_error <= t) for t in homography_thresholds},
    }


def aggregate(pair_results: Sequence[dict]) -> dict:
    """Mean of every metric over pairs (NaN localisation errors ignored); homography accuracy is
    the fraction of pairs correct at each threshold."""
    if not pair_results:
        return {"num_pairs": 0}
    def mean(key):
        values = np.array([r[key] for r in pair_results], np.float64)
        finite = values[np.isfinite(values)]
        return float(finite.mean()) if len(finite) else float("nan")
    thresholds = list(pair_results[0]["homography_correct"])
    return {
        "num_pairs": len(pair_results),
        "repeatability": mean("repeatability"),
        "localization_error": mean("localization_error"),
        "num_keypoints": mean("num_keypoints"),
        "num_matches": mean("num_matches"),
        "matching_score": mean("matching_score"),
        "homography_accuracy": {t: float(np.mean([r["homography_correct"][t] for r in pair_results]))
                                for t in thresholds},
        "mma": np.mean([r["mma"] for r in pair_results], axis=0).tolist(),
        "median_corner_error": float(np.median([r["corner_error"] for r in pair_results])),
    }
