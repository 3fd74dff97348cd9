"""Image input conversion for the extractor: numpy arrays in, grayscale float32 in [0, 1] out.

Also the two steps that keep huge and 16-bit frames cheap and usable:

- :func:`shrink_to_max_size`: a frame whose longest side exceeds ``max_size`` px is resized (area
  filter) in its own dtype *before* any float copy, so an 8000x8000 mono8 frame never exists as
  float32 at full resolution (256 MB per copy);
- :func:`white_level`: the value that means white in 16-bit data. A 10/12-bit camera publishing
  mono16 fills 1/64 or 1/16 of the 0..65535 range; divided by 65535 its image is nearly black and
  the detector finds a fraction of the keypoints (``bit_depth`` below).
"""
from __future__ import annotations

from typing import Optional, Tuple

import cv2
import numpy as np

# ITU-R BT.601 luma weights, the ones OpenCV's BGR2GRAY uses.
_LUMA_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)
#: bit_depth 0: the valid bits of 16-bit data are read off each image's maximum (see white_level)
AUTO_BIT_DEPTH = 0
MIN_BIT_DEPTH, MAX_BIT_DEPTH = 8, 16


class ImageError(ValueError):
    """An image the extractor cannot use, with the reason in the message."""


def check_image(image: np.ndarray) -> int:
    """Raise :class:`ImageError` unless ``image`` is a non-empty ``(H, W)`` or ``(H, W, 1|3|4)``
    uint8/uint16/float array; returns its channel count (0 for ``(H, W)``)."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        channels = image.shape[2]
    elif image.ndim == 2:
        channels = 0
    else:
        raise ImageError(f"expected an (H, W) or (H, W, 1|3|4) image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"empty image of shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16, np.float16, np.float32, np.float64):
        raise ImageError(f"unsupported image dtype {image.dtype} (use uint8, uint16 or float)")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise ImageError("image contains NaN or infinite values")
    return channels


def check_bit_depth(bit_depth: int) -> None:
    if bit_depth != AUTO_BIT_DEPTH and not MIN_BIT_DEPTH <= bit_depth <= MAX_BIT_DEPTH:
        raise ValueError(f"bit_depth must be 0 (auto) or {MIN_BIT_DEPTH}..{MAX_BIT_DEPTH}, got {bit_depth!r}")


def white_level(image: np.ndarray, bit_depth: int = AUTO_BIT_DEPTH) -> float:
    """The pixel value that maps to 1.0 (white): 255 for uint8, 1.0 for float, and for uint16
    ``2**bit_depth - 1``; with ``bit_depth`` 0 (auto) the smallest ``2**b - 1`` (``b`` in 8..16)
    not below the image's maximum: a 12-bit camera's mono16 (max <= 4095) -> 4095, full-range or
    MSB-aligned 16-bit data -> 65535. Auto follows each image: a frame whose brightest pixel falls
    under half the range comes out twice as bright (set the camera's bit depth to fix the gain)."""
    check_bit_depth(bit_depth)
    if image.dtype == np.uint8:
        return 255.0
    if image.dtype != np.uint16:
        return 1.0
    if bit_depth == AUTO_BIT_DEPTH:
        bit_depth = max(MIN_BIT_DEPTH, int(image.max()).bit_length())
    return float((1 << bit_depth) - 1)


def _gray_float(image: np.ndarray, channels: int, channel_order: str, white: float) -> np.ndarray:
    """``(H, W[, C])`` checked image -> ``(H, W)`` float32 ``luma / white`` clipped to [0, 1]."""
    gray_scale = np.float32(1.0 / white)
    if channels in (3, 4):
        weights = _LUMA_BGR if channel_order == "bgr" else _LUMA_BGR[::-1]
        gray = image[..., :3].astype(np.float32) @ (weights * gray_scale)
    else:
        gray = image.reshape(image.shape[:2]).astype(np.float32) * gray_scale
    if image.dtype != np.uint8:  # float input, or 16-bit data above the stated bit depth
        np.clip(gray, 0.0, 1.0, out=gray)
    return np.ascontiguousarray(gray)


def to_grayscale_float(image: np.ndarray, channel_order: str = "bgr",
                       bit_depth: int = AUTO_BIT_DEPTH) -> np.ndarray:
    """Convert ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` to ``(H, W)`` float32 in [0, 1].

    uint8 is divided by 255 and uint16 by :func:`white_level` (``bit_depth``: 0 = auto from the
    image's maximum, 8..16 = the valid bits; brighter values clip to 1); float input is taken as
    already in [0, 1] and clipped. Colour is ``channel_order`` ("bgr" as OpenCV reads, or "rgb");
    alpha is ignored.
    """
    channels = check_image(image)
    return _gray_float(image, channels, channel_order, white_level(image, bit_depth))


def to_grayscale_uint8(image: np.ndarray, channel_order: str = "bgr", bit_depth: int = AUTO_BIT_DEPTH) -> np.ndarray:
    """Any image :func:`to_grayscale_float` accepts -> ``(H, W)`` uint8 (for OpenCV's optical flow)."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 2:
        return np.ascontiguousarray(image)
    return float_to_uint8(to_grayscale_float(image, channel_order, bit_depth))


def float_to_uint8(gray: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 in [0, 1] -> uint8 (rounded)."""
    return (gray * 255.0 + 0.5).astype(np.uint8)


def shrink_to_max_size(image: np.ndarray, max_size: int) -> Tuple[np.ndarray, Optional[Tuple[float, float]]]:
    """Resize ``image`` (any dtype and channel count :func:`check_image` accepts, kept as it is)
    with OpenCV's area filter so that its longest side is ``max_size`` px; ``max_size`` 0 or an
    image that fits: returned unchanged. Returns ``(image, scale)``: ``scale`` = ``(sx, sy)`` input
    pixels per resized pixel (a resized point ``x`` is at input ``(x + 0.5) * sx - 0.5``, pixel
    centres at integers), or ``None`` when not resized."""
    h, w = image.shape[:2]
    if not max_size or max(h, w) <= max_size:
        return image, None
    factor = max_size / max(h, w)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))  # cv2 order: (width, height)
    source = image.reshape(h, w) if image.ndim == 3 and image.shape[2] == 1 else image
    if source.dtype == np.float16:  # OpenCV cannot resize half floats
        source = source.astype(np.float32)
    try:
        small = cv2.resize(np.ascontiguousarray(source), size, interpolation=cv2.INTER_AREA)
    except cv2.error as e:
        raise ImageError(f"cannot resize a {image.dtype} image of {w}x{h} px: "
                         f"{str(e).strip().splitlines()[-1]}") from None
    return small, (w / size[0], h / size[1])


def network_gray(image: np.ndarray, channel_order: str = "bgr", bit_depth: int = AUTO_BIT_DEPTH,
                 max_size: int = 0) -> Tuple[np.ndarray, Optional[Tuple[float, float]]]:
    """The network's input for one image: ``(h, w)`` float32 in [0, 1], resized first (in the
    input's dtype) when the longest side exceeds ``max_size`` -> ``(gray, scale)`` as
    :func:`shrink_to_max_size`. The 16-bit white level is read off the full image, so a resize
    never changes the brightness."""
    channels = check_image(image)
    white = white_level(image, bit_depth)
    small, scale = shrink_to_max_size(image, max_size)
    return _gray_float(small, channels if small.ndim == 3 else 0, channel_order, white), scale
