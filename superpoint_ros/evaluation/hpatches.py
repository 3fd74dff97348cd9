"""``superpoint-eval DATASET``: the SuperPoint paper's homography benchmark on an HPatches-layout
folder, for SuperPoint (default model and/or any ``--weights``) and OpenCV ORB and SIFT, all run by
the same code on the same pairs.

Protocol (stated in every JSON): every image is converted to grayscale and resized to exactly
``--resize HxW`` (default 240x320, as in the paper; aspect ratio not kept, the ground-truth
homographies are rescaled accordingly; ``--resize native`` keeps the original sizes). Each method
keeps its ``--top-k`` best keypoints (default 1000) for the descriptor metrics and the first
``--detector-top-k`` of those (default 300) for repeatability / localisation error. Matching is
mutual nearest neighbour without ratio test; homographies are estimated with OpenCV RANSAC (3 px).
Pairs are (1, k) for k = 2..6 of every sequence; ``i_*`` sequences are the illumination split,
``v_*`` the viewpoint split. Metric definitions: ``superpoint_ros.evaluation.metrics``.

Writes ``results.json`` (config, per-method/per-split metrics, per-pair values) and ``mma.png``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from . import metrics
from .baselines import build_method
from ..weights import WeightsError, default_weights_path
from .make_dataset import IMAGE_SUFFIXES, NUM_IMAGES

default_conf = {
    "resize": (240, 320),       # (height, width) every image is resized to; None = native size
    "top_k": 1000,              # keypoints per image for the descriptor metrics
    "detector_top_k": 300,      # best keypoints per image for repeatability / localisation error
    "correct_threshold": 3.0,   # px, repeatability and matching score
    "ransac_threshold": 3.0,    # px, OpenCV findHomography
    "nms_radius": 4,            # SuperPoint NMS radius (px)
    "detection_threshold": 0.001,  # SuperPoint detector threshold (the paper used 0.015); lower = more points
    "subpixel": False,          # SuperPoint sub-pixel refinement (the shipped node configs turn it on)
    "device": "auto",
    "precision": "auto",        # SuperPoint network precision (extractor option; auto = int8 on VNNI CPUs)
}


class DatasetError(ValueError):
    """A dataset folder that does not have the HPatches layout, with the reason."""


def find_sequences(root: Path) -> List[Path]:
    """Sequence folders (``i_*`` / ``v_*``) under ``root``, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    sequences = sorted(p for p in root.iterdir() if p.is_dir() and p.name[:2] in ("i_", "v_"))
    if not sequences:
        raise DatasetError(f"{root}: no HPatches sequences (expected sub-folders named i_* or v_*)")
    return sequences


def _image_path(folder: Path, index: int) -> Path:
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{index}{suffix}"
        if path.is_file():
            return path
    raise DatasetError(f"{folder}: image {index} missing (expected {index}.ppm, {index}.png, ...)")


def resize_matrix(old_size: Tuple[int, int], new_size: Tuple[int, int]) -> np.ndarray:
    """3x3 map of pixel coordinates under a resize, pixel-centre convention: x' = (x + .5) s - .5."""
    sy, sx = new_size[0] / old_size[0], new_size[1] / old_size[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]], np.float64)


