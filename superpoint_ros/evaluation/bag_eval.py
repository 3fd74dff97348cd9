"""``superpoint-eval-bag BAG``: replay a ROS 2 bag through the node's front-end code, offline.

Reads sqlite3 or mcap bags, or ROS 1 ``.bag`` files, with ``rosbags`` (no ROS install needed), one
image topic (mono) or a stereo pair, and runs :class:`superpoint_ros.frontend.Frontend` -- the code
the node runs -- configured by the node's own parameter file (``--params``, default
``config/superpoint_{mono,stereo}.yaml``). The ``camera_info`` topics next to the image topics (or
``--camera-info`` / ``--right-camera-info``) reach the front-end as they reach the node: paired
with each frame by stamp, a camera model (distorted, fisheye, raw stereo) set whenever it changes;
an unusable one gives one warning and pixel-only output; without them it runs pixel-only.

Reports per frame and in summary: keypoints, temporal matches, RANSAC inlier ratio, track lengths,
stereo matches and their epipolar error (``|y_left - y_right|``, rectified), processing time.
With a TUM ground-truth trajectory (``--groundtruth``) and intrinsics: the rotation error and the
translation-direction error (degrees) of the relative pose from the essential matrix of each
frame pair's inlier matches, and the ground-truth epipolar error of those matches.

``--baselines orb,sift`` replays the same frames through the same Frontend (same parameter file,
tracking, matching thresholds, RANSAC, stereo rules) with OpenCV ORB / SIFT features in place of
the network (:class:`superpoint_ros.evaluation.baselines.OpenCVFrontendExtractor`; their
descriptors become unit vectors, so ``matching.ratio_test``/``max_distance`` apply unchanged; only
``extractor.max_keypoints`` carries over) and prints the methods side by side. ``klt`` adds the
VINS-style optical-flow tracker (:mod:`superpoint_ros.evaluation.klt`: Shi-Tomasi + Lucas-Kanade,
forward-backward check, the same RANSAC and stereo limits); ``sp-reference`` runs the same network
with the published SuperPoint demo's tracker rules (:data:`superpoint_ros.evaluation.baselines.REFERENCE_SUPERPOINT`).

Writes ``summary.json`` (+ per-frame values; baselines under ``"baselines"``), ``per_frame.png``,
``tracks.png`` into ``--output``; ``--output-bag`` also writes the node's output topics (same names
and message layout as the node, via its codec) plus the input images, to replay in rviz/Foxglove.

Layout: :mod:`.bag_frames` (frames and camera_info from the bag), :mod:`.bag_stats` (per-frame
statistics, summary), :mod:`.pose` (ground truth, pose metrics), :mod:`.bag_report` (tables,
pictures), :mod:`.output_bag` (the node's topics to a bag), :mod:`.baselines` (``--baselines``);
this module runs them (:func:`evaluate_bag`) and holds the command line.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from ..backends import configure_process
from ..camera_models import images_are_rectified
from ..frontend import Frontend
from ..io import bags, messages
from ..params import ParamsError, load_params
from ..sync import slop_ns_for
from ..weights import WeightsError
from .bag_frames import Frame, BagCameras, camera_matrix, find_camera_info, first_camera_info, iterate_frames
from .bag_report import format_comparison, format_summary, tracks_picture
from .bag_stats import BagStats, record_from_result
from .baselines import baseline_frontend, parse_baselines
from .output_bag import DEFAULT_NAMESPACE, OutputBag
from .plots import plot_bag_summary
from .pose import read_tum


# --- the evaluation ------------------------------------------------------------------------------
def default_params_file(stereo: bool) -> Path:
    """The node's shipped parameter file (source tree or installed share directory)."""
    name = "superpoint_stereo.yaml" if stereo else "superpoint_mono.yaml"
    candidates = [Path(__file__).resolve().parents[2] / "config" / name,
                  Path(sys.prefix) / "share" / "superpoint_ros" / "config" / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"parameter file {name} not found (looked in {', '.join(map(str, candidates))}); "
                            "pass --params")


