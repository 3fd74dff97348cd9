"""``superpoint-eval-slam BAG``: which front-end gives a SLAM back-end the best trajectory?

Replays a rectified stereo bag (ROS 2 sqlite3/mcap or ROS 1, as ``superpoint-eval-bag`` reads it:
same topics, parameter file, ``--set`` overrides and ``--baselines orb,sift,klt,sp-reference``)
through each front-end, feeds exactly the front-end's outputs -- track IDs, rectified left
keypoints and their stereo matches -- to one reference GTSAM stereo back-end
(:mod:`superpoint_ros.evaluation.stereo_vo`, the same :class:`~.stereo_vo.VOConfig` for every
front-end), and scores each trajectory against the ground truth with evo:

- **ATE**: absolute trajectory error of the positions after an SE(3) alignment (Umeyama; stereo
  is metric, so no scale), RMSE/mean/median/max in metres, and the rotation error (degrees);
- **RPE**: relative pose error over segments of ``--rpe-delta`` metres (+-20 %) of the
  ground-truth path (all pairs): translation (m per segment: drift per metre) and rotation (degrees per segment).

Monocular: a mono bag (``--image-topic``, K from its camera_info) or a folder of frames +
``groundtruth.txt`` + ``K.txt`` (as ``superpoint-eval-posed`` reads it; frame i stamped i s) goes
through ``process_mono`` and the monocular back-end (:mod:`superpoint_ros.evaluation.mono_vo`, the
same :class:`~.mono_vo.MonoConfig` for every front-end); ATE after a Sim(3) alignment (the scale is
arbitrary), RPE between consecutive registered frames (rotation in degrees). A front-end it
cannot follow is reported as failed in the table.

Ground truth: ``--groundtruth`` (TUM, left camera optical frame -> world) or a
``geometry_msgs/PoseStamped`` topic in the bag (``--groundtruth-topic``; found automatically when a
PoseStamped topic name contains ``ground_truth``/``groundtruth``, as in the sample bag). The
baseline comes from the right ``camera_info``'s ``P`` (``P[0,3] = -fx * baseline``).

Writes into ``--output``: ``trajectories/<method>.tum`` (the estimate in its own frame: the first
tracked camera is the origin) and ``trajectories/groundtruth.tum`` (so ``evo_ape
trajectories/groundtruth.tum trajectories/superpoint.tum -a`` reproduces the ATE),
``summary.json``, ``table.md`` and ``trajectories.png``.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from ..backends import configure_process
from ..frontend import Frontend
from ..io import bags
from ..params import ParamsError, load_params
from ..sync import slop_ns_for
from ..weights import WeightsError
from .bag_eval import default_params_file, parameter_overrides
from .bag_frames import camera_matrix, find_camera_info, first_camera_info, iterate_frames
from .baselines import baseline_frontend, parse_baselines
from .mono_vo import MonoConfig, MonoVO, mono_observations
from .plots import _pyplot
from .pose import NS, Trajectory, read_tum
from .posed import PosedDatasetError, load_posed_sequence
from .sample_data import rotation_to_quaternion
from .stereo_vo import SlamError, StereoCalibration, StereoVO, VOConfig, VOTrajectory, stereo_observations

POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
#: Nearest ground-truth pose within this of a frame stamp, else the frame is not scored.
GT_MAX_DT_NS = 10_000_000
#: Fewer scored poses than this: no trajectory to speak of.
MIN_SCORED_POSES = 3
#: RPE segments may be this fraction longer or shorter than ``--rpe-delta`` (evo's
#: ``rel_delta_tol``; 0.2 lets a 12-frame loop, 0.39 m per frame, have segments at all).
RPE_DELTA_TOLERANCE = 0.2


# --- inputs ----------------------------------------------------------------------------------
def stereo_calibration(bag: Path, left_topic: str, right_topic: str, available: Dict[str, Tuple[str, int]],
                       left_info_topic: Optional[str] = None,
                       right_info_topic: Optional[str] = None) -> StereoCalibration:
    """fx, fy, cx, cy of the left rectified camera and the baseline from the right camera's ``P``."""
    infos = []
    for side, image_topic, topic in (("left", left_topic, left_info_topic), ("right", right_topic, right_info_topic)):
        topic = topic or find_camera_info(bag, image_topic, available)
        if topic is None or topic not in available:
            raise bags.BagError(f"{bag}: no camera_info for the {side} camera (looked for "
                                f"{topic or image_topic.rsplit('/', 1)[0] + '/camera_info'}); the stereo back-end "
                                "needs the rectified intrinsics and the baseline "
                                "(pass --camera-info/--right-camera-info)")
        info = first_camera_info(bag, topic)
        if info is None:
            raise bags.BagError(f"{bag}: {topic} has no messages")
        infos.append(info)
    K = camera_matrix(infos[0])
    p_right = np.asarray(infos[1].p, np.float64).reshape(3, 4)
    if p_right[0, 0] <= 0 or -p_right[0, 3] / p_right[0, 0] <= 0:
        raise bags.BagError(f"{bag}: the right camera_info's P has no baseline (P[0,3] must be -fx * baseline < 0)")
    return StereoCalibration(K[0, 0], K[1, 1], K[0, 2], K[1, 2], float(-p_right[0, 3] / p_right[0, 0]))


