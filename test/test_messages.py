"""The node's PointCloud2 layouts: exact round trips through real rclpy serialisation and rosbags."""
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from superpoint_ros.io.messages import (
    FLOAT32, FLOAT64, UINT32, CloudLayoutError, decode_features, decode_stereo_matches, decode_temporal_matches, pack,
    pack_features, pack_stereo_matches, pack_temporal_matches, to_pointcloud2, unpack)

pytestmark = pytest.mark.ros


def random_features(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    desc = rng.normal(size=(n, dim)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    return (rng.uniform(0, 640, (n, 2)).astype(np.float32), rng.uniform(0, 1, n).astype(np.float32), desc,
            rng.integers(0, 2 ** 53, n, dtype=np.int64), rng.integers(1, 1000, n).astype(np.uint32))


def through_the_wire(msg):
    return deserialize_message(serialize_message(msg), type(msg))


def random_geometry(n, seed=0):
    """Normalised coordinates and velocities as the front-end gives them (float64 / float32)."""
    rng = np.random.default_rng(seed + 100)
    return (rng.uniform(-1.5, 1.5, (n, 2)), rng.normal(0, 200, (n, 2)).astype(np.float32),
            rng.normal(0, 0.4, (n, 2)).astype(np.float32))


@pytest.mark.parametrize("n, dim", [(500, 256), (7, 128), (0, 256)])
def test_features_round_trip_bit_exact(n, dim):
    kp, scores, desc, ids, lengths = random_features(n, dim)
    normalized, velocity_px, velocity_normalized = random_geometry(n)
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 1700000000, 123456789
    msg = through_the_wire(to_pointcloud2(header, pack_features(kp, scores, desc, ids, lengths, normalized,
                                                                velocity_px, velocity_normalized)))
    assert msg.header.stamp.nanosec == 123456789 and msg.header.frame_id == "cam"
    assert msg.width == n and msg.height == 1 and msg.point_step == 8 + 4 * 4 + 4 * dim + 6 * 4
    names = {f.name: (f.datatype, f.count) for f in msg.fields}
    assert names["descriptor"] == (PointField.FLOAT32, dim) and names["track_id"] == (PointField.FLOAT64, 1)
    assert all(names[k] == (PointField.FLOAT32, 1) for k in ("x_n", "y_n", "vx", "vy", "vx_n", "vy_n"))
    # the fields older consumers know keep their offsets: the new ones follow the descriptor
    offsets = {f.name: f.offset for f in msg.fields}
    assert [offsets[k] for k in ("track_id", "x", "y", "score", "track_length", "descriptor", "x_n")] == \
        [0, 8, 12, 16, 20, 24, 24 + 4 * dim]
    decoded = decode_features(msg)
    assert np.array_equal(decoded.keypoints, kp) and np.array_equal(decoded.scores, scores)
    assert np.array_equal(decoded.descriptors, desc.reshape(n, dim)) and np.array_equal(decoded.track_ids, ids)
    assert np.array_equal(decoded.track_lengths, lengths) and decoded.track_ids.dtype == np.int64
    assert np.array_equal(decoded.normalized, normalized.astype(np.float32)) and decoded.normalized.dtype == np.float32
    assert np.array_equal(decoded.velocity_px, velocity_px)
    assert np.array_equal(decoded.velocity_normalized, velocity_normalized)


def test_unknown_geometry_travels_as_nan_in_the_same_layout():
    kp, scores, desc, ids, lengths = random_features(6, 8)
    normalized, velocity_px, _ = random_geometry(6)
    normalized[2] = np.nan  # one point the distortion model could not invert
    without = through_the_wire(to_pointcloud2(Header(), pack_features(kp, scores, desc, ids, lengths)))
    partial = through_the_wire(to_pointcloud2(Header(), pack_features(kp, scores, desc, ids, lengths, normalized,
                                                                      velocity_px)))
    assert [(f.name, f.offset, f.datatype, f.count) for f in without.fields] == \
        [(f.name, f.offset, f.datatype, f.count) for f in partial.fields]
    d = decode_features(without)
    assert np.isnan(d.normalized).all() and np.isnan(d.velocity_px).all() and np.isnan(d.velocity_normalized).all()
    assert np.array_equal(d.keypoints, kp)
    d = decode_features(partial)
    assert np.isnan(d.normalized[2]).all() and np.isfinite(np.delete(d.normalized, 2, axis=0)).all()
    assert np.array_equal(d.velocity_px, velocity_px) and np.isnan(d.velocity_normalized).all()
    with pytest.raises(ValueError, match=r"velocity_px must be \(N, 2\) = \(6, 2\)"):
        pack_features(kp, scores, desc, ids, lengths, normalized, velocity_px[:5])


def test_features_messages_of_the_layout_before_the_geometry_fields_still_decode():
    """A features message as the node published it before x_n... existed: no such fields."""
    kp, scores, desc, ids, lengths = random_features(9, 16, seed=5)
    old_columns = [("track_id", FLOAT64, 1), ("x", FLOAT32, 1), ("y", FLOAT32, 1), ("score", FLOAT32, 1),
                   ("track_length", UINT32, 1), ("descriptor", FLOAT32, 16)]
    packed = pack(old_columns, {"track_id": ids.astype(np.float64), "x": kp[:, 0], "y": kp[:, 1], "score": scores,
                                "track_length": lengths, "descriptor": desc})
    msg = through_the_wire(to_pointcloud2(Header(), packed))
    assert msg.point_step == 24 + 4 * 16
    d = decode_features(msg)
    assert np.array_equal(d.keypoints, kp) and np.array_equal(d.descriptors, desc)
    assert np.array_equal(d.track_ids, ids) and np.array_equal(d.track_lengths, lengths)
    for field in (d.normalized, d.velocity_px, d.velocity_normalized):
        assert field.shape == (9, 2) and field.dtype == np.float32 and np.isnan(field).all()


def test_track_ids_outside_the_exact_range_are_refused():
    kp, scores, desc, ids, _ = random_features(3, 8)
    with pytest.raises(ValueError, match="2\\*\\*53"):
        pack_features(kp, scores, desc, np.array([0, 1, 2 ** 53]))


def test_unpack_honours_offsets_padding_row_step_and_big_endian():
    """A foreign cloud: big-endian, padded points, padded rows (2 rows of 3)."""
    dtype = np.dtype({"names": ["y", "x"], "formats": [">f4", ">f4"], "offsets": [8, 0], "itemsize": 16})
    rows = np.zeros((2, 3), dtype)
    rows["x"] = [[1, 2, 3], [4, 5, 6]]
    rows["y"] = [[-1, -2, -3], [-4, -5, -6]]
    data = np.concatenate([rows.view(np.uint8).reshape(2, 48), np.zeros((2, 4), np.uint8)], axis=1)
    msg = PointCloud2(height=2, width=3, is_bigendian=True, point_step=16, row_step=52, is_dense=True,
                      fields=[PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
                              PointField(name="y", offset=8, datatype=PointField.FLOAT32, count=1)])
    msg.data = data.tobytes()
    cols = unpack(msg)
    assert cols["x"].tolist() == [1, 2, 3, 4, 5, 6] and cols["y"].tolist() == [-1, -2, -3, -4, -5, -6]
    with pytest.raises(CloudLayoutError, match="lacks fields"):
        decode_features(msg)
    msg.data = data.tobytes()[:60]
    with pytest.raises(CloudLayoutError, match="does not hold"):
        unpack(msg)


def test_stereo_and_temporal_matches_round_trip():
    kp_l, _, _, _, _ = random_features(20, 4, seed=1)
    kp_r, _, _, _, _ = random_features(15, 4, seed=2)
    indices = np.array([[0, 3], [5, 1], [19, 14]])
    distances = np.float32([0.1, 0.2, 0.3])
    msg = through_the_wire(to_pointcloud2(Header(frame_id="left"), pack_stereo_matches(indices, distances, kp_l, kp_r)))
    s = decode_stereo_matches(msg)
    assert np.array_equal(s["indices"], indices) and np.array_equal(s["distances"], distances)
    assert np.array_equal(s["left_keypoints"], kp_l[indices[:, 0]])
    assert np.array_equal(s["disparities"], kp_l[indices[:, 0], 0] - kp_r[indices[:, 1], 0])
    inliers = np.array([True, False, True])
    msg = through_the_wire(to_pointcloud2(Header(), pack_temporal_matches(indices, distances, inliers, (41, 999))))
    t = decode_temporal_matches(msg)
    assert np.array_equal(t["indices"], indices) and np.array_equal(t["inliers"], inliers)
    assert t["previous_stamp"] == (41, 999)


def test_rosbags_messages_build_and_decode():
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Cloud, Field, Header_, Time = (store.types[n] for n in ("sensor_msgs/msg/PointCloud2", "sensor_msgs/msg/PointField",
                                                            "std_msgs/msg/Header", "builtin_interfaces/msg/Time"))
    kp, scores, desc, ids, lengths = random_features(10, 32)
    msg = to_pointcloud2(Header_(stamp=Time(sec=3, nanosec=4), frame_id="cam"),
                         pack_features(kp, scores, desc, ids, lengths), Cloud, Field, data_as_array=True)
    raw = store.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2")
    back = store.deserialize_cdr(raw, "sensor_msgs/msg/PointCloud2")
    decoded = decode_features(back)
    assert np.array_equal(decoded.descriptors, desc) and np.array_equal(decoded.track_ids, ids)
    # and the bytes are the rclpy message's bytes: a bag written this way replays into ROS exactly
    rclpy_msg = deserialize_message(bytes(raw), PointCloud2)
    assert np.array_equal(decode_features(rclpy_msg).keypoints, kp)


def a_stereo_result(stamp_ns, previous_stamp_ns, with_geometry=True):
    """A FrameResult as the front-end returns it (random features; the layout is what matters),
    with the issue-16 camera-geometry attributes set by hand (``with_geometry``)."""
    from superpoint_ros.extractor import Features
    from superpoint_ros.frontend import FrameResult, StereoMatches, TemporalMatches

    kp, scores, desc, ids, lengths = random_features(12, 16, seed=3)
    kp_r, scores_r, desc_r, _, _ = random_features(9, 16, seed=4)
    temporal = TemporalMatches(np.array([[0, 2], [4, 5]]), np.float32([0.2, 0.3]), np.array([True, False]),
                               previous_stamp_ns, "left_cam", True)
    stereo = StereoMatches(np.array([[2, 0], [7, 8]]), np.float32([0.1, 0.4]), np.float32([3.0, 4.5]))
    result = FrameResult(stamp_ns, "left_cam", Features(kp, scores, desc, (480, 640)), ids, lengths.astype(np.int32),
                         temporal, Features(kp_r, scores_r, desc_r, (480, 640)), stereo)
    if with_geometry:
        result.normalized, result.velocity_px, result.velocity_normalized = random_geometry(12, seed=3)
        result.right_normalized = random_geometry(9, seed=4)[0]
    return result


def test_frame_messages_are_the_same_from_rclpy_and_rosbags_classes_with_exact_stamps():
    from builtin_interfaces.msg import Time as RclpyTime
    from rosbags.typesys import Stores, get_typestore

    from superpoint_ros.io.messages import FRAME_OUTPUTS, MessageClasses, frame_messages

    t0 = 1_700_000_000_123_456_789  # odd nanoseconds: float seconds would round them away
    result = a_stereo_result(t0 + 33_333_333, t0)
    store = get_typestore(Stores.ROS2_KILTED)
    bag_classes = MessageClasses(*(store.types[n] for n in ("std_msgs/msg/Header", "builtin_interfaces/msg/Time",
                                                            "sensor_msgs/msg/PointCloud2", "sensor_msgs/msg/PointField")),
                                 data_as_array=True)
    ros = {k: through_the_wire(m) for k, m in frame_messages(
        result, "left_cam", MessageClasses(Header, RclpyTime, PointCloud2, PointField), "right_cam").items()}
    bag = {k: store.deserialize_cdr(store.serialize_cdr(m, "sensor_msgs/msg/PointCloud2"), "sensor_msgs/msg/PointCloud2")
           for k, m in frame_messages(result, "left_cam", bag_classes, "right_cam").items()}
    assert tuple(ros) == tuple(bag) == FRAME_OUTPUTS
    for name in FRAME_OUTPUTS:
        for msg in (ros[name], bag[name]):
            assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == t0 + 33_333_333
            assert msg.header.frame_id == ("right_cam" if name == "features_right" else "left_cam")
    for ros_msg, bag_msg in ((ros["features"], bag["features"]), (ros["features_right"], bag["features_right"])):
        a, b = decode_features(ros_msg), decode_features(bag_msg)
        for field in ("keypoints", "scores", "descriptors", "track_ids", "track_lengths", "normalized", "velocity_px",
                      "velocity_normalized"):
            assert np.array_equal(getattr(a, field), getattr(b, field))
    left, right = decode_features(ros["features"]), decode_features(ros["features_right"])
    assert np.array_equal(left.track_ids, result.track_ids)
    assert np.array_equal(left.normalized, result.normalized.astype(np.float32))
    assert np.array_equal(left.velocity_px, result.velocity_px)
    assert np.array_equal(left.velocity_normalized, result.velocity_normalized)
    assert (right.track_ids == 0).all() and np.array_equal(right.normalized, result.right_normalized.astype(np.float32))
    assert (right.velocity_px == 0).all() and (right.velocity_normalized == 0).all()  # untracked, as new tracks
    t_ros, t_bag = decode_temporal_matches(ros["temporal_matches"]), decode_temporal_matches(bag["temporal_matches"])
    assert t_ros["previous_stamp"] == t_bag["previous_stamp"] == (1_700_000_000, 123_456_789)
    assert np.array_equal(t_ros["indices"], t_bag["indices"]) and np.array_equal(t_ros["inliers"], [True, False])
    s_ros, s_bag = decode_stereo_matches(ros["stereo_matches"]), decode_stereo_matches(bag["stereo_matches"])
    for key in s_ros:
        assert np.array_equal(s_ros[key], s_bag[key])
    # the first frame after a reset and a mono frame: only what exists
    result.temporal, result.stereo, result.right_features = None, None, None
    assert list(frame_messages(result, "left_cam", bag_classes)) == ["features"]


def test_frame_messages_without_intrinsics_send_nan_geometry():
    """A result without the camera-geometry fields (no intrinsics, or a front-end before them)."""
    from builtin_interfaces.msg import Time as RclpyTime

    from superpoint_ros.io.messages import MessageClasses, frame_messages

    result = a_stereo_result(5, 4, with_geometry=False)
    classes = MessageClasses(Header, RclpyTime, PointCloud2, PointField)
    msgs = {k: through_the_wire(m) for k, m in frame_messages(result, "left_cam", classes).items()}
    left, right = decode_features(msgs["features"]), decode_features(msgs["features_right"])
    assert np.isnan(left.normalized).all() and np.isnan(left.velocity_px).all()
    assert np.isnan(left.velocity_normalized).all()
    assert np.isnan(right.normalized).all() and np.isnan(right.velocity_normalized).all()
    assert (right.velocity_px == 0).all()
    assert np.array_equal(left.keypoints, result.features.keypoints)


def test_stereo_matches_of_a_raw_pair_carry_the_rectified_disparity():
    """A raw (unrectified) pair: the keypoints are raw pixels, the disparity is the rectified
    frame's (StereoMatches.left_rectified set), not x_left - x_right of the raw keypoints."""
    from dataclasses import replace

    from builtin_interfaces.msg import Time as RclpyTime

    from superpoint_ros.io.messages import MessageClasses, frame_messages

    result = a_stereo_result(5, 4)
    classes = MessageClasses(Header, RclpyTime, PointCloud2, PointField)
    rectified = decode_stereo_matches(through_the_wire(frame_messages(result, "left_cam", classes)["stereo_matches"]))
    idx = result.stereo.indices
    raw_xy = result.features.keypoints[idx[:, 0], 0] - result.right_features.keypoints[idx[:, 1], 0]
    assert np.array_equal(rectified["disparities"], raw_xy)
    result.stereo = replace(result.stereo, left_rectified=np.float32([[10, 5], [20, 6]]),
                            right_rectified=np.float32([[7, 5], [15.5, 6]]))
    raw = decode_stereo_matches(through_the_wire(frame_messages(result, "left_cam", classes)["stereo_matches"]))
    assert np.array_equal(raw["disparities"], result.stereo.disparities)
    assert np.array_equal(raw["left_keypoints"], result.features.keypoints[idx[:, 0]])  # the keypoints stay raw
