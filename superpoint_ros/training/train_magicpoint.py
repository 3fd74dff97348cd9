"""Detector-only training on synthetic shapes (``superpoint-train-magicpoint``).

Each step: a batch of synthetic scenes (generated in DataLoader workers, with one random
homography each), warped on the device, photometrically augmented, and the 65-way cross-entropy of
the detector head against the warped ground-truth points. After training, the detector is
evaluated on held-out scenes beside OpenCV FAST, Harris and Shi-Tomasi (``detector_eval``).

CLI: ``superpoint-train-magicpoint --config config/train/magicpoint.yaml --out runs/magicpoint``
(``--set key=value`` overrides, ``--max-minutes`` budget, ``--no-resume``). The same arguments run
on several GPUs/nodes with ``torchrun ... -m superpoint_ros.training.train_magicpoint`` (see
``distributed``); ``batch_size`` is then per process.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from . import distributed
from .checkpoint import one_line_errors
from .config import load_config
from .data import WithHomographies
from .detector_eval import evaluate_on_synthetic, format_table
from .engine import train
from .homographies import HomographyParams, warp_images, warp_keypoint_maps
from .losses import detector_loss
from .magicpoint_config import default_conf
from .photometric import PhotometricParams, photometric_augment
from .synthetic_shapes import SyntheticShapes, worker_init


def magicpoint_step(forward, batch, generator, conf):
    images, points, valid = batch["image"], batch["points"], batch["valid"]
    shape = tuple(images.shape[-2:])
    if conf["augment"]:
        homography = batch["homography"][:, 0]
        images = warp_images(images, homography, padding_mode="border")
        keypoint_map = warp_keypoint_maps(points, valid, homography, shape)
        images = photometric_augment(images, generator, PhotometricParams.from_dict(conf["photometric"]))
    else:
        keypoint_map = warp_keypoint_maps(points, valid, torch.eye(3, device=images.device).expand(len(images), 3, 3),
                                          shape)
    logits = forward(images)["logits"]
    return {"loss": detector_loss(logits, keypoint_map, generator=generator)}


def build_dataset(conf):
    shapes = SyntheticShapes({**conf["synthetic"], "seed": conf["seed"]})
    shape = (conf["synthetic"]["height"], conf["synthetic"]["width"])
    return WithHomographies(shapes, HomographyParams.from_dict(conf["homography"]), conf["seed"], 1, shape)


def main(argv=None) -> None:
    with one_line_errors("superpoint-train-magicpoint"):  # a bad weight file / state.pt / config: one line, exit 2
        _main(argv)


def _main(argv) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML config (see config/train/magicpoint.yaml)")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, logs, model.pt)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--max-minutes", type=float, default=None, help="time budget for this run")
    parser.add_argument("--no-resume", action="store_true", help="start over even if OUT has a state")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out evaluation")
    args = parser.parse_args(argv)
    conf = load_config(default_conf, args.config, args.set)
    if args.max_minutes is not None:
        conf["max_minutes"] = args.max_minutes
    provenance = {"training_data": f"synthetic shapes (seed {conf['seed']}, "
                                   f"{conf['synthetic']['height']}x{conf['synthetic']['width']})",
                  "stage": "magicpoint"}
    summary = train(conf, build_dataset(conf), magicpoint_step, args.out, tool="superpoint-train-magicpoint",
                    provenance=provenance, resume=not args.no_resume, worker_init_fn=worker_init,
                    outputs=("logits",))  # the descriptor head is not trained here
    if not args.no_eval and conf["eval"]["num_images"] > 0 and distributed.current().is_main:
        results = evaluate_on_synthetic(summary["model_obj"], conf)
        print(format_table(results))
        Path(args.out, "eval.json").write_text(json.dumps(results, indent=2))
    distributed.shutdown()  # under torchrun: the other ranks wait for rank 0's evaluation


if __name__ == "__main__":
    main()
