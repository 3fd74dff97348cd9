"""The node's message layouts on standard ``sensor_msgs/PointCloud2``, with an exact encode/decode.

Three layouts (one point per row, ``height = 1``, little-endian, ``is_dense = true``; see
docs/messages.md):

- **features** (``features``, ``features_right``): ``track_id`` float64 (an integer, exact below
  2**53; PointField has no int64), ``x``, ``y`` float32 px (pixel centres at integers, x right,
  y down), ``score`` float32, ``track_length`` uint32 frames, ``descriptor`` float32 x D
  (``count = D``, unit L2 norm), then ``x_n``, ``y_n`` float32 normalised undistorted
  coordinates, ``vx``, ``vy`` float32 px/s and ``vx_n``, ``vy_n`` float32 normalised units/s
  (NaN = unknown: no intrinsics for the frame; messages from before these fields decode with NaN).
- **stereo matches** (``stereo_matches``): ``left_index``, ``right_index`` uint32 rows of the
  ``features`` / ``features_right`` messages with the *same header stamp*, ``x_left``, ``y_left``,
  ``x_right``, ``y_right``, ``disparity`` (x_left - x_right), ``distance`` float32.
- **temporal matches** (``temporal_matches``): ``previous_index``, ``current_index`` uint32 rows of
  the features message stamped ``previous_stamp`` and of the one with this header's stamp;
  ``previous_stamp_sec`` int32 + ``previous_stamp_nanosec`` uint32 (the same in every row);
  ``distance`` float32; ``inlier`` uint8 (1 = passed the geometric check).

Packing/unpacking is plain numpy with structured dtypes (``bytes`` out, no per-point Python), so
it is also what the rosbag evaluator uses to write bags; only :func:`to_pointcloud2` and
:func:`frame_messages` touch message classes, and they take them as arguments (rclpy's, or
``rosbags``'). :func:`frame_messages` is the one place a front-end result becomes the node's
output messages: the node publishes them, ``superpoint-eval-bag --output-bag`` writes them.

A fourth output is not a PointCloud2: :func:`vins_feature_cloud` builds the
``sensor_msgs/PointCloud`` VINS-Mono / VINS-Fusion estimators read (``vins_feature``), and
:func:`decode_vins_feature` reads it back.
"""
from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..stamps import ros_time_parts

# sensor_msgs/PointField datatype constants
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
_NUMPY = {INT8: "i1", UINT8: "u1", INT16: "i2", UINT16: "u2", INT32: "i4", UINT32: "u4", FLOAT32: "f4",
          FLOAT64: "f8"}
_FROM_NUMPY = {np.dtype(v).str[1:]: k for k, v in _NUMPY.items()}


class CloudLayoutError(ValueError):
    """A PointCloud2 (or a VINS PointCloud) that does not have the expected layout; the reason is
    in the message."""


@dataclass(frozen=True)
class Field:
    """One PointField: ``name``, byte ``offset``, PointField ``datatype``, ``count``."""

    name: str
    offset: int
    datatype: int
    count: int = 1


def layout(columns: Sequence[Tuple[str, int, int]]) -> Tuple[List[Field], int]:
    """Pack ``(name, datatype, count)`` columns back to back -> ``(fields, point_step)``."""
    fields, offset = [], 0
    for name, datatype, count in columns:
        fields.append(Field(name, offset, datatype, count))
        offset += np.dtype(_NUMPY[datatype]).itemsize * count
    return fields, offset


def structured_dtype(fields: Sequence[Field], point_step: int, big_endian: bool = False) -> np.dtype:
    order = ">" if big_endian else "<"
    return np.dtype({
        "names": [f.name for f in fields],
        "formats": [(order + _NUMPY[f.datatype], (f.count,)) if f.count != 1 else order + _NUMPY[f.datatype]
                    for f in fields],
        "offsets": [f.offset for f in fields],
        "itemsize": point_step,
    })


