"""``superpoint-eval DATASET``: the SuperPoint paper's homography benchmark on an HPatches-layout
folder, for SuperPoint (default model and/or any ``--weights``) and OpenCV ORB and SIFT, all run by
the same code on the same pairs.

Protocol (stated in every JSON): every image is converted to grayscale and resized to exactly
``--resize HxW`` (default 240x320, as in the paper; aspect ratio not kept, the ground-truth
homographies are rescaled accordingly; ``--resize native`` keeps the original sizes). Each method
keeps its ``--top-k`` best keypoints (default 1000) for the descriptor metrics and the first
``--detector-top-k`` of those (default 300) for repeatability / localisation error. Matching is
mutual nearest neighbour without ratio test; homographies are estimated with OpenCV RANSAC (3 px).
Pairs are (1, k) for k = 2..6 of every sequence. A sequence's split is its name up to the first
``_``: HPatches' ``v_*`` (viewpoint) and ``i_*`` (illumination), the Oxford sets' ``b_*`` (blur) and
``n_*`` (noise / JPEG), ``superpoint-make-dataset --conditions``' ``rotation_*``, ``scale_*``, ... --
every split is reported, plus ``overall``; along a sequence the change grows with k (its *level*).
Metric definitions: ``superpoint_ros.evaluation.metrics``; the keypoint-count ratio of a pair is
the keypoints of image k over those of image 1 of its sequence (reported as min / median per split).

``--sizes 240x320,480x640`` runs the whole benchmark once per size (one table each).

Writes ``results.json`` (config, per-method/per-split metrics, per-sequence and per-level
aggregates, per-pair values; schema in docs/evaluation.md) and ``mma.png``; with ``--sizes`` one
``<HxW>/results.json`` + ``<HxW>/mma.png`` per size under ``--output``.
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
from tqdm import tqdm

from . import metrics
from .baselines import build_method
from ..backends import configure_process
from ..weights import WeightsError, default_weights_path
from .make_dataset import IMAGE_SUFFIXES, NUM_IMAGES, parse_size
from .plots import plot_mma

default_conf = {
    "resize": (240, 320),       # (height, width) every image is resized to; None = native size
    "top_k": 1000,              # keypoints per image for the descriptor metrics
    "detector_top_k": 300,      # best keypoints per image for repeatability / localisation error
    "correct_threshold": 3.0,   # px, repeatability and matching score
    "ransac_threshold": 3.0,    # px, OpenCV findHomography
    "nms_radius": 4,            # SuperPoint NMS radius (px)
    "detection_threshold": 0.001,  # SuperPoint detector threshold (the paper used 0.015); lower = more points
    "subpixel": False,          # SuperPoint sub-pixel refinement (the shipped node configs turn it on)
    "uniform_cell": None,       # SuperPoint uniform grid cell in px (the node uses 32); None = plain top-k
    "device": "auto",
    "precision": "auto",        # SuperPoint network precision (extractor option; auto = int8 on VNNI CPUs)
}


class DatasetError(ValueError):
    """A dataset folder that does not have the HPatches layout, with the reason."""


#: Splits in report order (others follow alphabetically); titles for tables and plots.
SPLIT_ORDER = ("v", "i", "b", "n", "rotation", "scale", "noise", "blur", "jpeg", "lowlight")


def split_of_sequence(name: str) -> Optional[str]:
    """The split of a sequence folder name: its lower-case letters before the first ``_``
    (``v_wall`` -> ``v``, ``rotation_astronaut_2`` -> ``rotation``), or None for a name that has none."""
    prefix, sep, rest = name.partition("_")
    if not sep or not rest or not prefix.isalpha() or not prefix.islower():
        return None
    return prefix


def ordered_splits(splits) -> List[str]:
    """``splits`` in report order: :data:`SPLIT_ORDER` first, then the others alphabetically."""
    splits = set(splits)
    known = [s for s in SPLIT_ORDER if s in splits]
    return known + sorted(splits - set(known))


def find_sequences(root: Path) -> List[Path]:
    """Sequence folders (``<split>_<name>``: ``v_*``, ``i_*``, ``b_*``, ``n_*``, ...) under ``root``,
    sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    sequences = sorted(p for p in root.iterdir() if p.is_dir() and split_of_sequence(p.name))
    if not sequences:
        raise DatasetError(f"{root}: no HPatches sequences (expected sub-folders named <split>_<name>, "
                           "e.g. v_wall, i_leuven)")
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
            counts = {"num_keypoints_first": int(len(f0.keypoints)), "num_keypoints_other": int(len(fk.keypoints)),
                      "keypoint_ratio": len(fk.keypoints) / max(len(f0.keypoints), 1)}
            pairs.append({"sequence": folder.name, "split": split_of_sequence(folder.name), "pair": [1, k],
                          **result, **counts})
        if progress is not None:
            progress.update(1)
    return pairs, 1000.0 * extract_seconds / max(extracted, 1)


