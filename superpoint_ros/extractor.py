"""The feature extractor: images in, keypoints + scores + descriptors out.

>>> extractor = FeatureExtractor()          # the shipped model and node settings (superpoint_ros.config)
>>> features = extractor(cv2.imread("frame.png"))             # BGR, gray, uint8/uint16/float
>>> features.keypoints  # (N, 2) float32, xy pixels of the input image (see keypoints.py)
>>> fewer = extractor(image, detector=DetectorConf(max_keypoints=200))  # per call: extractors are shared

The detector settings (:class:`~superpoint_ros.config.DetectorConf`) and the image settings
(:class:`~superpoint_ros.config.ImageConf`) given at construction are only the defaults of each
call; a caller sharing the extractor (the Frontend) passes its own per call, so nothing is ever
written into a shared extractor.

Images whose longest side exceeds ``max_size`` px run through the network resized (area filter,
in the input's dtype before any float copy: docs/reliability.md has the memory this saves);
keypoints still come back in input pixels, ``Features.resized_to`` says so, and the first frame
of each oversized input size is logged (``logging``, WARNING).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, List, Mapping, Optional, Protocol, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .backends import NetworkRunner, make_runner
from .image import ImageError, check_bit_depth, network_gray
from .keypoints import decode_keypoints, logits_to_heatmap, sample_descriptors
from .config import DetectorConf, ExtractorConf, ImageConf
from .model import CELL, SuperPointNet
from .weights import default_weights_path, load_model

log = logging.getLogger(__name__)

#: Every extractor option and its default (read-only): the flat view of
#: :class:`superpoint_ros.config.ExtractorConf`, where the defaults and their reasons live.
default_conf: Mapping[str, Any] = MappingProxyType(ExtractorConf().options())


@dataclass
class Features:
    """Features of one image. ``keypoints``: ``(N, 2)`` float32 xy pixels; ``scores``: ``(N,)``
    float32 detector probability; ``descriptors``: ``(N, D)`` float32, unit L2 norm;
    ``image_size``: ``(height, width)`` of the input image (the keypoints' frame)."""

    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    image_size: tuple = field(default=(0, 0))
    #: ``(height, width)`` the image was resized to for the network (``max_size``), or ``None``
    resized_to: Optional[tuple] = None

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


@dataclass
class NetworkInput:
    """Equal-size images prepared for the network. ``grays``: one ``(h, w)`` float32 in [0, 1] per
    image; ``input_size``: ``(H, W)`` of the images given; ``scale``: ``(sx, sy)`` input px per
    network px when they were resized to ``max_size``, else ``None``."""

    grays: List[np.ndarray]
    input_size: tuple
    scale: Optional[tuple] = None

    @property
    def size(self) -> tuple:
        """``(h, w)`` the network runs on (before ``input_scale``)."""
        return tuple(self.grays[0].shape[:2])


def prepare_network_input(images: Sequence[np.ndarray], channel_order: str = "bgr", bit_depth: int = 0,
                          max_size: int = 0) -> NetworkInput:
    """Equal-size numpy images -> :class:`NetworkInput`: grayscale float in [0, 1], resized
    (area filter, in the input's dtype) when the longest side exceeds ``max_size`` (0 = never),
    16-bit data scaled per ``bit_depth`` (:func:`superpoint_ros.image.network_gray`)."""
    shapes = {getattr(img, "shape", (0, 0))[:2] for img in images}
    if len(shapes) != 1:
        raise ImageError(f"a batch needs images of one size, got {sorted(shapes)}")
    prepared = [network_gray(img, channel_order, int(bit_depth), int(max_size)) for img in images]
    return NetworkInput([g for g, _ in prepared], tuple(images[0].shape[:2]), prepared[0][1])


def rescale_pixels(xy: np.ndarray, scale: Optional[tuple]) -> np.ndarray:
    """``(N, 2)`` xy pixels of a resized image -> pixels of the image it was resized from, given
    ``scale`` = ``(sx, sy)`` original px per resized px (``None``: unchanged; the inverse mapping
    is ``(1 / sx, 1 / sy)``). Pixel centres at integers: resized x covers ``(x + 0.5) * sx - 0.5``."""
    if scale is None:
        return xy
    return ((np.asarray(xy, np.float32) + 0.5) * np.asarray(scale, np.float32) - 0.5).astype(np.float32)


def to_input_pixels(keypoints: np.ndarray, prepared: NetworkInput) -> np.ndarray:
    """``(N, 2)`` xy keypoints in network pixels -> the given images' pixels."""
    return rescale_pixels(keypoints, prepared.scale)


def resize_note(input_size: tuple, resized_to: tuple, max_size: int) -> str:
    """One line saying an image was resized: sizes as width x height px."""
    (h, w), (rh, rw) = input_size, resized_to
    return (f"images of {w}x{h} px are larger than max_size={max_size} px: resized to {rw}x{rh} px for the "
            f"network (keypoints still in input pixels)")


class FeatureSource(Protocol):
    """What :class:`superpoint_ros.frontend.Frontend` needs of a feature source: SuperPoint
    (:class:`FeatureExtractor`) or a classical detector (``evaluation.baselines.OpenCVFrontendExtractor``).

    Settings come with each call, so one source can serve several front-ends.
    """

    #: where descriptors are matched (``torch.device("cpu")`` for CPU-only sources)
    device: torch.device
    #: what produced the features, for reports (a weight file, ``"opencv-orb"``, ...); None = in-memory
    weights_path: Optional[str]

    def prepare(self, images: Sequence[np.ndarray], image: Optional[ImageConf] = None) -> NetworkInput:
        """Equal-size images -> grayscale float, resized and scaled per ``image``."""

    def extract_prepared(self, prepared: NetworkInput, detector: Optional[DetectorConf] = None) -> List[Features]:
        """Features of :meth:`prepare`'s images, keypoints in the given images' pixels, at most
        ``detector.max_keypoints`` each, unit float32 descriptors."""


class FeatureExtractor:
    """SuperPoint keypoints and descriptors for single images or batches of equal size.

    ``conf``: an :class:`~superpoint_ros.config.ExtractorConf`, or flat options
    (``{"max_keypoints": 500}``, names as in :data:`default_conf`) over the shipped values;
    ``options``: more flat options over those (``FeatureExtractor(device="cpu")``). With no
    arguments it is the node's extractor. ``model``: an in-memory network instead of ``weights``.
    """

    def __init__(self, conf: Union[ExtractorConf, Mapping[str, Any], None] = None,
                 model: Optional[SuperPointNet] = None, **options):
        base = conf if isinstance(conf, ExtractorConf) else ExtractorConf.from_options(conf or {})
        #: the settings: network options, and the detector / image settings of calls that pass none
        self.settings = ExtractorConf.from_options(options, base)
        merged = self.settings.options()
        if not 0.0 < float(merged["input_scale"]) <= 1.0:
            raise ValueError(f"input_scale must be in (0, 1], got {merged['input_scale']!r}")
        if merged["max_size"] is not None and int(merged["max_size"]) < 0:
            raise ValueError(f"max_size must be >= 0 px (None = no limit), got {merged['max_size']!r}")
        check_bit_depth(int(merged["bit_depth"]))
        self._logged_resize: Optional[tuple] = None  # the input size whose resize was last logged
        self.device = resolve_device(merged["device"])
        if model is None:
            path = merged["weights"] or default_weights_path()
            model, self.provenance = load_model(os.fspath(path))
            self.weights_path = str(path)
        else:
            self.provenance, self.weights_path = {"format": "in-memory"}, None
        self.runner: NetworkRunner = make_runner(model, self.device, merged)
        self.dtype = self.runner.dtype
        self.model = self.runner.model  # what runs (a copy, or the ONNX Runtime module): hooks see each call

    @property
    def conf(self) -> Mapping[str, Any]:
        """The settings as a read-only flat dict (as :data:`default_conf`), e.g. for reports."""
        return MappingProxyType(self.settings.options())

    @property
    def descriptor_dim(self) -> int:
        return self.model.config.descriptor_dim

    def prepare(self, images: Sequence[np.ndarray], image: Optional[ImageConf] = None) -> NetworkInput:
        """Equal-size numpy images -> grayscale float, resized when larger than ``image.max_size``
        (logged once per input size), 16-bit data scaled per ``image.bit_depth`` (``image``:
        default the extractor's own)."""
        c = image or self.settings.image
        result = prepare_network_input(images, self.settings.model.channel_order, c.bit_depth, c.max_size or 0)
        if result.scale is not None and result.input_size != self._logged_resize:
            self._logged_resize = result.input_size
            log.warning(resize_note(result.input_size, result.size, int(c.max_size)))
        return result

    def to_tensor(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Equal-size numpy images -> ``(B, 1, h, w)`` float tensor on the extractor's device
        (``h, w``: the input size, or smaller per ``max_size``)."""
        return self._tensor(self.prepare(images).grays)

    def _tensor(self, grays: List[np.ndarray]) -> torch.Tensor:
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
    def decode(self, outputs: dict, image_size: tuple, detector: Optional[DetectorConf] = None) -> List[dict]:
        """Network outputs -> per image keypoints, scores and descriptors (see extract_tensor),
        decoded per ``detector`` (default: the extractor's own)."""
        return self._decode(outputs, image_size, detector or self.settings.detector)

    def _decode(self, outputs: dict, image_size: tuple, c: DetectorConf) -> List[dict]:
        h, w = image_size
        max_kp = None if c.max_keypoints is None or c.max_keypoints < 0 else int(c.max_keypoints)
        results = []
        for i in range(outputs["logits"].shape[0]):
            # one image at a time: the softmax kernel's last bits depend on the batch size, and an
            # image must give the same keypoints alone as in a stereo batch
            heatmap = logits_to_heatmap(outputs["logits"][i:i + 1])[0, :h, :w]  # crop padding: unpadded coords
            keypoints, scores = decode_keypoints(
                heatmap, c.nms_radius, c.detection_threshold, c.remove_borders, max_kp,
                uniform_cell=c.uniform_cell or None, max_per_cell=c.max_per_cell, subpixel=c.subpixel)
            descriptors = sample_descriptors(outputs["descriptors"][i], keypoints)
            results.append({"keypoints": keypoints, "scores": scores, "descriptors": descriptors})
        return results

    @torch.inference_mode()
    def extract_tensor(self, batch: torch.Tensor, detector: Optional[DetectorConf] = None) -> List[dict]:
        """``(B, 1, H, W)`` float in [0, 1] -> per image ``{"keypoints", "scores", "descriptors"}``
        torch tensors on the device (keypoints xy pixels of the unpadded image), per ``detector``."""
        h, w = batch.shape[-2:]
        if h < 1 or w < 1:
            raise ImageError(f"empty image of size {h}x{w}")
        scale = float(self.settings.model.input_scale)
        if scale == 1.0:
            return self.decode(self.forward(batch), (h, w), detector)
        hs, ws = max(1, round(h * scale)), max(1, round(w * scale))
        small = F.interpolate(batch.to(self.device, torch.float32), size=(hs, ws), mode="bilinear",
                              antialias=True, align_corners=False)
        results = self.decode(self.forward(small), (hs, ws), detector)
        # pixel-centre convention: a point at x in the small image covers input x' = (x + 0.5) * w / ws - 0.5
        stretch = torch.tensor([w / ws, h / hs], device=self.device)
        for r in results:
            r["keypoints"] = (r["keypoints"] + 0.5) * stretch - 0.5
        return results

    def extract_prepared(self, prepared: NetworkInput, detector: Optional[DetectorConf] = None) -> List[Features]:
        """Features of :meth:`prepare`'s images in one forward pass, keypoints in input pixels,
        decoded per ``detector`` (default: the extractor's own)."""
        results = self.extract_tensor(self._tensor(prepared.grays), detector)
        resized_to = prepared.size if prepared.scale is not None else None
        features = []
        for r in results:
            keypoints = to_input_pixels(r["keypoints"].cpu().numpy(), prepared)
            features.append(Features(keypoints, r["scores"].cpu().numpy(), r["descriptors"].cpu().numpy(),
                                     prepared.input_size, resized_to))
        return features

    def extract_batch(self, images: Sequence[np.ndarray], detector: Optional[DetectorConf] = None,
                      image: Optional[ImageConf] = None) -> List[Features]:
        """Features for equal-size images in one forward pass (e.g. a stereo pair)."""
        if len(images) == 0:
            return []
        return self.extract_prepared(self.prepare(images, image), detector)

    def __call__(self, image: Union[np.ndarray, Sequence[np.ndarray]], detector: Optional[DetectorConf] = None):
        """One image -> Features; a list of equal-size images -> list of Features."""
        if isinstance(image, np.ndarray):
            return self.extract_batch([image], detector)[0]
        return self.extract_batch(list(image), detector)
