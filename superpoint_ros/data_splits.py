"""Which real photos are for training and which for evaluation: defined once, used by both.

Training (``superpoint_ros.training``) and the evaluation set (``superpoint-make-dataset``) draw on
the same offline sources (scikit-image's bundled photos; Debian's opencv-doc sample images), so a
photo must never be in both: the evaluation numbers would be inflated.
"""
from __future__ import annotations

import functools
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
#: share of a photo folder (``superpoint_ros.training.data --photos``) held out for validation, in %.
VALIDATION_PERCENT = 5


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


def folder_photo_split(name: str) -> str:
    """``"train"``, ``"val"`` or ``"eval"`` for a photo of a user-given folder, from its file name.

    "eval": the photo has the name of a built-in evaluation photo (``split_of``'s scikit-image and
    benchmark rules, or an opencv-doc image of the eval split when opencv-doc is installed), so
    pointing the tools at a folder that contains them never trains on them. "val": a stable hash of
    the file name puts ``VALIDATION_PERCENT`` % of the photos here, for picking thresholds; training
    never sees them. The file name (not the path) is hashed, so the split does not depend on which
    folder level is passed. Frames of one video may fall on both sides: the validation split is
    close to the training distribution (for tuning), not a test of generalisation.
    """
    file_name = Path(name).name
    stem = file_name.split(".")[0]
    if stem in SKIMAGE_EVAL or stem.lower().startswith(BENCHMARK_PREFIXES) or stem in _opencv_doc_eval_stems():
        return "eval"
    return "val" if zlib.crc32(f"val:{file_name}".encode()) % 100 < VALIDATION_PERCENT else "train"


@functools.lru_cache(maxsize=4)
def _opencv_doc_eval_stems(folder: Path = OPENCV_DOC_DIR) -> frozenset:
    """Stems of the installed opencv-doc images that ``split_of`` reserves for evaluation."""
    if not folder.is_dir():
        return frozenset()
    stems = (p.name.split(".")[0] for p in folder.iterdir())
    return frozenset(s for s in stems if s and split_of(s) == "eval")