def find_groundtruth_topic(available: Dict[str, Tuple[str, int]]) -> Optional[str]:
    """A PoseStamped topic whose name says ground truth, or None."""
    for topic, (msgtype, _) in sorted(available.items()):
        if msgtype == POSE_STAMPED and ("ground_truth" in topic or "groundtruth" in topic):
            return topic
    return None


def groundtruth_from_bag(bag: Path, topic: str) -> Trajectory:
    """A PoseStamped topic (camera -> world, stamped by its header) as a :class:`Trajectory`."""
    from scipy.spatial.transform import Rotation  # optional: scipy comes with scikit-image (the eval extra), not a pip requirement

    stamps, positions, quats = [], [], []
    for item in bags.read_messages(bag, [topic]):
        pose = item.message.pose
        stamps.append(bags.stamp_ns(item.message))
        positions.append([pose.position.x, pose.position.y, pose.position.z])
        quats.append([pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w])
    if not stamps:
        raise bags.BagError(f"{bag}: ground-truth topic {topic} has no messages")
    order = np.argsort(stamps, kind="stable")
    return Trajectory(np.asarray(stamps, np.int64)[order], Rotation.from_quat(np.asarray(quats)[order]).as_matrix(),
                      np.asarray(positions, np.float64)[order])


def load_groundtruth(bag: Path, available, groundtruth: Optional[Path], topic: Optional[str]) -> Tuple[Trajectory, str]:
    """The ground truth and where it came from; a clear error when there is none."""
    if groundtruth is not None:
        return read_tum(groundtruth), str(groundtruth)
    topic = topic or find_groundtruth_topic(available)
    if topic is None:
        raise bags.BagError(f"{bag}: no ground truth: pass --groundtruth FILE.tum or --groundtruth-topic "
                            "(a geometry_msgs/PoseStamped topic of the left camera in the world)")
    if available.get(topic, ("",))[0] != POSE_STAMPED:
        raise bags.BagError(f"{bag}: ground-truth topic {topic} is not in the bag as {POSE_STAMPED}")
    return groundtruth_from_bag(bag, topic), topic


# --- running a front-end through the back-end --------------------------------------------------
@dataclass
class MethodRun:
    """One front-end's trajectory and what it fed the back-end."""

    estimate: VOTrajectory
    frame_stamps_ns: List[int]
    tracks_per_frame: float  # stereo tracks (stereo) or tracks (mono) given to the back-end
    track_length_mean: float
    frontend_ms: float
    backend_ms: float


def feed_backend(name: str, frames, process, observe, finish, total: Optional[int], show_progress: bool,
                 empty: str) -> MethodRun:
    """Run each of ``frames`` (``(stamp_ns, images, frame_id)``) through the front-end
    (``process(images, stamp_ns, frame_id) -> FrameResult``) and the back-end
    (``observe(stamp_ns, result) -> (tracks given, progress postfix)``), then ``finish()`` ->
    :class:`VOTrajectory`; per-frame times of both, tracks per frame, mean track length (a track's
    longest run, as superpoint-eval-bag). ``empty``: the error when there were no frames."""
    stamps, track_counts, track_length, frontend_ms, backend_ms = [], [], {}, 0.0, 0.0
    progress = None
    if show_progress:
        progress = tqdm(total=total, unit="frame", desc=f"superpoint-eval-slam {name}", file=sys.stderr)
    try:
        for stamp_ns, images, frame_id in frames:
            start = time.perf_counter()
            result = process(images, stamp_ns, frame_id)
            middle = time.perf_counter()
            given, postfix = observe(stamp_ns, result)
            backend_ms += (time.perf_counter() - middle) * 1e3
            frontend_ms += (middle - start) * 1e3
            stamps.append(stamp_ns)
            track_counts.append(given)
            ids, lengths = np.asarray(result.track_ids).tolist(), np.asarray(result.track_lengths).tolist()
            for track_id, length in zip(ids, lengths):
                track_length[track_id] = max(length, track_length.get(track_id, 0))
            if progress is not None:
                progress.update(1)
                progress.set_postfix(**postfix)
    finally:
        if progress is not None:
            progress.close()
    if not stamps:
        raise SlamError(empty)
    start = time.perf_counter()
    estimate = finish()
    backend_ms += (time.perf_counter() - start) * 1e3
    return MethodRun(estimate, stamps, float(np.mean(track_counts)),
                     float(np.mean(list(track_length.values()))) if track_length else 0.0,
                     frontend_ms / len(stamps), backend_ms / len(stamps))


