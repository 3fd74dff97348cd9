"""Local-feature methods compared by the benchmark: SuperPoint (any weights), OpenCV ORB and SIFT.

Every method takes the same uint8 grayscale image and returns keypoints sorted by decreasing
score (so the benchmark can take a detector top-k by slicing) and mutual-nearest-neighbour
matches with the metric that suits its descriptor (L2 for float descriptors, Hamming for ORB).
No ratio test: the same plain protocol for every method, as in the SuperPoint paper.

For the bag evaluators (``superpoint-eval-bag``/``-slam --baselines``): :class:`OpenCVFrontendExtractor`
(ORB/SIFT as a feature source of the node's Frontend) and :func:`baseline_frontend`, which builds
each baseline's front-end.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import cv2
import numpy as np
import torch

from ..config import DetectorConf, ImageConf
from ..extractor import FeatureExtractor, Features, NetworkInput, prepare_network_input, to_input_pixels
from ..frontend import Frontend
from ..matching import match_descriptors
from ..params import validate
from .klt import KLTFrontend


@dataclass
class MethodFeatures:
    """``keypoints``: ``(N, 2)`` float32 xy px (pixel-centre convention), sorted by decreasing
    ``scores`` ``(N,)``; ``descriptors``: ``(N, D)`` float32 or uint8 (binary)."""

    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray


class SuperPointMethod:
    """The package's FeatureExtractor + mutual-NN matching."""

    def __init__(self, weights: Optional[str], max_keypoints: int, name: str = "superpoint", **conf):
        self.name = name
        self.extractor = FeatureExtractor(weights=weights, max_keypoints=max_keypoints, **conf)
        self.weights_path = self.extractor.weights_path
        self.provenance = self.extractor.provenance

    def extract(self, gray: np.ndarray) -> MethodFeatures:
        f = self.extractor(gray)
        return MethodFeatures(f.keypoints, f.scores, f.descriptors)

    def match(self, f0: MethodFeatures, f1: MethodFeatures) -> np.ndarray:
        return match_descriptors(f0.descriptors, f1.descriptors).indices

    def describe(self) -> dict:
        return {"weights": self.weights_path, "provenance": {k: str(v) for k, v in self.provenance.items()},
                "conf": {k: v for k, v in self.extractor.conf.items() if k != "weights"}}


class OpenCVMethod:
    """ORB or SIFT from OpenCV, keypoints sorted by response, cross-checked brute-force matching."""

    def __init__(self, name: str, max_keypoints: int):
        self.name = name
        if name == "orb":
            self.detector = cv2.ORB_create(nfeatures=max_keypoints)
            self.norm = cv2.NORM_HAMMING
        elif name == "sift":
            self.detector = cv2.SIFT_create(nfeatures=max_keypoints)
            self.norm = cv2.NORM_L2
        else:
            raise ValueError(f"unknown OpenCV method {name!r} (expected 'orb' or 'sift')")
        self.max_keypoints = max_keypoints

    def extract(self, gray: np.ndarray) -> MethodFeatures:
        keypoints, descriptors = self.detector.detectAndCompute(gray, None)
        if descriptors is None or len(keypoints) == 0:
            dim, dtype = (32, np.uint8) if self.norm == cv2.NORM_HAMMING else (128, np.float32)
            return MethodFeatures(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros((0, dim), dtype))
        xy = np.array([k.pt for k in keypoints], np.float32)
        response = np.array([k.response for k in keypoints], np.float32)
        order = np.argsort(-response, kind="stable")[: self.max_keypoints]
        return MethodFeatures(xy[order], response[order], descriptors[order])

    def match(self, f0: MethodFeatures, f1: MethodFeatures) -> np.ndarray:
        if len(f0.descriptors) == 0 or len(f1.descriptors) == 0:
            return np.zeros((0, 2), np.int64)
        matcher = cv2.BFMatcher(self.norm, crossCheck=True)
        found = matcher.match(f0.descriptors, f1.descriptors)
        return np.array([[m.queryIdx, m.trainIdx] for m in found], np.int64).reshape(-1, 2)

    def describe(self) -> dict:
        return {"opencv": cv2.__version__, "max_keypoints": self.max_keypoints}


def build_method(spec: str, max_keypoints: int, extractor_conf: Optional[dict] = None):
    """``orb`` | ``sift`` | ``superpoint`` (default model) | ``NAME=WEIGHTS_PATH`` (SuperPoint)."""
    if spec in ("orb", "sift"):
        return OpenCVMethod(spec, max_keypoints)
    if spec == "superpoint":
        return SuperPointMethod(None, max_keypoints, **(extractor_conf or {}))
    if "=" in spec:
        name, path = spec.split("=", 1)
        return SuperPointMethod(path, max_keypoints, name=name, **(extractor_conf or {}))
    raise ValueError(f"unknown method {spec!r}: use orb, sift, superpoint or NAME=WEIGHTS_PATH")


def orb_to_unit_float(descriptors: np.ndarray) -> np.ndarray:
    """ORB ``(N, 32)`` uint8 -> ``(N, 256)`` float32 unit vectors with entries +-1/16.

    Why: ``match_descriptors`` (mutual NN, L2 on unit vectors) then matches ORB exactly like
    Hamming: two such vectors differ by 2/16 on each differing bit, so the squared L2 distance is
    ``hamming * 4/256 = hamming / 64``, a monotonic function of the Hamming distance.
    """
    descriptors = np.asarray(descriptors)
    if descriptors.dtype != np.uint8 or descriptors.ndim != 2 or descriptors.shape[1] != 32:
        raise ValueError(f"expected ORB descriptors (N, 32) uint8, got {descriptors.shape} {descriptors.dtype}")
    bits = np.unpackbits(descriptors, axis=1).astype(np.float32)
    return (bits * 2.0 - 1.0) / 16.0


