"""Peak memory of one huge frame through the front-end (issue 14): ``python -m bench.memory``.

Each configuration runs in a fresh child process (``--child``), which builds a
:class:`~superpoint_ros.frontend.Frontend` with the default parameters plus the given overrides,
makes an 8000x8000 mono8 frame (a real photo scaled up) and processes it twice (the second call
shows allocator growth, e.g. ONNX Runtime's memory pattern), printing its own peak RSS
(``getrusage``, MiB) after each step as one JSON line. Memory is the point here, not time: the
seconds printed are for orientation only.

    python -m bench.memory                                   # image.max_size 1024, 1280, 1600, 2048
    python -m bench.memory --max-size 1280 --params config/superpoint_mono.yaml
    python -m bench.memory --max-size 1280 --set tracking.flow_refinement=true --set extractor.backend=torch
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Dict, List

import numpy as np


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def parse_overrides(items: List[str]) -> Dict[str, object]:
    """``["a.b=true", "c=2"]`` -> ``{"a.b": True, "c": 2}`` (YAML scalars)."""
    import yaml

    return {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in items)}


def huge_frame(side: int) -> np.ndarray:
    """``(side, side)`` uint8: a real photo (bench/data) scaled up, as a high-resolution camera sees."""
    import cv2

    from bench.images import load_photos

    photo = load_photos()["camera"]
    return cv2.resize(photo, (side, side), interpolation=cv2.INTER_LINEAR)


def child(side: int, overrides: Dict[str, object], params: str = "") -> dict:
    from superpoint_ros.frontend import Frontend
    from superpoint_ros.params import load_params

    report = {"params": params or "defaults", "overrides": overrides, "side": side}
    frontend = Frontend(load_params(params, overrides=overrides) if params else overrides)
    report["backend"] = frontend.extractor.backend_name
    report["after_start_mib"] = peak_rss_mib()
    image = huge_frame(side)
    report["after_frame_made_mib"] = peak_rss_mib()
    for k in (1, 2):
        start = time.perf_counter()
        result = frontend.process_mono(image, k * 1_000_000_000, "camera")
        report[f"frame{k}_s"] = round(time.perf_counter() - start, 2)
        report[f"after_frame{k}_mib"] = peak_rss_mib()
    report["keypoints"] = len(result.features)
    report["resized_to"] = result.features.resized_to
    report["peak_mib"] = peak_rss_mib()
    return report


def run_child(side: int, overrides: Dict[str, object], params: str = "") -> dict:
    """One configuration in a fresh process -> its report."""
    args = [sys.executable, "-m", "bench.memory", "--child", "--side", str(side), "--params", params]
    for name, value in overrides.items():
        args += ["--set", f"{name}={json.dumps(value)}"]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=8000, help="frame side in px (square mono8)")
    parser.add_argument("--max-size", type=int, nargs="*", default=[1024, 1280, 1600, 2048],
                        help="image.max_size values to measure, one child each")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="more parameter overrides, e.g. tracking.flow_refinement=true")
    parser.add_argument("--params", default="", help="parameter file (e.g. config/superpoint_mono.yaml); "
                        "default: the parameter table's defaults")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    overrides = parse_overrides(args.set)
    if args.child:
        print(json.dumps(child(args.side, overrides, args.params)))
        return 0
    for max_size in args.max_size:
        report = run_child(args.side, {**overrides, "image.max_size": max_size}, args.params)
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