def run_method(name: str, frontend, bag: Path, left_topic: str, right_topic: str, calibration: StereoCalibration,
               config: VOConfig, max_frames: Optional[int] = None, total: Optional[int] = None,
               show_progress: bool = True) -> MethodRun:
    """The bag's stereo pairs through ``frontend`` (``process_stereo``) and one :class:`StereoVO`."""
    conf = frontend.params
    slop_ns = slop_ns_for(conf["sync.mode"], conf["sync.slop"])
    vo = StereoVO(calibration, config)

    def frames():
        pairs = iterate_frames(bag, left_topic, right_topic, slop_ns, conf["sync.queue_size"])
        for count, frame in enumerate(pairs):
            if max_frames is not None and count >= max_frames:
                return
            yield frame.stamp_ns, (frame.left, frame.right), frame.frame_id

    def observe(stamp_ns, result):
        ids, left, right_x = stereo_observations(result)
        keyframe = vo.add_frame(stamp_ns, ids, left, right_x)
        return len(ids), dict(stereo=len(ids), keyframes=len(vo.keyframe_poses), kf=int(keyframe))

    return feed_backend(name, frames(), lambda images, t, fid: frontend.process_stereo(*images, t, fid), observe,
                        vo.finish, total, show_progress,
                        f"{bag}: no stereo pairs (left {left_topic}, right {right_topic})")


# --- monocular: a posed frame folder or a mono bag ---------------------------------------------
#: Fewer frames than this in a posed folder: nothing for a monocular back-end to do.
MIN_MONO_FRAMES = 3


@dataclass
class MonoSource:
    """Mono input: ``frames()`` yields ``(stamp_ns, image, frame_id)`` in time order (a fresh
    iterator per call: one per front-end), ``K`` 3x3 (px) of the undistorted images."""

    description: str
    K: np.ndarray
    groundtruth: Trajectory
    groundtruth_source: str
    total: int
    frames: Callable[[], Iterator[Tuple[int, np.ndarray, str]]]


def is_posed_folder(path: Path) -> bool:
    """A folder that is not a rosbag2 (no metadata.yaml, .db3 or .mcap): frames + poses + K."""
    path = Path(path)
    return path.is_dir() and not (path / "metadata.yaml").is_file() and not any(path.glob("*.db3")) \
        and not any(path.glob("*.mcap"))


def posed_source(folder: Path, max_frames: Optional[int] = None) -> MonoSource:
    """A ``superpoint-eval-posed`` sequence folder (frames, ``groundtruth.txt``, ``K.txt``); frame i
    is stamped i seconds, its ground truth is the folder's pose of frame i."""
    sequence = load_posed_sequence(folder)
    if len(sequence.images) < MIN_MONO_FRAMES:
        raise PosedDatasetError(f"{folder}: needs at least {MIN_MONO_FRAMES} frames for the monocular back-end, "
                                f"found {len(sequence.images)}")
    images = sequence.images[:max_frames]
    groundtruth = Trajectory(np.arange(len(sequence.poses), dtype=np.int64) * NS,
                             np.array([r for r, _ in sequence.poses]), np.array([c for _, c in sequence.poses]))
    return MonoSource(f"{folder} (frames + poses + K)", sequence.K, groundtruth, str(Path(folder) / "groundtruth.txt"),
                      len(images), lambda: ((i * NS, image, "camera") for i, image in enumerate(images)))