#: Camera-geometry columns of the features layout (issue 16), after the descriptor so that every
#: older field keeps its offset. float32, because float32 rounds a normalised coordinate with
#: |x_n| < 2 to within 2**-24 (6.0e-8), i.e. 6.0e-5 px through a 1000 px focal length: the
#: order of the float32 rounding of the ``x``, ``y`` pixels they come from (3.1e-5 px for
#: 512 <= x < 1024) and far below a keypoint's localisation noise, so float64 would add 24 bytes
#: a point and no information. NaN = unknown (see :func:`pack_features`).
GEOMETRY_COLUMNS = [("x_n", FLOAT32, 1), ("y_n", FLOAT32, 1), ("vx", FLOAT32, 1), ("vy", FLOAT32, 1),
                    ("vx_n", FLOAT32, 1), ("vy_n", FLOAT32, 1)]


def feature_columns(descriptor_dim: int):
    return [("track_id", FLOAT64, 1), ("x", FLOAT32, 1), ("y", FLOAT32, 1), ("score", FLOAT32, 1),
            ("track_length", UINT32, 1), ("descriptor", FLOAT32, int(descriptor_dim))] + GEOMETRY_COLUMNS


STEREO_COLUMNS = [("left_index", UINT32, 1), ("right_index", UINT32, 1), ("x_left", FLOAT32, 1),
                  ("y_left", FLOAT32, 1), ("x_right", FLOAT32, 1), ("y_right", FLOAT32, 1),
                  ("disparity", FLOAT32, 1), ("distance", FLOAT32, 1)]
TEMPORAL_COLUMNS = [("previous_index", UINT32, 1), ("current_index", UINT32, 1), ("previous_stamp_sec", INT32, 1),
                    ("previous_stamp_nanosec", UINT32, 1), ("distance", FLOAT32, 1), ("inlier", UINT8, 1)]


@dataclass
class PackedCloud:
    """A PointCloud2 body: ``fields``, ``point_step``, ``width`` (points) and ``data`` bytes."""

    fields: List[Field]
    point_step: int
    width: int
    data: bytes


def pack(columns, values: Dict[str, np.ndarray]) -> PackedCloud:
    """Columns + one array per column (row-aligned) -> :class:`PackedCloud` (vectorised)."""
    fields, point_step = layout(columns)
    n = len(next(iter(values.values()))) if values else 0
    rows = np.zeros(n, dtype=structured_dtype(fields, point_step))
    for f in fields:
        column = np.asarray(values[f.name])
        if len(column) != n:
            raise ValueError(f"column {f.name!r} has {len(column)} rows, expected {n}")
        # (N, 1) for a count-1 field (e.g. 1-d descriptors) is the same bytes as (N,)
        rows[f.name] = column.reshape(n) if f.count == 1 else column.reshape(n, f.count)
    return PackedCloud(fields, point_step, n, rows.tobytes())


def xy_column(values: Optional[np.ndarray], n: int, name: str) -> np.ndarray:
    """``(N, 2)`` per-point xy values as float32, or all NaN (unknown) for ``None``."""
    if values is None:
        return np.full((n, 2), np.nan, np.float32)
    values = np.asarray(values)
    if values.shape != (n, 2):
        raise ValueError(f"{name} must be (N, 2) = ({n}, 2) like the keypoints, got shape {values.shape}")
    return values.astype(np.float32)


