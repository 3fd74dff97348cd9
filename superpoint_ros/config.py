"""The front-end's configuration: one typed tree whose defaults ARE the shipped node's values.

>>> conf = FrontendConf()                     # what config/superpoint_mono.yaml runs
>>> conf.detector.max_keypoints, conf.matching.ratio_test, conf.tracking.flow_refinement
(1000, 0.9, True)
>>> fewer = replace(conf, detector=replace(conf.detector, max_keypoints=500))

Every section is a frozen dataclass: a configuration is a value that can be shared, compared and
passed per call, never a dict someone writes into. Optional features are explicit: ``None`` means
off (no ratio test, no distance limit, no uniform grid, unlimited keypoints, no size limit, the
shipped weights, torch's default thread count).

The ROS node's flat parameters (``extractor.max_keypoints``; ROS has no ``None``, so "off" is a
marker value such as ``matching.ratio_test: 0.0``) map onto this tree in exactly one place,
:func:`superpoint_ros.params.frontend_conf`, and the parameter table
(:data:`superpoint_ros.params.PARAMETERS`) takes its defaults from here. Options without a ROS
parameter (the optical flow's window and limits) are set here only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Dict, Mapping, Optional


@dataclass(frozen=True)
class ModelConf:
    """How the network is loaded and run (fixed once the extractor is built)."""

    weights: Optional[str] = None   # weight file; None = the shipped default model
    device: str = "auto"            # "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:N"
    fp16: bool = True               # half-precision network on CUDA when precision="auto"
    num_threads: Optional[int] = None  # CPU threads of the ONNX Runtime network; None = torch's default count (torch itself: backends.configure_process)
    # --- speed options (docs/benchmarks.md has the measurements behind the defaults) ---
    backend: str = "auto"           # "auto" (CPU fp32: onnxruntime if installed; else torch), "torch", "onnxruntime"
    precision: str = "auto"         # "auto" (CUDA: fp16 if fp16 else fp32; CPU: int8 with VNNI, else fp32), "fp32",
                                    # "fp16" (CUDA), "bf16", "int8" (CPU: ONNX Runtime static quantisation)
    channels_last: bool = True      # NHWC activations: oneDNN/cuDNN's fast convolution layout
    cuda_graphs: bool = True        # replay the network as a CUDA graph per input shape (CUDA only)
    compile: bool = False           # torch.compile the network (slow first call; falls back to eager)
    input_scale: float = 1.0        # (0, 1]: run the network on the image scaled by this (0.5: 480x640 ->
                                    # 240x320, ~4x faster); keypoints come back in input pixels
    channel_order: str = "bgr"      # colour order of 3/4-channel inputs


@dataclass(frozen=True)
class DetectorConf:
    """How the detector heatmap becomes keypoints (a per-call choice: extractors can be shared)."""

    nms_radius: int = 4             # px; 0 disables NMS
    detection_threshold: float = 0.005
    max_keypoints: Optional[int] = 1000  # best first; None = unlimited
    remove_borders: int = 4         # px ignored at each image border
    uniform_cell: Optional[int] = 32  # px grid cell for spatially uniform selection; None = off
    max_per_cell: int = 4           # keypoints kept per uniform cell
    subpixel: bool = True           # 7x7 centroid: localisation 0.82 -> 0.74 px, H@1 0.66 -> 0.74 (models/README.md)


@dataclass(frozen=True)
class ImageConf:
    """Input images before the network (bad or extreme input: docs/reliability.md)."""

    max_size: Optional[int] = 1280  # px, longest side the network and the flow run on; None = no limit
    oversize: str = "resize"        # larger image: "resize" (keypoints still in input pixels) or "reject"
    bit_depth: int = 0              # valid bits of uint16 images, 8..16; 0 = auto per image


@dataclass(frozen=True)
class MatchingConf:
    """Descriptor matching (temporal and stereo): mutual nearest neighbours plus these tests."""

    ratio_test: Optional[float] = 0.9    # Lowe's ratio; None = no ratio test
    max_distance: Optional[float] = 1.2  # unit descriptors (0..2); None = no limit


@dataclass(frozen=True)
class RansacConf:
    """Outlier rejection of temporal matches with OpenCV USAC."""

    enabled: bool = True
    model: str = "fundamental"      # "fundamental" (pixels) | "homography" (pixels) | "essential" (normalised
                                    # coordinates; F without intrinsics) | "auto" (= essential with a camera,
                                    # else fundamental). F is the default: E was not better on the sample bags,
                                    # rectified or distorted (docs/evaluation.md, python -m bench.verification)
    method: str = "magsac"          # "magsac" | "default" | "accurate" | "fast"
    threshold: float = 1.0          # px
    confidence: float = 0.999
    max_iterations: int = 1000
    min_matches: int = 15           # fewer: no geometric check (all kept, flagged unverified)


@dataclass(frozen=True)
class FlowConf:
    """Lucas-Kanade refinement of one match (:func:`superpoint_ros.flow.refine_with_flow`); px
    of the flow images."""

    window: int = 15                # px, side of the Lucas-Kanade window
    pyramid_levels: int = 2         # matches are already within a few px: a shallow pyramid suffices
    back_pyramid_levels: Optional[int] = None  # the way back (it starts at the start point); None = pyramid_levels
    max_back_error: float = 0.5     # px, forward-backward consistency
    max_shift: float = 2.0          # px, how far the refined point may be from the detection


#: Flow limits confirming a re-found track (tracking.max_age): stricter than for a match, because
#: the points matching missed are the hard ones (edge-like patches, where the flow can slide along
#: the edge and still come back). Sample bag, max_age 2, re-found positions off by > 1 px under
#: ground truth: 21 % with the match limits (0.5 px back, 2 px shift), 2 % with these.
REFOUND_FLOW = FlowConf(max_back_error=0.1, max_shift=1.0)


@dataclass(frozen=True)
class TrackingConf:
    """Track IDs across frames."""

    max_age: int = 2                # frames a track may go unmatched and still be re-found (flow-confirmed)
    max_displacement: float = 64.0  # px a lost track may move to be re-found
    max_time_gap: float = 1.0       # s between frames beyond which tracks reset
    flow_refinement: bool = True    # LK-refined matches: sample bag GT epipolar error 0.33 -> 0.06 px
    flow: FlowConf = field(default_factory=FlowConf)                   # refining a match
    refound_flow: FlowConf = field(default_factory=lambda: REFOUND_FLOW)  # confirming a re-found track


@dataclass(frozen=True)
class StereoConf:
    """Rectified stereo matching limits (px)."""

    min_disparity: float = 0.0
    max_disparity: float = 128.0
    epipolar_tolerance: float = 2.0  # max |y_left - y_right|


@dataclass(frozen=True)
class ExtractorConf:
    """What :class:`superpoint_ros.extractor.FeatureExtractor` is built with: the network, and the
    detector and image settings it uses when a call passes none."""

    model: ModelConf = field(default_factory=ModelConf)
    detector: DetectorConf = field(default_factory=DetectorConf)
    image: ImageConf = field(default_factory=ImageConf)

    def options(self) -> Dict[str, Any]:
        """The flat option dict (``{"weights": None, ..., "max_keypoints": 1000, ...}``)."""
        return {**asdict(self.model), **asdict(self.detector), **asdict(self.image)}

    @classmethod
    def from_options(cls, options: Mapping[str, Any], base: Optional["ExtractorConf"] = None) -> "ExtractorConf":
        """Flat options (``max_keypoints=500``; names of the three sections' fields) over ``base``
        (default: the shipped values). Raises ValueError naming unknown options."""
        base = base or cls()
        sections = {name: getattr(base, name) for name in ("model", "detector", "image")}
        owner = {f.name: section for section, value in sections.items() for f in fields(value)}
        unknown = sorted(set(options) - set(owner))
        if unknown:
            raise ValueError(f"unknown extractor options: {unknown}")
        changes: Dict[str, Dict[str, Any]] = {name: {} for name in sections}
        for key, value in options.items():
            changes[owner[key]][key] = value
        return cls(**{name: replace(value, **changes[name]) for name, value in sections.items()})


@dataclass(frozen=True)
class FrontendConf:
    """Everything :class:`superpoint_ros.frontend.Frontend` is configured with."""

    model: ModelConf = field(default_factory=ModelConf)
    detector: DetectorConf = field(default_factory=DetectorConf)
    image: ImageConf = field(default_factory=ImageConf)
    matching: MatchingConf = field(default_factory=MatchingConf)
    ransac: RansacConf = field(default_factory=RansacConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)
    stereo: StereoConf = field(default_factory=StereoConf)
    cpu_fallback: bool = False      # device cuda requested but CUDA absent: run on the CPU (warns) instead of failing

    @property
    def extractor(self) -> ExtractorConf:
        return ExtractorConf(self.model, self.detector, self.image)