def aggregate_with_counts(pairs: List[dict]) -> dict:
    """:func:`metrics.aggregate` plus the keypoint-count ratios (image k / image 1 of the sequence):
    ``keypoint_ratio_min`` and ``keypoint_ratio_median``."""
    out = metrics.aggregate(pairs)
    if pairs:
        ratios = np.array([p["keypoint_ratio"] for p in pairs], np.float64)
        out["keypoint_ratio_min"] = float(ratios.min())
        out["keypoint_ratio_median"] = float(np.median(ratios))
    return out


def summarize(pairs: List[dict]) -> Dict[str, dict]:
    """``{split: aggregate, ..., "overall": aggregate}`` for every split that has pairs, in
    :func:`ordered_splits` order."""
    out = {}
    for split in ordered_splits(p["split"] for p in pairs):
        out[split] = aggregate_with_counts([p for p in pairs if p["split"] == split])
    out["overall"] = aggregate_with_counts(pairs)
    return out


def summarize_sequences(pairs: List[dict]) -> Dict[str, dict]:
    """``{sequence: aggregate}`` over each sequence's five pairs."""
    names = sorted({p["sequence"] for p in pairs})
    return {name: aggregate_with_counts([p for p in pairs if p["sequence"] == name]) for name in names}


def summarize_levels(pairs: List[dict]) -> Dict[str, Dict[str, dict]]:
    """``{split: {"2": aggregate, ..., "6": aggregate}}``: pairs (1, k) grouped by k, the level of
    change along the sequence."""
    out = {}
    for split in ordered_splits(p["split"] for p in pairs):
        subset = [p for p in pairs if p["split"] == split]
        out[split] = {str(k): aggregate_with_counts([p for p in subset if p["pair"][1] == k])
                      for k in sorted({p["pair"][1] for p in subset})}
    return out


COLUMNS = [("Rep", "repeatability", "{:.3f}"), ("LocErr", "localization_error", "{:.2f}"),
           ("H@1", ("homography_accuracy", "1"), "{:.3f}"), ("H@3", ("homography_accuracy", "3"), "{:.3f}"),
           ("H@5", ("homography_accuracy", "5"), "{:.3f}"), ("MS", "matching_score", "{:.3f}"),
           ("MMA@1", ("mma", 0), "{:.3f}"), ("MMA@3", ("mma", 2), "{:.3f}"), ("MMA@5", ("mma", 4), "{:.3f}"),
           ("#kp", "num_keypoints", "{:.0f}"), ("#match", "num_matches", "{:.0f}"),
           ("kp min", "keypoint_ratio_min", "{:.2f}"), ("kp med", "keypoint_ratio_median", "{:.2f}")]


