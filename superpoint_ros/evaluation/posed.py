"""``superpoint-eval-posed DIR [DIR ...]``: relative-pose benchmark on posed image sequences, for
SuperPoint (default model and/or any ``--weights``) and OpenCV ORB and SIFT, all run by the same
code on the same frame pairs.

A sequence folder holds the frames, ``groundtruth.txt`` (TUM: ``timestamp tx ty tz qx qy qz qw``
per line, camera-to-world, camera frame x right / y down / z forward; the timestamp is the frame
index) and ``K.txt`` (3x3 intrinsics, px, at the frames' native size, no distortion). Frames are
listed by ``rgb.txt`` (``timestamp filename``, TUM) when present, else they are the images of
``rgb/`` (or of the folder itself) in name order, frame i having timestamp i. Example: the Strecha
sets (fountain-P11, Herz-Jesu-P8) as stored in ``real_eval/posed/``.

Protocol (stated in the JSON): every frame is converted to grayscale and, with ``--size HxW``,
resized to exactly that size (``K`` rescaled, pixel-centre convention). Each method keeps its
``--top-k`` best keypoints (default 1000); matching is mutual nearest neighbour without ratio test
(as ``superpoint-eval``). Pairs are (i, i+g) for every gap g of ``--gaps`` (default 1,2,3). Per pair:

- ``rotation_error_deg`` / ``translation_direction_error_deg``: the relative pose from the
  essential matrix of the matches (:func:`superpoint_ros.evaluation.pose.essential_pose_inliers`:
  OpenCV USAC MAGSAC++, ``--pose-threshold`` px, final fit on all inliers, cheirality) vs. the
  ground truth; a pair whose pose cannot be estimated counts 180 deg for both.
- ``pose_accuracy``: fraction of pairs with max(rotation error, translation-direction error) <= 1,
  5, 10 deg.
- ``inlier_ratio``: essential-matrix inliers / matches (0 without an estimate).
- ``epipolar_precision``: fraction of all matches (before RANSAC) whose symmetric point-to-
  epipolar-line distance under the ground-truth fundamental matrix is <= 1, 3, 5 px (the posed
  analogue of MMA); ``median_epipolar_error_px`` of all matches and of the inliers.

Writes ``results.json`` (protocol, per-method per-gap aggregates over all sequences and per
sequence, per-pair values; schema in docs/evaluation.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from .baselines import build_method
from .hpatches import method_specs, resize_matrix
from .make_dataset import IMAGE_SUFFIXES, parse_size
from .pose import Trajectory, direction_angle_deg, epipolar_distances, essential_pose_inliers, read_tum, \
    relative_pose, rotation_angle_deg
from ..backends import configure_process
from ..weights import WeightsError, default_weights_path

#: Thresholds (px) of the epipolar precision and (deg) of the pose accuracy.
EPIPOLAR_THRESHOLDS = (1, 3, 5)
POSE_THRESHOLDS = (1, 5, 10)
#: The error (deg) a pair without a pose estimate counts.
FAILED_POSE_DEG = 180.0

default_conf = {
    "size": None,                 # (height, width) frames are resized to; None = native size
    "gaps": (1, 2, 3),            # frame-index gaps of the evaluated pairs
    "top_k": 1000,                # keypoints per frame
    "pose_threshold": 1.0,        # px, MAGSAC++ threshold of the essential matrix (as superpoint-eval-bag)
    "nms_radius": 4,
    "detection_threshold": 0.001,
    "subpixel": False,
    "uniform_cell": None,         # SuperPoint uniform grid cell in px (the node uses 32); None = plain top-k
    "device": "auto",
    "precision": "auto",
}


class PosedDatasetError(ValueError):
    """A sequence folder without frames, ground truth or intrinsics, with the reason."""


@dataclass
class PosedSequence:
    """One posed sequence at the evaluation size: ``images`` grayscale uint8 ``(H, W)``,
    ``poses`` camera->world ``(R_wc (3, 3), C_w (3,))`` per frame, ``K`` 3x3 at that size."""

    name: str
    images: List[np.ndarray]
    poses: List[Tuple[np.ndarray, np.ndarray]]
    K: np.ndarray


def _frame_list(folder: Path) -> List[Tuple[float, Path]]:
    """``(timestamp, path)`` of every frame: from ``rgb.txt`` when present, else the images of
    ``rgb/`` (or of ``folder``) in name order with timestamps 0, 1, 2, ..."""
    listing = folder / "rgb.txt"
    if listing.is_file():
        frames = []
        for number, line in enumerate(listing.read_text().splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            try:
                frames.append((float(parts[0]), folder / parts[1]))
            except (ValueError, IndexError):
                raise PosedDatasetError(f"{listing}:{number}: expected 'timestamp filename', got {line!r}") from None
        return frames
    image_dir = folder / "rgb" if (folder / "rgb").is_dir() else folder
    paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [(float(i), p) for i, p in enumerate(paths)]


def read_intrinsics(path: Path) -> np.ndarray:
    """``K.txt``: a 3x3 matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (px)."""
    try:
        K = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as e:
        raise PosedDatasetError(f"cannot read intrinsics {path}: {e}") from None
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise PosedDatasetError(f"{path}: expected a 3x3 intrinsic matrix with positive focal lengths")
    return K


def load_posed_sequence(folder: Path, size: Optional[Tuple[int, int]] = None) -> PosedSequence:
    """Frames, their ground-truth poses and ``K``, resized to ``size`` (H, W) when given."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PosedDatasetError(f"sequence folder not found: {folder}")
    for required in ("groundtruth.txt", "K.txt"):
        if not (folder / required).is_file():
            raise PosedDatasetError(f"{folder}: {required} missing (see superpoint-eval-posed --help)")
    K = read_intrinsics(folder / "K.txt")
    try:
        trajectory: Trajectory = read_tum(folder / "groundtruth.txt")
    except ValueError as e:
        raise PosedDatasetError(str(e)) from None
    frames = _frame_list(folder)
    if len(frames) < 2:
        raise PosedDatasetError(f"{folder}: needs at least 2 frames, found {len(frames)}")
    images, poses, native_size = [], [], None
    for stamp, path in frames:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise PosedDatasetError(f"cannot read frame {path}")
        native_size = native_size or image.shape[:2]
        if image.shape[:2] != native_size:
            raise PosedDatasetError(f"{path}: size {image.shape[:2]} differs from the first frame's {native_size}")
        pose = trajectory.lookup(int(round(stamp * 1e9)), max_dt_ns=1_000_000)
        if pose is None:
            raise PosedDatasetError(f"{folder}: no ground-truth pose for frame {path.name} (timestamp {stamp:g})")
        if size is not None:
            image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        images.append(image)
        poses.append(pose)
    if size is not None:
        K = resize_matrix(native_size, size) @ K
    return PosedSequence(folder.name, images, poses, K)


