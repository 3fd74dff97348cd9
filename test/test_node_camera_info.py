"""Issue 16 through the live node over loopback DDS: camera_info paired with the images by stamp,
missing (auto vs required), late, of the wrong size or an unknown model; vins_feature.

The node's choices (which camera_info a frame uses, the warnings, pixel-only output) are checked
here on the node's diagnostics, log and features; that a used camera really gives normalised,
undistorted coordinates (and vins_feature) needs the Frontend's camera models (frontcam):
``test_distorted_mono_features_carry_undistorted_normalised_coordinates``,
``test_vins_feature_rows_are_the_features_normalised_points`` and the last assertion of
``test_stereo_pairs_take_each_cameras_info_and_the_left_is_used_without_the_right``.
"""
import numpy as np
import pytest

from node_harness import RELIABLE, image_msg
from superpoint_ros.camera_models import undistort_points
from superpoint_ros.evaluation.sample_data import SampleConf, sample_cameras
from superpoint_ros.io.messages import decode_features, decode_vins_feature, wrap_vins_ids

pytestmark = pytest.mark.ros

SIZE = (240, 320)  # (height, width) of the test frames
T0 = 1_700_000_000_000_000_000
PERIOD = 100_000_000  # 10 Hz


@pytest.fixture
def base(random_weights):
    return {"extractor.weights": random_weights, "extractor.device": "cpu", "extractor.max_keypoints": 200,
            "matching.ratio_test": 0.0, "matching.max_distance": 2.0, "diagnostics.period": 0.1,
            "diagnostics.max_latency": 3600.0}  # shared CPUs: only camera_info may warn here


@pytest.fixture(scope="module")
def distorted_camera():
    """The sample bag's plumb_bob camera at the test frame size."""
    return sample_cameras(SampleConf(size=SIZE, distortion="plumb_bob"))["left"]


def frame(image, k):
    return np.ascontiguousarray(image[100:100 + SIZE[0], 60 + 6 * k:60 + 6 * k + SIZE[1]])


def camera_info_msg(camera, stamp_ns, frame_id="cam", distortion_model=None, size=None):
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 10 ** 9)
    msg.header.frame_id = frame_id
    msg.height, msg.width = size or camera.image_size
    msg.distortion_model = camera.distortion_model if distortion_model is None else distortion_model
    msg.d = camera.D.tolist()
    msg.k = camera.K.reshape(-1).tolist()
    msg.r = camera.R.reshape(-1).tolist()
    msg.p = (camera.P if camera.P is not None else np.hstack([camera.K, np.zeros((3, 1))])).reshape(-1).tolist()
    return msg


def info_publisher(h, topic="camera_info"):
    from sensor_msgs.msg import CameraInfo

    pub = h.probe.create_publisher(CameraInfo, topic, RELIABLE)
    h.wait_for(lambda: pub.get_subscription_count() > 0, 5.0, f"the node's {topic} subscription")
    return pub


def diagnostics_after(h, processed):
    """(status, values) of the first /diagnostics message with ``processed`` frames."""
    def values(d):
        return {kv.key: kv.value for kv in d.status[0].values}

    h.wait_for(lambda: any(values(d).get("frames_processed") == str(processed) for d in list(h.received["/diagnostics"])),
               5.0, f"diagnostics after {processed} frames")
    d = next(d for d in list(h.received["/diagnostics"]) if values(d).get("frames_processed") == str(processed))
    return d.status[0], values(d)


def normalised(cloud):
    return decode_features(cloud).normalized


def test_camera_info_is_paired_by_stamp_else_the_latest_is_used(base, harness_factory, camera_image,
                                                                 distorted_camera):
    h = harness_factory(base, topics=("features", "/diagnostics"))
    image, info = h.publisher("image"), info_publisher(h)
    info.publish(camera_info_msg(distorted_camera, T0))
    h.wait_for(lambda: h.node.camera_info.tracks[0].received == 1, 5.0, "the camera_info")
    h.publish_and_wait(image, image_msg(frame(camera_image, 0), T0))
    status, values = diagnostics_after(h, 1)
    assert status.level == status.OK, status.message
    assert values["camera_info"] == "/camera_info: plumb_bob 320x240 px (stamp match)"
    h.publish_and_wait(image, image_msg(frame(camera_image, 1), T0 + PERIOD))  # no camera_info of its own
    status, values = diagnostics_after(h, 2)
    assert status.level == status.OK and values["camera_info"] == "/camera_info: plumb_bob 320x240 px (latest)"
    # within sync.slop (5 ms) of the frame: approximately paired
    info.publish(camera_info_msg(distorted_camera, T0 + 2 * PERIOD + 2_000_000))
    h.wait_for(lambda: h.node.camera_info.tracks[0].received == 2, 5.0, "the second camera_info")
    h.publish_and_wait(image, image_msg(frame(camera_image, 2), T0 + 2 * PERIOD))
    assert diagnostics_after(h, 3)[1]["camera_info"].endswith("(stamp match)")


