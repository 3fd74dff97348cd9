"""Which real photos are for training and which for evaluation: defined once, used by both.

Training (``superpoint_ros.training``) and the evaluation set (``superpoint-make-dataset``) draw on
the same offline sources (scikit-image's bundled photos; Debian's opencv-doc sample images), so a
photo must never be in both: the evaluation numbers would be inflated.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path

#: scikit-image photos reserved for evaluation, the demo and tests that judge quality.
SKIMAGE_EVAL = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle_left", "motorcycle_right")
#: scikit-image photos used for training.
SKIMAGE_TRAIN = ("brick", "camera", "cell", "chessboard_GRAY", "clock_motion", "coins", "color", "grass",
                 "gravel", "horse", "hubble_deep_field", "ihc", "logo", "moon", "page", "retina", "text")
#: standard benchmark images (name prefixes, case-insensitive): never trained on.
BENCHMARK_PREFIXES = ("graf", "leuven", "boat", "bark", "bikes", "trees", "ubc", "wall", "hpatches", "h1to")
#: Debian's opencv-doc sample images, when installed.
OPENCV_DOC_DIR = Path("/usr/share/doc/opencv-doc/examples/data")


def split_of(name: str) -> str:
    """``"train"`` or ``"eval"`` for a photo's file name (or stem).

    scikit-image names follow the tables above; standard benchmark images are always "eval";
    any other photo goes to "eval" for one in three *groups* (a stable hash), else "train". Photos
    of one scene (``aloeL``/``aloeR``, ``left01``/``right01``, ``box``/``box_in_scene``, ...) share a
    group, so a stereo partner or a near-duplicate never crosses the split.
    """
    stem = Path(name).name.split(".")[0]
    if stem in SKIMAGE_EVAL:
        return "eval"
    if stem in SKIMAGE_TRAIN:
        return "train"
    if stem.lower().startswith(BENCHMARK_PREFIXES):
        return "eval"
    return "eval" if zlib.crc32(scene_group(stem).encode()) % 3 == 0 else "train"


def scene_group(stem: str) -> str:
    """A name shared by photos of one scene: digits, left/right, L/R, A/B and similar tags dropped."""
    key = re.sub(r"(?<=[a-z])[LRABN]$", "", stem).lower()  # aloeL/aloeR, leuvenA/leuvenB
    key = re.sub(r"_in_scene|_?(modified|original|defocus|motion|gt)$", "", key)
    key = re.sub(r"left|right|\d+", "", key)
    return key.strip("_") or "stereo_calibration"  # left01 ... right14: one checkerboard scene
