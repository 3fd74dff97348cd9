"""``superpoint-extract IMAGE...``: features to .npz and a visualisation PNG per image.

Outputs are named after the image (``OUT/<name>.npz``, ``OUT/<name>_features.png``); images that
share a name keep their path below the folder they have in common (``d1/x.png d2/x.png`` ->
``OUT/d1/x.npz``, ``OUT/d2/x.npz``), and the extension when that is what tells them apart
(``x.png x.jpg`` -> ``OUT/x_png.npz``, ``OUT/x_jpg.npz``): no output overwrites another.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path
from typing import List, Sequence

import cv2
import numpy as np

from .backends import configure_process
from .extractor import FeatureExtractor, default_conf
from .image import ImageError
from .visualization import draw_keypoints
from .weights import WeightsError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="superpoint-extract", description=__doc__)
    p.add_argument("images", nargs="+", type=Path, help="image files (anything OpenCV reads)")
    p.add_argument("--output-dir", "-o", type=Path, default=Path("."), help="where .npz/.png go")
    p.add_argument("--weights", type=Path, default=None, help="weight file (default: the shipped model)")
    p.add_argument("--device", default=default_conf["device"])
    p.add_argument("--max-keypoints", type=int, default=default_conf["max_keypoints"])
    p.add_argument("--detection-threshold", type=float, default=default_conf["detection_threshold"])
    p.add_argument("--nms-radius", type=int, default=default_conf["nms_radius"])
    p.add_argument("--uniform-cell", type=int, default=default_conf["uniform_cell"] or 0,
                   help="grid cell in px for spatially uniform keypoints; 0 = off")
    p.add_argument("--subpixel", action=argparse.BooleanOptionalAction, default=default_conf["subpixel"],
                   help="sub-pixel keypoints (7x7 heatmap centroid)")
    p.add_argument("--no-image", action="store_true", help="skip the visualisation PNG")
    return p


class DuplicateInputError(ValueError):
    """Images whose outputs would overwrite each other (the same file twice, or names no rule tells apart)."""


def output_stems(images: Sequence[Path]) -> List[Path]:
    """One distinct relative output stem per image (no suffix), as in the module docstring.

    Raises DuplicateInputError when a file is given twice or names cannot be told apart.
    """
    resolved = [p.resolve() for p in images]
    twice = [str(p) for p, n in Counter(resolved).items() if n > 1]
    if twice:
        raise DuplicateInputError(f"image given more than once: {', '.join(twice)}")
    stems = [Path(p.stem) for p in images]
    clashing = _clashing(stems)
    if clashing:
        common = Path(os.path.commonpath([resolved[i].parent for i in clashing]))
        for i in clashing:
            stems[i] = resolved[i].parent.relative_to(common) / images[i].stem
    for i in _clashing(stems):  # same folder, same name: only the extension differs
        stems[i] = stems[i].parent / f"{images[i].stem}_{images[i].suffix.lstrip('.')}"
    left = _clashing(stems)
    if left:  # e.g. x.png beside an image named x_png.jpg
        raise DuplicateInputError("cannot give distinct output names to: " + ", ".join(str(images[i]) for i in left))
    return stems


def _clashing(stems: Sequence[Path]) -> List[int]:
    counts = Counter(stems)
    return [i for i, stem in enumerate(stems) if counts[stem] > 1]


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    configure_process()
    try:
        stems = output_stems(args.images)
    except DuplicateInputError as e:
        print(f"superpoint-extract: error: {e}", file=sys.stderr)
        return 2
    try:
        extractor = FeatureExtractor(
            weights=args.weights, device=args.device, max_keypoints=args.max_keypoints,
            detection_threshold=args.detection_threshold, nms_radius=args.nms_radius,
            uniform_cell=args.uniform_cell or None, subpixel=args.subpixel)
    except (WeightsError, RuntimeError, ValueError) as e:
        print(f"superpoint-extract: {e}", file=sys.stderr)
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path, relative_stem in zip(args.images, stems):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            print(f"superpoint-extract: cannot read image {path}", file=sys.stderr)
            failures += 1
            continue
        try:
            features = extractor(image)
        except ImageError as e:
            print(f"superpoint-extract: {path}: {e}", file=sys.stderr)
            failures += 1
            continue
        stem = args.output_dir / relative_stem
        stem.parent.mkdir(parents=True, exist_ok=True)
        np.savez(f"{stem}.npz", keypoints=features.keypoints, scores=features.scores,
                 descriptors=features.descriptors, image_size=np.array(features.image_size))
        if not args.no_image:
            cv2.imwrite(f"{stem}_features.png", draw_keypoints(image, features.keypoints, features.scores))
        print(f"{path}: {len(features)} keypoints -> {stem}.npz")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