def mono_bag_source(bag: Path, image_topic: str, info_topic: Optional[str], groundtruth: Optional[Path],
                    groundtruth_topic: Optional[str], max_frames: Optional[int] = None) -> MonoSource:
    """A mono bag: rectified images, K from the camera_info's P, ground truth as for stereo."""
    available = bags.check_image_topics(bag, [image_topic])
    info_topic = info_topic or find_camera_info(bag, image_topic, available)
    info = first_camera_info(bag, info_topic) if info_topic in available else None
    if info is None:
        raise bags.BagError(f"{bag}: no camera_info for {image_topic} (looked for "
                            f"{info_topic or image_topic.rsplit('/', 1)[0] + '/camera_info'}); the monocular back-end "
                            "needs the rectified intrinsics (pass --camera-info)")
    trajectory, source = load_groundtruth(bag, available, groundtruth, groundtruth_topic)
    total = available[image_topic][1] if max_frames is None else min(max_frames, available[image_topic][1])

    def frames():
        for count, frame in enumerate(iterate_frames(bag, image_topic)):
            if max_frames is not None and count >= max_frames:
                return
            yield frame.stamp_ns, frame.left, frame.frame_id

    return MonoSource(f"{bag} ({image_topic})", camera_matrix(info), trajectory, source, total, frames)


def run_mono_method(name: str, frontend, source: MonoSource, config: MonoConfig,
                    show_progress: bool = True) -> MethodRun:
    """The source's frames through ``frontend`` (``process_mono``) and one :class:`MonoVO`."""
    vo = MonoVO(source.K, config)

    def observe(stamp_ns, result):
        ids, xy = mono_observations(result)
        registered = vo.add_frame(stamp_ns, ids, xy)
        return len(ids), dict(tracks=len(ids), registered=len(vo.poses), ok=int(registered))

    frames = ((stamp_ns, (image,), frame_id) for stamp_ns, image, frame_id in source.frames())
    return feed_backend(name, frames, lambda images, t, fid: frontend.process_mono(images[0], t, fid), observe,
                        vo.finish, source.total, show_progress, f"{source.description}: no frames")


def groundtruth_at(estimate: VOTrajectory, groundtruth: Trajectory, max_dt_ns: int = GT_MAX_DT_NS):
    """``(mask (P,) bool, rotations (M, 3, 3), positions (M, 3))``: the ground truth at the
    estimate's stamps (nearest within ``max_dt_ns``); SlamError when too few stamps match."""
    mask, rotations, positions = np.zeros(len(estimate.stamps_ns), bool), [], []
    for i, stamp in enumerate(estimate.stamps_ns.tolist()):
        pose = groundtruth.lookup(stamp, max_dt_ns)
        if pose is not None:
            mask[i] = True
            rotations.append(pose[0])
            positions.append(pose[1])
    if mask.sum() < MIN_SCORED_POSES:
        first = f"{estimate.stamps_ns[0] / NS:.3f} s" if len(estimate.stamps_ns) else "none"
        span = f"{groundtruth.stamps_ns[0] / NS:.3f} .. {groundtruth.stamps_ns[-1] / NS:.3f} s"
        raise SlamError(f"ground truth and frames do not match in time: {int(mask.sum())} of "
                        f"{len(estimate.stamps_ns)} frame stamps (first {first}) have a ground-truth pose within "
                        f"{max_dt_ns / 1e6:g} ms (ground truth spans {span}); need {MIN_SCORED_POSES}")
    return mask, np.asarray(rotations), np.asarray(positions)


# --- scoring (evo) -------------------------------------------------------------------------------
def _evo_trajectory(stamps_s: np.ndarray, rotations: np.ndarray, positions: np.ndarray):
    from evo.core.trajectory import PoseTrajectory3D  # optional heavy dependency (the slam extra): on use

    poses = []
    for rotation, position in zip(rotations, positions):
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = rotation, position
        poses.append(T)
    return PoseTrajectory3D(poses_se3=poses, timestamps=np.asarray(stamps_s, np.float64))


def _statistics(metric) -> Dict[str, float]:
    s = metric.get_all_statistics()
    return {k: float(s[k]) for k in ("rmse", "mean", "median", "max")}


