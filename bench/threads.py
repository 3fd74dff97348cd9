"""Torch threads for the front-end's small ops: ``python -m bench.threads [--rounds N] [--threads N]``.

Times keypoint decoding (the extractor's, on fixed network outputs), mutual-NN matching (ratio
test 0.9) and the eager float32 network on 480x640 photos (bench/data) with torch's default thread
count and with one thread, interleaved round by round in this one process, and prints the median
milliseconds and their ratio. The measurement behind ``backends.configure_process``'s one-thread
policy (docs/benchmarks.md, "Torch threads").
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import cv2
import numpy as np
import torch

from superpoint_ros import FeatureExtractor
from superpoint_ros.backends import TorchRunner, configure_process
from superpoint_ros.extractor import pad_to_cell
from superpoint_ros.image import to_grayscale_float
from superpoint_ros.matching import match_descriptors
from superpoint_ros.weights import load_model

DATA = Path(__file__).resolve().parent / "data"


def photos(size=(640, 480)) -> List[np.ndarray]:
    return [cv2.resize(cv2.imread(str(DATA / name)), size, interpolation=cv2.INTER_AREA)
            for name in ("astronaut.jpg", "coffee.jpg")]


def timed(variants: Dict[str, Callable[[], object]], thread_counts: List[int], rounds: int) -> Dict[tuple, List[float]]:
    """Milliseconds of each variant at each thread count, interleaved (other load hits all alike)."""
    samples: Dict[tuple, List[float]] = {}
    for _ in range(rounds):
        for threads in thread_counts:
            torch.set_num_threads(threads)
            for name, run in variants.items():
                start = time.perf_counter()
                run()
                samples.setdefault((name, threads), []).append((time.perf_counter() - start) * 1e3)
    return samples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="the multi-threaded count to compare with one (default: torch's)")
    args = parser.parse_args(argv)
    many = args.threads
    configure_process()  # the entry points' settings; the thread count is then varied here
    extractor = FeatureExtractor(precision="fp32", max_keypoints=1000)  # the network itself: ONNX Runtime
    first, second = photos()
    with torch.inference_mode():
        outputs = extractor.forward(extractor.to_tensor([first]))
    f0, f1 = extractor(first), extractor(second)
    d0, d1 = torch.from_numpy(f0.descriptors), torch.from_numpy(f1.descriptors)
    eager = TorchRunner(load_model(extractor.weights_path)[0], torch.device("cpu"), torch.float32)
    batch = pad_to_cell(torch.from_numpy(to_grayscale_float(first))[None, None])
    variants = {"decode (480x640)": lambda: extractor.decode(outputs, (480, 640)),
                f"match ({len(f0)}x{len(f1)}, ratio 0.9)": lambda: match_descriptors(d0, d1, ratio_test=0.9)}
    try:
        with torch.inference_mode():
            small = timed(variants, [many, 1], args.rounds)
            network = timed({"eager fp32 network (480x640)": lambda: eager(batch)}, [many, 1],
                            max(1, args.rounds // 4))
    finally:
        configure_process()
    print(f"{os.cpu_count()} logical CPUs, load average {os.getloadavg()[0]:.2f}; {args.rounds} rounds")
    print(f"| | {many} threads (ms) | 1 thread (ms) | ratio |")
    print("|---|---|---|---|")
    for samples in (small, network):
        for name in dict.fromkeys(n for n, _ in samples):
            a, b = statistics.median(samples[(name, many)]), statistics.median(samples[(name, 1)])
            print(f"| {name} | {a:.2f} | {b:.2f} | {a / b:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