def format_table(results: Dict[str, Dict[str, dict]], timings_ms: Dict[str, float]) -> str:
    """Markdown table: one row per (split, method); splits in :func:`ordered_splits` order, then
    overall. ``kp min`` / ``kp med``: min / median keypoint-count ratio image k / image 1."""
    header = ["split", "method"] + [c[0] for c in COLUMNS] + ["ms/img"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    splits = ordered_splits(s for by_split in results.values() for s in by_split if s != "overall")
    for split in splits + ["overall"]:
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


def truncate_sequences(sequences: List[Path], max_sequences: int) -> List[Path]:
    """At most ``max_sequences`` sequences, taken round-robin over the splits (every split keeps
    sequences while the budget allows), sorted by name."""
    groups = [[s for s in sequences if split_of_sequence(s.name) == split]
              for split in ordered_splits(split_of_sequence(s.name) for s in sequences)]
    chosen = []
    for rank in range(max(len(g) for g in groups)):
        chosen += [g[rank] for g in groups if rank < len(g)]
    return sorted(chosen[:max_sequences])


def run_benchmark(dataset: Path, method_specs: Sequence[str], output: Optional[Path], conf: Optional[dict] = None,
                  max_sequences: Optional[int] = None, show_progress: bool = True) -> dict:
    """Evaluate every method on every sequence; returns the report (also written to ``output``)."""
    conf = {**default_conf, **(conf or {})}
    unknown = set(conf) - set(default_conf)
    if unknown:
        raise ValueError(f"unknown benchmark options: {sorted(unknown)}")
    sequences = find_sequences(dataset)
    if max_sequences:
        sequences = truncate_sequences(sequences, max_sequences)
    extractor_conf = {"nms_radius": conf["nms_radius"], "detection_threshold": conf["detection_threshold"],
                      "device": conf["device"], "subpixel": conf["subpixel"], "precision": conf["precision"],
                      "uniform_cell": conf["uniform_cell"]}
    methods = [build_method(spec, conf["top_k"], extractor_conf) for spec in method_specs]
    names = [m.name for m in methods]
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be unique, got {names} (use NAME=WEIGHTS)")
    results, timings, all_pairs, sequence_results, level_results = {}, {}, {}, {}, {}
    progress = None
    if show_progress:
        progress = tqdm(total=len(sequences) * len(methods), unit="seq", desc="superpoint-eval", file=sys.stderr)
    for method in methods:
        if progress is not None:
            progress.set_postfix_str(method.name)
        pairs, timings[method.name] = evaluate_method(method, sequences, conf, progress)
        results[method.name] = summarize(pairs)
        sequence_results[method.name] = summarize_sequences(pairs)
        level_results[method.name] = summarize_levels(pairs)
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
        "splits": ordered_splits(split_of_sequence(s.name) for s in sequences),
        "results": results,
        "sequences": sequence_results,
        "levels": level_results,
        "pairs": all_pairs,
    }
    if output is not None:
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        (output / "results.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
        plot_mma(results, metrics.MMA_THRESHOLDS, output / "mma.png")
    return report


def parse_resize(text: str) -> Optional[Tuple[int, int]]:
    if text.lower() == "native":
        return None
    return parse_size(text)


def parse_sizes(text: str) -> List[Optional[Tuple[int, int]]]:
    """``"240x320,480x640"`` -> ``[(240, 320), (480, 640)]`` (``native`` allowed), no duplicates."""
    sizes = [parse_resize(part.strip()) for part in text.split(",") if part.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError(f"--sizes needs at least one HxW, got {text!r}")
    if len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"--sizes lists a size twice: {text!r}")
    return sizes


def size_label(size: Optional[Tuple[int, int]]) -> str:
    """``(240, 320)`` -> ``"240x320"``; None -> ``"native"`` (the per-size output folder name)."""
    return "native" if size is None else f"{size[0]}x{size[1]}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="superpoint-eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", type=Path, help="HPatches-layout folder (e.g. from superpoint-make-dataset)")
    p.add_argument("--weights", action="append", default=[], metavar="[NAME=]PATH",
                   help="SuperPoint weights to evaluate (repeatable); default: the shipped model")
    p.add_argument("--no-default-model", action="store_true", help="don't add the shipped default model")
    p.add_argument("--baselines", default="orb,sift", help="comma-separated OpenCV baselines ('' for none)")
    p.add_argument("--resize", type=parse_resize, default=default_conf["resize"], help="HxW or 'native'")
    p.add_argument("--sizes", type=parse_sizes, default=None, metavar="HxW,HxW",
                   help="run once per size (e.g. 240x320,480x640; overrides --resize): one table each, "
                        "OUTPUT/<HxW>/results.json")
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
    configure_process()
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
    sizes = args.sizes or [args.resize]
    for size in sizes:
        output = args.output / size_label(size) if args.sizes else args.output
        conf = {"resize": size, "top_k": args.top_k, "detector_top_k": min(args.detector_top_k, args.top_k),
                "nms_radius": args.nms_radius, "detection_threshold": args.detection_threshold,
                "device": args.device, "subpixel": args.subpixel, "precision": args.precision}
        try:
            report = run_benchmark(args.dataset, specs, output, conf, args.max_sequences, not args.quiet)
        except (DatasetError, WeightsError, ValueError, RuntimeError, OSError) as e:
            # dataset / weights / device problems: one clear line, no traceback
            print(f"superpoint-eval: {e}", file=sys.stderr)
            return 2
        print_report(report, conf, output)
    return 0


def print_report(report: dict, conf: dict, output: Path) -> None:
    """The protocol line, the weights of each SuperPoint model and the table of one run."""
    protocol = report["protocol"]
    print(f"\n{protocol['num_sequences']} sequences (splits {', '.join(report['splits'])}), resolution "
          f"{protocol['resolution']}, top-k {conf['top_k']} (detector metrics: top {conf['detector_top_k']}), "
          f"NMS {conf['nms_radius']} px\n")
    for name, description in report["methods"].items():
        if "weights" in description:
            print(f"{name}: weights {description['weights']}")
    print(format_table(report["results"], report["extract_ms_per_image"]))
    print(f"\nwrote {output / 'results.json'} and {output / 'mma.png'}")


if __name__ == "__main__":
    sys.exit(main())