def score_trajectory(stamps_s: np.ndarray, gt_rotations: np.ndarray, gt_positions: np.ndarray,
                     est_rotations: np.ndarray, est_positions: np.ndarray, correct_scale: bool = False,
                     rpe_delta_m: float = 1.0, rpe_delta_frames: Optional[int] = None) -> Tuple[dict, np.ndarray]:
    """evo's APE/RPE of an estimate against the ground truth at the same stamps (seconds).

    Poses are camera -> world ``(P, 3, 3)`` / ``(P, 3)``. The estimate is aligned to the ground
    truth first (SE(3), or Sim(3) with ``correct_scale`` for mono; at the first pose when the
    positions are collinear, where Umeyama's alignment is undefined). Returns ``(scores, the aligned
    estimate's positions (P, 3))``; RPE is None when the path is shorter than ``rpe_delta_m``.
    With ``rpe_delta_frames``, RPE is over that many scored poses instead (mono: a metric segment
    length means nothing to a scale-free estimate; its translation part is in ground-truth metres
    after the Sim(3) scale)."""
    from evo.core import metrics  # optional heavy dependency (the slam extra): on use
    from evo.core.geometry import GeometryException
    from evo.core.units import Unit

    reference = _evo_trajectory(stamps_s, gt_rotations, gt_positions)
    aligned = copy.deepcopy(_evo_trajectory(stamps_s, est_rotations, est_positions))
    alignment, scale = "Sim(3)" if correct_scale else "SE(3)", 1.0
    try:
        _, _, scale = aligned.align(reference, correct_scale=correct_scale)
    except GeometryException:  # positions on a line (or a point): Umeyama is undefined
        aligned.align_origin(reference)
        alignment = "first pose (positions collinear: no SE(3)/Sim(3) alignment)"
    scores = {"poses": int(len(stamps_s)), "alignment": alignment, "scale": float(scale),
              "path_length_m": float(reference.path_length)}
    for key, relation in (("ate_m", metrics.PoseRelation.translation_part),
                          ("ate_rotation_deg", metrics.PoseRelation.rotation_angle_deg)):
        ape = metrics.APE(relation)
        ape.process_data((reference, aligned))
        scores[key] = _statistics(ape)
    if rpe_delta_frames is None:
        scores["rpe_delta_m"] = float(rpe_delta_m)
        rpe_delta = dict(delta=rpe_delta_m, delta_unit=Unit.meters, rel_delta_tol=RPE_DELTA_TOLERANCE,
                         all_pairs=True, pairs_from_reference=True)
    else:
        scores["rpe_delta_frames"] = int(rpe_delta_frames)
        rpe_delta = dict(delta=int(rpe_delta_frames), delta_unit=Unit.frames, all_pairs=True)
    for key, relation in (("rpe_translation_m", metrics.PoseRelation.translation_part),
                          ("rpe_rotation_deg", metrics.PoseRelation.rotation_angle_deg)):
        rpe = metrics.RPE(relation, **rpe_delta)
        try:
            rpe.process_data((reference, aligned))
            scores[key] = _statistics(rpe)
        except Exception as e:  # evo raises when no segment is rpe_delta_m long
            scores[key] = None
            scores["rpe_note"] = f"no RPE: {e}"
    return scores, np.asarray(aligned.positions_xyz)


