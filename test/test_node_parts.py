"""The node's pieces on their own: the newest-wins frame queue and its drop report, the throttled
log, and the start-up parameter check (pure functions; no node, no DDS)."""
import threading

import pytest

from superpoint_ros.ros.frame_queue import DropReport, FrameQueue
from superpoint_ros.ros.throttle import ThrottledLog, message_kind

pytestmark = pytest.mark.ros  # superpoint_ros.ros.parameters imports rcl_interfaces


def test_a_full_queue_drops_the_oldest_and_counts_it():
    queue = FrameQueue(2)
    assert [queue.put(k, received_at=float(k)) for k in range(4)] == [False, False, True, True]
    assert queue.dropped == 2 and len(queue) == 2
    first, second = queue.get(timeout=0), queue.get(timeout=0)
    assert (first.item, first.received_at, second.item) == (2, 2.0, 3)  # the newest frames won
    assert queue.get(timeout=0) is None  # empty: nothing after the timeout


def test_close_wakes_a_waiting_worker_and_ignores_later_frames():
    queue = FrameQueue(1)
    got = []
    worker = threading.Thread(target=lambda: got.append(queue.get()))
    worker.start()
    queue.close()
    worker.join(timeout=5)
    assert not worker.is_alive() and got == [None]
    assert queue.put("late") is False and queue.get(timeout=0) is None


def test_clear_empties_without_counting_drops():
    queue = FrameQueue(3)
    for k in range(3):
        queue.put(k)
    assert queue.clear() == 3 and len(queue) == 0 and queue.dropped == 0
    with pytest.raises(ValueError, match="maxsize"):
        FrameQueue(0)


def test_drop_report_says_why_and_is_throttled():
    report = DropReport(queue_size=1, period_s=5.0)
    assert report.report(0.0) is None  # nothing dropped
    for k in range(5):
        report.arrived(k * 0.1, dropped=k >= 3)  # every 100 ms; the last two pushed frames out
    text = report.report(0.5, process_ms=[250.0, 350.0])
    assert text.startswith("dropped 2 frame(s) in the last 0.5 s: processing 300 ms per frame > input period 100 ms")
    assert "input.queue_size=1" in text and not report.pending
    report.arrived(1.0, dropped=True)
    assert report.report(1.0) is None and report.pending  # within 5 s of the last report: held back
    assert report.report(5.6, busy_ms=None).startswith("dropped 1 frame(s) in the last 5.1 s: processing not started")


class Logger:
    def __init__(self):
        self.lines = []

    def warning(self, text):
        self.lines.append(("warning", text))

    def info(self, text):
        self.lines.append(("info", text))


def test_throttled_log_per_kind_counts_what_it_held_back():
    now = [0.0]
    logger = Logger()
    log = ThrottledLog(logger, period_s=5.0, clock=lambda: now[0])
    assert message_kind("stamp 12.5 s, 3 px") == message_kind("stamp 13.0 s, 40 px")
    assert log("skipped a frame: stamp 1 s") and not log("skipped a frame: stamp 2 s")
    assert log("tracks reset: time jump", "info")  # another kind is not hidden by the first
    now[0] = 5.0
    assert log("skipped a frame: stamp 3 s")
    assert logger.lines == [("warning", "skipped a frame: stamp 1 s"), ("info", "tracks reset: time jump"),
                            ("warning", "skipped a frame: stamp 3 s (1 more like it since the last report)")]
    log.forget()
    assert log("skipped a frame: stamp 4 s")  # a fresh period


def test_start_up_check_lists_every_problem_and_coerces_integers_for_floats():
    from superpoint_ros.ros.parameters import check_start_up, qos_override_names

    allowed = qos_override_names(["/features"], ["reliability"])
    assert allowed == ["qos_overrides./features.publisher.reliability"]
    values, problems = check_start_up({"ransac.threshold": 2, "use_sim_time": False,
                                       "qos_overrides./features.publisher.reliability": "best_effort"}, allowed)
    assert values == {"ransac.threshold": 2.0} and isinstance(values["ransac.threshold"], float) and problems == []
    _, problems = check_start_up({"extractor.nms_radius": 99, "stereo.max_disparty": 3.0,
                                  "qos_overrides./image.subscription.reliability": "reliable"}, allowed)
    assert len(problems) == 3
    assert "extractor.nms_radius=99 is outside [0, 32]" in problems[0]
    assert problems[1] == "unknown parameter 'stereo.max_disparty'"
    assert "qos_overrides./image.subscription.reliability configures nothing" in problems[2]
    assert "qos.reliability" in problems[2]
    _, problems = check_start_up({"stereo.min_disparity": 50.0, "stereo.max_disparity": 10.0}, allowed)
    assert problems and "larger than" in problems[0]  # combinations too


def info(camera, stamp_ns, **fields):
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo(width=camera.width, height=camera.height, distortion_model=camera.distortion_model,
                     d=camera.D.tolist(), k=camera.K.reshape(-1).tolist(), r=camera.R.reshape(-1).tolist(),
                     p=camera.P.reshape(-1).tolist())
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10 ** 9)
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


def test_camera_info_track_pairs_by_stamp_else_latest_and_builds_a_model_only_on_change():
    from superpoint_ros.evaluation.sample_data import SampleConf, sample_cameras
    from superpoint_ros.ros.camera_info import CameraInfoTrack

    camera = sample_cameras(SampleConf(size=(240, 320), distortion="plumb_bob"))["left"]
    track = CameraInfoTrack("/camera_info", slop_ns=5_000_000, queue_size=10)
    assert track.lookup(10 ** 9) == (None, False)  # nothing received yet
    first, second = info(camera, 2 * 10 ** 9), info(camera, 3 * 10 ** 9 + 4_000_000)
    track.add(2 * 10 ** 9, first)
    track.add(3 * 10 ** 9 + 4_000_000, second)
    assert track.lookup(2 * 10 ** 9) == (first, True)  # exact
    assert track.lookup(3 * 10 ** 9) == (second, True)  # within the 5 ms slop
    assert track.lookup(4 * 10 ** 9) == (second, False)  # none of its own: the latest
    model = track.calibration(first).camera
    assert model.same_calibration(camera) and track.calibration(second).camera is model  # same fields: not rebuilt
    refocused = info(camera, 5 * 10 ** 9, k=(camera.K * [[1.01], [1.01], [1]]).reshape(-1).tolist())
    assert track.calibration(refocused).camera is not model
    unknown = track.calibration(info(camera, 6 * 10 ** 9, distortion_model="kannala_brandt"))
    assert unknown.camera is None and "unsupported distortion_model 'kannala_brandt'" in unknown.error