def camera_info_topics(bag: Path, left_topic: str, right_topic: Optional[str], available: Dict[str, Tuple[str, int]],
                       left_info: Optional[str] = None, right_info: Optional[str] = None
                       ) -> Tuple[Optional[str], Optional[str]]:
    """The (left, right) camera_info topics: the ones given, else the ones next to the image topics
    (``/stereo/left/image_raw`` -> ``/stereo/left/camera_info``), None where the bag has none.
    A topic given but not in the bag raises :class:`superpoint_ros.io.bags.BagError`."""
    found = []
    for image_topic, given in ((left_topic, left_info), (right_topic, right_info)):
        topic = given or (find_camera_info(bag, image_topic, available) if image_topic else None)
        if topic is not None and topic not in available:
            raise bags.BagError(f"{bag}: camera_info topic {topic} not in the bag")
        found.append(topic)
    return found[0], found[1]


def _process(frontend, frame: Frame):
    """One frame through the front-end, its wall time (ms) added to the result's timings."""
    start = time.perf_counter()
    if frame.right is None:
        result = frontend.process_mono(frame.left, frame.stamp_ns, frame.frame_id)
    else:
        result = frontend.process_stereo(frame.left, frame.right, frame.stamp_ns, frame.frame_id)
    result.timings["wall"] = (time.perf_counter() - start) * 1e3
    return result


def evaluate_bag(bag: Path, left_topic: str, right_topic: Optional[str] = None, params: Optional[dict] = None,
                 groundtruth: Optional[Path] = None, camera_info_topic: Optional[str] = None,
                 output_bag: Optional[Path] = None, storage: str = "sqlite3", max_frames: Optional[int] = None,
                 show_progress: bool = True, frontend=None, output_namespace: str = DEFAULT_NAMESPACE,
                 right_camera_info_topic: Optional[str] = None, vins_feature: Optional[str] = None,
                 ) -> Tuple[dict, BagStats, Optional[np.ndarray]]:
    """Run the front-end over the bag. Returns ``(summary, stats, last left image)``.

    ``params``: a flat parameter dict as :func:`superpoint_ros.params.load_params` returns (the
    node's defaults when None). ``frontend``: an already built front-end (tests share one; any
    with ``process_mono``/``process_stereo``/``set_cameras``/``params``/``weights_path``).
    The camera_info topics (``camera_info_topic`` / ``right_camera_info_topic``, default: next to
    the image topics) give the front-end its camera models as the node gets them: each frame's
    CameraInfo paired by stamp, :meth:`set_cameras` whenever a model changes, pixel-only (one
    warning) for an unusable one, none read with ``camera_info.mode: off`` (``required``: a
    warning when the bag has none). The first left
    CameraInfo's ``P`` is also the ground-truth pose metrics' K. ``vins_feature``: ``"fusion"`` or
    ``"mono"`` also writes the ``vins_feature`` topic into ``output_bag``.
    """
    bag = Path(bag)
    available = bags.check_image_topics(bag, [left_topic] + ([right_topic] if right_topic else []))
    frontend = frontend if frontend is not None else Frontend(params or {})
    conf = frontend.params
    info_topic, right_info_topic = camera_info_topics(bag, left_topic, right_topic, available, camera_info_topic,
                                                      right_camera_info_topic)
    K = None
    if info_topic is not None:
        info = first_camera_info(bag, info_topic)
        K = camera_matrix(info) if info is not None else None
    trajectory = read_tum(groundtruth) if groundtruth is not None else None
    stats = BagStats(K, trajectory)
    total = available[left_topic][1] if max_frames is None else min(max_frames, available[left_topic][1])
    slop_ns = slop_ns_for(conf["sync.mode"], conf["sync.slop"])
    info_mode = conf["camera_info.mode"]
    use_info = info_mode != "off"
    images_kind = conf["camera_info.images"]
    cameras = BagCameras(rectified_images=(images_are_rectified(left_topic, images_kind),
                                             images_are_rectified(right_topic or "", images_kind)))
    camera_changes = 0
    if info_mode == "required" and info_topic is None:
        cameras.warn_once(f"camera_info.mode is required but {bag} has no camera_info for {left_topic} "
                          "(--camera-info to name it): pixel-only output")
    last_image = None
    with contextlib.ExitStack() as stack:
        output = None
        if output_bag is not None:
            output = OutputBag(stack.enter_context(bags.BagWriter(output_bag, storage=storage, overwrite=True)),
                               output_namespace, vins_feature)
        progress = None
        if show_progress:
            progress = stack.enter_context(tqdm(total=total, unit="frame", desc="superpoint-eval-bag", file=sys.stderr))
        frames = iterate_frames(bag, left_topic, right_topic, slop_ns, conf["sync.queue_size"],
                                info_topic if use_info else None, right_info_topic if use_info else None)
        for count, frame in enumerate(frames):
            if max_frames is not None and count >= max_frames:
                break
            if cameras.update(frame):
                camera_changes += 1
                frontend.set_cameras(cameras.left, cameras.right)
            result = _process(frontend, frame)
            if result.camera_problem:
                cameras.warn_once(result.camera_problem)
            stats.add(record_from_result(result, cameras.left, cameras.right))
            if output is not None:
                output.write(frame, result)
            last_image = frame.left
            if progress is not None:
                progress.update(1)
                progress.set_postfix(kp=len(result.features), tracks=int(np.sum(result.track_lengths > 1)))
    summary = stats.summary()
    summary["bag"] = str(bag)
    summary["topics"] = {"left": left_topic, "right": right_topic, "camera_info": info_topic,
                         "right_camera_info": right_info_topic}
    summary["cameras"] = {"changes": camera_changes, "warnings": list(cameras.warnings),
                          **{side: None if model is None else model.distortion_model or "none"
                             for side, model in (("left", cameras.left), ("right", cameras.right))}}
    summary["weights"] = frontend.weights_path or "in-memory model"
    summary["parameters"] = {k: v for k, v in conf.items()}
    return summary, stats, last_image


