"""MagicPoint's configuration defaults (``config/train/magicpoint.yaml`` overrides them), in a module
of their own because two tools read the same files: the trainer (``train_magicpoint``) and the
detector evaluation CLI (``detector_eval``, which the trainer runs after training)."""
from __future__ import annotations

from .engine import default_train_conf
from .homographies import HomographyParams
from .photometric import PhotometricParams
from .synthetic_shapes import default_conf as synth_conf

default_conf = {
    **default_train_conf,
    "batch_size": 64,
    "max_steps": 20000,
    "synthetic": dict(synth_conf),
    "homography": HomographyParams().to_dict(),
    "photometric": PhotometricParams().to_dict(),
    "augment": True,
    "eval": {"num_images": 500, "offset": 10 ** 8, "detection_threshold": 0.015, "nms_radius": 4,
             "distance": 3.0, "top_k": 0},
}
