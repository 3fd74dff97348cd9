"""Sub-pixel refinement of matched keypoints with pyramidal Lucas-Kanade optical flow.

Why: a detector localises each keypoint in each image on its own, with some noise (SuperPoint's
is a few tenths of a pixel); a SLAM back-end wants the *same physical point* in both images.
Once descriptors have matched two keypoints, flow started at the second one's detection finds
where the first one's patch really went, to a few hundredths of a pixel on textured patches.
A refined position is kept only when the flow is consistent forwards and backwards and stays
near the detection; otherwise the detection is kept, and when the flow is consistent but lands
clearly elsewhere the match itself is reported as contradicted (the caller drops it). Pixel
convention: as everywhere in the package, xy with integer values at pixel centres (OpenCV's flow
uses the same).

Lucas-Kanade assumes constant brightness; auto-exposure and a stereo pair's two sensors break
that, and the flow then lands a few tenths of a pixel off while still passing the
forward-backward check (measured: 1.3x gain, median error 0.57 px). So the flow runs on
:func:`normalize_contrast` images (zero mean, unit contrast in small windows), which a gain and
offset change leave (nearly) unchanged (same case: 0.04 px).
"""
from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

from .config import FlowConf

#: Window (px) and output contrast of :func:`normalize_contrast`: 9 px measured best of 9/15/21.
CONTRAST_WINDOW = 9
CONTRAST_SCALE = 40.0


def normalize_contrast(gray: np.ndarray, window: int = CONTRAST_WINDOW, scale: float = CONTRAST_SCALE) -> np.ndarray:
    """``(H, W)`` uint8 -> uint8 ``128 + scale * (I - local mean) / (local std + 2)`` over
    ``window`` x ``window`` boxes: invariant to a gain and offset change of the image."""
    return _normalize_in_place(np.array(gray, np.float32), window, scale)


def flow_image(gray: np.ndarray, window: int = CONTRAST_WINDOW, scale: float = CONTRAST_SCALE) -> np.ndarray:
    """The image the flow runs on for a network input image: ``(H, W)`` float32 in [0, 1] ->
    uint8, exactly ``normalize_contrast(float_to_uint8(gray))`` (``superpoint_ros.image``) without
    the uint8 round trip (``floor(255 g + 0.5)`` is the rounded grey level for g in [0, 1])."""
    image = np.multiply(gray, np.float32(255.0), dtype=np.float32)
    image += 0.5
    return _normalize_in_place(np.floor(image, out=image), window, scale)


def _normalize_in_place(image: np.ndarray, window: int, scale: float) -> np.ndarray:
    """:func:`normalize_contrast` of a float32 grey-level image it may overwrite."""
    # in place where possible: each fresh image-sized float array costs page faults (measured: the
    # same arithmetic with 4 fewer temporaries takes ~0.7x the time at 480x640)
    box = (window, window)
    mean = cv2.blur(image, box)
    std = cv2.blur(np.multiply(image, image), box)  # E[I^2] ...
    std -= np.multiply(mean, mean)                  # ... - E[I]^2 = variance
    np.maximum(std, 0.0, out=std)
    np.sqrt(std, out=std)
    std += 2.0  # + 2 grey levels: flat areas stay flat, not noise
    gain = np.divide(scale, std, out=std)
    image -= mean
    image *= gain
    image += 128.0
    return np.clip(image, 0, 255, out=image).astype(np.uint8)