def pack_features(keypoints: np.ndarray, scores: np.ndarray, descriptors: np.ndarray, track_ids: np.ndarray,
                  track_lengths: Optional[np.ndarray] = None, normalized: Optional[np.ndarray] = None,
                  velocity_px: Optional[np.ndarray] = None,
                  velocity_normalized: Optional[np.ndarray] = None) -> PackedCloud:
    """Features of one image -> the *features* layout. ``keypoints`` ``(N, 2)`` xy px,
    ``scores`` ``(N,)``, ``descriptors`` ``(N, D)``, ``track_ids`` ``(N,)`` int64; optional
    ``(N, 2)`` row-aligned ``normalized`` (undistorted normalised xy), ``velocity_px`` (px/s) and
    ``velocity_normalized`` (normalised units/s), sent as float32.

    The layout is the same with or without them: one left out (``None``: no intrinsics, or not
    computed) travels as NaN in every row, and a NaN in a given row means unknown for that
    point (e.g. outside the distortion model's valid region)."""
    n = len(keypoints)
    track_ids = np.asarray(track_ids, dtype=np.int64)
    if n and (track_ids.min() < 0 or track_ids.max() >= 2 ** 53):
        raise ValueError("track ids must be in [0, 2**53) to travel exactly as float64")
    keypoints = np.asarray(keypoints, dtype=np.float32).reshape(n, 2)
    normalized, velocity_px = xy_column(normalized, n, "normalized"), xy_column(velocity_px, n, "velocity_px")
    velocity_normalized = xy_column(velocity_normalized, n, "velocity_normalized")
    return pack(feature_columns(np.asarray(descriptors).shape[1] if np.ndim(descriptors) == 2 else 0), {
        "track_id": track_ids.astype(np.float64), "x": keypoints[:, 0], "y": keypoints[:, 1],
        "score": np.asarray(scores, np.float32),
        "track_length": np.ones(n, np.uint32) if track_lengths is None else np.asarray(track_lengths, np.uint32),
        "descriptor": np.asarray(descriptors, np.float32),
        "x_n": normalized[:, 0], "y_n": normalized[:, 1], "vx": velocity_px[:, 0], "vy": velocity_px[:, 1],
        "vx_n": velocity_normalized[:, 0], "vy_n": velocity_normalized[:, 1]})


def pack_stereo_matches(indices: np.ndarray, distances: np.ndarray, left_keypoints: np.ndarray,
                        right_keypoints: np.ndarray, disparities: Optional[np.ndarray] = None) -> PackedCloud:
    """Stereo matches ``(K, 2)`` (left idx, right idx) -> the *stereo matches* layout.
    ``disparities``: ``(K,)`` px in the rectified frame, for a raw pair whose keypoints are raw
    pixels (default: ``x_left - x_right`` of the keypoints, a rectified pair)."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1, 2)
    lk, rk = np.asarray(left_keypoints, np.float32)[indices[:, 0]], np.asarray(right_keypoints, np.float32)[indices[:, 1]]
    disparity = lk[:, 0] - rk[:, 0] if disparities is None else np.asarray(disparities, np.float32).reshape(-1)
    if len(disparity) != len(indices):
        raise ValueError(f"disparities must be ({len(indices)},), got {len(disparity)} values")
    return pack(STEREO_COLUMNS, {"left_index": indices[:, 0], "right_index": indices[:, 1], "x_left": lk[:, 0],
                                 "y_left": lk[:, 1], "x_right": rk[:, 0], "y_right": rk[:, 1],
                                 "disparity": disparity, "distance": np.asarray(distances, np.float32)})


def pack_temporal_matches(indices: np.ndarray, distances: np.ndarray, inliers: np.ndarray,
                          previous_stamp: Tuple[int, int]) -> PackedCloud:
    """Temporal matches ``(M, 2)`` (previous idx, current idx) -> the *temporal matches* layout;
    ``previous_stamp``: ``(sec, nanosec)`` of the previous frame's header."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1, 2)
    m = len(indices)
    return pack(TEMPORAL_COLUMNS, {
        "previous_index": indices[:, 0], "current_index": indices[:, 1],
        "previous_stamp_sec": np.full(m, previous_stamp[0], np.int32),
        "previous_stamp_nanosec": np.full(m, previous_stamp[1], np.uint32),
        "distance": np.asarray(distances, np.float32), "inlier": np.asarray(inliers, np.uint8)})


