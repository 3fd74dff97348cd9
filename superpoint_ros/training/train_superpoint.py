"""Joint detector + descriptor training on real images (``superpoint-train``).

Each step: real images with their homographic-adaptation labels; two random homographies per
image give a pair of warped views with known correspondence ``H01 = H1 @ inv(H0)``; both views are
photometrically augmented. Loss = detector cross-entropy on both views + ``descriptor_weight`` x
descriptor hinge loss over cell correspondences (dense, or the sparse variant to save memory).

CLI: ``superpoint-train --config config/train/superpoint.yaml --images DIR --labels DIR --out RUN``
(under ``torchrun ... -m superpoint_ros.training.train_superpoint`` with the same arguments on
several GPUs/nodes; ``batch_size`` is then per process, see ``distributed``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from . import distributed
from .checkpoint import one_line_errors
from .config import load_config
from .data import LabelledImages, WithHomographies, licence_summary, list_images
from .engine import default_train_conf, train
from .homographies import HomographyParams, invert_homographies, warp_images, warp_keypoint_maps
from .losses import descriptor_loss, detector_loss, sparse_descriptor_loss
from .photometric import PhotometricParams, photometric_augment
from .synthetic_shapes import worker_init

default_conf = {
    **default_train_conf,
    "batch_size": 16,
    "max_steps": 20000,
    "max_points": 600,
    "homography": HomographyParams().to_dict(),
    "photometric": PhotometricParams().to_dict(),
    "descriptor_weight": 1.0,
    "positive_margin": 1.0,
    "negative_margin": 0.2,
    "sparse_descriptor_samples": 0,   # > 0: the sparse loss with this many cells of view 0 per image
}


def superpoint_step(forward, batch, generator, conf):
    images, points, valid, hom = batch["image"], batch["points"], batch["valid"], batch["homography"]
    shape = tuple(images.shape[-2:])
    b = images.shape[0]
    h0, h1 = hom[:, 0], hom[:, 1]
    photometric = PhotometricParams.from_dict(conf["photometric"])
    view0 = photometric_augment(warp_images(images, h0, padding_mode="border"), generator, photometric)
    view1 = photometric_augment(warp_images(images, h1, padding_mode="border"), generator, photometric)
    map0 = warp_keypoint_maps(points, valid, h0, shape)
    map1 = warp_keypoint_maps(points, valid, h1, shape)
    out = forward(torch.cat([view0, view1]))
    logits0, logits1 = out["logits"][:b], out["logits"][b:]
    desc0, desc1 = out["descriptors"][:b], out["descriptors"][b:]
    det = detector_loss(logits0, map0, generator=generator) + detector_loss(logits1, map1, generator=generator)
    h01 = h1 @ invert_homographies(h0)
    if int(conf["sparse_descriptor_samples"]) > 0:
        desc = sparse_descriptor_loss(desc0, desc1, h01, int(conf["sparse_descriptor_samples"]), generator,
                                      conf["positive_margin"], conf["negative_margin"])
    else:
        desc = descriptor_loss(desc0, desc1, h01, positive_margin=conf["positive_margin"],
                               negative_margin=conf["negative_margin"])
    return {"loss": det + float(conf["descriptor_weight"]) * desc, "detector": det.detach(),
            "descriptor": desc.detach()}


def source_provenance(image_dir: Path, used_crops=None) -> dict:
    """What the crops in ``image_dir`` were cut from, for the checkpoint: ``training_sources``
    (photo paths) and, when ``superpoint_ros.training.data`` wrote ``SOURCES.json``,
    ``training_licences`` (photos per repo, commit and licence). ``used_crops``: the crop paths
    that have labels (a partly labelled folder): only their photos are named."""
    manifest, listing = image_dir / "SOURCES.json", image_dir / "SOURCES.txt"
    if manifest.is_file():
        photos = json.loads(manifest.read_text())["photos"]
        if used_crops is not None:  # crops are named <photo stem>_<k>.png
            used = {Path(c).stem.rsplit("_", 1)[0] for c in used_crops}
            photos = [r for r in photos if Path(r["path"]).name.split(".")[0] in used]
        return {"training_sources": [r["path"] for r in photos], "training_licences": licence_summary(photos)}
    if listing.is_file():
        return {"training_sources": listing.read_text().splitlines()}
    return {"training_sources": [str(p) for p in list_images(image_dir)[:50]]}


def build_dataset(conf, image_dir, label_dir):
    images = LabelledImages(image_dir, label_dir, max_points=int(conf["max_points"]), seed=int(conf["seed"]))
    return WithHomographies(images, HomographyParams.from_dict(conf["homography"]), int(conf["seed"]), 2,
                            images.shape)


def main(argv=None) -> None:
    with one_line_errors("superpoint-train"):  # a bad weight file / state.pt / config: one line, exit 2
        _main(argv)


def _main(argv) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML config (see config/train/superpoint.yaml)")
    parser.add_argument("--images", required=True, help="folder of training images (all the same size)")
    parser.add_argument("--labels", required=True, help="folder of superpoint-adapt labels")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, logs, model.pt)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--max-minutes", type=float, default=None)
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args(argv)
    conf = load_config(default_conf, args.config, args.set)
    if args.max_minutes is not None:
        conf["max_minutes"] = args.max_minutes
    dataset = build_dataset(conf, args.images, args.labels)
    provenance = {
        "stage": "superpoint",
        "training_data": f"{len(dataset.dataset.items)} images in {args.images} "
                         f"(labels: homographic adaptation in {args.labels})",
        **source_provenance(Path(args.images), [image for image, _ in dataset.dataset.items]),
    }
    train(conf, dataset, superpoint_step, args.out, tool="superpoint-train", provenance=provenance,
          resume=not args.no_resume, worker_init_fn=worker_init)
    distributed.shutdown()


if __name__ == "__main__":
    main()
