"""Image input conversion for the extractor: numpy arrays in, grayscale float32 in [0, 1] out."""
from __future__ import annotations

import numpy as np

# ITU-R BT.601 luma weights, the ones OpenCV's BGR2GRAY uses.
_LUMA_BGR = np.array([0.114, 0.587, 0.299], dtype=np.float32)


class ImageError(ValueError):
    """An image the extractor cannot use, with the reason in the message."""


def to_grayscale_float(image: np.ndarray, channel_order: str = "bgr") -> np.ndarray:
    """Convert ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` to ``(H, W)`` float32 in [0, 1].

    uint8 is divided by 255 and uint16 by 65535; float input is taken as already in [0, 1] and
    clipped. Colour is ``channel_order`` ("bgr" as OpenCV reads, or "rgb"); alpha is ignored.
    """
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
    if image.dtype == np.uint8:
        gray_scale = 1.0 / 255.0
    elif image.dtype == np.uint16:
        gray_scale = 1.0 / 65535.0
    elif image.dtype in (np.float16, np.float32, np.float64):
        if not np.isfinite(image).all():
            raise ImageError("image contains NaN or infinite values")
        gray_scale = 1.0
    else:
        raise ImageError(f"unsupported image dtype {image.dtype} (use uint8, uint16 or float)")
    if channels in (3, 4):
        weights = _LUMA_BGR if channel_order == "bgr" else _LUMA_BGR[::-1]
        gray = image[..., :3].astype(np.float32) @ (weights * gray_scale)
    else:
        gray = image.reshape(image.shape[:2]).astype(np.float32) * gray_scale
    if gray_scale == 1.0:
        np.clip(gray, 0.0, 1.0, out=gray)
    return np.ascontiguousarray(gray)


def to_grayscale_uint8(image: np.ndarray, channel_order: str = "bgr") -> np.ndarray:
    """Any image :func:`to_grayscale_float` accepts -> ``(H, W)`` uint8 (for OpenCV's optical flow)."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 2:
        return np.ascontiguousarray(image)
    gray = to_grayscale_float(image, channel_order)
    return (gray * 255.0 + 0.5).astype(np.uint8)
