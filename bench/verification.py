"""Frame-to-frame verification with intrinsics: fundamental matrix on pixels vs essential matrix
on normalised coordinates (``ransac.model``), on the sample bag and its distorted variants.

``python -m bench.verification [--frames 60] [--size 480x640] [--json OUT]`` renders (once,
cached in ``out/bench_verification``) the sample bag with a rectified pinhole camera, a
``plumb_bob`` and an ``equidistant`` lens (``SampleConf.distortion``), runs the shipped mono
front-end (fp32) over each with the camera its CameraInfo describes
(:func:`~superpoint_ros.evaluation.sample_data.sample_cameras`, :meth:`Frontend.set_cameras`)
once per ``ransac.model``, and scores every frame pair against the exact ground truth:

- rotation / translation-direction error (deg) of the relative pose the bag evaluator recovers
  from the inlier matches (:class:`~superpoint_ros.evaluation.bag_eval.BagStats`), on the
  keypoints undistorted into the pinhole camera ``K`` (so the distorted bags are scored like
  the rectified one);
- inlier precision: share of the RANSAC inliers whose ground-truth epipolar distance (undistorted
  px) is at most ``--correct-px``; recall: share of the matches within it that RANSAC kept;
- inliers per frame and tracks continued per frame.

``--ransac-timing`` times the two verifications alone on the same temporal matches (those of
the pinhole bag's first ``--timing-frames`` frames), interleaved: milliseconds per frame pair.

``--stereo`` adds the raw-stereo table: the stereo front-end on the rectified bag (no camera
needed) and on raw pairs (distorted lenses, each camera rotated off the rectified rig:
``SampleConf(raw_stereo=True)``) with both cameras set (keypoint rectification) and without
(matched as if rectified), scored against the scene's exact depth
(:func:`~superpoint_ros.evaluation.sample_data.true_disparities`): stereo matches per frame,
disparity error (rectified frame) and row error ``|y_left - y_right|`` (rectified frame).
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List

import numpy as np

from superpoint_ros.backends import configure_process
from superpoint_ros.camera_models import CameraModel, undistort_points
from superpoint_ros.evaluation.bag_eval import BagStats, record_from_result
from superpoint_ros.evaluation.pose import epipolar_distances, read_tum, relative_pose
from superpoint_ros.evaluation.sample_data import SampleConf, ensure_sample_bag, sample_cameras, true_disparities
from superpoint_ros.frontend import Frontend
from superpoint_ros.geometry import essential_inliers, ransac_inliers
from superpoint_ros.io import bags
from superpoint_ros.params import load_params

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "out" / "bench_verification"
LENSES = ("", "plumb_bob", "equidistant")
MODELS = ("fundamental", "essential")


def pinhole_pixels(camera: CameraModel, xy: np.ndarray) -> np.ndarray:
    """Raw keypoints -> ``(N, 2)`` px of the distortion-free camera with the same ``K``."""
    normalised = undistort_points(camera, xy)
    return normalised * np.diag(camera.K)[:2] + camera.K[:2, 2]


def left_frames(sample) -> List[tuple]:
    """``[(stamp ns, frame_id, image)]`` of the bag's left camera."""
    return [(bags.stamp_ns(m.message), m.message.header.frame_id, bags.message_image(m.message))
            for m in bags.read_messages(sample.bag, [sample.topics["left_image"]])]


def stereo_frames(sample) -> List[tuple]:
    """``[(stamp ns, left image, right image)]`` (the sample's pairs share their stamps)."""
    lefts = {bags.stamp_ns(m.message): bags.message_image(m.message)
             for m in bags.read_messages(sample.bag, [sample.topics["left_image"]])}
    rights = {bags.stamp_ns(m.message): bags.message_image(m.message)
              for m in bags.read_messages(sample.bag, [sample.topics["right_image"]])}
    return [(stamp, lefts[stamp], rights[stamp]) for stamp in sorted(lefts) if stamp in rights]