def evaluate_pose_pair(points0: np.ndarray, points1: np.ndarray, K: np.ndarray, pose0, pose1,
                       pose_threshold: float = 1.0) -> dict:
    """Every posed metric of one frame pair from its matched ``(M, 2)`` xy px points and the two
    camera->world poses; see the module docstring."""
    R_gt, t_gt = relative_pose(pose0, pose1)
    result = {"num_matches": int(len(points0)), "inlier_ratio": 0.0,
              "rotation_error_deg": FAILED_POSE_DEG, "translation_direction_error_deg": FAILED_POSE_DEG,
              "median_epipolar_error_px": float("nan"), "median_inlier_epipolar_error_px": float("nan"),
              "epipolar_precision": [0.0] * len(EPIPOLAR_THRESHOLDS), "pose_estimated": False}
    if len(points0) == 0:
        return result
    distances = epipolar_distances(points0, points1, K, R_gt, t_gt)
    result["median_epipolar_error_px"] = float(np.median(distances))
    result["epipolar_precision"] = [float((distances <= t).mean()) for t in EPIPOLAR_THRESHOLDS]
    estimate = essential_pose_inliers(points0, points1, K, pose_threshold)
    if estimate is None:
        return result
    R, t, inliers = estimate
    result.update(pose_estimated=True, inlier_ratio=float(inliers.mean()),
                  rotation_error_deg=rotation_angle_deg(R.T @ R_gt),
                  translation_direction_error_deg=direction_angle_deg(t, t_gt))
    if inliers.any():
        result["median_inlier_epipolar_error_px"] = float(np.median(distances[inliers]))
    return result


