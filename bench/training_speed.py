"""CPU/GPU throughput of the training stages, for planning a run (docs/training.md, "v2").

    python -m bench.training_speed --weights models/superpoint_ros_v1.pt --images DIR [--threads 1 2]
    python -m bench.training_speed --pair-stats config/train/v2_superpoint.yaml   # warp statistics only

Measures, per thread count: homographic adaptation (``adapt.aggregate_heatmap`` over 16 warps of a
240x320 crop, so warps/s) and SuperPoint training steps (``train_superpoint.superpoint_step`` +
backward + Adam on the full model, pairs/s) with config/train/v2_superpoint.yaml's augmentation.
Prints one JSON line per measurement. Timings on a shared machine vary with its load: the load
average is printed with them.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def _crops(image_dir: Path, count: int) -> torch.Tensor:
    from superpoint_ros.training.data import list_images, read_gray

    paths = list_images(image_dir)[:count]
    return torch.stack([torch.from_numpy(read_gray(p).astype(np.float32) / 255)[None] for p in paths])


def adaptation_rate(model, crops: torch.Tensor, warps: int, repeats: int) -> float:
    """Warps per second of ``aggregate_heatmap`` (warps per forward pass = ``warps``)."""
    from superpoint_ros.training.adapt import aggregate_heatmap, default_conf, sample_adaptation_homographies

    conf = {**default_conf, "num_homographies": warps}
    shape = tuple(crops.shape[-2:])
    aggregate_heatmap(model, crops[:1], sample_adaptation_homographies(conf, 0, shape), warps)  # warm-up
    t0 = time.perf_counter()
    for k in range(repeats):
        image = crops[k % len(crops)][None]
        aggregate_heatmap(model, image, sample_adaptation_homographies(conf, k, shape), warps)
    return repeats * warps / (time.perf_counter() - t0)


def training_rate(weights: str, crops: torch.Tensor, batch: int, steps: int) -> float:
    """Pairs per second of full SuperPoint training steps (forward, loss, backward, Adam)."""
    import yaml

    from superpoint_ros.training.config import load_config
    from superpoint_ros.training.engine import AutocastForward, build_model, init_from
    from superpoint_ros.training.homographies import HomographyParams, sample_homographies
    from superpoint_ros.training.train_superpoint import default_conf, superpoint_step

    conf = load_config(default_conf, str(ROOT / "config/train/v2_superpoint.yaml"))
    model = build_model("full")
    init_from(model, weights)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    forward = AutocastForward(model, torch.device("cpu"), "none")
    params = HomographyParams.from_dict(conf["homography"])
    rng = np.random.default_rng(0)
    shape = tuple(crops.shape[-2:])
    points = torch.from_numpy(rng.uniform(0, [shape[1], shape[0]], (batch, 300, 2)).astype(np.float32))

    def one_step(k: int) -> None:
        images = torch.stack([crops[(k * batch + i) % len(crops)] for i in range(batch)])
        hom = torch.from_numpy(np.stack([sample_homographies(rng, 2, shape, params) for _ in range(batch)]))
        item = {"image": images, "points": points, "valid": torch.ones(batch, 300, dtype=torch.bool),
                "homography": hom}
        loss = superpoint_step(forward, item, torch.Generator().manual_seed(k), conf)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    one_step(0)  # warm-up
    t0 = time.perf_counter()
    for k in range(1, steps + 1):
        one_step(k)
    return steps * batch / (time.perf_counter() - t0)


def relative_rotation_and_scale(h: np.ndarray, shape) -> tuple:
    """In-plane rotation (deg) and isotropic scale of ``h``'s local affine map at the image centre."""
    height, width = shape
    p = h @ np.array([(width - 1) / 2, (height - 1) / 2, 1.0])
    jacobian = (h[:2, :2] * p[2] - np.outer(p[:2], h[2, :2])) / p[2] ** 2
    angle = np.degrees(np.arctan2(jacobian[1, 0] - jacobian[0, 1], jacobian[0, 0] + jacobian[1, 1]))
    return float(angle), float(np.sqrt(abs(np.linalg.det(jacobian))))


def pair_statistics(config: str, pairs: int = 2000, shape=(240, 320)) -> dict:
    """Statistics of the relative warp ``H1 inv(H0)`` of training pairs drawn with a config's
    ``homography`` group (rng seed 0)."""
    import yaml

    from superpoint_ros.training.homographies import HomographyParams, sample_homography

    params = HomographyParams.from_dict(yaml.safe_load(Path(config).read_text()).get("homography", {}))
    rng = np.random.default_rng(0)
    rel = []
    for _ in range(pairs):
        h0, h1 = sample_homography(rng, shape, params), sample_homography(rng, shape, params)
        rel.append(relative_rotation_and_scale(h1 @ np.linalg.inv(h0), shape))
    rotation, scale = np.abs(np.array(rel)[:, 0]), np.array(rel)[:, 1]
    return {"config": config, "pairs": pairs, "rotation_deg_p50_p95_max": np.percentile(rotation, [50, 95, 100]).round(1).tolist(),
            "scale_min_p5_p95_max": [round(float(scale.min()), 2), *np.percentile(scale, [5, 95]).round(2).tolist(),
                                     round(float(scale.max()), 2)],
            "share_scale_change_over_1.5x": round(float(np.mean((scale > 1.5) | (scale < 1 / 1.5))), 3)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights")
    parser.add_argument("--images", help="folder of 240x320 crops (superpoint_ros.training.data)")
    parser.add_argument("--pair-stats", nargs="+", metavar="CONFIG", help="only print pair warp statistics")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warps", type=int, default=16)
    parser.add_argument("--adapt-images", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="pairs per training step")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)
    if args.pair_stats:
        for config in args.pair_stats:
            print(json.dumps(pair_statistics(config)), flush=True)
        return
    if not (args.weights and args.images):
        parser.error("--weights and --images are needed for the timings")
    from superpoint_ros.weights import load_model

    crops = _crops(Path(args.images), max(args.batch, args.adapt_images))
    model, _ = load_model(args.weights)
    model.eval()
    for threads in args.threads:
        torch.set_num_threads(threads)
        with torch.no_grad():
            warps_per_s = adaptation_rate(model, crops, args.warps, args.adapt_images)
        print(json.dumps({"threads": threads, "stage": "adapt", "size": list(crops.shape[-2:]),
                          "warps_per_s": round(warps_per_s, 2), "load_avg": os.getloadavg()[0]}), flush=True)
        pairs_per_s = training_rate(args.weights, crops, args.batch, args.steps)
        print(json.dumps({"threads": threads, "stage": "superpoint-train", "batch_pairs": args.batch,
                          "pairs_per_s": round(pairs_per_s, 3), "s_per_step": round(args.batch / pairs_per_s, 1),
                          "load_avg": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
