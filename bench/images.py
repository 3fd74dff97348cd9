"""Real benchmark frames at the three benchmark resolutions.

Photos come from scikit-image's sample data when it is installed, else from the JPEG copies in
``bench/data`` (the GPU box has no scikit-image). Every frame is resized (INTER_AREA, aspect not
kept) to exactly ``(height, width)``; colour frames stay BGR uint8 as a camera driver delivers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np

RESOLUTIONS: Dict[str, Tuple[int, int]] = {"240x320": (240, 320), "480x640": (480, 640), "720x1280": (720, 1280)}
PHOTOS = ("astronaut", "coffee", "chelsea", "camera")
DATA_DIR = Path(__file__).resolve().parent / "data"


def load_photos() -> Dict[str, np.ndarray]:
    """Name -> original photo (BGR or gray uint8)."""
    try:
        from skimage import data
    except ImportError:
        data = None
    photos = {}
    for name in PHOTOS:
        if data is not None:
            image = getattr(data, name)()
            photos[name] = np.ascontiguousarray(image[..., ::-1]) if image.ndim == 3 else image
        else:
            path = DATA_DIR / f"{name}.jpg"
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise FileNotFoundError(f"benchmark photo {path} is missing and scikit-image is not installed")
            photos[name] = image
    return photos


def frames_at(photos: Dict[str, np.ndarray], size: Tuple[int, int]) -> List[np.ndarray]:
    """Every photo resized to ``size = (height, width)`` (colour ones BGR, 'camera' gray)."""
    h, w = size
    return [cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA) for p in photos.values()]


def to_gray_u8(frame: np.ndarray) -> np.ndarray:
    return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)


def stereo_pair(photos: Dict[str, np.ndarray], size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """A left/right pair of equal size: scikit-image's rectified motorcycle pair when available,
    else two horizontally offset crops of one photo (same content, ~5% disparity)."""
    h, w = size
    try:
        from skimage import data

        left, right = data.stereo_motorcycle()[:2]
        return (cv2.resize(left[..., ::-1], (w, h), interpolation=cv2.INTER_AREA),
                cv2.resize(right[..., ::-1], (w, h), interpolation=cv2.INTER_AREA))
    except Exception:  # noqa: BLE001 - no scikit-image or no motorcycle data: crops of one photo
        photo = next(iter(photos.values()))
        wide = cv2.resize(photo, (int(w * 1.05), h), interpolation=cv2.INTER_AREA)
        shift = wide.shape[1] - w
        return np.ascontiguousarray(wide[:, shift:]), np.ascontiguousarray(wide[:, :w])
