"""Drawing helpers shared by the CLI, the node's debug image and the evaluation tools."""
from __future__ import annotations

from typing import Iterable, Optional

import cv2
import numpy as np


def to_bgr8(image: np.ndarray) -> np.ndarray:
    """Any gray/BGR uint8/uint16/float image -> ``(H, W, 3)`` uint8 BGR for drawing."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image[..., :3])


def score_colors(scores: np.ndarray) -> np.ndarray:
    """``(N,)`` scores -> ``(N, 3)`` uint8 BGR colours (turbo colormap, low blue .. high red)."""
    if len(scores) == 0:
        return np.zeros((0, 3), np.uint8)
    s = np.asarray(scores, np.float32)
    lo, hi = float(s.min()), float(s.max())
    norm = np.zeros_like(s) if hi <= lo else (s - lo) / (hi - lo)
    return cv2.applyColorMap((norm * 255).astype(np.uint8)[:, None], cv2.COLORMAP_TURBO)[:, 0]


def draw_keypoints(image: np.ndarray, keypoints: np.ndarray, scores: Optional[np.ndarray] = None,
                   radius: int = 3) -> np.ndarray:
    """Copy of ``image`` as BGR with keypoints (xy pixels) drawn as circles coloured by score."""
    canvas = to_bgr8(image).copy()
    colors = score_colors(scores if scores is not None else np.ones(len(keypoints)))
    for (x, y), color in zip(np.round(keypoints).astype(int), colors):
        cv2.circle(canvas, (int(x), int(y)), radius, tuple(int(c) for c in color), 1, cv2.LINE_AA)
    return canvas


def draw_tracks(canvas: np.ndarray, trails: Iterable[np.ndarray], color=(0, 255, 0)) -> np.ndarray:
    """Draw each trail (``(T, 2)`` xy pixels, oldest first) as a polyline on ``canvas`` in place."""
    for trail in trails:
        if len(trail) >= 2:
            cv2.polylines(canvas, [np.round(trail).astype(np.int32).reshape(-1, 1, 2)], False, color, 1, cv2.LINE_AA)
    return canvas


def draw_matches(image0: np.ndarray, image1: np.ndarray, kpts0: np.ndarray, kpts1: np.ndarray,
                 indices: np.ndarray, color=(0, 255, 0)) -> np.ndarray:
    """Side-by-side BGR picture of two images with lines joining matched keypoints."""
    a, b = to_bgr8(image0), to_bgr8(image1)
    h = max(a.shape[0], b.shape[0])
    canvas = np.zeros((h, a.shape[1] + b.shape[1], 3), np.uint8)
    canvas[: a.shape[0], : a.shape[1]] = a
    canvas[: b.shape[0], a.shape[1]:] = b
    for i, j in np.asarray(indices, dtype=int):
        p = tuple(int(v) for v in np.round(kpts0[i]))
        q = (int(round(kpts1[j][0])) + a.shape[1], int(round(kpts1[j][1])))
        cv2.line(canvas, p, q, color, 1, cv2.LINE_AA)
    return canvas
