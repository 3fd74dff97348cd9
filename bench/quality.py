"""Quality cost of the speed settings, measured with the project's evaluation tools.

``python -m bench.quality [--json OUT]`` builds (once, cached) a small HPatches-layout set with
``superpoint-make-dataset`` from real photos and runs the paper's homography metrics
(``superpoint_ros.evaluation``) for each speed setting at 240x320 and 480x640: the default
extractor, bf16, the plain reference (greedy NMS), plus ORB and SIFT. This is where the CPU
real-time setting's cost (smaller input) is read off (docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import numpy as np
import torch

from superpoint_ros.backends import configure_process, cpu_has_native_bf16
from superpoint_ros.evaluation import hpatches
from superpoint_ros.evaluation.baselines import MethodFeatures, OpenCVMethod, SuperPointMethod
from superpoint_ros.matching import match_descriptors

from .reference import ReferenceExtractor
from .run import load_weights_for_bench

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "out" / "bench_quality_dataset"


class ReferenceMethod:
    """The plain reference extractor (bench/reference.py) as an evaluation method."""

    def __init__(self, model, threshold: float, top_k: int):
        self.name = "reference (eager fp32 + greedy NMS)"
        self.extractor = ReferenceExtractor(model, "cpu", detection_threshold=threshold, max_keypoints=top_k)

    def extract(self, gray: np.ndarray) -> MethodFeatures:
        f = self.extractor(gray)
        return MethodFeatures(f.keypoints, f.scores, f.descriptors)

    def match(self, f0, f1) -> np.ndarray:
        return match_descriptors(f0.descriptors, f1.descriptors).indices


def ensure_dataset(path: Path, variants: int) -> Path:
    if not (path / "dataset.json").exists():
        subprocess.run([sys.executable, "-m", "superpoint_ros.evaluation.make_dataset", str(path), "--size", "480x640",
                        "--variants", str(variants)], check=True, cwd=ROOT)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="default: models/superpoint_ros_v1.pt (else random weights, noted)")
    p.add_argument("--dataset", type=Path, default=CACHE, help="HPatches-layout folder (built if missing)")
    p.add_argument("--variants", type=int, default=1, help="sequences per photo and kind when building")
    p.add_argument("--max-sequences", type=int, default=8)
    p.add_argument("--resolutions", default="240x320,480x640")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    configure_process()
    model, weights_note, threshold, weights_path = load_weights_for_bench(args.weights)
    dataset = ensure_dataset(args.dataset, args.variants)
    sequences = hpatches.find_sequences(dataset)
    by_split = [[s for s in sequences if s.name.startswith(prefix)] for prefix in ("i_", "v_")]
    half = (args.max_sequences + 1) // 2
    sequences = sorted(sum((group[:half] for group in by_split), []))[:args.max_sequences]
    top_k = 1000
    conf_common = {"nms_radius": 4, "detection_threshold": threshold}
    methods = [SuperPointMethod(weights_path, top_k, name="default options", **conf_common)]
    methods.append(SuperPointMethod(weights_path, top_k, name="input_scale=0.5", input_scale=0.5, **conf_common))
    if cpu_has_native_bf16():
        methods.append(SuperPointMethod(weights_path, top_k, name="precision=bf16", precision="bf16", **conf_common))
    methods += [ReferenceMethod(model, threshold, top_k), OpenCVMethod("orb", top_k), OpenCVMethod("sift", top_k)]
    print(f"weights: {weights_note}; {len(sequences)} sequences of {dataset}; torch threads {torch.get_num_threads()}")
    report: Dict[str, dict] = {"weights": weights_note, "dataset": str(dataset), "sequences": [s.name for s in sequences],
                               "results": {}}
    for resolution in args.resolutions.split(","):
        h, w = (int(v) for v in resolution.split("x"))
        conf = {**hpatches.default_conf, "resize": (h, w), "top_k": top_k}
        results, timings = {}, {}
        for method in methods:
            start = time.perf_counter()
            pairs, timings[method.name] = hpatches.evaluate_method(method, sequences, conf)
            results[method.name] = hpatches.summarize(pairs)
            print(f"  {resolution} {method.name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)
        print(f"\n### {resolution} (HxW)\n")
        print(hpatches.format_table(results, timings))
        report["results"][resolution] = {"metrics": results, "extract_ms_per_image": timings}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1, default=float) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
