"""The VINS-compatible feature message (sensor_msgs/PointCloud): built from a front-end result with
rclpy's and with rosbags' classes, through real serialisation, decoded as the estimators read it."""
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point32
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import ChannelFloat32, PointCloud, PointCloud2, PointField
from std_msgs.msg import Header

from superpoint_ros.io.messages import (
    FRAME_OUTPUTS, VINS_CHANNELS, VINS_ID_MODULUS, VINS_OUTPUT, CloudLayoutError, MessageClasses, decode_vins_feature,
    frame_messages, vins_feature_cloud)

pytestmark = pytest.mark.ros

RCLPY = MessageClasses(Header, Time, PointCloud2, PointField, point_cloud=PointCloud, point32=Point32,
                       channel=ChannelFloat32)
#: the outputs of a stereo frame without temporal matches (the first after a reset), in order
STEREO_FIRST_FRAME = tuple(name for name in FRAME_OUTPUTS if name != "temporal_matches")
STAMP_NS = 1_700_000_000_123_456_789  # odd nanoseconds: float seconds would round them away


@pytest.fixture(scope="module")
def store():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_HUMBLE)


def result_with_intrinsics(n=10, n_right=8, stereo_pairs=((1, 0), (3, 5), (6, 7)), track_ids=None, seed=0):
    """A FrameResult with the issue-16 fields set by hand (as the front-end will fill them)."""
    from superpoint_ros.extractor import Features
    from superpoint_ros.frontend import FrameResult, StereoMatches

    rng = np.random.default_rng(seed)

    def features(k):
        return Features(rng.uniform(0, 640, (k, 2)).astype(np.float32), rng.uniform(0, 1, k).astype(np.float32),
                        np.eye(k, 4, dtype=np.float32), (480, 640))

    ids = np.arange(100, 100 + n, dtype=np.int64) if track_ids is None else np.asarray(track_ids, np.int64)
    lengths = np.where(np.arange(n) % 3 == 0, 1, 2 + np.arange(n)).astype(np.int32)  # every third point is new
    result = FrameResult(STAMP_NS, "left_cam", features(n), ids, lengths)
    result.normalized = rng.uniform(-1, 1, (n, 2))
    result.velocity_px = rng.normal(0, 100, (n, 2)).astype(np.float32)
    result.velocity_normalized = rng.normal(0, 0.2, (n, 2)).astype(np.float32)
    result.velocity_normalized[lengths == 1] = 0
    if stereo_pairs is not None:
        pairs = np.array(stereo_pairs, np.int64).reshape(-1, 2)
        result.right_features = features(n_right)
        result.stereo = StereoMatches(pairs, np.full(len(pairs), 0.1, np.float32), np.ones(len(pairs), np.float32))
        result.right_normalized = rng.uniform(-1, 1, (n_right, 2))
    return result


def rclpy_round_trip(result, **kwargs):
    msg = vins_feature_cloud(result, RCLPY, **kwargs)
    return deserialize_message(serialize_message(msg), PointCloud)


def rosbags_round_trip(result, store, **kwargs):
    msg = vins_feature_cloud(result, MessageClasses.from_typestore(store.types), **kwargs)
    raw = store.serialize_cdr(msg, "sensor_msgs/msg/PointCloud")
    return store.deserialize_cdr(raw, "sensor_msgs/msg/PointCloud"), deserialize_message(bytes(raw), PointCloud)


