"""Matplotlib figures for the evaluation tools (headless Agg backend, PNG out)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Mapping, Sequence

import numpy as np


def _pyplot():
    import matplotlib  # optional heavy dependency (the eval extra): imported when plotting

    matplotlib.use("Agg")  # no display on robots and CI
    import matplotlib.pyplot as plt

    return plt


SPLIT_TITLES = {"i": "Illumination", "v": "Viewpoint", "b": "Blur", "n": "Noise / JPEG", "rotation": "Rotation",
                "scale": "Scale", "noise": "Sensor noise", "blur": "Motion blur", "jpeg": "JPEG",
                "lowlight": "Low light", "overall": "Overall"}


def plot_mma(results: Mapping[str, Mapping[str, dict]], thresholds: Sequence[float], path: Path) -> Path:
    """MMA-vs-threshold curves, one panel per split (in the order of ``results``' keys, overall
    last; at most 4 panels a row), one line per method.

    ``results[method][split]`` is a :func:`metrics.aggregate` dict with ``"mma"`` (len(thresholds)).
    """
    plt = _pyplot()
    names = []
    for by_split in results.values():
        names += [s for s in by_split if s not in names and s != "overall"]
    splits = [s for s in names + ["overall"] if any(r.get(s, {}).get("num_pairs") for r in results.values())]
    cols = min(len(splits), 4)
    rows = (len(splits) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False, sharey=True)
    for ax, split in zip(axes.ravel(), splits):
        pairs = 0
        for method, by_split in results.items():
            if by_split.get(split, {}).get("num_pairs"):
                ax.plot(thresholds, by_split[split]["mma"], marker="o", markersize=3, label=method)
                pairs = by_split[split]["num_pairs"]
        ax.set_title(f"{SPLIT_TITLES.get(split, split)} ({pairs} pairs)")
        ax.set_xlabel("threshold [px]")
        ax.set_xlim(min(thresholds), max(thresholds))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for extra in axes.ravel()[len(splits):]:
        extra.axis("off")
    for row in axes:
        row[0].set_ylabel("MMA")
    axes.ravel()[len(splits) - 1].legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bag_summary(series: Dict[str, np.ndarray], track_lengths: np.ndarray, path: Path) -> Path:
    """Per-frame curves (keypoints, matches, inlier ratio, time ...) and the track-length histogram.

    ``series``: name -> ``(F,)`` per-frame values (NaN = not available for that frame).
    """
    plt = _pyplot()
    names = [n for n, v in series.items() if len(v) and np.isfinite(np.asarray(v, float)).any()]
    panels = len(names) + 1
    cols = 3
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    flat = axes.ravel()
    for ax, name in zip(flat, names):
        ax.plot(np.asarray(series[name], float), lw=1)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("frame", fontsize=8)
        ax.grid(alpha=0.3)
    ax = flat[len(names)]
    if len(track_lengths):
        ax.hist(track_lengths, bins=np.arange(1, max(track_lengths) + 2) - 0.5 if max(track_lengths) < 60 else 40)
    ax.set_title("track length [frames]", fontsize=9)
    ax.set_yscale("log")
    for extra in flat[panels:]:
        extra.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