def write_tum(path: Path, stamps_ns: np.ndarray, rotations: np.ndarray, positions: np.ndarray) -> Path:
    """TUM ``t tx ty tz qx qy qz qw`` with exact nanosecond stamps (evo_ape/evo_traj read it)."""
    lines = ["# timestamp tx ty tz qx qy qz qw (camera optical frame -> world)"]
    for stamp, rotation, position in zip(np.asarray(stamps_ns).tolist(), rotations, positions):
        q = rotation_to_quaternion(rotation)
        lines.append(f"{stamp // NS}.{stamp % NS:09d} " + " ".join(f"{v:.9f}" for v in (*position, *q)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


# --- reporting -----------------------------------------------------------------------------------
#: Rows of the table: (label, key in the method's summary, statistic, scale).
TABLE_ROWS = (
    ("ATE RMSE [cm]", "ate_m", "rmse", 100.0),
    ("ATE max [cm]", "ate_m", "max", 100.0),
    ("RPE translation RMSE [cm per {delta:g} m]", "rpe_translation_m", "rmse", 100.0),
    ("RPE rotation RMSE [deg per {delta:g} m]", "rpe_rotation_deg", "rmse", 1.0),
    ("keyframes", "backend", "keyframes", 1.0),
    ("lost frames", "backend", "lost", 1.0),
    ("keyframes per landmark", "backend", "observations_per_landmark", 1.0),
    ("stereo tracks / frame", "frontend", "stereo_tracks_per_frame", 1.0),
    ("track length [frames]", "frontend", "track_length_mean", 1.0),
    ("front-end [ms / frame]", "frontend", "ms_per_frame", 1.0),
    ("back-end [ms / frame]", "backend", "ms_per_frame", 1.0),
)
#: The monocular table: Sim(3)-aligned ATE, RPE between consecutive registered frames.
MONO_TABLE_ROWS = (
    ("ATE RMSE [cm] (Sim(3))", "ate_m", "rmse", 100.0),
    ("ATE max [cm]", "ate_m", "max", 100.0),
    ("ATE rotation RMSE [deg]", "ate_rotation_deg", "rmse", 1.0),
    ("RPE rotation RMSE [deg per frame]", "rpe_rotation_deg", "rmse", 1.0),
    ("RPE translation RMSE [cm per frame] (Sim(3) scale)", "rpe_translation_m", "rmse", 100.0),
    ("registered frames", "backend", "registered", 1.0),
    ("landmarks", "backend", "landmarks", 1.0),
    ("frames per landmark", "backend", "observations_per_landmark", 1.0),
    ("tracks / frame", "frontend", "tracks_per_frame", 1.0),
    ("track length [frames]", "frontend", "track_length_mean", 1.0),
    ("front-end [ms / frame]", "frontend", "ms_per_frame", 1.0),
    ("back-end [ms / frame]", "backend", "ms_per_frame", 1.0),
)


def format_table(results: Dict[str, dict], rows=TABLE_ROWS) -> str:
    """A markdown table, one column per method; a method that produced no trajectory (``failed``:
    the reason) reads "failed" in the first row, its reason in a line below the table."""
    names = list(results)
    scored = [r for r in results.values() if "failed" not in r]
    delta = scored[0].get("rpe_delta_m", 1.0) if scored else 1.0
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row, (label, key, statistic, scale) in enumerate(rows):
        cells = []
        for name in names:
            if "failed" in results[name] and row == 0:
                cells.append("failed")
                continue
            value = (results[name].get(key) or {}).get(statistic)
            cells.append("-" if value is None else f"{value * scale:.3g}" if abs(value * scale) < 100
                         else f"{value * scale:.0f}")
        lines.append(f"| {label.format(delta=delta)} | " + " | ".join(cells) + " |")
    lines += [f"\n{name} failed: {results[name]['failed']}" for name in names if "failed" in results[name]]
    return "\n".join(lines)


def plot_trajectories(groundtruth_xyz: np.ndarray, aligned: Dict[str, Tuple[np.ndarray, np.ndarray]],
                      path: Path, alignment: str = "SE(3)") -> Path:
    """Top view (x-z, the optical frame's ground plane) of the ground truth and every aligned
    estimate, and each method's position error over time (``aligned[name] = (t s, xyz (P, 3))``
    with its error (P,) appended)."""
    plt = _pyplot()
    fig, (top, error) = plt.subplots(1, 2, figsize=(11, 4.5))
    top.plot(groundtruth_xyz[:, 0], groundtruth_xyz[:, 2], "k--", lw=2, label="ground truth")
    for name, (t, xyz, err) in aligned.items():
        top.plot(xyz[:, 0], xyz[:, 2], lw=1.2, label=name)
        error.plot(t, err * 100, lw=1.2, label=name)
    top.set(xlabel="x [m]", ylabel="z [m]", title=f"trajectories ({alignment}-aligned), top view")
    top.axis("equal")
    top.legend(fontsize=8)
    error.set(xlabel="time [s]", ylabel="position error [cm]", title="absolute position error")
    error.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- command line ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="superpoint-eval-slam", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", type=Path, help="rosbag2 folder or file (sqlite3 or mcap), a ROS 1 .bag, or a folder of "
                   "frames + groundtruth.txt + K.txt (as superpoint-eval-posed reads it: monocular)")
    p.add_argument("--left-topic", help="left rectified image topic (stereo)")
    p.add_argument("--right-topic", help="right rectified image topic (stereo)")
    p.add_argument("--image-topic", help="rectified image topic of a mono bag (monocular back-end)")
    p.add_argument("--camera-info", default=None, help="(left) camera_info topic (default: next to the image topic)")
    p.add_argument("--right-camera-info", default=None, help="right camera_info topic (its P carries the baseline)")
    p.add_argument("--params", type=Path, default=None,
                   help="the node's parameter file (default: config/superpoint_stereo.yaml, mono: "
                   "superpoint_mono.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a front-end parameter, e.g. --set extractor.max_keypoints=500 (YAML value)")
    p.add_argument("--weights", default=None, help="shortcut for --set extractor.weights=PATH")
    p.add_argument("--device", default=None, help="shortcut for --set extractor.device=...")
    p.add_argument("--groundtruth", type=Path, default=None, help="TUM trajectory of the left camera")
    p.add_argument("--groundtruth-topic", default=None,
                   help="PoseStamped ground-truth topic in the bag (default: one named *ground_truth*)")
    p.add_argument("--baselines", default="", metavar="orb,sift,klt,sp-reference",
                   help="also run these front-ends through the same back-end (as superpoint-eval-bag)")
    p.add_argument("--rpe-delta", type=float, default=1.0, help="RPE segment length along the path [m] "
                   "(stereo; mono: between consecutive registered frames)")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--output", "-o", type=Path, default=Path("out/eval_slam"), help="folder for trajectories, "
                   "JSON, table and plot")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _frontends(baselines: List[str], params: dict):
    """``(name, front-end)`` in table order; built lazily so that one failing loads nothing more."""
    yield "superpoint", Frontend(params)
    for name in baselines:
        yield name, baseline_frontend(name, params)