def aggregate_pose_pairs(pairs: Sequence[dict]) -> dict:
    """Means / medians over pairs (NaN ignored) and the pose accuracy at :data:`POSE_THRESHOLDS`."""
    if not pairs:
        return {"num_pairs": 0}

    def values(key):
        v = np.array([p[key] for p in pairs], np.float64)
        return v[np.isfinite(v)]

    def mean(key):
        v = values(key)
        return float(v.mean()) if len(v) else float("nan")

    def median(key):
        v = values(key)
        return float(np.median(v)) if len(v) else float("nan")

    worst = np.maximum(values("rotation_error_deg"), values("translation_direction_error_deg"))
    return {
        "num_pairs": len(pairs),
        "num_keypoints": mean("num_keypoints"),
        "num_matches": mean("num_matches"),
        "inlier_ratio": mean("inlier_ratio"),
        "epipolar_precision": np.mean([p["epipolar_precision"] for p in pairs], axis=0).tolist(),
        "median_epipolar_error_px": median("median_epipolar_error_px"),
        "median_inlier_epipolar_error_px": median("median_inlier_epipolar_error_px"),
        "median_rotation_error_deg": median("rotation_error_deg"),
        "median_translation_direction_error_deg": median("translation_direction_error_deg"),
        "pose_accuracy": {str(t): float((worst <= t).mean()) for t in POSE_THRESHOLDS},
        "pose_failures": int(sum(not p["pose_estimated"] for p in pairs)),
    }


def evaluate_sequence(method, sequence: PosedSequence, conf: dict) -> Tuple[List[dict], float, int]:
    """Per-pair metric dicts of one method on one sequence, the extraction seconds and frame count."""
    features, seconds = [], 0.0
    for image in sequence.images:
        start = time.perf_counter()
        features.append(method.extract(image))
        seconds += time.perf_counter() - start
    pairs = []
    for gap in conf["gaps"]:
        for i in range(len(features) - gap):
            f0, f1 = features[i], features[i + gap]
            matches = method.match(f0, f1)
            result = evaluate_pose_pair(f0.keypoints[matches[:, 0]].astype(np.float64),
                                        f1.keypoints[matches[:, 1]].astype(np.float64), sequence.K,
                                        sequence.poses[i], sequence.poses[i + gap], conf["pose_threshold"])
            pairs.append({"sequence": sequence.name, "gap": gap, "pair": [i, i + gap],
                          "num_keypoints": 0.5 * (len(f0.keypoints) + len(f1.keypoints)), **result})
    return pairs, seconds, len(sequence.images)


def summarize_by_gap(pairs: Sequence[dict], gaps: Sequence[int]) -> Dict[str, dict]:
    """``{"1": aggregate, "2": ..., "all": aggregate}`` (gaps without pairs omitted)."""
    out = {str(g): aggregate_pose_pairs([p for p in pairs if p["gap"] == g]) for g in gaps}
    out = {g: a for g, a in out.items() if a["num_pairs"]}
    out["all"] = aggregate_pose_pairs(pairs)
    return out