# --- command line -----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="superpoint-eval-bag", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", type=Path, help="rosbag2 folder or file (sqlite3 or mcap), or a ROS 1 .bag")
    p.add_argument("--image-topic", help="mono: the image topic")
    p.add_argument("--left-topic", help="stereo: left rectified image topic")
    p.add_argument("--right-topic", help="stereo: right rectified image topic")
    p.add_argument("--camera-info", default=None,
                   help="(left) camera_info topic (default: next to the (left) image topic)")
    p.add_argument("--right-camera-info", default=None,
                   help="stereo: right camera_info topic (default: next to the right image topic)")
    p.add_argument("--params", type=Path, default=None,
                   help="the node's parameter file (default: config/superpoint_{mono,stereo}.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a parameter, e.g. --set extractor.max_keypoints=500 (YAML value)")
    p.add_argument("--weights", default=None, help="shortcut for --set extractor.weights=PATH")
    p.add_argument("--device", default=None, help="shortcut for --set extractor.device=...")
    p.add_argument("--groundtruth", type=Path, default=None, help="TUM trajectory of the (left) camera")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--output", "-o", type=Path, default=Path("out/eval_bag"), help="folder for JSON and plots")
    p.add_argument("--output-bag", type=Path, default=None, help="also write the node's topics to this bag")
    p.add_argument("--storage", choices=bags.STORAGE_FORMATS, default="sqlite3", help="output bag storage")
    p.add_argument("--vins-feature", choices=messages.VINS_LAYOUTS, default=None,
                   help="also write the node's vins_feature topic (sensor_msgs/PointCloud in the VINS-Fusion or "
                        "VINS-Mono layout) into --output-bag, for frames with camera_info")
    p.add_argument("--output-namespace", default=DEFAULT_NAMESPACE,
                   help="namespace of the node's topics in the output bag (default: the launch files')")
    p.add_argument("--baselines", default="", metavar="orb,sift,klt,sp-reference",
                   help="also run the same front-end on OpenCV ORB and/or SIFT features, a VINS-style KLT "
                        "tracker, and/or the same network with the published SuperPoint demo's tracker rules "
                        "(sp-reference), same frames and parameters, and print the methods side by side")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def parse_overrides(items: Sequence[str]) -> dict:
    overrides = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r} must look like NAME=VALUE")
        name, value = item.split("=", 1)
        overrides[name.strip()] = yaml.safe_load(value) if value.strip() else ""
    return overrides