def evaluate(args, params: dict) -> Tuple[Dict[str, dict], dict]:
    """Every front-end through the back-end, scored; writes the trajectories. ``(results, info)``."""
    bag = Path(args.bag)
    available = bags.check_image_topics(bag, [args.left_topic, args.right_topic])
    calibration = stereo_calibration(bag, args.left_topic, args.right_topic, available, args.camera_info,
                                     args.right_camera_info)
    groundtruth, gt_source = load_groundtruth(bag, available, args.groundtruth, args.groundtruth_topic)
    total = available[args.left_topic][1] if args.max_frames is None else min(args.max_frames,
                                                                              available[args.left_topic][1])
    config = VOConfig()
    trajectories = args.output / "trajectories"
    results, aligned, gt_written = {}, {}, None
    for name, frontend in _frontends(parse_baselines(args.baselines), params):
        try:
            run = run_method(name, frontend, bag, args.left_topic, args.right_topic, calibration, config,
                             args.max_frames, total, not args.quiet)
        except SlamError as e:
            raise SlamError(f"{name}: {e}") from None
        estimate = run.estimate
        mask, gt_rotations, gt_positions = groundtruth_at(estimate, groundtruth)
        stamps_s = estimate.stamps_ns[mask] / NS
        scores, aligned_xyz = score_trajectory(stamps_s, gt_rotations, gt_positions, estimate.rotations[mask],
                                               estimate.positions[mask], rpe_delta_m=args.rpe_delta)
        write_tum(trajectories / f"{name}.tum", estimate.stamps_ns, estimate.rotations, estimate.positions)
        if gt_written is None:  # ground truth at every processed frame that has one
            gt = [(s, *groundtruth.lookup(s, GT_MAX_DT_NS)) for s in run.frame_stamps_ns
                  if groundtruth.lookup(s, GT_MAX_DT_NS) is not None]
            gt_written = write_tum(trajectories / "groundtruth.tum", np.array([g[0] for g in gt], np.int64),
                                   np.array([g[1] for g in gt]), np.array([g[2] for g in gt]))
            gt_xyz = np.array([g[2] for g in gt])
        results[name] = {
            **scores, "weights": frontend.weights_path,
            "frames": len(run.frame_stamps_ns), "trajectory": str(trajectories / f"{name}.tum"),
            "backend": {**estimate.stats, "ms_per_frame": run.backend_ms},
            "frontend": {"stereo_tracks_per_frame": run.tracks_per_frame,
                         "track_length_mean": run.track_length_mean, "ms_per_frame": run.frontend_ms}}
        aligned[name] = (stamps_s - stamps_s[0], aligned_xyz, np.linalg.norm(aligned_xyz - gt_positions, axis=1))
    info = {"bag": str(bag), "groundtruth": gt_source, "calibration": calibration.__dict__,
            "backend_config": config.__dict__, "topics": {"left": args.left_topic, "right": args.right_topic},
            "groundtruth_tum": str(gt_written)}
    plot_trajectories(gt_xyz, aligned, args.output / "trajectories.png")
    return results, info


