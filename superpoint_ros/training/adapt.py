"""Homographic adaptation: pseudo ground-truth interest points for real images (``superpoint-adapt``).

For each image, the detector's heatmap is computed on N warped copies (the first one the identity),
each heatmap is warped back to the image, and the average over the warps that see a pixel is
thresholded and non-maximum suppressed. Labels go to ``OUT/<image stem>.npy`` as ``(N, 2)`` float32
xy points (pixel-centre convention). Images that already have a label are skipped, so a run over a
large folder resumes where it stopped.

Under ``torchrun`` (any number of processes and nodes) rank ``r`` of ``W`` labels the images
``r, r+W, r+2W, ...`` of the sorted folder listing with warps drawn from the image's index in that
listing, so the union of the ranks' labels is exactly what one process writes; rank 0 writes the
summary. Ranks share nothing but the final summary, so ``OUT`` may even be node-local.

CLI: ``superpoint-adapt --weights model.pt --images DIR --out LABELS [--config ...] [--set ...]``
(or ``torchrun --nproc_per_node N -m superpoint_ros.training.adapt ...`` with the same arguments)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from tqdm import tqdm

from ..keypoints import detect_keypoints, logits_to_heatmap, nms, remove_border
from ..weights import load_model
from . import distributed
from .checkpoint import one_line_errors
from .config import dump_config, load_config
from .data import list_images, read_gray
from .engine import resolve_device
from .homographies import HomographyParams, invert_homographies, sample_homography, warp_images

default_conf = {
    "num_homographies": 100,
    "batch_size": 50,                  # warps per forward pass
    "homography": HomographyParams().to_dict(),
    "detection_threshold": 0.015,
    "nms_radius": 4,
    "border": 4,
    "max_points": 600,                 # keep the best points of each image (0: all)
    "min_points": 0,                   # if fewer pass the threshold, take up to this many maxima ...
    "min_points_floor": 0.003,         # ... that score above this floor
    "seed": 0,
    "device": "auto",
    "amp": "bf16",
    "max_minutes": None,
    "num_workers": 4,                  # image reading + homography sampling in parallel processes
    "order": "sorted",                 # sorted | shuffled: a seeded random visiting order, so a run cut
                                       # short by max_minutes labels a uniform subset of the folder
}


def aggregate_heatmap(model, image: torch.Tensor, homographies: torch.Tensor, batch_size: int,
                      amp: str = "none") -> torch.Tensor:
    """Mean heatmap of a ``(1, 1, H, W)`` image over ``(N, 3, 3)`` homographies -> ``(H, W)`` float32.

    Each warped copy's heatmap is warped back by ``H^-1``; a pixel averages only the copies that
    saw it (the count is the back-warped all-ones mask).
    """
    _, _, h, w = image.shape
    total = torch.zeros(1, 1, h, w, device=image.device)
    count = torch.zeros_like(total)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
                if image.device.type == "cuda" and amp != "none" else contextlib.nullcontext())
    for start in range(0, len(homographies), batch_size):
        hom = homographies[start:start + batch_size].to(image.device)
        warped = warp_images(image.expand(len(hom), -1, -1, -1), hom, padding_mode="border")
        with torch.no_grad(), autocast:
            logits = model(warped)["logits"]
        heat = logits_to_heatmap(logits)[:, None]
        inverse = invert_homographies(hom)
        back = warp_images(heat, inverse)
        seen = warp_images(torch.ones_like(heat), inverse)
        # bilinear weights below 1 mark the edge of the warped frame: count only full coverage
        seen = (seen > 0.999).float()
        total += (back * seen).sum(0, keepdim=True)
        count += seen.sum(0, keepdim=True)
    return (total / count.clamp(min=1))[0, 0]


def heatmap_to_points(heat: torch.Tensor, conf: dict):
    """Threshold + NMS + border removal + top-k of an ``(H, W)`` map -> ((N, 2) float32 xy px,
    (N,) float32 scores) numpy, best first: the extractor's decoding (keypoints.detect_keypoints)
    with the threshold lowered where ``min_points`` asks (:func:`adaptive_threshold`)."""
    suppressed = remove_border(nms(heat[None], int(conf["nms_radius"])), int(conf["border"]))[0]
    max_points = int(conf["max_points"]) or None  # 0: all
    points, scores = detect_keypoints(heat, adaptive_threshold(suppressed, conf), max_points, nms_heatmap=suppressed)
    return points.cpu().numpy().astype(np.float32), scores.cpu().numpy()


def adaptive_threshold(suppressed: torch.Tensor, conf: dict) -> float:
    """``detection_threshold``, or lower when fewer than ``min_points`` maxima of the suppressed
    ``(H, W)`` map pass it: a weak detector (or a bland image) then keeps its best maxima that
    score above ``min_points_floor``."""
    threshold = float(conf["detection_threshold"])
    min_points = int(conf["min_points"])
    if min_points > 0 and int((suppressed > threshold).sum()) < min_points:
        threshold = min(threshold, float(conf["min_points_floor"]))
        if int((suppressed > threshold).sum()) > min_points:
            threshold = float(torch.topk(suppressed.flatten(), min_points).values[-1]) - 1e-12
    return threshold


def sample_adaptation_homographies(conf: dict, index_seed: int, shape) -> torch.Tensor:
    rng = np.random.default_rng([int(conf["seed"]), int(index_seed), 3])
    params = HomographyParams.from_dict(conf["homography"])
    hom = [np.eye(3)] + [sample_homography(rng, shape, params) for _ in range(int(conf["num_homographies"]) - 1)]
    return torch.from_numpy(np.stack(hom))


class _AdaptationInputs(torch.utils.data.Dataset):
    """Reads an image and samples its homographies (in DataLoader workers, overlapping the GPU)."""

    def __init__(self, todo, conf):
        self.todo, self.conf = todo, conf

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, k: int):
        index, path = self.todo[k]
        gray = read_gray(path)
        h, w = gray.shape
        if h % 8 or w % 8:  # the network needs multiples of 8: crop the remainder (labels stay valid)
            gray = gray[:h - h % 8, :w - w % 8]
        image = torch.from_numpy(gray.astype(np.float32) / 255)[None, None]
        return str(path), image, sample_adaptation_homographies(self.conf, index, gray.shape)


def visiting_order(indexed_paths: list, conf: dict) -> list:
    """The ``(index, path)`` pairs in the order ``conf["order"]`` asks for.

    "shuffled" is a permutation seeded by ``conf["seed"]`` alone (not by what is already labelled),
    so a resumed run continues the same sequence; each image's warps still come from its index.
    """
    if conf["order"] == "sorted":
        return list(indexed_paths)
    if conf["order"] != "shuffled":
        raise ValueError(f"order must be 'sorted' or 'shuffled', got {conf['order']!r}")
    permutation = np.random.default_rng([int(conf["seed"]), 4]).permutation(len(indexed_paths))
    return [indexed_paths[k] for k in permutation]


def adapt_folder(model, image_dir, out_dir, conf: dict, progress: bool = True, rank: int = 0,
                 world_size: int = 1) -> Dict[str, int]:
    """Label every image of ``image_dir`` lacking a label in ``out_dir``; returns counts.

    ``rank``/``world_size``: label only this rank's shard (``distributed.shard`` of the sorted
    listing); the counts then refer to that shard.
    """
    images = list_images(image_dir)
    if not images:
        raise FileNotFoundError(f"no images in {image_dir}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        dump_config(conf, out / "adapt_config.yaml")
    mine = distributed.shard(images, rank, world_size)
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    todo = [(i, p) for i, p in visiting_order(mine, conf) if not (out / f"{p.stem}.npy").is_file()]
    budget = None if conf["max_minutes"] is None else float(conf["max_minutes"]) * 60
    t0 = time.monotonic()
    done, points_total = 0, 0
    workers = int(conf["num_workers"])
    loader = torch.utils.data.DataLoader(_AdaptationInputs(todo, conf), batch_size=None, shuffle=False,
                                         num_workers=workers, prefetch_factor=4 if workers else None)
    iterator = loader
    if progress:
        desc = "superpoint-adapt" if world_size == 1 else f"superpoint-adapt rank {rank}/{world_size}"
        iterator = tqdm(loader, desc=desc, unit="img", initial=len(mine) - len(todo),
                        total=len(mine), dynamic_ncols=True, mininterval=2.0)
    for path, image, hom in iterator:
        path, image = Path(path), image.to(device)
        heat = aggregate_heatmap(model, image, hom, int(conf["batch_size"]), conf["amp"])
        points, _ = heatmap_to_points(heat, conf)
        tmp = out / f"{path.stem}.tmp.npy"
        np.save(tmp, points)
        tmp.replace(out / f"{path.stem}.npy")  # atomic: a killed run never leaves a partial label
        done += 1
        points_total += len(points)
        if budget is not None and time.monotonic() - t0 > budget:
            print(f"\n[superpoint-adapt] time budget reached after {done} images; rerun to continue")
            break
    remaining = sum(1 for _, p in mine if not (out / f"{p.stem}.npy").is_file())
    return {"labelled_now": done, "remaining": remaining, "images": len(mine),
            "mean_points": points_total / max(done, 1),
            "images_per_s": done / max(time.monotonic() - t0, 1e-9)}


def merge_summaries(per_rank: list) -> dict:
    """One summary for the whole group from each rank's ``adapt_folder`` counts."""
    done = sum(s["labelled_now"] for s in per_rank)
    merged = {"labelled_now": done, "remaining": sum(s["remaining"] for s in per_rank),
              "images": sum(s["images"] for s in per_rank),
              "mean_points": sum(s["mean_points"] * s["labelled_now"] for s in per_rank) / max(done, 1),
              "images_per_s": sum(s["images_per_s"] for s in per_rank)}
    if len(per_rank) > 1:
        merged.update(world_size=len(per_rank), images_per_s_per_rank=[s["images_per_s"] for s in per_rank])
    return merged