def run_posed_benchmark(folders: Sequence[Path], method_specs: Sequence[str], output: Optional[Path],
                        conf: Optional[dict] = None, show_progress: bool = True) -> dict:
    """Evaluate every method on every sequence; returns the report (also written to
    ``output/results.json``)."""
    conf = {**default_conf, **(conf or {})}
    unknown = set(conf) - set(default_conf)
    if unknown:
        raise ValueError(f"unknown posed-benchmark options: {sorted(unknown)}")
    if not conf["gaps"] or min(conf["gaps"]) < 1:
        raise ValueError(f"gaps must be >= 1, got {list(conf['gaps'])}")
    sequences = [load_posed_sequence(f, conf["size"]) for f in folders]
    names = [s.name for s in sequences]
    if len(set(names)) != len(names):
        raise PosedDatasetError(f"sequence folder names must be unique, got {names}")
    extractor_conf = {k: conf[k] for k in ("nms_radius", "detection_threshold", "device", "subpixel", "precision",
                                                "uniform_cell")}
    methods = [build_method(spec, conf["top_k"], extractor_conf) for spec in method_specs]
    if len({m.name for m in methods}) != len(methods):
        raise ValueError(f"method names must be unique, got {[m.name for m in methods]} (use NAME=WEIGHTS)")
    progress = None
    if show_progress:
        progress = tqdm(total=len(sequences) * len(methods), unit="seq", desc="superpoint-eval-posed", file=sys.stderr)
    results, per_sequence, timings, all_pairs = {}, {}, {}, {}
    for method in methods:
        pairs, seconds, frames = [], 0.0, 0
        for sequence in sequences:
            seq_pairs, seq_seconds, seq_frames = evaluate_sequence(method, sequence, conf)
            pairs += seq_pairs
            seconds, frames = seconds + seq_seconds, frames + seq_frames
            if progress is not None:
                progress.update(1)
        results[method.name] = summarize_by_gap(pairs, conf["gaps"])
        per_sequence[method.name] = {s.name: summarize_by_gap([p for p in pairs if p["sequence"] == s.name],
                                                               conf["gaps"]) for s in sequences}
        timings[method.name] = 1000.0 * seconds / max(frames, 1)
        all_pairs[method.name] = pairs
    if progress is not None:
        progress.close()
    report = {
        "protocol": {
            "sequences": [str(f) for f in folders],
            "frames": {s.name: len(s.images) for s in sequences},
            "image_size": {s.name: list(s.images[0].shape[:2]) for s in sequences},
            "resolution": "native" if conf["size"] is None else f"{conf['size'][0]}x{conf['size'][1]} (HxW), "
                          "every frame resized, K rescaled",
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in conf.items()},
            "matching": "mutual nearest neighbour, no ratio test (Hamming for ORB, L2 otherwise)",
            "pose": "essential matrix, OpenCV USAC MAGSAC++ (pose_threshold px), final fit on all inliers, "
                    "cheirality; unestimated pose = 180 deg errors",
            "epipolar_thresholds_px": list(EPIPOLAR_THRESHOLDS),
            "pose_thresholds_deg": list(POSE_THRESHOLDS),
        },
        "methods": {m.name: m.describe() for m in methods},
        "extract_ms_per_image": timings,
        "results": results,
        "sequences": per_sequence,
        "pairs": all_pairs,
    }
    if output is not None:
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        (output / "results.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    return report


COLUMNS = [("#kp", "num_keypoints", "{:.0f}"), ("#match", "num_matches", "{:.0f}"),
           ("inliers", "inlier_ratio", "{:.3f}"), ("epi@1", ("epipolar_precision", 0), "{:.3f}"),
           ("epi@3", ("epipolar_precision", 1), "{:.3f}"), ("epi med px", "median_epipolar_error_px", "{:.2f}"),
           ("R med deg", "median_rotation_error_deg", "{:.2f}"),
           ("t med deg", "median_translation_direction_error_deg", "{:.2f}"),
           ("pose@1", ("pose_accuracy", "1"), "{:.3f}"), ("pose@5", ("pose_accuracy", "5"), "{:.3f}"),
           ("pose@10", ("pose_accuracy", "10"), "{:.3f}")]


def format_table(report: dict) -> str:
    """Markdown table: one row per (sequence or ``all``, gap, method)."""
    header = ["sequence", "gap", "method"] + [c[0] for c in COLUMNS] + ["pairs", "ms/img"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    methods = list(report["results"])
    by_sequence = report["sequences"][methods[0]]
    rows = [(name, by_sequence[name]) for name in by_sequence] + [("all", report["results"][methods[0]])]
    for sequence, gaps in rows:
        for gap in gaps:
            for method in methods:
                source = report["results"][method] if sequence == "all" else report["sequences"][method][sequence]
                agg = source[gap]
                cells = [sequence, gap, method]
                for _, key, fmt in COLUMNS:
                    value = agg[key[0]][key[1]] if isinstance(key, tuple) else agg[key]
                    cells.append(fmt.format(value))
                cells += [str(agg["num_pairs"]), f"{report['extract_ms_per_image'][method]:.1f}"]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_gaps(text: str) -> Tuple[int, ...]:
    """``"1,2,3"`` -> ``(1, 2, 3)``."""
    try:
        gaps = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gaps must be comma-separated integers, got {text!r}") from None
    if not gaps or gaps[0] < 1:
        raise argparse.ArgumentTypeError(f"--gaps must be integers >= 1, got {text!r}")
    return gaps


def parse_optional_size(text: str) -> Optional[Tuple[int, int]]:
    return None if text.lower() == "native" else parse_size(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="superpoint-eval-posed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sequences", type=Path, nargs="+", help="posed sequence folders (frames, groundtruth.txt, K.txt)")
    p.add_argument("--weights", action="append", default=[], metavar="[NAME=]PATH",
                   help="SuperPoint weights to evaluate (repeatable); default: the shipped model")
    p.add_argument("--no-default-model", action="store_true", help="don't add the shipped default model")
    p.add_argument("--baselines", default="orb,sift", help="comma-separated OpenCV baselines ('' for none)")
    p.add_argument("--size", type=parse_optional_size, default=None, metavar="HxW",
                   help="resize every frame to HEIGHTxWIDTH (K rescaled); default: native")
    p.add_argument("--gaps", type=parse_gaps, default=default_conf["gaps"], help="frame gaps of the pairs (1,2,3)")
    p.add_argument("--top-k", type=int, default=default_conf["top_k"])
    p.add_argument("--pose-threshold", type=float, default=default_conf["pose_threshold"],
                   help="essential-matrix MAGSAC++ threshold, px (default 1)")
    p.add_argument("--nms-radius", type=int, default=default_conf["nms_radius"])
    p.add_argument("--detection-threshold", type=float, default=default_conf["detection_threshold"])
    p.add_argument("--subpixel", action="store_true", help="SuperPoint: sub-pixel keypoints (as the node configs)")
    p.add_argument("--device", default=default_conf["device"])
    p.add_argument("--precision", default=default_conf["precision"], choices=("auto", "fp32", "fp16", "bf16", "int8"))
    p.add_argument("--output", "-o", type=Path, default=Path("out/eval_posed"), help="folder for results.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    configure_process()
    if args.top_k < 1 or args.pose_threshold <= 0:
        print("superpoint-eval-posed: --top-k must be >= 1 and --pose-threshold > 0", file=sys.stderr)
        return 2
    specs = method_specs(args)
    if not specs:
        print("superpoint-eval-posed: nothing to evaluate (no model and no baselines)", file=sys.stderr)
        return 2
    conf = {"size": args.size, "gaps": args.gaps, "top_k": args.top_k, "pose_threshold": args.pose_threshold,
            "nms_radius": args.nms_radius, "detection_threshold": args.detection_threshold, "device": args.device,
            "subpixel": args.subpixel, "precision": args.precision}
    try:
        if "superpoint" in specs:
            print(f"default model: {default_weights_path()}")
        report = run_posed_benchmark(args.sequences, specs, args.output, conf, not args.quiet)
    except (PosedDatasetError, WeightsError, ValueError, RuntimeError, OSError) as e:
        print(f"superpoint-eval-posed: {e}", file=sys.stderr)
        return 2
    protocol = report["protocol"]
    frames = ", ".join(f"{name}: {count} frames" for name, count in protocol["frames"].items())
    print(f"\n{len(protocol['sequences'])} sequences ({frames}), "
          f"resolution {protocol['resolution']}, top-k {conf['top_k']}, gaps {list(conf['gaps'])}, "
          f"essential matrix MAGSAC++ {conf['pose_threshold']:g} px\n")
    for name, description in report["methods"].items():
        if "weights" in description:
            print(f"{name}: weights {description['weights']}")
    print(format_table(report))
    print(f"\nwrote {args.output / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