def evaluate_mono(args, params: dict) -> Tuple[Dict[str, dict], dict]:
    """Every front-end through the monocular back-end, scored after a Sim(3) alignment; a front-end
    the back-end cannot follow is reported as failed (with the reason), not an error."""
    if is_posed_folder(args.bag):
        source = posed_source(args.bag, args.max_frames)
    else:
        source = mono_bag_source(Path(args.bag), args.image_topic, args.camera_info, args.groundtruth,
                                 args.groundtruth_topic, args.max_frames)
    config = MonoConfig()
    trajectories = args.output / "trajectories"
    results, aligned, processed = {}, {}, []
    for name, frontend in _frontends(parse_baselines(args.baselines), params):
        try:
            run = run_mono_method(name, frontend, source, config, not args.quiet)
            estimate = run.estimate
            if len(estimate.stamps_ns) < MIN_SCORED_POSES:
                raise SlamError(f"only {len(estimate.stamps_ns)} of {len(run.frame_stamps_ns)} frames registered "
                                f"(tracking lost); need {MIN_SCORED_POSES} to score")
            mask, gt_rotations, gt_positions = groundtruth_at(estimate, source.groundtruth)
        except SlamError as e:
            results[name] = {"failed": str(e), "weights": frontend.weights_path}
            continue
        processed = processed or run.frame_stamps_ns
        stamps_s = estimate.stamps_ns[mask] / NS
        scores, aligned_xyz = score_trajectory(stamps_s, gt_rotations, gt_positions, estimate.rotations[mask],
                                               estimate.positions[mask], correct_scale=True, rpe_delta_frames=1)
        write_tum(trajectories / f"{name}.tum", estimate.stamps_ns, estimate.rotations, estimate.positions)
        results[name] = {
            **scores, "weights": frontend.weights_path,
            "frames": len(run.frame_stamps_ns), "trajectory": str(trajectories / f"{name}.tum"),
            "backend": {**estimate.stats, "ms_per_frame": run.backend_ms},
            "frontend": {"tracks_per_frame": run.tracks_per_frame, "track_length_mean": run.track_length_mean,
                         "ms_per_frame": run.frontend_ms}}
        aligned[name] = (stamps_s - stamps_s[0], aligned_xyz, np.linalg.norm(aligned_xyz - gt_positions, axis=1))
    if not aligned:
        reasons = "; ".join(f"{name}: {result['failed']}" for name, result in results.items())
        raise SlamError(f"no front-end gave a trajectory: {reasons}")
    gt = [(s, *source.groundtruth.lookup(s, GT_MAX_DT_NS)) for s in processed
          if source.groundtruth.lookup(s, GT_MAX_DT_NS) is not None]
    gt_written = write_tum(trajectories / "groundtruth.tum", np.array([g[0] for g in gt], np.int64),
                           np.array([g[1] for g in gt]), np.array([g[2] for g in gt]))
    info = {"input": source.description, "groundtruth": source.groundtruth_source, "K": source.K.tolist(),
            "backend": "mono", "backend_config": config.__dict__, "groundtruth_tum": str(gt_written)}
    plot_trajectories(np.array([g[2] for g in gt]), aligned, args.output / "trajectories.png", alignment="Sim(3)")
    return results, info


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    configure_process()
    mono = bool(args.image_topic) or is_posed_folder(args.bag)
    if not mono and not (args.left_topic and args.right_topic):
        print("superpoint-eval-slam: give --left-topic and --right-topic (a rectified stereo pair), --image-topic "
              "(mono), or a folder of frames + groundtruth.txt + K.txt", file=sys.stderr)
        return 2
    if mono and (args.left_topic or args.right_topic):
        print("superpoint-eval-slam: --left-topic/--right-topic are for a stereo bag; a posed folder or "
              "--image-topic runs the monocular back-end", file=sys.stderr)
        return 2
    try:
        overrides = parameter_overrides(args)
        parse_baselines(args.baselines)  # unknown names fail before any work
        if args.rpe_delta <= 0:
            raise ValueError(f"--rpe-delta must be > 0 m, got {args.rpe_delta}")
        params_file = args.params or default_params_file(stereo=not mono)
        params = load_params(params_file, overrides=overrides)
        args.output.mkdir(parents=True, exist_ok=True)
        results, info = (evaluate_mono if mono else evaluate)(args, params)
    except ImportError as e:
        print(f"superpoint-eval-slam: {e}; install the back-end's packages: pip install 'superpoint_ros[slam]'",
              file=sys.stderr)
        return 2
    except (bags.BagError, ParamsError, WeightsError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"superpoint-eval-slam: {e}", file=sys.stderr)
        return 2
    table = format_table(results, MONO_TABLE_ROWS if mono else TABLE_ROWS)
    document = {**info, "params_file": str(params_file), "parameters": dict(params), "methods": results}
    (args.output / "summary.json").write_text(json.dumps(document, indent=1, default=float) + "\n")
    (args.output / "table.md").write_text(table + "\n")
    print(f"ground truth: {info['groundtruth']}\nparameters: {params_file}\n")
    print(table)
    print(f"\nwrote {args.output / 'summary.json'}, table.md, trajectories.png, trajectories/*.tum "
          f"(evo_ape {info['groundtruth_tum']} {args.output / 'trajectories' / 'superpoint.tum'} "
          f"{'-as' if mono else '-a'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
