"""The node's message layouts on standard ``sensor_msgs/PointCloud2``, with an exact encode/decode.

Three layouts (one point per row, ``height = 1``, little-endian, ``is_dense = true``; see
docs/messages.md):

- **features** (``features``, ``features_right``): ``track_id`` float64 (an integer, exact below
  2**53; PointField has no int64), ``x``, ``y`` float32 px (pixel centres at integers, x right,
  y down), ``score`` float32, ``track_length`` uint32 frames, ``descriptor`` float32 x D
  (``count = D``, unit L2 norm).
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
"""
from __future__ import annotations

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
    """A PointCloud2 that does not have the expected layout; the reason is in the message."""


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


def feature_columns(descriptor_dim: int):
    return [("track_id", FLOAT64, 1), ("x", FLOAT32, 1), ("y", FLOAT32, 1), ("score", FLOAT32, 1),
            ("track_length", UINT32, 1), ("descriptor", FLOAT32, int(descriptor_dim))]


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


def pack_features(keypoints: np.ndarray, scores: np.ndarray, descriptors: np.ndarray, track_ids: np.ndarray,
                  track_lengths: Optional[np.ndarray] = None) -> PackedCloud:
    """Features of one image -> the *features* layout. ``keypoints`` ``(N, 2)`` xy px,
    ``scores`` ``(N,)``, ``descriptors`` ``(N, D)``, ``track_ids`` ``(N,)`` int64."""
    n = len(keypoints)
    track_ids = np.asarray(track_ids, dtype=np.int64)
    if n and (track_ids.min() < 0 or track_ids.max() >= 2 ** 53):
        raise ValueError("track ids must be in [0, 2**53) to travel exactly as float64")
    keypoints = np.asarray(keypoints, dtype=np.float32).reshape(n, 2)
    return pack(feature_columns(np.asarray(descriptors).shape[1] if np.ndim(descriptors) == 2 else 0), {
        "track_id": track_ids.astype(np.float64), "x": keypoints[:, 0], "y": keypoints[:, 1],
        "score": np.asarray(scores, np.float32),
        "track_length": np.ones(n, np.uint32) if track_lengths is None else np.asarray(track_lengths, np.uint32),
        "descriptor": np.asarray(descriptors, np.float32)})


def pack_stereo_matches(indices: np.ndarray, distances: np.ndarray, left_keypoints: np.ndarray,
                        right_keypoints: np.ndarray) -> PackedCloud:
    """Stereo matches ``(K, 2)`` (left idx, right idx) -> the *stereo matches* layout."""
    indices = np.asarray(indices, dtype=np.int64).reshape(-1, 2)
    lk, rk = np.asarray(left_keypoints, np.float32)[indices[:, 0]], np.asarray(right_keypoints, np.float32)[indices[:, 1]]
    return pack(STEREO_COLUMNS, {"left_index": indices[:, 0], "right_index": indices[:, 1], "x_left": lk[:, 0],
                                 "y_left": lk[:, 1], "x_right": rk[:, 0], "y_right": rk[:, 1],
                                 "disparity": lk[:, 0] - rk[:, 0], "distance": np.asarray(distances, np.float32)})


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


@dataclass(frozen=True)
class MessageClasses:
    """The message classes :func:`frame_messages` builds with: rclpy's (the node) or a rosbags
    typestore's (the bag writer, ``data_as_array=True``: rosbags holds ``data`` as a uint8 array)."""

    header: Any  # std_msgs/msg/Header
    time: Any  # builtin_interfaces/msg/Time
    cloud: Any  # sensor_msgs/msg/PointCloud2
    field: Any  # sensor_msgs/msg/PointField
    data_as_array: bool = False


def make_header(classes: MessageClasses, stamp_ns: int, frame_id: str):
    """A std_msgs/Header stamped ``stamp_ns`` (integer nanoseconds, exact)."""
    sec, nanosec = ros_time_parts(stamp_ns)
    return classes.header(stamp=classes.time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def frame_messages(result: Any, frame_id: str, classes: MessageClasses,
                   right_frame_id: Optional[str] = None) -> Dict[str, Any]:
    """A front-end result (:class:`superpoint_ros.frontend.FrameResult`) -> the node's output
    messages, keyed by :data:`FRAME_OUTPUTS` name, those that exist for it: ``features`` always,
    ``temporal_matches`` unless it is the first frame after a reset, ``features_right`` and
    ``stereo_matches`` for a stereo pair.

    Every header is stamped ``result.stamp_ns`` (the input header's stamp, exact); ``frame_id``
    for the left/mono outputs, ``right_frame_id`` (default ``frame_id``) for ``features_right``:
    the pair is one frame, with the left stamp on both feature sets. Temporal matches carry
    ``result.temporal.previous_stamp_ns``, the earlier frame's header stamp, exactly.
    Right features have no tracks: their ``track_id`` is 0.
    """
    header = make_header(classes, result.stamp_ns, frame_id)

    def cloud(packed: PackedCloud, cloud_header=header):
        return to_pointcloud2(cloud_header, packed, classes.cloud, classes.field, classes.data_as_array)

    f = result.features
    out = {"features": cloud(pack_features(f.keypoints, f.scores, f.descriptors, result.track_ids,
                                           result.track_lengths))}
    t = result.temporal
    if t is not None:
        out["temporal_matches"] = cloud(pack_temporal_matches(t.indices, t.distances, t.inliers,
                                                              ros_time_parts(t.previous_stamp_ns)))
    if result.stereo is not None:
        r = result.right_features
        right_header = make_header(classes, result.stamp_ns, frame_id if right_frame_id is None else right_frame_id)
        out["features_right"] = cloud(pack_features(r.keypoints, r.scores, r.descriptors, np.zeros(len(r), np.int64)),
                                      right_header)
        out["stereo_matches"] = cloud(pack_stereo_matches(result.stereo.indices, result.stereo.distances,
                                                          f.keypoints, r.keypoints))
    return out


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
    ``(N,)`` uint32."""

    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    track_ids: np.ndarray
    track_lengths: np.ndarray

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])


def decode_features(msg) -> DecodedFeatures:
    """Inverse of :func:`pack_features` + :func:`to_pointcloud2` (bit-exact)."""
    cols = unpack(msg, required=("x", "y", "score", "track_id", "descriptor"))
    n = len(cols["x"])
    dim = next(int(f.count) for f in msg.fields if f.name == "descriptor")
    descriptors = cols["descriptor"].reshape(n, dim).astype(np.float32)
    lengths = cols.get("track_length", np.ones(n, np.uint32)).astype(np.uint32)
    return DecodedFeatures(np.stack([cols["x"], cols["y"]], axis=1).astype(np.float32), cols["score"].astype(np.float32),
                           descriptors, cols["track_id"].astype(np.int64), lengths)


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