def evaluate_stereo(sample, frontend: Frontend, frames: int) -> Dict[str, float]:
    matches, disparity_errors, row_errors = [], [], []
    for index, (stamp_ns, left, right) in enumerate(stereo_frames(sample)[:frames]):
        result = frontend.process_stereo(left, right, stamp_ns, "stereo_left")
        stereo = result.stereo
        left_xy, right_xy = stereo.left_rectified, stereo.right_rectified
        if left_xy is None:  # matched on the keypoints as they are
            left_xy = result.features.keypoints[stereo.indices[:, 0]]
            right_xy = result.right_features.keypoints[stereo.indices[:, 1]]
        truth = true_disparities(sample.conf, index, left_xy)
        known = np.isfinite(truth)
        matches.append(len(stereo))
        disparity_errors.append(np.abs(stereo.disparities[known] - truth[known]))
        row_errors.append(np.abs(left_xy[:, 1] - right_xy[:, 1]))
    errors, rows = np.concatenate(disparity_errors), np.concatenate(row_errors)
    return {"stereo_matches_per_frame": float(np.mean(matches)), "scored": int(len(errors)),
            "disparity_error_px_median": float(np.median(errors)), "disparity_within_1px": float(np.mean(errors <= 1.0)),
            "row_error_px_median": float(np.median(rows))}


def stereo_markdown(rows: List[dict]) -> str:
    lines = ["| pair | cameras set | flow refinement | stereo matches / frame | disparity error median [px] "
             "| disparities within 1 px | row error median [px] |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['pair']} | {r['cameras']} | {r['refine']} | {r['stereo_matches_per_frame']:.1f} | "
                     f"{r['disparity_error_px_median']:.3f} | {r['disparity_within_1px']:.3f} | "
                     f"{r['row_error_px_median']:.3f} |")
    return "\n".join(lines)


def stereo_table(h: int, w: int, frames: int, extractor, params_file: Path) -> List[dict]:
    rows = []
    for lens, with_cameras in (("", False), ("plumb_bob", True), ("plumb_bob", False), ("equidistant", True),
                               ("equidistant", False)):
        conf = SampleConf(size=(h, w), distortion=lens, raw_stereo=bool(lens))
        sample = ensure_sample_bag(CACHE, conf)
        for refine in (True, False):
            params = load_params(params_file, overrides={"extractor.precision": "fp32",
                                                         "tracking.flow_refinement": refine})
            frontend = Frontend(params, extractor=extractor)
            if with_cameras:
                cameras = sample_cameras(conf)
                frontend.set_cameras(cameras["left"], cameras["right"])
            row = {"pair": f"raw {lens}, rotated rig" if lens else "rectified", "cameras": "yes" if with_cameras else "no",
                   "refine": "on" if refine else "off", **evaluate_stereo(sample, frontend, frames)}
            rows.append(row)
            print(stereo_markdown([row]).splitlines()[-1], flush=True)
    return rows


def ransac_timing(frames, camera: CameraModel, frontend: Frontend, repeats: int = 5) -> Dict[str, float]:
    """Median ms per frame pair of F on pixels and E on normalised coordinates (the shipped
    RANSAC settings), on the same matches, interleaved."""
    ransac = frontend.conf.ransac
    times = {"fundamental": [], "essential": []}
    previous = None
    for stamp_ns, frame_id, image in frames:
        result = frontend.process_mono(image, stamp_ns, frame_id)
        if previous is not None and result.temporal is not None:
            idx = result.temporal.indices
            p0, p1 = previous.features.keypoints[idx[:, 0]], result.features.keypoints[idx[:, 1]]
            for _ in range(repeats):
                start = time.perf_counter()
                ransac_inliers(p0, p1, "fundamental", ransac.method, ransac.threshold, ransac.confidence,
                               ransac.max_iterations, ransac.min_matches)
                times["fundamental"].append(time.perf_counter() - start)
                start = time.perf_counter()  # undistortion included: it is part of the E path's cost
                essential_inliers(undistort_points(camera, p0), undistort_points(camera, p1), ransac.threshold,
                                  camera.focal_px, ransac.method, ransac.confidence, ransac.max_iterations,
                                  ransac.min_matches)
                times["essential"].append(time.perf_counter() - start)
        previous = result
    return {model: float(np.median(t) * 1e3) for model, t in times.items()}


