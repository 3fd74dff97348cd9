"""The feature extractor: images in, keypoints + scores + descriptors out.

>>> extractor = FeatureExtractor(max_keypoints=500)          # the shipped default model
>>> features = extractor(cv2.imread("frame.png"))             # BGR, gray, uint8/uint16/float
>>> features.keypoints  # (N, 2) float32, xy pixels of the input image (see keypoints.py)
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .backends import make_runner, single_threaded_torch
from .image import ImageError, to_grayscale_float
from .keypoints import decode_keypoints, logits_to_heatmap, sample_descriptors
from .model import CELL, SuperPointNet
from .weights import default_weights_path, load_model

#: Every extractor option and its default, in one place. Values are merged once in __init__.
default_conf = {
    "weights": None,            # path to a weight file; None = the shipped default model
    "device": "auto",           # "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:N"
    "fp16": True,               # half-precision network on CUDA when precision="auto"
    "num_threads": None,        # CPU threads for torch; None = torch's default
    # --- speed options (docs/benchmarks.md has the measurements behind the defaults) ---
    "backend": "auto",          # "auto" (CPU fp32: onnxruntime if installed; else torch), "torch", "onnxruntime"
    "precision": "auto",        # "auto" (CUDA: fp16 if fp16 else fp32; CPU: int8 with VNNI, else fp32), "fp32",
                                # "fp16" (CUDA), "bf16", "int8" (CPU: ONNX Runtime static quantisation, ~2.5x fp32)
    "channels_last": True,      # NHWC activations: oneDNN/cuDNN's fast convolution layout
    "cuda_graphs": True,        # replay the network as a CUDA graph per input shape (CUDA only)
    "compile": False,           # torch.compile the network (slow first call; falls back to eager)
    "nms_radius": 4,            # px; 0 disables NMS
    "detection_threshold": 0.005,
    "max_keypoints": 1000,      # top-k after NMS; -1 = unlimited
    "remove_borders": 4,        # px ignored at each image border
    "uniform_cell": 0,          # px grid cell for spatially uniform selection; 0 = off
    "max_per_cell": 4,          # keypoints kept per uniform cell
    "subpixel": False,          # sub-pixel keypoints (centroid of the 7x7 heatmap window)
    "channel_order": "bgr",     # colour order of 3/4-channel inputs
    "input_scale": 1.0,         # (0, 1]: run the network on the image scaled by this (e.g. 0.5: 480x640
                                # -> 240x320, ~4x faster); keypoints come back in input pixels
}


@dataclass
class Features:
    """Features of one image. ``keypoints``: ``(N, 2)`` float32 xy pixels; ``scores``: ``(N,)``
    float32 detector probability; ``descriptors``: ``(N, D)`` float32, unit L2 norm;
    ``image_size``: ``(height, width)`` of the input image."""

    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    image_size: tuple = field(default=(0, 0))

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; an explicit CUDA request without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available (use device='auto' or 'cpu')")
    return device


def pad_to_cell(batch: torch.Tensor) -> torch.Tensor:
    """Pad ``(B, 1, H, W)`` at the bottom/right to multiples of 8 by edge replication."""
    h, w = batch.shape[-2:]
    pad_h, pad_w = (-h) % CELL, (-w) % CELL
    if pad_h or pad_w:
        batch = F.pad(batch, (0, pad_w, 0, pad_h), mode="replicate")
    return batch


class FeatureExtractor:
    """SuperPoint keypoints and descriptors for single images or batches of equal size."""

    def __init__(self, conf: Optional[dict] = None, model: Optional[SuperPointNet] = None, **kwargs):
        merged = {**default_conf, **(conf or {}), **kwargs}
        unknown = set(merged) - set(default_conf)
        if unknown:
            raise ValueError(f"unknown extractor options: {sorted(unknown)}")
        self.conf = merged
        if not 0.0 < float(merged["input_scale"]) <= 1.0:
            raise ValueError(f"input_scale must be in (0, 1], got {merged['input_scale']!r}")
        if merged["num_threads"]:
            torch.set_num_threads(int(merged["num_threads"]))
        self.device = resolve_device(merged["device"])
        if model is None:
            path = merged["weights"] or default_weights_path()
            model, self.provenance = load_model(os.fspath(path))
            self.weights_path = str(path)
        else:
            self.provenance, self.weights_path = {"format": "in-memory"}, None
        self.runner = make_runner(model, self.device, merged)
        self.dtype = self.runner.dtype
        self.model = getattr(self.runner, "model", model)

    @property
    def descriptor_dim(self) -> int:
        return self.model.config.descriptor_dim

    def to_tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Equal-size numpy images -> ``(B, 1, H, W)`` float tensor on the extractor's device."""
        grays = [to_grayscale_float(img, self.conf["channel_order"]) for img in images]
        shapes = {g.shape for g in grays}
        if len(shapes) != 1:
            raise ImageError(f"a batch needs images of one size, got {sorted(shapes)}")
        stacked = grays[0][None, None] if len(grays) == 1 else np.stack(grays)[:, None]  # no copy for one
        tensor = torch.from_numpy(stacked)
        if self.device.type == "cuda":  # page-locked staging makes the upload asynchronous
            tensor = tensor.pin_memory()
        return tensor.to(self.device, non_blocking=True)

    @property
    def backend_name(self) -> str:
        """What actually runs the network, e.g. ``torch+float32+channels_last``."""
        return self.runner.name

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> dict:
        """The network on ``(B, 1, H, W)`` float in [0, 1] (any size; padded to multiples of 8)."""
        return self.runner(pad_to_cell(batch.to(self.device)))

    @torch.inference_mode()
    def decode(self, outputs: dict, image_size: tuple) -> List[dict]:
        """Network outputs -> per image keypoints, scores and descriptors (see extract_tensor)."""
        with single_threaded_torch(self.device):
            return self._decode(outputs, image_size)

    def _decode(self, outputs: dict, image_size: tuple) -> List[dict]:
        c = self.conf
        h, w = image_size
        max_kp = None if c["max_keypoints"] is None or c["max_keypoints"] < 0 else int(c["max_keypoints"])
        results = []
        for i in range(outputs["logits"].shape[0]):
            # one image at a time: the softmax kernel's last bits depend on the batch size, and an
            # image must give the same keypoints alone as in a stereo batch
            heatmap = logits_to_heatmap(outputs["logits"][i:i + 1])[0, :h, :w]  # crop padding: unpadded coords
            keypoints, scores = decode_keypoints(
                heatmap, c["nms_radius"], c["detection_threshold"], c["remove_borders"], max_kp,
                uniform_cell=c["uniform_cell"] or None, max_per_cell=c["max_per_cell"], subpixel=c["subpixel"])
            descriptors = sample_descriptors(outputs["descriptors"][i], keypoints)
            results.append({"keypoints": keypoints, "scores": scores, "descriptors": descriptors})
        return results

    @torch.inference_mode()
    def extract_tensor(self, batch: torch.Tensor) -> List[dict]:
        """``(B, 1, H, W)`` float in [0, 1] -> per image ``{"keypoints", "scores", "descriptors"}``
        torch tensors on the device (keypoints xy pixels of the unpadded image)."""
        h, w = batch.shape[-2:]
        if h < 1 or w < 1:
            raise ImageError(f"empty image of size {h}x{w}")
        scale = float(self.conf["input_scale"])
        if scale == 1.0:
            return self.decode(self.forward(batch), (h, w))
        hs, ws = max(1, round(h * scale)), max(1, round(w * scale))
        small = F.interpolate(batch.to(self.device, torch.float32), size=(hs, ws), mode="bilinear",
                              antialias=True, align_corners=False)
        results = self.decode(self.forward(small), (hs, ws))
        # pixel-centre convention: a point at x in the small image covers input x' = (x + 0.5) * w / ws - 0.5
        stretch = torch.tensor([w / ws, h / hs], device=self.device)
        for r in results:
            r["keypoints"] = (r["keypoints"] + 0.5) * stretch - 0.5
        return results

    def extract_batch(self, images: Sequence[np.ndarray]) -> List[Features]:
        """Features for equal-size images in one forward pass (e.g. a stereo pair)."""
        if len(images) == 0:
            return []
        batch = self.to_tensor(images)
        size = tuple(batch.shape[-2:])
        return [Features(r["keypoints"].cpu().numpy(), r["scores"].cpu().numpy(),
                         r["descriptors"].cpu().numpy(), size) for r in self.extract_tensor(batch)]

    def __call__(self, image: Union[np.ndarray, Sequence[np.ndarray]]):
        """One image -> Features; a list of equal-size images -> list of Features."""
        if isinstance(image, np.ndarray):
            return self.extract_batch([image])[0]
        return self.extract_batch(list(image))