def to_pointcloud2(header: Any, packed: PackedCloud, cloud_type: Any = None, field_type: Any = None,
                   data_as_array: bool = False):
    """Build a PointCloud2 message. Defaults to rclpy's ``sensor_msgs`` classes; pass the
    ``rosbags`` typestore classes and ``data_as_array=True`` to build bag messages."""
    if cloud_type is None or field_type is None:
        from sensor_msgs.msg import PointCloud2, PointField  # a ROS install: only for rclpy messages

        cloud_type, field_type = cloud_type or PointCloud2, field_type or PointField
    fields = [field_type(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in packed.fields]
    data = np.frombuffer(packed.data, np.uint8) if data_as_array else packed.data
    return cloud_type(header=header, height=1, width=packed.width, fields=fields, is_bigendian=False,
                      point_step=packed.point_step, row_step=packed.point_step * packed.width, data=data,
                      is_dense=True)


#: The node's output messages per frame, in publishing order (relative topic names).
FRAME_OUTPUTS = ("features", "temporal_matches", "features_right", "stereo_matches")


#: The optional VINS-compatible output (:func:`vins_feature_cloud`; relative topic name).
VINS_OUTPUT = "vins_feature"


@dataclass(frozen=True)
class MessageClasses:
    """The message classes :func:`frame_messages` builds with: rclpy's (the node) or a rosbags
    typestore's (the bag writer, ``data_as_array=True``: rosbags holds ``data`` and a channel's
    ``values`` as numpy arrays). The last three are only needed for :func:`vins_feature_cloud`."""

    header: Any  # std_msgs/msg/Header
    time: Any  # builtin_interfaces/msg/Time
    cloud: Any  # sensor_msgs/msg/PointCloud2
    field: Any  # sensor_msgs/msg/PointField
    data_as_array: bool = False
    point_cloud: Any = None  # sensor_msgs/msg/PointCloud
    point32: Any = None  # geometry_msgs/msg/Point32
    channel: Any = None  # sensor_msgs/msg/ChannelFloat32

    @classmethod
    def from_typestore(cls, types: Dict[str, Any]) -> "MessageClasses":
        """All the classes from a rosbags typestore's ``types`` (``get_typestore(...).types``),
        with ``data_as_array=True``: what a bag writer builds with."""
        return cls(types["std_msgs/msg/Header"], types["builtin_interfaces/msg/Time"],
                   types["sensor_msgs/msg/PointCloud2"], types["sensor_msgs/msg/PointField"], data_as_array=True,
                   point_cloud=types["sensor_msgs/msg/PointCloud"], point32=types["geometry_msgs/msg/Point32"],
                   channel=types["sensor_msgs/msg/ChannelFloat32"])


def make_header(classes: MessageClasses, stamp_ns: int, frame_id: str):
    """A std_msgs/Header stamped ``stamp_ns`` (integer nanoseconds, exact)."""
    sec, nanosec = ros_time_parts(stamp_ns)
    return classes.header(stamp=classes.time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def frame_messages(result: Any, frame_id: str, classes: MessageClasses,
                   right_frame_id: Optional[str] = None, vins_layout: Optional[str] = None) -> Dict[str, Any]:
    """A front-end result (:class:`superpoint_ros.frontend.FrameResult`) -> the node's output
    messages, keyed by :data:`FRAME_OUTPUTS` name, those that exist for it: ``features`` always,
    ``temporal_matches`` unless it is the first frame after a reset, ``features_right`` and
    ``stereo_matches`` for a stereo pair; with ``vins_layout`` (``"fusion"`` or ``"mono"``) also
    :data:`VINS_OUTPUT` (:func:`vins_feature_cloud`) for frames with intrinsics.

    Every header is stamped ``result.stamp_ns`` (the input header's stamp, exact); ``frame_id``
    for the left/mono outputs, ``right_frame_id`` (default ``frame_id``) for ``features_right``:
    the pair is one frame, with the left stamp on both feature sets. Temporal matches carry
    ``result.temporal.previous_stamp_ns``, the earlier frame's header stamp, exactly.
    Right features have no tracks: their ``track_id`` is 0, their velocities 0 (as a new track's).
    The features' ``x_n``... fields come from ``result.normalized`` / ``right_normalized``,
    ``velocity_px`` and ``velocity_normalized`` (NaN where those are ``None``).
    """
    header = make_header(classes, result.stamp_ns, frame_id)

    def cloud(packed: PackedCloud, cloud_header=header):
        return to_pointcloud2(cloud_header, packed, classes.cloud, classes.field, classes.data_as_array)

    f = result.features
    out = {"features": cloud(pack_features(f.keypoints, f.scores, f.descriptors, result.track_ids,
                                           result.track_lengths, result.normalized, result.velocity_px,
                                           result.velocity_normalized))}
    t = result.temporal
    if t is not None:
        out["temporal_matches"] = cloud(pack_temporal_matches(t.indices, t.distances, t.inliers,
                                                              ros_time_parts(t.previous_stamp_ns)))
    if result.stereo is not None:
        r = result.right_features
        right_normalized = result.right_normalized
        still = np.zeros((len(r), 2), np.float32)
        right_header = make_header(classes, result.stamp_ns, frame_id if right_frame_id is None else right_frame_id)
        out["features_right"] = cloud(pack_features(r.keypoints, r.scores, r.descriptors, np.zeros(len(r), np.int64),
                                                    None, right_normalized, still,
                                                    None if right_normalized is None else still), right_header)
        raw_pair = result.stereo.left_rectified is not None  # keypoints raw, disparities rectified
        out["stereo_matches"] = cloud(pack_stereo_matches(result.stereo.indices, result.stereo.distances,
                                                          f.keypoints, r.keypoints,
                                                          result.stereo.disparities if raw_pair else None))
    if vins_layout is not None:
        vins = vins_feature_cloud(result, classes, vins_layout, frame_id)
        if vins is not None:
            out[VINS_OUTPUT] = vins
    return out


# --- the VINS-Mono / VINS-Fusion feature message (sensor_msgs/PointCloud) ---------------------
VINS_LAYOUTS = ("fusion", "mono")
#: Channel order the estimators read (by position; the names are ours, VINS never sets them).
#: Fusion's estimator reads channels 6..8 (a ground-truth point) whenever there are more than 5,
#: so it gets all nine, the last three 0.
VINS_CHANNELS = {
    "fusion": ("id_of_point", "camera_id", "u_of_point", "v_of_point", "velocity_x_of_point", "velocity_y_of_point",
               "ground_truth_x", "ground_truth_y", "ground_truth_z"),
    "mono": ("id_of_point", "u_of_point", "v_of_point", "velocity_x_of_point", "velocity_y_of_point"),
}
#: float32 holds every integer below 2**24 exactly: feature ids wrap modulo this (divided by the
#: number of cameras for VINS-Mono's ``id * NUM_OF_CAM + camera`` encoding).
VINS_ID_MODULUS = 2 ** 24


@dataclass
class VinsObservations:
    """One row per point of a VINS feature message, cameras in order (every left observation,
    then the right ones): ``feature_ids`` ``(N,)`` int64 (wrapped, :data:`VINS_ID_MODULUS`),
    ``camera_ids`` ``(N,)`` int64 (0 left/mono, 1 right), ``normalized`` ``(N, 2)`` float32
    undistorted normalised xy (the points' x, y; z = 1), ``pixels`` ``(N, 2)`` float32 raw xy px,
    ``velocity`` ``(N, 2)`` float32 normalised units/s."""

    feature_ids: np.ndarray
    camera_ids: np.ndarray
    normalized: np.ndarray
    pixels: np.ndarray
    velocity: np.ndarray

    def __len__(self) -> int:
        return int(self.feature_ids.shape[0])


def _check_vins_layout(layout: str, num_cameras: int) -> None:
    if layout not in VINS_LAYOUTS:
        raise ValueError(f"VINS layout must be one of {VINS_LAYOUTS}, got {layout!r}")
    if num_cameras not in (1, 2):
        raise ValueError(f"num_cameras (VINS-Mono's NUM_OF_CAM) must be 1 or 2, got {num_cameras!r}")


def wrap_vins_ids(track_ids: np.ndarray, layout: str = "fusion", num_cameras: int = 1) -> np.ndarray:
    """Track ids ``(N,)`` int64 -> the feature ids a VINS message carries: modulo
    :data:`VINS_ID_MODULUS` (Fusion) or modulo ``VINS_ID_MODULUS // num_cameras`` (Mono, so that
    ``id * num_cameras + camera`` stays below 2**24), i.e. exact float32 integers."""
    modulus = VINS_ID_MODULUS if layout == "fusion" else VINS_ID_MODULUS // num_cameras
    return np.asarray(track_ids, np.int64) % modulus


def vins_observations(result: Any, layout: str = "fusion", num_cameras: int = 1) -> Optional[VinsObservations]:
    """The points a VINS feature message of ``result`` holds (``None`` without intrinsics:
    ``result.normalized`` unset). Left/mono points: every keypoint whose normalised coordinates
    are finite, for ``"mono"`` only tracked ones (``track_length > 1``, as VINS-Mono's tracker
    publishes); velocity ``result.velocity_normalized`` (0 where unknown). Right points (stereo,
    ``"fusion"``, or ``"mono"`` with ``num_cameras=2``): the right keypoint of each stereo match
    whose left point is in the message and whose ``right_normalized`` is finite, with the left's
    feature id, camera 1 and velocity 0 (right keypoints are not tracked)."""
    _check_vins_layout(layout, num_cameras)
    normalized = result.normalized
    if normalized is None:
        return None
    keypoints = np.asarray(result.features.keypoints, np.float32).reshape(-1, 2)
    normalized = xy_column(normalized, len(keypoints), "normalized")
    velocity = xy_column(result.velocity_normalized, len(keypoints), "velocity_normalized")
    velocity = np.where(np.isfinite(velocity), velocity, np.float32(0))
    keep = np.all(np.isfinite(normalized), axis=1)
    if layout == "mono":
        keep &= np.asarray(result.track_lengths).reshape(-1) > 1
    ids = wrap_vins_ids(result.track_ids, layout, num_cameras)
    left = np.flatnonzero(keep)
    rows = [(ids[left], np.zeros(len(left), np.int64), normalized[left], keypoints[left], velocity[left])]
    right_normalized = result.right_normalized
    with_right = layout == "fusion" or num_cameras == 2
    if with_right and result.stereo is not None and right_normalized is not None and len(result.stereo):
        right_keypoints = np.asarray(result.right_features.keypoints, np.float32).reshape(-1, 2)
        right_normalized = xy_column(right_normalized, len(right_keypoints), "right_normalized")
        pairs = np.asarray(result.stereo.indices, np.int64).reshape(-1, 2)
        pairs = pairs[keep[pairs[:, 0]] & np.all(np.isfinite(right_normalized[pairs[:, 1]]), axis=1)]
        r = pairs[:, 1]
        rows.append((ids[pairs[:, 0]], np.ones(len(r), np.int64), right_normalized[r], right_keypoints[r],
                     np.zeros((len(r), 2), np.float32)))
    return VinsObservations(*(np.concatenate(column) for column in zip(*rows)))


def vins_channel_values(obs: VinsObservations, layout: str = "fusion", num_cameras: int = 1) -> List[np.ndarray]:
    """The message's channels, float32 ``(N,)`` each, in :data:`VINS_CHANNELS` order."""
    n = len(obs)
    if layout == "fusion":
        ids = [obs.feature_ids, obs.camera_ids]
    else:
        ids = [obs.feature_ids * num_cameras + obs.camera_ids]
    extra = [np.zeros(n)] * 3 if layout == "fusion" else []
    columns = ids + [obs.pixels[:, 0], obs.pixels[:, 1], obs.velocity[:, 0], obs.velocity[:, 1]] + extra
    return [np.asarray(c).astype(np.float32) for c in columns]


def _float32_sequence(values: np.ndarray, as_array: bool):
    """A float32[] message field: numpy for rosbags, ``array('f')`` for rclpy (its native type)."""
    if as_array:
        return values
    out = array.array("f")
    out.frombytes(values.astype(np.float32).tobytes())
    return out


def vins_feature_cloud(result: Any, classes: MessageClasses, layout: str = "fusion",
                       frame_id: Optional[str] = None, num_cameras: int = 1):
    """A front-end result -> the ``sensor_msgs/PointCloud`` VINS-Fusion (``layout="fusion"``) or
    VINS-Mono (``"mono"``, ``id * num_cameras + camera`` ids; ``num_cameras`` = its
    ``NUM_OF_CAM``) estimators read, or ``None`` for a frame without intrinsics. ``points`` =
    ``(x_n, y_n, 1)``, channels as :data:`VINS_CHANNELS`, header stamped ``result.stamp_ns``
    with ``frame_id`` (default ``result.frame_id``). Points: :func:`vins_observations`."""
    if classes.point_cloud is None or classes.point32 is None or classes.channel is None:
        raise ValueError("MessageClasses lacks point_cloud/point32/channel (sensor_msgs/PointCloud, "
                         "geometry_msgs/Point32, sensor_msgs/ChannelFloat32): needed for the VINS message")
    obs = vins_observations(result, layout, num_cameras)
    if obs is None:
        return None
    header = make_header(classes, result.stamp_ns, result.frame_id if frame_id is None else frame_id)
    points = [classes.point32(x=x, y=y, z=1.0) for x, y in obs.normalized.astype(np.float32).tolist()]
    channels = [classes.channel(name=name, values=_float32_sequence(values, classes.data_as_array))
                for name, values in zip(VINS_CHANNELS[layout], vins_channel_values(obs, layout, num_cameras))]
    return classes.point_cloud(header=header, points=points, channels=channels)


# --- decoding ----------------------------------------------------------------------------------
def unpack(msg, required: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """Any PointCloud2 (rclpy or rosbags) -> ``{field name: array}`` (``(N,)`` or ``(N, count)``),
    honouring offsets, ``point_step``, ``row_step`` and ``is_bigendian``."""
    fields = [Field(str(f.name), int(f.offset), int(f.datatype), int(f.count)) for f in msg.fields]
    unknown = [f.name for f in fields if f.datatype not in _NUMPY]
    if unknown:
        raise CloudLayoutError(f"fields with unknown datatypes: {unknown}")
    missing = [name for name in required if name not in {f.name for f in fields}]
    if missing:
        raise CloudLayoutError(f"PointCloud2 lacks fields {missing} (has {[f.name for f in fields]})")
    height, width, point_step, row_step = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    data = np.frombuffer(msg.data, np.uint8)
    if height * width == 0:
        raw = np.zeros(0, np.uint8)
    else:
        if row_step < point_step * width or data.size < row_step * (height - 1) + point_step * width:
            raise CloudLayoutError(f"PointCloud2 data of {data.size} bytes does not hold {height}x{width} points of "
                                   f"{point_step} bytes (row_step {row_step})")
        raw = data[: row_step * height] if data.size >= row_step * height else np.concatenate(
            [data, np.zeros(row_step * height - data.size, np.uint8)])
        raw = np.ascontiguousarray(raw.reshape(height, row_step)[:, : point_step * width]).reshape(-1)
    for f in fields:
        end = f.offset + np.dtype(_NUMPY[f.datatype]).itemsize * f.count
        if end > point_step:
            raise CloudLayoutError(f"field {f.name!r} ends at byte {end}, beyond point_step {point_step}")
    rows = raw.view(structured_dtype(fields, point_step, bool(msg.is_bigendian)))
    return {f.name: rows[f.name].astype(rows[f.name].dtype.newbyteorder("=")) for f in fields}


@dataclass
class DecodedFeatures:
    """A decoded features message: ``keypoints`` ``(N, 2)`` float32 xy px, ``scores`` ``(N,)``
    float32, ``descriptors`` ``(N, D)`` float32, ``track_ids`` ``(N,)`` int64, ``track_lengths``
    ``(N,)`` uint32; ``normalized`` ``(N, 2)`` float32 undistorted normalised xy,
    ``velocity_px`` ``(N, 2)`` float32 px/s, ``velocity_normalized`` ``(N, 2)`` float32
    normalised units/s, NaN where unknown (no intrinsics, or a message without those fields)."""

    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    track_ids: np.ndarray
    track_lengths: np.ndarray
    normalized: np.ndarray
    velocity_px: np.ndarray
    velocity_normalized: np.ndarray

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])


def _xy_pair(cols: Dict[str, np.ndarray], x: str, y: str, n: int) -> np.ndarray:
    """Two count-1 columns -> ``(N, 2)`` float32; all NaN if the message lacks either (older layout)."""
    if x not in cols or y not in cols:
        return np.full((n, 2), np.nan, np.float32)
    return np.stack([cols[x], cols[y]], axis=1).astype(np.float32).reshape(n, 2)


def decode_features(msg) -> DecodedFeatures:
    """Inverse of :func:`pack_features` + :func:`to_pointcloud2` (bit-exact); also decodes
    features messages from before the ``x_n``... fields (those come back NaN)."""
    cols = unpack(msg, required=("x", "y", "score", "track_id", "descriptor"))
    n = len(cols["x"])
    dim = next(int(f.count) for f in msg.fields if f.name == "descriptor")
    descriptors = cols["descriptor"].reshape(n, dim).astype(np.float32)
    lengths = cols.get("track_length", np.ones(n, np.uint32)).astype(np.uint32)
    return DecodedFeatures(_xy_pair(cols, "x", "y", n), cols["score"].astype(np.float32), descriptors,
                           cols["track_id"].astype(np.int64), lengths, _xy_pair(cols, "x_n", "y_n", n),
                           _xy_pair(cols, "vx", "vy", n), _xy_pair(cols, "vx_n", "vy_n", n))


def decode_stereo_matches(msg) -> Dict[str, np.ndarray]:
    """Stereo matches message -> ``{"indices": (K, 2) int64, "distances", "disparities",
    "left_keypoints", "right_keypoints"}``."""
    cols = unpack(msg, required=[c[0] for c in STEREO_COLUMNS])
    return {"indices": np.stack([cols["left_index"], cols["right_index"]], axis=1).astype(np.int64),
            "distances": cols["distance"], "disparities": cols["disparity"],
            "left_keypoints": np.stack([cols["x_left"], cols["y_left"]], axis=1),
            "right_keypoints": np.stack([cols["x_right"], cols["y_right"]], axis=1)}


def decode_temporal_matches(msg) -> Dict[str, Any]:
    """Temporal matches message -> ``{"indices": (M, 2) int64, "distances", "inliers" bool,
    "previous_stamp": (sec, nanosec) or None when there are no matches}``."""
    cols = unpack(msg, required=[c[0] for c in TEMPORAL_COLUMNS])
    n = len(cols["previous_index"])
    return {"indices": np.stack([cols["previous_index"], cols["current_index"]], axis=1).astype(np.int64),
            "distances": cols["distance"], "inliers": cols["inlier"].astype(bool),
            "previous_stamp": (int(cols["previous_stamp_sec"][0]), int(cols["previous_stamp_nanosec"][0])) if n else None}


def decode_vins_feature(msg, layout: Optional[str] = None, num_cameras: int = 1) -> VinsObservations:
    """A VINS feature ``sensor_msgs/PointCloud`` (rclpy or rosbags) -> :class:`VinsObservations`,
    reading the channels by position as the estimators do. ``layout``: ``"fusion"`` or
    ``"mono"``, default by channel count (5 = mono, 6 or more = fusion); ``num_cameras``:
    VINS-Mono's ``NUM_OF_CAM`` for decoding its ids (``int(value + 0.5)``, ``/`` and ``%``).
    Raises :class:`CloudLayoutError` for too few channels, a channel of the wrong length, a
    ``z != 1`` or a non-integer id."""
    channels = [np.asarray(c.values, dtype=np.float32) for c in msg.channels]
    if layout is None:
        layout = "mono" if len(channels) == 5 else "fusion"
    _check_vins_layout(layout, num_cameras)
    needed = 6 if layout == "fusion" else 5
    if len(channels) < needed:
        raise CloudLayoutError(f"a VINS-{layout} feature message has at least {needed} channels, got {len(channels)}")
    n = len(msg.points)
    short = [i for i, c in enumerate(channels[:needed]) if len(c) != n]
    if short:
        raise CloudLayoutError(f"VINS channels {short} do not have one value per point ({n} points)")
    xyz = np.array([(p.x, p.y, p.z) for p in msg.points], np.float32).reshape(n, 3)
    if not np.all(xyz[:, 2] == 1):
        raise CloudLayoutError("VINS feature points must have z == 1 (normalised coordinates)")
    if layout == "fusion":
        ids, cameras, rest = channels[0], channels[1], channels[2:6]
        if not (np.array_equal(ids, np.round(ids)) and np.array_equal(cameras, np.round(cameras))):
            raise CloudLayoutError("VINS-Fusion feature and camera ids must be integers")
        feature_ids, camera_ids = ids.astype(np.int64), cameras.astype(np.int64)
    else:
        encoded, rest = (channels[0].astype(np.float64) + 0.5).astype(np.int64), channels[1:5]
        feature_ids, camera_ids = encoded // num_cameras, encoded % num_cameras
    return VinsObservations(feature_ids, camera_ids, xyz[:, :2].copy(), np.stack(rest[:2], axis=1),
                            np.stack(rest[2:4], axis=1))
