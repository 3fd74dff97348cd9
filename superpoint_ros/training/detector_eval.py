"""Detector evaluation on held-out synthetic shapes, beside OpenCV FAST, Harris and Shi-Tomasi.

Metrics, per method, pooled over all images (distance threshold ``eval.distance`` px, each
ground-truth point matched at most once, greedily by score):
  - precision and recall at the method's default operating point;
  - mAP: average precision over the full score ranking (area under the precision-recall curve);
  - localisation error: mean distance (px) of the correct detections at the operating point.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
import torch

from ..keypoints import logits_to_heatmap, nms, remove_border
from ..weights import load_model
from .config import load_config
from .magicpoint_config import default_conf
from .synthetic_shapes import SyntheticShapes

Detections = Tuple[np.ndarray, np.ndarray]  # (N, 2) xy, (N,) scores


def _local_maxima(response: np.ndarray, radius: int, threshold: float) -> Detections:
    dilated = cv2.dilate(response, np.ones((2 * radius + 1, 2 * radius + 1), np.uint8))
    ys, xs = np.nonzero((response == dilated) & (response > threshold))
    return np.stack([xs, ys], -1).astype(np.float32), response[ys, xs].astype(np.float32)


def detect_fast(image: np.ndarray) -> Detections:
    fast = cv2.FastFeatureDetector_create(threshold=10, nonmaxSuppression=True)
    kps = fast.detect(image)
    return (np.array([k.pt for k in kps], np.float32).reshape(-1, 2),
            np.array([k.response for k in kps], np.float32))


def detect_harris(image: np.ndarray) -> Detections:
    response = cv2.cornerHarris(image.astype(np.float32) / 255, blockSize=3, ksize=3, k=0.04)
    return _local_maxima(response, 2, 1e-6)


def detect_shi_tomasi(image: np.ndarray) -> Detections:
    response = cv2.cornerMinEigenVal(image.astype(np.float32) / 255, blockSize=3, ksize=3)
    return _local_maxima(response, 2, 1e-6)


# operating points: the fraction of the image's max response a baseline needs (OpenCV's
# goodFeaturesToTrack qualityLevel idea), or MagicPoint's probability threshold
BASELINES = {"FAST": (detect_fast, 0.0), "Harris": (detect_harris, 0.01), "Shi-Tomasi": (detect_shi_tomasi, 0.01)}


def detect_magicpoint(model, images: torch.Tensor, nms_radius: int) -> List[Detections]:
    """All NMS maxima (score > 1e-4) of a ``(B, 1, H, W)`` batch."""
    with torch.no_grad():
        heat = logits_to_heatmap(model(images)["logits"])
    heat = remove_border(nms(heat, nms_radius), 2).cpu().numpy()
    out = []
    for h in heat:
        ys, xs = np.nonzero(h > 1e-4)
        out.append((np.stack([xs, ys], -1).astype(np.float32), h[ys, xs].astype(np.float32)))
    return out


def match_detections(points: np.ndarray, scores: np.ndarray, truth: np.ndarray, distance: float):
    """Greedy matching by descending score: returns (is_correct (N,) in score order, errors, sorted scores)."""
    order = np.argsort(-scores, kind="stable")
    points, scores = points[order], scores[order]
    taken = np.zeros(len(truth), bool)
    correct = np.zeros(len(points), bool)
    errors = np.full(len(points), np.nan)
    if len(truth):
        dist = np.linalg.norm(points[:, None] - truth[None], axis=-1)
        for i in range(len(points)):
            d = np.where(taken, np.inf, dist[i])
            j = int(np.argmin(d))
            if d[j] <= distance:
                taken[j], correct[i], errors[i] = True, True, d[j]
    return correct, errors, scores


def summarise(per_image: List[tuple], num_truth: int) -> Dict[str, float]:
    """per_image: list of (correct, errors, scores, operating_threshold)."""
    correct = np.concatenate([c for c, _, _, _ in per_image]) if per_image else np.zeros(0, bool)
    scores = np.concatenate([s for _, _, s, _ in per_image]) if per_image else np.zeros(0)
    errors = np.concatenate([e for _, e, _, _ in per_image]) if per_image else np.zeros(0)
    at_op = np.concatenate([s >= t for _, _, s, t in per_image]) if per_image else np.zeros(0, bool)
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(correct[order])
    precision = tp / np.arange(1, len(order) + 1)
    recall = tp / max(num_truth, 1)
    # AP as the sum of precision at each new true positive / number of ground-truth points
    ap = float(np.sum(precision[correct[order]]) / max(num_truth, 1)) if len(order) else 0.0
    n_op = int(at_op.sum())
    tp_op = int((correct & at_op).sum())
    return {
        "precision": tp_op / n_op if n_op else 0.0,
        "recall": tp_op / max(num_truth, 1),
        "mAP": ap,
        "localisation_error_px": float(np.nanmean(errors[correct & at_op])) if tp_op else float("nan"),
        "detections_per_image": n_op / max(len(per_image), 1),
        "max_recall": float(recall[-1]) if len(recall) else 0.0,
    }


def evaluate_on_synthetic(model, conf: dict, batch_size: int = 32, name: str = "MagicPoint"
                          ) -> Dict[str, Dict[str, float]]:
    """``model`` (reported as ``name``) and the OpenCV baselines on ``eval.num_images`` held-out
    scenes (scene indices start at ``eval.offset``, never reached by training)."""
    ev = conf["eval"]
    dataset = SyntheticShapes({**conf["synthetic"], "seed": conf["seed"]}, offset=int(ev["offset"]))
    device = next(model.parameters()).device
    model.eval()
    methods = {name: [], **{baseline: [] for baseline in BASELINES}}
    num_truth = 0
    for start in range(0, int(ev["num_images"]), batch_size):
        scenes = [dataset.scene(i) for i in range(start, min(start + batch_size, int(ev["num_images"])))]
        images = torch.from_numpy(np.stack([s[0] for s in scenes]).astype(np.float32) / 255)[:, None].to(device)
        mp = detect_magicpoint(model, images, int(ev["nms_radius"]))
        for (image, truth, _), (pts, sc) in zip(scenes, mp):
            num_truth += len(truth)
            methods[name].append((*match_detections(pts, sc, truth, ev["distance"]),
                                          float(ev["detection_threshold"])))
            for baseline, (detector, quality) in BASELINES.items():
                pts_b, sc_b = detector(image)
                threshold = quality * float(sc_b.max()) if len(sc_b) and quality > 0 else -np.inf
                methods[baseline].append((*match_detections(pts_b, sc_b, truth, ev["distance"]), threshold))
    return {method: summarise(per_image, num_truth) for method, per_image in methods.items()}


def format_table(results: Dict[str, Dict[str, float]]) -> str:
    width = max(12, *(len(m) for m in results))
    header = f"{'detector':<{width}} {'precision':>9} {'recall':>7} {'mAP':>6} {'loc.err px':>10} {'pts/img':>8}"
    rows = [header, "-" * len(header)]
    for method, r in results.items():
        rows.append(f"{method:<{width}} {r['precision']:>9.3f} {r['recall']:>7.3f} {r['mAP']:>6.3f} "
                    f"{r['localisation_error_px']:>10.2f} {r['detections_per_image']:>8.1f}")
    return "\n".join(rows)


def main(argv=None) -> None:
    """``python -m superpoint_ros.training.detector_eval --weights MODEL.pt``: the table for any checkpoint."""
    parser = argparse.ArgumentParser(description="Detector evaluation on held-out synthetic shapes vs OpenCV")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--config", help="a MagicPoint YAML config (its synthetic + eval sections are used)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    conf = load_config(default_conf, args.config, args.set)
    model, _ = load_model(args.weights)
    results = evaluate_on_synthetic(model, conf, name=Path(args.weights).stem)
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