def sift_to_unit_float(descriptors: np.ndarray) -> np.ndarray:
    """SIFT ``(N, 128)`` float -> L2-normalised float32 (plain SIFT, not RootSIFT)."""
    descriptors = np.asarray(descriptors, np.float32)
    norms = np.linalg.norm(descriptors, axis=1, keepdims=True)
    return descriptors / np.maximum(norms, 1e-12)


class OpenCVFrontendExtractor:
    """ORB or SIFT as a feature source (:class:`superpoint_ros.extractor.FeatureSource`) for
    ``Frontend(conf, extractor=...)``.

    Of the detector settings the Frontend passes, only ``max_keypoints`` applies (the best by
    response; ``max_keypoints`` given here is OpenCV's own ``nfeatures``, which shapes ORB's
    pyramid). Descriptors are unit float32 (see :func:`orb_to_unit_float`,
    :func:`sift_to_unit_float`) so the Frontend's mutual-NN L2 matching and its thresholds apply
    unchanged. Used by ``superpoint-eval-bag --baselines orb,sift``.
    """

    def __init__(self, name: str, max_keypoints: int = 1024):
        self.method = OpenCVMethod(name, max_keypoints)
        self.name = name
        self.device = torch.device("cpu")
        self.weights_path = f"opencv-{name}"
        self.provenance = {"opencv": cv2.__version__}
        self.descriptor_dim = 256 if name == "orb" else 128

    def prepare(self, images: list, image: Optional[ImageConf] = None) -> NetworkInput:
        """As :meth:`FeatureExtractor.prepare`: the same resize (``image.max_size``) and 16-bit
        scaling (``image.bit_depth``) the Frontend asks of SuperPoint, so every method sees the same
        pixels (``image`` None: no resize, automatic bit depth)."""
        image = image or ImageConf(max_size=None)
        return prepare_network_input(images, "bgr", image.bit_depth, image.max_size or 0)

    def extract_prepared(self, prepared: NetworkInput, detector: Optional[DetectorConf] = None) -> list:
        """Features of :meth:`prepare`'s images, keypoints in the given images' pixels, at most
        ``detector.max_keypoints`` per image (None: as many as OpenCV gives)."""
        limit = None if detector is None else detector.max_keypoints
        out = []
        for gray_float in prepared.grays:
            gray = np.clip(np.rint(gray_float * 255.0), 0, 255).astype(np.uint8)
            self.method.max_keypoints = int(limit) if limit is not None and limit >= 0 else 100000
            f = self.method.extract(gray)
            conv = orb_to_unit_float if self.name == "orb" else sift_to_unit_float
            desc = conv(f.descriptors) if len(f.descriptors) else np.zeros((0, self.descriptor_dim), np.float32)
            resized_to = prepared.size if prepared.scale is not None else None
            out.append(Features(to_input_pixels(f.keypoints, prepared), f.scores, desc, prepared.input_size,
                                resized_to))
        return out

    def extract_batch(self, images: list) -> list:
        return self.extract_prepared(self.prepare(images)) if images else []


# --- the bag evaluators' baselines: other feature sources through the same front-end code ------
#: ``--baselines`` choices: OpenCV features through the node's Frontend, the KLT tracker, or the
#: same network with the association rules of the published SuperPoint demo tracker.
BASELINES = ("orb", "sift", "klt", "sp-reference")
#: ``sp-reference``: the published SuperPoint demo's settings (magicleap/SuperPointPretrainedNetwork,
#: ``demo_superpoint.py`` defaults: NMS 4 px, confidence 0.015, border 4 px, every point above it;
#: its tracker links mutual nearest neighbours within descriptor distance 0.7), with nothing of this
#: front-end's own: no ratio test, RANSAC, flow refinement, uniform grid, sub-pixel or re-finding.
REFERENCE_SUPERPOINT = {
    "extractor.nms_radius": 4, "extractor.detection_threshold": 0.015, "extractor.remove_borders": 4,
    "extractor.max_keypoints": -1, "extractor.uniform_cell": 0, "extractor.subpixel": False,
    "matching.ratio_test": 0.0, "matching.max_distance": 0.7, "ransac.enabled": False,
    "tracking.flow_refinement": False, "tracking.max_age": 0,
}


def parse_baselines(text: Optional[str]) -> List[str]:
    """``"orb,sift"`` -> ``["orb", "sift"]``; unknown names raise ValueError."""
    names = [n.strip().lower() for n in (text or "").split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ValueError(f"--baselines: unknown method(s) {', '.join(unknown)} (choose from {', '.join(BASELINES)})")
    return list(dict.fromkeys(names))


def baseline_frontend(name: str, params: Optional[dict]):
    """``orb``/``sift``: the node's Frontend with ``params`` on OpenCV features instead of the
    network; ``klt``: the VINS-style optical-flow tracker with the same shared parameters;
    ``sp-reference``: the same network and weights with :data:`REFERENCE_SUPERPOINT` (what the
    front-end adds over the published demo's tracker)."""
    conf = validate(params or {})
    if name == "klt":
        return KLTFrontend(conf)
    if name == "sp-reference":
        return Frontend(validate({**conf, **REFERENCE_SUPERPOINT}))
    return Frontend(conf, extractor=OpenCVFrontendExtractor(name, int(conf["extractor.max_keypoints"])))