def assert_same_observations(a, b):
    for field in ("feature_ids", "camera_ids", "normalized", "pixels", "velocity"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.dtype == y.dtype and np.array_equal(x, y), field


@pytest.mark.parametrize("layout", ["fusion", "mono"])
def test_mono_frame_round_trips_identically_through_rclpy_and_rosbags(layout, store):
    result = result_with_intrinsics(stereo_pairs=None)
    ros = rclpy_round_trip(result, layout=layout)
    bag, bag_in_rclpy = rosbags_round_trip(result, store, layout=layout)
    for msg in (ros, bag, bag_in_rclpy):
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == STAMP_NS
        assert msg.header.frame_id == "left_cam"
        assert [c.name for c in msg.channels] == list(VINS_CHANNELS[layout])
        assert len(msg.channels) == (9 if layout == "fusion" else 5)
    decoded = decode_vins_feature(ros)
    assert_same_observations(decoded, decode_vins_feature(bag))
    assert_same_observations(decoded, decode_vins_feature(bag_in_rclpy))
    # which points: all for Fusion, the tracked ones for Mono (as VINS-Mono's tracker publishes)
    rows = np.arange(10) if layout == "fusion" else np.flatnonzero(result.track_lengths > 1)
    assert np.array_equal(decoded.feature_ids, result.track_ids[rows]) and (decoded.camera_ids == 0).all()
    assert np.array_equal(decoded.normalized, result.normalized[rows].astype(np.float32))
    assert np.array_equal(decoded.pixels, result.features.keypoints[rows])
    assert np.array_equal(decoded.velocity, result.velocity_normalized[rows])
    assert all(p.z == 1.0 for p in ros.points)
    if layout == "fusion":  # the ground-truth channels the estimator reads past 5 channels are there, zero
        assert all(np.array_equal(np.asarray(c.values), np.zeros(10, np.float32)) for c in ros.channels[6:])


def test_stereo_frame_adds_the_right_observations_with_the_left_feature_id(store):
    result = result_with_intrinsics()
    result.right_normalized[7] = np.nan  # the right point of pair (6, 7) cannot be undistorted
    result.normalized[3] = np.nan  # nor the left point of pair (3, 5): neither of its observations goes out
    decoded = decode_vins_feature(rclpy_round_trip(result))
    assert_same_observations(decoded, decode_vins_feature(rosbags_round_trip(result, store)[0]))
    left_rows = np.array([0, 1, 2, 4, 5, 6, 7, 8, 9])
    assert np.array_equal(decoded.camera_ids, [0] * 9 + [1])  # every left observation first (VINS asserts it)
    assert np.array_equal(decoded.feature_ids, np.append(result.track_ids[left_rows], result.track_ids[1]))
    right = slice(9, None)
    assert np.array_equal(decoded.normalized[right], result.right_normalized[[0]].astype(np.float32))
    assert np.array_equal(decoded.pixels[right], result.right_features.keypoints[[0]])
    assert (decoded.velocity[right] == 0).all()
    # VINS-Mono's encoding with two cameras: id * 2 + camera, the right observation decodes to camera 1
    mono = rclpy_round_trip(result, layout="mono", num_cameras=2)
    encoded = np.asarray(mono.channels[0].values)
    tracked = result.track_lengths > 1
    assert encoded[-1] == result.track_ids[1] * 2 + 1 and tracked[1]
    decoded = decode_vins_feature(mono, num_cameras=2)
    assert np.array_equal(decoded.camera_ids, [0] * int(tracked[left_rows].sum()) + [1])
    assert decoded.feature_ids[-1] == result.track_ids[1]
    # one camera (VINS-Mono's NUM_OF_CAM = 1): the left observations only
    assert (decode_vins_feature(rclpy_round_trip(result, layout="mono")).camera_ids == 0).all()


def test_a_frame_without_intrinsics_has_no_vins_message():
    result = result_with_intrinsics()
    result.normalized = None
    assert vins_feature_cloud(result, RCLPY) is None
    assert tuple(frame_messages(result, "left_cam", RCLPY, vins_layout="fusion")) == STEREO_FIRST_FRAME
    del result.normalized  # a FrameResult from before the field existed
    assert vins_feature_cloud(result, RCLPY, layout="mono") is None


def test_frame_messages_adds_the_vins_message_when_asked():
    result = result_with_intrinsics()
    out = frame_messages(result, "cam_optical", RCLPY, "right_cam", vins_layout="fusion")
    assert tuple(out) == STEREO_FIRST_FRAME + (VINS_OUTPUT,)
    assert out[VINS_OUTPUT].header.frame_id == "cam_optical"
    assert VINS_OUTPUT not in frame_messages(result, "cam_optical", RCLPY)


def test_track_ids_wrap_to_exact_float32_integers(store):
    big = np.array([VINS_ID_MODULUS + 5, 2 ** 40 + 7, VINS_ID_MODULUS - 1, 3 * 2 ** 23 + 1], np.int64)
    result = result_with_intrinsics(n=4, stereo_pairs=None, track_ids=big)
    result.track_lengths[:] = 5
    fusion = decode_vins_feature(rclpy_round_trip(result))
    assert fusion.feature_ids.tolist() == [5, 7, VINS_ID_MODULUS - 1, 2 ** 23 + 1]
    mono = decode_vins_feature(rclpy_round_trip(result, layout="mono", num_cameras=2), num_cameras=2)
    assert mono.feature_ids.tolist() == [5, 7, 2 ** 23 - 1, 1]  # modulo 2**23: id * 2 + camera < 2**24
    assert_same_observations(mono, decode_vins_feature(rosbags_round_trip(result, store, layout="mono",
                                                                          num_cameras=2)[0], num_cameras=2))


def test_decoder_refuses_messages_the_estimators_would_misread():
    msg = rclpy_round_trip(result_with_intrinsics(stereo_pairs=None))
    msg.points[2].z = 0.5
    with pytest.raises(CloudLayoutError, match="z == 1"):
        decode_vins_feature(msg)
    msg = rclpy_round_trip(result_with_intrinsics(stereo_pairs=None))
    msg.channels[3].values = msg.channels[3].values[:-1]
    with pytest.raises(CloudLayoutError, match=r"channels \[3\]"):
        decode_vins_feature(msg)
    msg.channels = msg.channels[:4]
    with pytest.raises(CloudLayoutError, match="at least 5 channels"):
        decode_vins_feature(msg, layout="mono")
    with pytest.raises(ValueError, match="VINS layout"):
        vins_feature_cloud(result_with_intrinsics(), RCLPY, layout="okvis")
    with pytest.raises(ValueError, match="lacks point_cloud"):
        vins_feature_cloud(result_with_intrinsics(), MessageClasses(Header, Time, PointCloud2, PointField))
