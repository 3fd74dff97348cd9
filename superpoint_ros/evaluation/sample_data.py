"""The sample bag: a rectified stereo camera moving smoothly inside a room papered with real photos.

The scene is a box (back wall, floor, ceiling, side walls), each face textured with one of
scikit-image's photos; frames are ray-cast exactly (so depth varies and the two-view geometry is
not degenerate), with a little seeded sensor noise. The camera follows a smooth known trajectory
(sideways sweep, forward dolly, gentle yaw/pitch/roll), so the ground truth is exact.

Written to ``<folder>/``:

- ``bag/``: rosbag2 (sqlite3 or mcap) with ``/stereo/left/image_rect``, ``/stereo/right/image_rect``
  (``mono8``) and both ``camera_info`` topics (``P`` of the right camera carries the baseline), plus
  ``/ground_truth/pose`` (geometry_msgs/PoseStamped, left camera in the world frame);
- ``groundtruth.tum``: TUM format ``t tx ty tz qx qy qz qw`` (left camera optical frame -> world);
- ``scene.json``: intrinsics, baseline, size, topics, frame rate, generator settings.

Camera frames use the optical convention (x right, y down, z forward). Same settings -> same bag.

Raw cameras (``SampleConf.distortion`` and/or ``raw_stereo``; off by default, the default bag is
unchanged): each camera's image is ray-cast through its distortion (``plumb_bob`` or
``equidistant``, coefficients in :data:`SAMPLE_DISTORTIONS`) and, with ``raw_stereo``, a small
rotation away from the rectified pair (:data:`RAW_STEREO_ROTATIONS`), so every raw pixel shows
exactly the scene point its CameraInfo (``D``, ``R``, ``P``) says. Image topics are then
``/stereo/{left,right}/image_raw``; the ground truth stays the *rectified* left camera's pose
(the frame ``P`` projects into), so it is as exact as the rectified bag's.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..camera_models import CameraModel, undistort_points
from ..io.bags import BagWriter, camera_info_message, header, image_message, msg_class

#: Topic names of the sample bag (the mono front-end uses the left camera).
TOPICS = {
    "left_image": "/stereo/left/image_rect",
    "right_image": "/stereo/right/image_rect",
    "left_info": "/stereo/left/camera_info",
    "right_info": "/stereo/right/camera_info",
    "ground_truth": "/ground_truth/pose",
}
#: Image topics of a bag with raw cameras (distorted and/or unrectified); the rest as TOPICS.
RAW_IMAGE_TOPICS = {"left_image": "/stereo/left/image_raw", "right_image": "/stereo/right/image_raw"}
FRAME_IDS = {"left": "stereo_left", "right": "stereo_right", "world": "world"}
#: Distortion coefficients of the raw sample cameras (CameraInfo ``D``): a EuRoC-like plumb_bob
#: lens (k1, k2, p1, p2, k3) and a wide equidistant (cv2.fisheye) lens (k1..k4), both with the
#: sample's focal length.
SAMPLE_DISTORTIONS = {
    "plumb_bob": (-0.28, 0.07, 2e-4, 2e-5, 0.0),
    "equidistant": (0.02, -0.01, 0.003, -0.0005),
}
#: ``raw_stereo``: rotation vectors (rad) of each raw camera's CameraInfo ``R`` (raw camera ->
#: rectified camera), as a stereo calibration of a slightly misaligned rig would find.
RAW_STEREO_ROTATIONS = {"left": (0.01, -0.015, 0.008), "right": (-0.012, 0.01, -0.006)}
START_TIME_NS = 1_700_000_000 * 1_000_000_000  # a plausible wall-clock epoch for the stamps
TRANSPORT_DELAY_NS = 3_000_000                  # bag receive time = stamp + 3 ms


@dataclass
class SampleConf:
    size: Tuple[int, int] = (480, 640)  # (height, width)
    num_frames: int = 60
    rate_hz: float = 10.0
    baseline_m: float = 0.12
    focal_factor: float = 0.65          # fx = fy = focal_factor * width
    noise_sigma: float = 1.5            # grey levels
    exposure_jitter: float = 0.0        # auto-exposure: each image's gain is exp(U(-j, j)), per camera
    motion_blur: float = 0.0            # shutter open for this fraction of the frame period, centred on
                                        # the stamp (0 = sharp); rendered as the mean of BLUR_SAMPLES poses
    seed: int = 0
    storage: str = "sqlite3"
    distortion: str = ""                # "" (rectified pinhole), or a SAMPLE_DISTORTIONS model: raw images
    raw_stereo: bool = False            # each camera rotated off the rectified pair by RAW_STEREO_ROTATIONS


@dataclass
class SampleBag:
    """Where everything is and what the camera is."""

    folder: Path
    bag: Path
    groundtruth: Path
    topics: Dict[str, str]
    frame_ids: Dict[str, str]
    K: np.ndarray
    baseline_m: float
    conf: SampleConf = field(default_factory=SampleConf)


# --- scene ---------------------------------------------------------------------------------------
# Each face: point on the plane, unit normal (pointing into the room), texture axes u, v (world),
# metres per texture pixel, texture name, brightness (a little shading so faces read as faces).
_FACES = [
    ((0, 0, 5.0), (0, 0, -1), (1, 0, 0), (0, 1, 0), 0.009, "astronaut", 1.0),          # back wall
    ((0, 1.3, 0), (0, -1, 0), (1, 0, 0), (0, 0, 1), 0.006, "coffee", 0.85),            # floor (y down)
    ((0, -2.2, 0), (0, 1, 0), (1, 0, 0), (0, 0, 1), 0.010, "rocket", 0.9),             # ceiling
    ((-2.6, 0, 0), (1, 0, 0), (0, 0, 1), (0, 1, 0), 0.008, "stereo_motorcycle", 0.95),  # left wall
    ((2.6, 0, 0), (-1, 0, 0), (0, 0, 1), (0, 1, 0), 0.010, "chelsea", 0.95),           # right wall
]
# Only photos of the evaluation split (superpoint_ros.data_splits): the model never trained on them.


def _texture(name: str) -> np.ndarray:
    from skimage import data  # optional (the eval/train extras): bundled photos

    image = getattr(data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle -> (left, right, disparity)
        image = image[0]
    if image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(image.astype(np.float32))


def intrinsics(conf: SampleConf) -> np.ndarray:
    height, width = conf.size
    f = conf.focal_factor * width
    return np.array([[f, 0, (width - 1) / 2.0], [0, f, (height - 1) / 2.0], [0, 0, 1]], np.float64)


def has_raw_cameras(conf: SampleConf) -> bool:
    return bool(conf.distortion) or conf.raw_stereo


def topics_for(conf: SampleConf) -> Dict[str, str]:
    """The bag's topic names: TOPICS, with the image topics ``image_raw`` for raw cameras."""
    return {**TOPICS, **RAW_IMAGE_TOPICS} if has_raw_cameras(conf) else dict(TOPICS)