def main(argv=None) -> None:
    with one_line_errors("superpoint-adapt"):  # a bad weight file / state.pt / config: one line, exit 2
        _main(argv)


def _main(argv) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="detector checkpoint (MagicPoint or SuperPoint)")
    parser.add_argument("--images", required=True, help="folder of images to label")
    parser.add_argument("--out", required=True, help="folder for <stem>.npy labels")
    parser.add_argument("--config", help="YAML config (see config/train/adapt.yaml)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--max-minutes", type=float, default=None)
    args = parser.parse_args(argv)
    conf = load_config(default_conf, args.config, args.set)
    if args.max_minutes is not None:
        conf["max_minutes"] = args.max_minutes
    if distributed.launched_by_torchrun():
        # ranks work independently; the long timeout only covers waiting for the slowest shard
        group, device = distributed.setup(conf["device"], timeout_minutes=24 * 60)
    else:
        group, device = distributed.Group(), resolve_device(conf["device"])
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model, provenance = load_model(args.weights)
    model.to(device)
    mine = adapt_folder(model, args.images, args.out, conf, progress=group.is_main, rank=group.rank,
                        world_size=group.world_size)
    if group.world_size > 1:
        print(f"[superpoint-adapt] rank {group.rank}/{group.world_size}: {mine}")
    summary = merge_summaries(distributed.gather_objects(mine))
    if group.is_main:
        summary["weights"] = str(args.weights)
        (Path(args.out) / "adapt_summary.json").write_text(json.dumps(summary, indent=2))
        print(f"[superpoint-adapt] {summary}")
    distributed.shutdown()  # (an exception above ends the process and torchrun stops the others)


if __name__ == "__main__":
    main()