def parameter_overrides(args) -> dict:
    """The command line's parameter overrides: ``--set NAME=VALUE`` items, then ``--weights`` and
    ``--device`` when given (shared by superpoint-eval-bag and superpoint-eval-slam)."""
    overrides = parse_overrides(args.set)
    if args.weights:
        overrides["extractor.weights"] = args.weights
    if args.device:
        overrides["extractor.device"] = args.device
    return overrides


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    configure_process()
    stereo = bool(args.left_topic or args.right_topic)
    if stereo and not (args.left_topic and args.right_topic):
        print("superpoint-eval-bag: stereo needs both --left-topic and --right-topic", file=sys.stderr)
        return 2
    if stereo == bool(args.image_topic):
        print("superpoint-eval-bag: give either --image-topic (mono) or --left-topic/--right-topic (stereo)",
              file=sys.stderr)
        return 2
    if args.vins_feature and not args.output_bag:
        print("superpoint-eval-bag: --vins-feature writes into the output bag: give --output-bag", file=sys.stderr)
        return 2
    try:
        overrides = parameter_overrides(args)
        baselines = parse_baselines(args.baselines)
        params_file = args.params or default_params_file(stereo)
        params = load_params(params_file, overrides=overrides)
        summary, stats, last_image = evaluate_bag(
            args.bag, args.left_topic or args.image_topic, args.right_topic, params, args.groundtruth,
            args.camera_info, args.output_bag, args.storage, args.max_frames, not args.quiet,
            output_namespace=args.output_namespace, right_camera_info_topic=args.right_camera_info,
            vins_feature=args.vins_feature)
        baseline_runs = {}
        for name in baselines:  # the same frames through the same Frontend code, other features
            baseline_summary, baseline_stats, _ = evaluate_bag(
                args.bag, args.left_topic or args.image_topic, args.right_topic, params, args.groundtruth,
                args.camera_info, None, args.storage, args.max_frames, not args.quiet,
                frontend=baseline_frontend(name, params), right_camera_info_topic=args.right_camera_info)
            baseline_runs[name] = {**baseline_summary, "per_frame": baseline_stats.frames}
    except (bags.BagError, ParamsError, WeightsError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"superpoint-eval-bag: {e}", file=sys.stderr)
        return 2
    summary["params_file"] = str(params_file)
    args.output.mkdir(parents=True, exist_ok=True)
    document = {**summary, "per_frame": stats.frames}
    if baseline_runs:
        document["baselines"] = baseline_runs
    (args.output / "summary.json").write_text(json.dumps(document, indent=1, default=float) + "\n")
    lengths = np.array(list(stats.track_length.values()), np.int64)
    plot_bag_summary(stats.series(), lengths, args.output / "per_frame.png")
    if last_image is not None:
        cv2.imwrite(str(args.output / "tracks.png"), tracks_picture(last_image, stats.trails))
    print(f"weights: {summary['weights']}\nparameters: {params_file}")
    print(format_summary(summary))
    if baseline_runs:
        print("\nside by side (same frames, same front-end and parameters):\n")
        print(format_comparison({"superpoint": summary, **baseline_runs}))
    print(f"\nwrote {args.output / 'summary.json'}, per_frame.png, tracks.png"
          + (f"; output bag {args.output_bag}" if args.output_bag else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