def sample_cameras(conf: SampleConf) -> Dict[str, CameraModel]:
    """``{"left", "right"}`` -> the :class:`CameraModel` each camera's CameraInfo describes: K of
    :func:`intrinsics`, ``conf.distortion``, ``R`` (identity unless ``raw_stereo``), and ``P`` of
    the rectified pair (``P[0, 3] = -fx * baseline`` for the right camera)."""
    if conf.distortion and conf.distortion not in SAMPLE_DISTORTIONS:
        raise ValueError(f"unknown sample distortion {conf.distortion!r} (use {', '.join(SAMPLE_DISTORTIONS)})")
    K = intrinsics(conf)
    height, width = conf.size
    cameras = {}
    for side, tx in (("left", 0.0), ("right", -K[0, 0] * conf.baseline_m)):
        rotation = cv2.Rodrigues(np.array(RAW_STEREO_ROTATIONS[side]))[0] if conf.raw_stereo else None
        cameras[side] = CameraModel(width, height, K, SAMPLE_DISTORTIONS.get(conf.distortion, ()), conf.distortion,
                                    R=rotation, P=np.hstack([K, [[tx], [0.0], [0.0]]]))
    return cameras


def camera_rays(camera: CameraModel) -> np.ndarray:
    """``(H, W, 3)`` float64: the ray of every raw pixel in the *rectified* camera frame (through
    the distortion, then ``R``), scaled to z = 1 (so :func:`render`'s ray parameter is the depth)."""
    xs, ys = np.meshgrid(np.arange(camera.width, dtype=np.float64), np.arange(camera.height, dtype=np.float64))
    normalised = undistort_points(camera, np.stack([xs.ravel(), ys.ravel()], axis=1))
    if not np.all(np.isfinite(normalised)):
        raise ValueError("the sample camera's distortion is not invertible over the whole image")
    rays = np.hstack([normalised, np.ones((len(normalised), 1))]) @ camera.R.T
    return (rays / rays[:, 2:3]).reshape(camera.height, camera.width, 3)