@pytest.mark.parametrize("mode", ["auto", "required"])
def test_missing_camera_info_auto_is_quiet_required_warns_and_both_stay_pixel_only(base, harness_factory, camera_image,
                                                                                   capfd, mode):
    h = harness_factory({**base, "camera_info.mode": mode}, topics=("features", "/diagnostics"))
    image = h.publisher("image")
    clouds = [h.publish_and_wait(image, image_msg(frame(camera_image, k), T0 + k * PERIOD)) for k in range(3)]
    assert all(np.isnan(normalised(c)).all() for c in clouds)  # processed, pixel-only
    status, values = diagnostics_after(h, 3)
    assert values["camera_info"] == "/camera_info: none yet"
    lines = [line for line in capfd.readouterr().err.splitlines() if "no camera_info on /camera_info" in line]
    if mode == "auto":
        assert status.level == status.OK and not lines, status.message
    else:
        assert status.level == status.WARN
        assert "no camera_info on /camera_info yet (camera_info.mode: required): pixel-only output" in status.message
        assert len(lines) == 1 and "WARN" in lines[0], lines  # throttled: one line for three frames


def test_late_camera_info_is_used_from_the_next_frame(base, harness_factory, camera_image, distorted_camera):
    h = harness_factory({**base, "camera_info.mode": "required"}, topics=("features", "/diagnostics"))
    image, info = h.publisher("image"), info_publisher(h)
    h.publish_and_wait(image, image_msg(frame(camera_image, 0), T0))
    status, _ = diagnostics_after(h, 1)
    assert status.level == status.WARN  # required and missing
    info.publish(camera_info_msg(distorted_camera, T0 + PERIOD // 2))  # late, and between two frames
    h.wait_for(lambda: h.node.camera_info.tracks[0].received == 1, 5.0, "the camera_info")
    h.publish_and_wait(image, image_msg(frame(camera_image, 1), T0 + PERIOD))
    status, values = diagnostics_after(h, 2)
    assert status.level == status.OK, status.message  # the warning goes with it
    assert values["camera_info"] == "/camera_info: plumb_bob 320x240 px (latest)"


@pytest.mark.parametrize("case, fragment", [
    ("size", "camera_info on /camera_info is for 640x480 px images, the image is 320x240 px: pixel-only output"),
    ("model", "unsupported distortion_model 'kannala_brandt'"),
    ("uncalibrated", "K is all zero"),
])
def test_unusable_camera_info_gives_one_log_line_a_warning_and_pixel_only_output(base, harness_factory, camera_image,
                                                                                  distorted_camera, capfd, case,
                                                                                  fragment):
    h = harness_factory(base, topics=("features", "/diagnostics"))
    image, info = h.publisher("image"), info_publisher(h)
    camera = distorted_camera
    if case == "uncalibrated":
        msg = camera_info_msg(camera, T0)
        msg.k = [0.0] * 9
    else:
        msg = camera_info_msg(camera, T0, distortion_model="kannala_brandt" if case == "model" else None,
                              size=(480, 640) if case == "size" else None)
    capfd.readouterr()
    for k in range(3):
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(T0 + k * PERIOD, 10 ** 9)
        info.publish(msg)
        h.wait_for(lambda: h.node.camera_info.tracks[0].received == k + 1, 5.0, "the camera_info")
        cloud = h.publish_and_wait(image, image_msg(frame(camera_image, k), T0 + k * PERIOD))
        assert np.isnan(normalised(cloud)).all()  # pixel-only, and the node goes on
    status, _ = diagnostics_after(h, 3)
    assert status.level == status.WARN and fragment in status.message, status.message
    lines = [line for line in capfd.readouterr().err.splitlines() if fragment in line]
    assert len(lines) == 1, lines  # throttled: one line for three frames


def test_camera_info_off_subscribes_nothing(base, harness_factory, camera_image):
    h = harness_factory({**base, "camera_info.mode": "off"}, topics=("features", "/diagnostics"))
    image = h.publisher("image")
    assert h.node.camera_info is None and not h.node.get_subscriptions_info_by_topic("/camera_info")
    h.publish_and_wait(image, image_msg(frame(camera_image, 0), T0))
    assert diagnostics_after(h, 1)[1]["camera_info"] == "off (camera_info.mode)"


def test_camera_info_follows_the_image_remap_as_image_transport_names_it(base, harness_factory):
    h = harness_factory(base, cli_args=["--ros-args", "-r", "image:=/camera/image_raw"])
    assert [t.topic for t in h.node.camera_info.tracks] == ["/camera/camera_info"]
    h = harness_factory({**base, "stereo.enabled": True},
                        cli_args=["--ros-args", "-r", "__ns:=/robot", "-r", "left/camera_info:=/calib/left"])
    assert [t.topic for t in h.node.camera_info.tracks] == ["/calib/left", "/robot/right/camera_info"]


# --- these two need the Frontend's camera models (frontcam): normalised coordinates, VINS rows ---------
def test_distorted_mono_features_carry_undistorted_normalised_coordinates(base, harness_factory, camera_image,
                                                                          distorted_camera):
    h = harness_factory(base)
    image, info = h.publisher("image"), info_publisher(h)
    clouds = []
    for k in range(2):
        info.publish(camera_info_msg(distorted_camera, T0 + k * PERIOD))
        h.wait_for(lambda: h.node.camera_info.tracks[0].received == k + 1, 5.0, "the camera_info")
        clouds.append(h.publish_and_wait(image, image_msg(frame(camera_image, k), T0 + k * PERIOD)))
    for cloud in clouds:
        features = decode_features(cloud)
        expected = undistort_points(distorted_camera, features.keypoints.astype(np.float64))
        assert np.isfinite(features.normalized).all()
        np.testing.assert_allclose(features.normalized, expected, atol=1e-6)  # float32 of |x_n| < 1


def test_vins_feature_rows_are_the_features_normalised_points(base, harness_factory, camera_image, distorted_camera):
    h = harness_factory({**base, "output.vins_feature": "fusion"})
    from sensor_msgs.msg import PointCloud

    vins = []
    h.probe.create_subscription(PointCloud, "vins_feature", vins.append, RELIABLE)
    image, info = h.publisher("image"), info_publisher(h)
    for k in range(2):
        info.publish(camera_info_msg(distorted_camera, T0 + k * PERIOD))
        h.wait_for(lambda: h.node.camera_info.tracks[0].received == k + 1, 5.0, "the camera_info")
        h.publish_and_wait(image, image_msg(frame(camera_image, k), T0 + k * PERIOD))
    h.wait_for(lambda: len(vins) >= 2, 5.0, "two vins_feature messages")
    for msg, cloud in zip(vins, h.received["features"]):
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (cloud.header.stamp.sec, cloud.header.stamp.nanosec)
        obs, features = decode_vins_feature(msg, "fusion"), decode_features(cloud)
        rows = {int(i): r for r, i in enumerate(wrap_vins_ids(features.track_ids))}
        assert len(obs) == len(features) and set(obs.camera_ids.tolist()) == {0}
        index = np.array([rows[int(i)] for i in obs.feature_ids])
        np.testing.assert_array_equal(obs.pixels, features.keypoints[index])
        np.testing.assert_array_equal(obs.normalized, features.normalized[index])


def test_stereo_pairs_take_each_cameras_info_and_the_left_is_used_without_the_right(base, harness_factory,
                                                                                     distorted_camera):
    from skimage import data

    left, right, _ = data.stereo_motorcycle()
    left, right = (np.ascontiguousarray(i[100:100 + SIZE[0], 200:200 + SIZE[1]]) for i in (left, right))
    cameras = sample_cameras(SampleConf(size=SIZE, distortion="plumb_bob"))
    # camera_info.images: raw, so the plumb_bob CameraInfos are used as they are (on image_rect topics
    # auto would take the images as rectified and use the CameraInfos' P: "no distortion")
    h = harness_factory({**base, "stereo.enabled": True, "stereo.max_disparity": 64.0, "camera_info.images": "raw"},
                        topics=("features", "features_right", "/diagnostics"))
    pub_l, pub_r = h.publisher("left/image_rect"), h.publisher("right/image_rect")
    info_l, info_r = info_publisher(h, "left/camera_info"), info_publisher(h, "right/camera_info")
    info_l.publish(camera_info_msg(cameras["left"], T0, "left"))
    info_r.publish(camera_info_msg(cameras["right"], T0, "right"))
    h.wait_for(lambda: [t.received for t in h.node.camera_info.tracks] == [1, 1], 5.0, "both camera_infos")
    pub_r.publish(image_msg(right, T0, "right"))
    pub_l.publish(image_msg(left, T0, "left"))
    h.wait_for(lambda: h.count("features_right") >= 1, 10.0, "the pair's features")
    status, values = diagnostics_after(h, 1)
    assert status.level == status.OK, status.message
    assert values["camera_info"] == ("/left/camera_info: plumb_bob 320x240 px (stamp match); "
                                     "/right/camera_info: plumb_bob 320x240 px (stamp match)")
    # a right camera_info of the wrong size: said so; the left camera is still used
    info_r.publish(camera_info_msg(cameras["right"], T0 + PERIOD, "right", size=(480, 640)))
    h.wait_for(lambda: h.node.camera_info.tracks[1].received == 2, 5.0, "the bad right camera_info")
    pub_r.publish(image_msg(right, T0 + PERIOD, "right"))
    pub_l.publish(image_msg(left, T0 + PERIOD, "left"))
    h.wait_for(lambda: h.count("features_right") >= 2, 10.0, "the second pair's features")
    status, values = diagnostics_after(h, 2)
    assert status.level == status.WARN and "camera_info on /right/camera_info is for 640x480 px images" in status.message
    assert values["camera_info"] == ("/left/camera_info: plumb_bob 320x240 px (latest); "
                                     "/right/camera_info: size mismatch")
    assert np.isnan(normalised(h.received["features_right"][-1])).all()  # the right side is pixel-only
    # needs the Frontend's camera models (frontcam): the left keeps its normalised coordinates
    assert np.isfinite(normalised(h.received["features"][-1])).all()