def evaluate(frames, camera: CameraModel, frontend: Frontend, trajectory, correct_px: float) -> Dict[str, float]:
    stats = BagStats(camera.K, trajectory)
    correct_inliers = inliers_total = correct = 0
    previous = None
    for stamp_ns, frame_id, image in frames:
        result = frontend.process_mono(image, stamp_ns, frame_id)
        pixels = pinhole_pixels(camera, result.features.keypoints)
        stats.add(replace(record_from_result(result), keypoints=pixels))
        temporal = result.temporal
        if temporal is not None and previous is not None and len(temporal):
            pose0 = trajectory.lookup(previous[0], 10_000_000)
            pose1 = trajectory.lookup(stamp_ns, 10_000_000)
            R, t = relative_pose(pose0, pose1)
            errors = epipolar_distances(previous[1][temporal.indices[:, 0]], pixels[temporal.indices[:, 1]],
                                        camera.K, R, t)
            good = errors <= correct_px
            correct_inliers += int(np.sum(temporal.inliers & good))
            inliers_total += int(np.sum(temporal.inliers))
            correct += int(np.sum(good))
        previous = (stamp_ns, pixels)
    summary = stats.summary()
    pose = summary["pose"]
    return {"pairs": pose["pairs"],
            "rotation_error_deg_median": pose["rotation_error_deg"].get("median"),
            "rotation_error_deg_mean": pose["rotation_error_deg"].get("mean"),
            "translation_error_deg_median": pose["translation_direction_error_deg"].get("median"),
            "translation_error_deg_mean": pose["translation_direction_error_deg"].get("mean"),
            "inlier_precision": correct_inliers / max(inliers_total, 1),
            "inlier_recall": correct_inliers / max(correct, 1),
            "inliers_per_frame": summary["inliers_per_frame"].get("mean"),
            "tracks_continued_per_frame": summary["tracks"]["continued_per_frame"].get("mean")}


def markdown(rows: List[dict], correct_px: float) -> str:
    lines = ["| camera | ransac.model | rotation err. median / mean [deg] | translation dir. err. median / mean [deg] "
             f"| inlier precision (GT <= {correct_px:g} px) | recall | inliers / frame | tracks continued / frame |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['camera']} | {r['model']} | {r['rotation_error_deg_median']:.3f} / "
                     f"{r['rotation_error_deg_mean']:.3f} | {r['translation_error_deg_median']:.2f} / "
                     f"{r['translation_error_deg_mean']:.2f} | {r['inlier_precision']:.4f} | {r['inlier_recall']:.4f} "
                     f"| {r['inliers_per_frame']:.1f} | {r['tracks_continued_per_frame']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.verification", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--size", default="480x640", help="HxW of the sample bag")
    p.add_argument("--lenses", default=",".join(x or "pinhole" for x in LENSES))
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--correct-px", type=float, default=1.0, help="GT epipolar distance of a correct match")
    p.add_argument("--params", default=str(ROOT / "config" / "superpoint_mono.yaml"))
    p.add_argument("--stereo", action="store_true", help="also the raw-stereo table (stereo config)")
    p.add_argument("--stereo-frames", type=int, default=8)
    p.add_argument("--skip-mono", action="store_true", help="no F vs E table")
    p.add_argument("--ransac-timing", action="store_true", help="also time F and E alone on the same matches")
    p.add_argument("--timing-frames", type=int, default=20)
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    configure_process()
    h, w = (int(v) for v in args.size.split("x"))
    extractor = None
    rows = []
    for lens in ([] if args.skip_mono else args.lenses.split(",")):
        distortion = "" if lens == "pinhole" else lens
        conf = SampleConf(size=(h, w), num_frames=args.frames, distortion=distortion)
        sample = ensure_sample_bag(CACHE, conf)
        camera = sample_cameras(conf)["left"]
        frames, trajectory = left_frames(sample), read_tum(sample.groundtruth)
        for model in args.models.split(","):
            params = load_params(args.params, overrides={"extractor.precision": "fp32", "ransac.model": model})
            frontend = Frontend(params, extractor=extractor)
            extractor = frontend.extractor  # one network for every run: the features are the same
            frontend.set_cameras(camera)
            row = {"camera": lens, "model": model, **evaluate(frames, camera, frontend, trajectory, args.correct_px)}
            rows.append(row)
            print(markdown([row], args.correct_px).splitlines()[-1], flush=True)
    if rows:
        print(markdown(rows, args.correct_px))
    timing = None
    if args.ransac_timing:
        conf = SampleConf(size=(h, w), num_frames=args.frames)
        sample = ensure_sample_bag(CACHE, conf)
        frontend = Frontend(load_params(args.params, overrides={"extractor.precision": "fp32"}), extractor=extractor)
        extractor = frontend.extractor
        timing = ransac_timing(left_frames(sample)[:args.timing_frames], sample_cameras(conf)["left"], frontend)
        print(f"RANSAC alone, median ms per frame pair: F {timing['fundamental']:.2f}, E {timing['essential']:.2f}")
    stereo_rows = []
    if args.stereo:
        if extractor is None:
            extractor = Frontend(load_params(args.params, overrides={"extractor.precision": "fp32"})).extractor
        stereo_rows = stereo_table(h, w, args.stereo_frames, extractor, ROOT / "config" / "superpoint_stereo.yaml")
        print(stereo_markdown(stereo_rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"verification": rows, "ransac_ms": timing, "stereo": stereo_rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