def rotation_matrix(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Camera-to-world rotation from yaw (about y, down), pitch (about x) and roll (about z), rad."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return r_yaw @ r_pitch @ r_roll


def pose_at(t: float, conf: SampleConf) -> Tuple[np.ndarray, np.ndarray]:
    """``(R_world_cam (3, 3), C_world (3,))`` of the left camera ``t`` seconds from the start: one
    smooth loop over the sequence (sideways sweep, forward dolly and back, small yaw/pitch/roll)."""
    duration = conf.num_frames / conf.rate_hz
    phase = 2 * np.pi * t / max(duration, 1e-9)
    centre = np.array([0.7 * np.sin(phase), 0.12 * np.sin(2 * phase), 0.8 * (1 - np.cos(phase))])
    rotation = rotation_matrix(np.deg2rad(-9) * np.sin(phase), np.deg2rad(4) * np.sin(2 * phase + 0.5),
                               np.deg2rad(2) * np.sin(phase + 1.0))
    return rotation, centre


def trajectory(conf: SampleConf) -> List[Tuple[float, np.ndarray, np.ndarray]]:
    """``[(t seconds from start, R_world_cam (3, 3), C_world (3,))]`` of the left camera per frame."""
    return [(i / conf.rate_hz, *pose_at(i / conf.rate_hz, conf)) for i in range(conf.num_frames)]


#: Poses averaged over the shutter interval when ``SampleConf.motion_blur > 0``.
BLUR_SAMPLES = 7


def render_exposure(textures, K: np.ndarray, t: float, conf: SampleConf, offset: np.ndarray,
                    rays_cam: Optional[np.ndarray] = None) -> np.ndarray:
    """The image of the camera ``offset`` (camera frame, m; the right camera is at the baseline)
    from the left camera at time ``t``: sharp, or the mean over ``conf.motion_blur`` of a period.
    ``rays_cam``: per-pixel rays of a raw camera (:func:`camera_rays`); default the pinhole K's."""
    times = [t] if conf.motion_blur <= 0 else \
        t + conf.motion_blur / conf.rate_hz * (np.arange(BLUR_SAMPLES) / (BLUR_SAMPLES - 1) - 0.5)
    images = []
    for sample in times:
        rotation, centre = pose_at(float(sample), conf)
        images.append(render(textures, K, rotation, centre + rotation @ offset, conf.size, rays_cam)[0])
    return images[0] if len(images) == 1 else np.mean(images, axis=0, dtype=np.float32)


def render(textures: Dict[str, np.ndarray], K: np.ndarray, rotation: np.ndarray, centre: np.ndarray,
           size: Tuple[int, int], rays_cam: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Ray-cast the room: ``(float32 gray image in 0..255, depth z along the optical axis (m))``.
    ``rays_cam``: ``(H, W, 3)`` camera-frame rays with z = 1 (default: the pinhole ``K``'s)."""
    height, width = size
    if rays_cam is None:
        xs, ys = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
        rays_cam = np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones_like(xs)], axis=-1)
    rays = rays_cam @ rotation.T  # world directions; the camera-frame z component is 1
    best_t = np.full((height, width), np.inf)
    image = np.zeros((height, width), np.float32)
    for origin, normal, u_axis, v_axis, m_per_px, name, brightness in _FACES:
        origin, normal = np.asarray(origin, float), np.asarray(normal, float)
        denom = rays @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((origin - centre) @ normal) / denom
        hit = (denom < -1e-9) & (t > 0) & (t < best_t)
        if not hit.any():
            continue
        points = centre + rays * t[..., None]
        texture = textures[name]
        th, tw = texture.shape
        map_x = ((points - origin) @ np.asarray(u_axis, float) / m_per_px + tw / 2).astype(np.float32)
        map_y = ((points - origin) @ np.asarray(v_axis, float) / m_per_px + th / 2).astype(np.float32)
        sampled = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        image[hit] = sampled[hit] * brightness
        best_t[hit] = t[hit]
    return image, best_t  # t is the depth: the ray's camera z component is 1


def rectified_depth(conf: SampleConf, index: int) -> np.ndarray:
    """``(H, W)`` float64 depth (m, along the optical axis) of the *rectified* left camera (the
    pinhole ``K`` of :func:`intrinsics`, the ground-truth pose) at frame ``index``: the exact
    depth behind every rectified pixel, e.g. for ground-truth disparities ``fx * baseline / z``."""
    textures = {face[5]: _texture(face[5]) for face in _FACES}
    rotation, centre = pose_at(index / conf.rate_hz, conf)
    return render(textures, intrinsics(conf), rotation, centre, conf.size)[1]


def true_disparities(conf: SampleConf, index: int, rectified_left_xy: np.ndarray,
                     max_relative_depth_step: float = 0.02) -> np.ndarray:
    """``(K,)`` float64 px: the exact stereo disparity ``fx * baseline / z`` at each rectified
    left position ``(K, 2)`` xy px of frame ``index``; NaN outside the image and near depth edges
    (the 3x3 depths around the pixel differ by more than ``max_relative_depth_step``), where a
    detector's sub-pixel offset could land on the other surface."""
    depth = rectified_depth(conf, index)
    height, width = conf.size
    xy = np.round(np.asarray(rectified_left_xy, np.float64)).astype(np.int64).reshape(-1, 2)
    out = np.full(len(xy), np.nan)
    inside = np.flatnonzero(np.all((xy >= 1) & (xy < [width - 1, height - 1]), axis=1))
    fx = intrinsics(conf)[0, 0]
    for k in inside:
        window = depth[xy[k, 1] - 1:xy[k, 1] + 2, xy[k, 0] - 1:xy[k, 0] + 2]
        if window.max() - window.min() < max_relative_depth_step * window.min():
            out[k] = fx * conf.baseline_m / depth[xy[k, 1], xy[k, 0]]
    return out


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """3x3 rotation -> unit quaternion ``(x, y, z, w)`` with w >= 0."""
    from scipy.spatial.transform import Rotation  # optional: scipy comes with scikit-image (the eval extra), not a pip requirement

    q = Rotation.from_matrix(rotation).as_quat()
    return q if q[3] >= 0 else -q


def write_sample_bag(folder: Path, conf: SampleConf = SampleConf(), overwrite: bool = False) -> SampleBag:
    """Render the sequence and write bag + ground truth + scene.json into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    K = intrinsics(conf)
    height, width = conf.size
    textures = {face[5]: _texture(face[5]) for face in _FACES}
    rng = np.random.default_rng(conf.seed)
    # its own stream, so that exposure_jitter=0 renders exactly the images it always did
    exposure_rng = np.random.default_rng([conf.seed, 1])
    p_right = np.hstack([K, np.array([[-K[0, 0] * conf.baseline_m], [0], [0]])])
    topics = topics_for(conf)
    cameras = sample_cameras(conf) if has_raw_cameras(conf) else None
    rays = {side: camera_rays(camera) for side, camera in cameras.items()} if cameras else {}
    PoseStamped = msg_class("geometry_msgs/msg/PoseStamped")
    Pose, Point, Quaternion = (msg_class(f"geometry_msgs/msg/{n}") for n in ("Pose", "Point", "Quaternion"))
    period_ns = int(round(1e9 / conf.rate_hz))
    bag_path = folder / "bag"
    tum_lines = []
    with BagWriter(bag_path, storage=conf.storage, overwrite=overwrite) as bag:
        for index, (t, rotation, centre) in enumerate(trajectory(conf)):
            stamp = START_TIME_NS + index * period_ns
            log_time = stamp + TRANSPORT_DELAY_NS
            for side, offset in (("left", np.zeros(3)), ("right", np.array([conf.baseline_m, 0.0, 0.0]))):
                image = render_exposure(textures, K, t, conf, offset, rays.get(side))
                if conf.exposure_jitter > 0:
                    image *= np.float32(np.exp(exposure_rng.uniform(-conf.exposure_jitter, conf.exposure_jitter)))
                image += rng.normal(0.0, conf.noise_sigma, image.shape).astype(np.float32)
                gray = np.clip(image + 0.5, 0, 255).astype(np.uint8)
                frame_id = FRAME_IDS[side]
                info = camera_info_message(K, conf.size, stamp, frame_id, p=p_right if side == "right" else None) \
                    if cameras is None else raw_camera_info(cameras[side], stamp, frame_id)
                bag.write(topics[f"{side}_info"], info, log_time)
                bag.write(topics[f"{side}_image"], image_message(gray, stamp, frame_id), log_time)
            q = rotation_to_quaternion(rotation)
            pose = Pose(position=Point(x=float(centre[0]), y=float(centre[1]), z=float(centre[2])),
                        orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))
            bag.write(topics["ground_truth"], PoseStamped(header=header(stamp, FRAME_IDS["world"]), pose=pose), log_time)
            tum_lines.append(f"{stamp // 1_000_000_000}.{stamp % 1_000_000_000:09d} " + " ".join(f"{v:.9f}" for v in (*centre, *q)))
    groundtruth = folder / "groundtruth.tum"
    groundtruth.write_text("# timestamp tx ty tz qx qy qz qw (left camera optical frame in world)\n"
                           + "\n".join(tum_lines) + "\n")
    scene = {"K": K.tolist(), "baseline_m": conf.baseline_m, "size_hw": [height, width], "topics": topics,
             "frame_ids": FRAME_IDS, "conf": asdict(conf), "faces": [f[5] for f in _FACES]}
    if cameras:
        scene["cameras"] = {side: {"distortion_model": c.distortion_model, "D": c.D.tolist(), "R": c.R.tolist(),
                                   "P": c.P.tolist()} for side, c in cameras.items()}
    (folder / "scene.json").write_text(json.dumps(scene, indent=2) + "\n")
    return SampleBag(folder, bag_path, groundtruth, topics, dict(FRAME_IDS), K, conf.baseline_m, conf)


def raw_camera_info(camera: CameraModel, stamp_ns: int, frame_id: str):
    """sensor_msgs/CameraInfo of a raw sample camera: its distortion model and D, R and P."""
    from dataclasses import replace

    info = camera_info_message(camera.K, camera.image_size, stamp_ns, frame_id, p=camera.P,
                               d=camera.D if camera.D.size else None)
    return replace(info, distortion_model=camera.distortion_model or "plumb_bob", r=camera.R.reshape(-1).copy())


def ensure_sample_bag(cache_dir: Path, conf: SampleConf = SampleConf()) -> SampleBag:
    """The sample bag for ``conf`` in ``cache_dir/<settings>``, generated only when missing."""
    key = f"sample_{conf.size[0]}x{conf.size[1]}_{conf.num_frames}f_{conf.rate_hz:g}hz_s{conf.seed}_{conf.storage}"
    if conf.exposure_jitter > 0:
        key += f"_exposure{conf.exposure_jitter:g}"
    if conf.motion_blur > 0:
        key += f"_blur{conf.motion_blur:g}"
    if conf.distortion:
        key += f"_{conf.distortion}"
    if conf.raw_stereo:
        key += "_rawstereo"
    folder = Path(cache_dir) / key
    if (folder / "scene.json").is_file() and (folder / "bag" / "metadata.yaml").is_file():
        K = intrinsics(conf)
        return SampleBag(folder, folder / "bag", folder / "groundtruth.tum", topics_for(conf), dict(FRAME_IDS), K,
                         conf.baseline_m, conf)
    return write_sample_bag(folder, conf, overwrite=True)
