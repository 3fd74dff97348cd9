"""sensor_msgs/Image and CompressedImage -> numpy, for the extractor.

Duck-typed on the message fields (``height``, ``width``, ``step``, ``encoding``, ``is_bigendian``,
``data``; ``format``, ``data`` for compressed), so it decodes rclpy messages and the ``rosbags``
messages of the bag evaluator alike; this module does not import rclpy.

Why not ``rosbags.image.image_to_cvimage``: it reads ``data`` as a dense ``height x width`` array
and so misreads images whose rows are padded (``step > width * pixel size``), which real camera
drivers publish. Here every row is cut to its ``width`` pixels, ``is_bigendian`` is honoured, and
size mismatches are errors with the numbers in the message.

Output: ``(H, W)`` gray or ``(H, W, 3)`` BGR (channels of RGB/RGBA/BGRA messages reordered as a
view), dtype uint8/uint16/float32 as sent, which :func:`superpoint_ros.image.to_grayscale_float`
accepts. Bayer and YUV 4:2:2 are converted to gray with OpenCV.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import cv2
import numpy as np

from ..image import ImageError


class ImageDecodingError(ImageError):
    """A message that cannot be turned into an image; the reason is in the message."""


def _bgr(image: np.ndarray) -> np.ndarray:
    return image[..., :3]


def _rgb(image: np.ndarray) -> np.ndarray:
    return image[..., 2::-1]


def _cv(code: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda image: cv2.cvtColor(np.ascontiguousarray(image), code)


#: encoding -> (dtype, channels per pixel, conversion of the (H, W[, C]) array or None)
ENCODINGS: Dict[str, Tuple[str, int, Optional[Callable[[np.ndarray], np.ndarray]]]] = {
    "mono8": ("u1", 1, None), "8UC1": ("u1", 1, None),
    "mono16": ("u2", 1, None), "16UC1": ("u2", 1, None),
    "32FC1": ("f4", 1, None), "64FC1": ("f8", 1, lambda im: im.astype(np.float32)),
    "bgr8": ("u1", 3, None), "8UC3": ("u1", 3, None), "rgb8": ("u1", 3, _rgb),
    "bgra8": ("u1", 4, _bgr), "8UC4": ("u1", 4, _bgr), "rgba8": ("u1", 4, _rgb),
    "bgr16": ("u2", 3, None), "16UC3": ("u2", 3, None), "rgb16": ("u2", 3, _rgb),
    "bgra16": ("u2", 4, _bgr), "rgba16": ("u2", 4, _rgb),
    # OpenCV names Bayer patterns by the second row: ROS rggb == OpenCV BG (as cv_bridge maps it)
    "bayer_rggb8": ("u1", 1, _cv(cv2.COLOR_BayerBG2GRAY)), "bayer_bggr8": ("u1", 1, _cv(cv2.COLOR_BayerRG2GRAY)),
    "bayer_gbrg8": ("u1", 1, _cv(cv2.COLOR_BayerGR2GRAY)), "bayer_grbg8": ("u1", 1, _cv(cv2.COLOR_BayerGB2GRAY)),
    "bayer_rggb16": ("u2", 1, _cv(cv2.COLOR_BayerBG2GRAY)), "bayer_bggr16": ("u2", 1, _cv(cv2.COLOR_BayerRG2GRAY)),
    "bayer_gbrg16": ("u2", 1, _cv(cv2.COLOR_BayerGR2GRAY)), "bayer_grbg16": ("u2", 1, _cv(cv2.COLOR_BayerGB2GRAY)),
    "uyvy": ("u1", 2, _cv(cv2.COLOR_YUV2GRAY_UYVY)), "yuv422": ("u1", 2, _cv(cv2.COLOR_YUV2GRAY_UYVY)),
    "yuyv": ("u1", 2, _cv(cv2.COLOR_YUV2GRAY_YUYV)), "yuv422_yuy2": ("u1", 2, _cv(cv2.COLOR_YUV2GRAY_YUYV)),
}

MIN_SIZE = 16  # px; smaller images have no room for a single keypoint after border removal


def decode_image(msg, min_size: int = MIN_SIZE) -> np.ndarray:
    """A ``sensor_msgs/Image`` (rclpy or rosbags) -> numpy image (see the module docstring).

    Raises :class:`ImageDecodingError` for an unsupported encoding, an image smaller than
    ``min_size`` px on a side, a ``step`` shorter than a row, or ``data`` whose length is not
    ``step * height``. The result may be a view of ``msg.data``.
    """
    encoding = str(msg.encoding)
    if encoding not in ENCODINGS:
        raise ImageDecodingError(f"unsupported image encoding {encoding!r} "
                                 f"(supported: {', '.join(sorted(ENCODINGS))})")
    dtype_code, channels, convert = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height < min_size or width < min_size:
        raise ImageDecodingError(f"image of {width}x{height} px is too small (minimum {min_size}x{min_size})")
    dtype = np.dtype(dtype_code).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodingError(f"step {step} is shorter than a row of {width} px of {encoding} ({row_bytes} bytes)")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * height:
        raise ImageDecodingError(f"image data has {data.size} bytes, expected step*height = {step}*{height} = "
                                 f"{step * height} ({width}x{height} {encoding})")
    rows = data.reshape(height, step)[:, :row_bytes]  # drop the row padding (a view)
    image = rows.view(dtype).reshape((height, width) if channels == 1 else (height, width, channels))
    if not dtype.isnative:
        image = image.astype(dtype.newbyteorder("="))  # big-endian data on a little-endian host
    return convert(image) if convert is not None else image


def decode_compressed_image(msg, min_size: int = MIN_SIZE) -> np.ndarray:
    """A ``sensor_msgs/CompressedImage`` (JPEG, PNG, ...) -> ``(H, W)`` gray or ``(H, W, 3)`` BGR,
    uint8 or uint16 (16-bit PNG). Raises :class:`ImageDecodingError` for undecodable data."""
    fmt = str(getattr(msg, "format", ""))
    if "compressedDepth" in fmt:
        raise ImageDecodingError(f"compressed depth images are not supported (format {fmt!r})")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageDecodingError("compressed image has no data")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageDecodingError(f"cannot decode {data.size} bytes of compressed image (format {fmt!r})")
    if image.shape[0] < min_size or image.shape[1] < min_size:
        raise ImageDecodingError(f"image of {image.shape[1]}x{image.shape[0]} px is too small "
                                 f"(minimum {min_size}x{min_size})")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    return image
