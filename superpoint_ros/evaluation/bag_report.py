"""Reports of ``superpoint-eval-bag``: the summary table, the methods side by side, the tracks picture.

The per-frame plot is :func:`superpoint_ros.evaluation.plots.plot_bag_summary`.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import cv2
import numpy as np

from ..visualization import draw_tracks, to_bgr8


def format_summary(summary: dict) -> str:
    """A markdown table of the summary (mean / median / p90 / max)."""
    rows = [("keypoints / frame", summary["keypoints_per_frame"]),
            ("temporal matches / frame", summary["temporal_matches_per_frame"]),
            ("RANSAC inliers / frame", summary["inliers_per_frame"]),
            ("inlier ratio", summary["inlier_ratio"]),
            ("track length [frames]", summary["tracks"]),
            ("tracks continued / frame", summary["tracks"]["continued_per_frame"])]
    if "stereo_matches_per_frame" in summary:
        rows += [("stereo matches / frame", summary["stereo_matches_per_frame"]),
                 ("stereo epipolar error [px]", summary["stereo_epipolar_error_px"]),
                 ("stereo disparity [px]", summary["stereo_disparity_px"])]
    if "pose" in summary:
        rows += [("rotation error [deg]", summary["pose"]["rotation_error_deg"]),
                 ("translation dir. error [deg]", summary["pose"]["translation_direction_error_deg"]),
                 ("GT epipolar error [px]", summary["pose"]["gt_epipolar_error_px"]),
                 ("track first-to-last GT epipolar error [px]", summary["pose"]["track_span_epipolar_error_px"])]
    rows += [("processing time [ms]", summary["time_ms"])]
    if summary["extract_ms"].get("count"):
        rows.append(("  of which extraction [ms]", summary["extract_ms"]))
    lines = ["| metric | mean | median | p90 | max |", "|---|---|---|---|---|"]
    for name, s in rows:
        if "mean" not in s:
            lines.append(f"| {name} | - | - | - | - |")
        else:
            lines.append(f"| {name} | {s['mean']:.3g} | {s['median']:.3g} | {s['p90']:.3g} | {s['max']:.3g} |")
    lines.append(f"\n{summary['frames']} frames, {summary['tracks']['count']} tracks"
                 + (f", {summary['fps']:.1f} frames/s" if summary.get("fps") else ""))
    return "\n".join(lines)


#: Rows of the side-by-side table: (label, path into the summary, statistic).
COMPARISON_ROWS = (
    ("keypoints / frame", ("keypoints_per_frame",), "mean"),
    ("temporal matches / frame", ("temporal_matches_per_frame",), "mean"),
    ("RANSAC inliers / frame", ("inliers_per_frame",), "mean"),
    ("inlier ratio", ("inlier_ratio",), "mean"),
    ("tracks continued / frame", ("tracks", "continued_per_frame"), "mean"),
    ("track length [frames]", ("tracks",), "mean"),
    ("stereo matches / frame", ("stereo_matches_per_frame",), "mean"),
    ("stereo epipolar error [px]", ("stereo_epipolar_error_px",), "mean"),
    ("rotation error [deg]", ("pose", "rotation_error_deg"), "median"),
    ("translation dir. error [deg]", ("pose", "translation_direction_error_deg"), "median"),
    ("GT epipolar error [px]", ("pose", "gt_epipolar_error_px"), "median"),
    ("track first-to-last GT epipolar error [px]", ("pose", "track_span_epipolar_error_px"), "median"),
    ("fraction of tracks off by > 2 px", ("pose", "track_span_epipolar_error_px"), "above_2px"),
    ("processing time [ms]", ("time_ms",), "mean"),
)


def format_comparison(summaries: Dict[str, dict]) -> str:
    """A markdown table with one column per method (name -> summary); a row per metric, the mean
    (or the median where noted), ``-`` where a method has no value."""
    names = list(summaries)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, path, statistic in COMPARISON_ROWS:
        cells, present = [], False
        for name in names:
            node = summaries[name]
            for key in path:
                node = node.get(key, {}) if isinstance(node, dict) else {}
            value = node.get(statistic) if isinstance(node, dict) else None
            present |= value is not None
            cells.append("-" if value is None else f"{value:.3g}")
        if present:
            lines.append(f"| {label}{' (median)' if statistic == 'median' else ''} | " + " | ".join(cells) + " |")
    return "\n".join(lines)



def tracks_picture(image: np.ndarray, trails: Dict[int, List[Tuple[float, float]]], max_width: int = 0) -> np.ndarray:
    """The last frame with every live track's trail (green) and head (red dot), BGR uint8."""
    canvas = to_bgr8(image).copy()
    draw_tracks(canvas, [np.asarray(t) for t in trails.values() if len(t) >= 2], color=(0, 255, 0))
    for trail in trails.values():
        x, y = trail[-1]
        cv2.circle(canvas, (int(round(x)), int(round(y))), 2, (0, 0, 255), -1, cv2.LINE_AA)
    if max_width and canvas.shape[1] > max_width:
        scale = max_width / canvas.shape[1]
        canvas = cv2.resize(canvas, (max_width, int(round(canvas.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    return canvas