def load_sequence(folder: Path, resize: Optional[Tuple[int, int]]) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Grayscale uint8 images 1..6 and the homographies H_1_k (k = 2..6), both at the evaluation
    resolution."""
    images, sizes = [], []
    for k in range(1, NUM_IMAGES + 1):
        path = _image_path(folder, k)
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise DatasetError(f"cannot read image {path}")
        sizes.append(image.shape[:2])
        if resize is not None:
            image = cv2.resize(image, (resize[1], resize[0]), interpolation=cv2.INTER_AREA)
        images.append(image)
    homographies = []
    for k in range(2, NUM_IMAGES + 1):
        path = folder / f"H_1_{k}"
        try:
            h = np.loadtxt(path, dtype=np.float64)
        except (OSError, ValueError) as e:
            raise DatasetError(f"cannot read homography {path}: {e}") from None
        if h.shape != (3, 3) or not np.isfinite(h).all():
            raise DatasetError(f"{path}: expected a finite 3x3 matrix, got shape {h.shape}")
        if resize is not None:
            h = resize_matrix(sizes[k - 1], resize) @ h @ np.linalg.inv(resize_matrix(sizes[0], resize))
        homographies.append(h)
    return images, homographies


def evaluate_method(method, sequences: Sequence[Path], conf: dict, progress=None) -> Tuple[List[dict], float]:
    """Per-pair metric dicts of one method over all sequences, and the mean extraction time (ms)."""
    pairs, extract_seconds, extracted = [], 0.0, 0
    for folder in sequences:
        images, homographies = load_sequence(folder, conf["resize"])
        features = []
        for image in images:
            start = time.perf_counter()
            features.append(method.extract(image))
            extract_seconds += time.perf_counter() - start
            extracted += 1
        for k in range(2, NUM_IMAGES + 1):
            f0, fk = features[0], features[k - 1]
            result = metrics.evaluate_pair(
                f0.keypoints, fk.keypoints, method.match(f0, fk), homographies[k - 2], images[0].shape[:2],
                images[k - 1].shape[:2], detector_top_k=conf["detector_top_k"],
                correct_threshold=conf["correct_threshold"], ransac_threshold=conf["ransac_threshold"])
            pairs.append({"sequence": folder.name, "split": folder.name[0], "pair": [1, k], **result})
        if progress is not None:
            progress.update(1)
    return pairs, 1000.0 * extract_seconds / max(extracted, 1)


def summarize(pairs: List[dict]) -> Dict[str, dict]:
    """``{"i": ..., "v": ..., "overall": ...}`` aggregates (splits without pairs are omitted)."""
    out = {}
    for split in ("i", "v"):
        subset = [p for p in pairs if p["split"] == split]
        if subset:
            out[split] = metrics.aggregate(subset)
    out["overall"] = metrics.aggregate(pairs)
    return out


COLUMNS = [("Rep", "repeatability", "{:.3f}"), ("LocErr", "localization_error", "{:.2f}"),
           ("H@1", ("homography_accuracy", "1"), "{:.3f}"), ("H@3", ("homography_accuracy", "3"), "{:.3f}"),
           ("H@5", ("homography_accuracy", "5"), "{:.3f}"), ("MS", "matching_score", "{:.3f}"),
           ("MMA@1", ("mma", 0), "{:.3f}"), ("MMA@3", ("mma", 2), "{:.3f}"), ("MMA@5", ("mma", 4), "{:.3f}"),
           ("#kp", "num_keypoints", "{:.0f}"), ("#match", "num_matches", "{:.0f}")]


def format_table(results: Dict[str, Dict[str, dict]], timings_ms: Dict[str, float]) -> str:
    """Markdown table: one row per (split, method)."""
    header = ["split", "method"] + [c[0] for c in COLUMNS] + ["ms/img"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for split in ("i", "v", "overall"):
        for method, by_split in results.items():
            if split not in by_split or not by_split[split].get("num_pairs"):
                continue
            agg = by_split[split]
            cells = [split, method]
            for _, key, fmt in COLUMNS:
                value = agg[key[0]][key[1]] if isinstance(key, tuple) else agg[key]
                cells.append(fmt.format(value))
            cells.append(f"{timings_ms[method]:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_benchmark(dataset: Path, method_specs: Sequence[str], output: Optional[Path], conf: Optional[dict] = None,
                  max_sequences: Optional[int] = None, show_progress: bool = True) -> dict:
    """Evaluate every method on every sequence; returns the report (also written to ``output``)."""
    conf = {**default_conf, **(conf or {})}
    unknown = set(conf) - set(default_conf)
    if unknown:
        raise ValueError(f"unknown benchmark options: {sorted(unknown)}")
    sequences = find_sequences(dataset)
    if max_sequences:
        # keep both splits represented when truncating
        by_split = [[s for s in sequences if s.name.startswith(p)] for p in ("i_", "v_")]
        sequences = sorted(sum((group[: (max_sequences + 1) // 2] for group in by_split), []))[:max_sequences]
    extractor_conf = {"nms_radius": conf["nms_radius"], "detection_threshold": conf["detection_threshold"],
                      "device": conf["device"], "subpixel": conf["subpixel"], "precision": conf["precision"]}
    methods = [build_method(spec, conf["top_k"], extractor_conf) for spec in method_specs]
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names} (use NAME=WEIGHTS)")
    results, timings, all_pairs = {}, {}, {}
    progress = None
    if show_progress:
        from tqdm import tqdm

        progress = tqdm(total=len(sequences) * len(methods), unit="seq", desc="superpoint-eval", file=sys.stderr)
    for method in methods:
        if progress is not None:
            progress.set_postfix_str(method.name)
        pairs, timings[method.name] = evaluate_method(method, sequences, conf, progress)
        results[method.name] = summarize(pairs)
        all_pairs[method.name] = pairs
    if progress is not None:
        progress.close()
    report = {
        "protocol": {
            "dataset": str(dataset), "num_sequences": len(sequences),
            "resolution": "native" if conf["resize"] is None else f"{conf['resize'][0]}x{conf['resize'][1]} (HxW), "
                          "every image resized, homographies rescaled",
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in conf.items()},
            "matching": "mutual nearest neighbour, no ratio test (Hamming for ORB, L2 otherwise)",
            "mma_thresholds_px": list(metrics.MMA_THRESHOLDS),
            "homography_thresholds_px": list(metrics.HOMOGRAPHY_THRESHOLDS),
        },
        "methods": {m.name: m.describe() for m in methods},
        "extract_ms_per_image": timings,
        "results": results,
        "pairs": all_pairs,
    }
    if output is not None:
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        (output / "results.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
        from .plots import plot_mma

        plot_mma(results, metrics.MMA_THRESHOLDS, output / "mma.png")
    return report


def parse_resize(text: str) -> Optional[Tuple[int, int]]:
    if text.lower() == "native":
        return None
    from .make_dataset import parse_size

    return parse_size(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="superpoint-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path, help="HPatches-layout folder (e.g. from superpoint-make-dataset)")
    p.add_argument("--weights", action="append", default=[], metavar="[NAME=]PATH",
                   help="SuperPoint weights to evaluate (repeatable); default: the shipped model")
    p.add_argument("--no-default-model", action="store_true", help="don't add the shipped default model")
    p.add_argument("--baselines", default="orb,sift", help="comma-separated OpenCV baselines ('' for none)")
    p.add_argument("--resize", type=parse_resize, default=default_conf["resize"], help="HxW or 'native'")
    p.add_argument("--top-k", type=int, default=default_conf["top_k"])
    p.add_argument("--detector-top-k", type=int, default=default_conf["detector_top_k"])
    p.add_argument("--nms-radius", type=int, default=default_conf["nms_radius"])
    p.add_argument("--detection-threshold", type=float, default=default_conf["detection_threshold"],
                   help="SuperPoint detector threshold (default 0.001: top-k sets the count)")
    p.add_argument("--subpixel", action="store_true", help="SuperPoint: sub-pixel keypoints (as the node configs)")
    p.add_argument("--device", default=default_conf["device"])
    p.add_argument("--precision", default=default_conf["precision"], choices=("auto", "fp32", "fp16", "bf16", "int8"),
                   help="SuperPoint network precision (auto: int8 on CPUs with VNNI, fp16 on CUDA)")
    p.add_argument("--max-sequences", type=int, default=None, help="evaluate only this many sequences")
    p.add_argument("--output", "-o", type=Path, default=Path("out/eval"), help="folder for results.json, mma.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def method_specs(args) -> List[str]:
    specs = []
    if not args.no_default_model:
        specs.append("superpoint")
    for text in args.weights:
        name, path = text.split("=", 1) if "=" in text else (Path(text).stem, text)
        specs.append(f"{name}={path}")
    specs += [b.strip() for b in args.baselines.split(",") if b.strip()]
    return specs


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.top_k < 1 or args.detector_top_k < 1:
        print("superpoint-eval: --top-k and --detector-top-k must be >= 1", file=sys.stderr)
        return 2
    specs = method_specs(args)
    if not specs:
        print("superpoint-eval: nothing to evaluate (no model and no baselines)", file=sys.stderr)
        return 2
    if "superpoint" in specs:
        try:
            print(f"default model: {default_weights_path()}")
        except WeightsError as e:
            print(f"superpoint-eval: {e}\n(pass --weights PATH, or --no-default-model to skip it)", file=sys.stderr)
            return 2
    conf = {"resize": args.resize, "top_k": args.top_k, "detector_top_k": min(args.detector_top_k, args.top_k),
            "nms_radius": args.nms_radius, "detection_threshold": args.detection_threshold, "device": args.device,
            "subpixel": args.subpixel, "precision": args.precision}
    try:
        report = run_benchmark(args.dataset, specs, args.output, conf, args.max_sequences, not args.quiet)
    except (DatasetError, WeightsError, ValueError, RuntimeError, OSError) as e:
        # dataset / weights / device problems: one clear line, no traceback
        print(f"superpoint-eval: {e}", file=sys.stderr)
        return 2
    protocol = report["protocol"]
    print(f"\n{protocol['num_sequences']} sequences, resolution {protocol['resolution']}, top-k {conf['top_k']} "
          f"(detector metrics: top {conf['detector_top_k']}), NMS {conf['nms_radius']} px\n")
    for name, description in report["methods"].items():
        if "weights" in description:
            print(f"{name}: weights {description['weights']}")
    print(format_table(report["results"], report["extract_ms_per_image"]))
    print(f"\nwrote {args.output / 'results.json'} and {args.output / 'mma.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
