"""``superpoint-extract IMAGE...``: features to .npz and a visualisation PNG per image."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

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
    p.add_argument("--uniform-cell", type=int, default=default_conf["uniform_cell"])
    p.add_argument("--subpixel", action="store_true")
    p.add_argument("--no-image", action="store_true", help="skip the visualisation PNG")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        extractor = FeatureExtractor(
            weights=args.weights, device=args.device, max_keypoints=args.max_keypoints,
            detection_threshold=args.detection_threshold, nms_radius=args.nms_radius,
            uniform_cell=args.uniform_cell, subpixel=args.subpixel)
    except (WeightsError, RuntimeError, ValueError) as e:
        print(f"superpoint-extract: {e}", file=sys.stderr)
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in args.images:
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
        stem = args.output_dir / path.stem
        np.savez(f"{stem}.npz", keypoints=features.keypoints, scores=features.scores,
                 descriptors=features.descriptors, image_size=np.array(features.image_size))
        if not args.no_image:
            cv2.imwrite(f"{stem}_features.png", draw_keypoints(image, features.keypoints, features.scores))
        print(f"{path}: {len(features)} keypoints -> {stem}.npz")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