def flow_forward_backward(image0: np.ndarray, image1: np.ndarray, points0: np.ndarray,
                          start1: Optional[np.ndarray] = None, window: int = 15,
                          pyramid_levels: int = 2, back_pyramid_levels: Optional[int] = None
                          ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pyramidal Lucas-Kanade from ``image0`` to ``image1`` and back.

    ``points0``: ``(N, 2)`` xy px; ``start1``: where to start in ``image1`` (``None``: at
    ``points0``); ``pyramid_levels``: levels above the image (OpenCV's ``maxLevel``);
    ``back_pyramid_levels``: the same for the way back (``None``: ``pyramid_levels``), which
    starts next to where it should end. Returns ``(points1 (N, 2) float32, ok (N,) bool,
    back_error (N,) float32 px)``:
    ``ok`` when both directions converged to finite points; ``back_error`` is how far the way back
    lands from ``points0`` (callers set their own limit).
    """
    if image0.shape != image1.shape:
        raise ValueError(f"images differ in size: {image0.shape} vs {image1.shape}")
    p0 = np.ascontiguousarray(points0, np.float32).reshape(-1, 1, 2)
    if len(p0) == 0:
        return np.zeros((0, 2), np.float32), np.zeros(0, bool), np.zeros(0, np.float32)
    params = dict(winSize=(window, window), maxLevel=pyramid_levels,
                  criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01))
    if start1 is None:
        p1, status, _ = cv2.calcOpticalFlowPyrLK(image0, image1, p0, None, **params)
    else:
        guess = np.ascontiguousarray(start1, np.float32).reshape(-1, 1, 2).copy()
        p1, status, _ = cv2.calcOpticalFlowPyrLK(image0, image1, p0, guess, flags=cv2.OPTFLOW_USE_INITIAL_FLOW,
                                                 **params)
    if back_pyramid_levels is not None:
        params = dict(params, maxLevel=back_pyramid_levels)
    if start1 is None:  # plain tracking: the way back starts where the way there ended
        back, back_status, _ = cv2.calcOpticalFlowPyrLK(image1, image0, p1, None, **params)
    else:  # guided (e.g. a 12 px stereo disparity): start back at points0, as the way there started
        # at its guess, else a shallow pyramid cannot bridge the displacement
        back, back_status, _ = cv2.calcOpticalFlowPyrLK(image1, image0, p1, p0.copy(),
                                                        flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **params)
    p1, back = p1.reshape(-1, 2), back.reshape(-1, 2)
    error = np.linalg.norm(back - p0.reshape(-1, 2), axis=1).astype(np.float32)
    ok = (status.reshape(-1) == 1) & (back_status.reshape(-1) == 1) & np.isfinite(p1).all(axis=1)
    return p1.astype(np.float32), ok, error


def refine_with_flow(image0: np.ndarray, image1: np.ndarray, points0: np.ndarray, guesses1: np.ndarray,
                     conf: FlowConf = FlowConf()) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the patches around ``points0`` in ``image0`` are in ``image1``.

    ``image0``, ``image1``: ``(H, W)`` uint8 of equal size (pass :func:`normalize_contrast`
    images when brightness may differ between them); ``points0``, ``guesses1``: ``(N, 2)``
    float xy px, row-aligned (``guesses1`` are the matched detections, used as the flow's start).
    Returns ``(refined (N, 2) float32, ok (N,) bool, contradicted (N,) bool)``: ``ok``: the flow
    converged (forward-backward, ``conf``: window and limits in px) within ``conf.max_shift`` px of the guess, ``refined`` holds the flow
    position; elsewhere ``refined`` holds the guess unchanged. ``contradicted``: the flow converged
    but more than ``max_shift`` px from the guess, i.e. the patch went somewhere else and the
    match that gave the guess is wrong (measured on the sample bag: of the temporal matches RANSAC
    accepted, 81 % of those the ground truth puts > 2 px off are flagged and 0.9 % of the others,
    mostly 1.5-2 px off themselves).
    """
    guesses1 = np.asarray(guesses1, np.float32).reshape(-1, 2)
    if image0.shape != image1.shape:
        raise ValueError(f"images differ in size: {image0.shape} vs {image1.shape}")
    if len(guesses1) == 0:
        return guesses1.copy(), np.zeros(0, bool), np.zeros(0, bool)
    p1, converged, back_error = flow_forward_backward(image0, image1, points0, guesses1, conf.window,
                                                      conf.pyramid_levels, conf.back_pyramid_levels)
    h, w = image1.shape[:2]
    converged &= ((back_error <= conf.max_back_error) & (p1[:, 0] >= -0.5) & (p1[:, 0] <= w - 0.5)
                  & (p1[:, 1] >= -0.5) & (p1[:, 1] <= h - 0.5))
    near = np.linalg.norm(p1 - guesses1, axis=1) <= conf.max_shift
    ok = converged & near
    return np.where(ok[:, None], p1, guesses1).astype(np.float32), ok, converged & ~near
