"""Node end to end: a frame published as sensor_msgs/Image -> its ``features`` PointCloud2 received,
over loopback DDS, with ``superpoint_node`` running as its own process (as in deployment).

Latency is the wall time from ``publish()`` to the features callback in this process, one frame
in flight at a time (no queueing). It is compared with the extractor's own time and with the
ROS-free Frontend (extractor + matching + tracking + RANSAC, what the node runs per frame) on the
same frames and parameters, timed here while the node idles.

DDS never leaves the machine: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a private
ROS_DOMAIN_ID are set before rclpy is imported (the node process inherits them), and the Fast DDS
profile ``config/fastdds_shm.xml`` (shared memory for large images) is used when it exists.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FASTDDS_PROFILE = ROOT / "config" / "fastdds_shm.xml"
#: The node runs its shipped mono configuration (flow refinement included), as a robot would.
PARAMS_FILE = ROOT / "config" / "superpoint_mono.yaml"
#: the row the node is compared with for issue 17 (the same frames and parameters, no ROS)
FRONTEND_VARIANT = "Frontend.process_mono in-process"


def _isolate_dds() -> None:
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(200 + random.Random(os.getpid()).randrange(30)))
    os.environ.setdefault("ROS_LOG_DIR", os.path.join(tempfile.gettempdir(), "superpoint_bench_ros_logs"))
    if FASTDDS_PROFILE.exists():
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(FASTDDS_PROFILE))


def node_params(weights: str, device: str, threshold: float) -> dict:
    """What the benchmark sets on top of :data:`PARAMS_FILE`: its weights, device and threshold."""
    # reliable input: with best-effort, the first frame after discovery can be lost (seen once), and
    # lost frames are not what this measures (one frame in flight at a time)
    return {"extractor.weights": weights, "extractor.device": device, "extractor.detection_threshold": threshold,
            "extractor.max_keypoints": 1000, "qos.reliability": "reliable"}


def moving_camera(photos, size, steps: int = 24, step_px: int = 3) -> list:
    """BGR frames of a camera panning slowly over a real photo (so tracking and RANSAC do real
    work, as on a robot): crops of the photo scaled up a little, shifted ``step_px`` per frame."""
    import cv2

    h, w = size
    photo = photos["astronaut"]
    photo = photo if photo.ndim == 3 else np.dstack([photo] * 3)
    big = cv2.resize(photo, (w + steps * step_px, h + steps * step_px // 2), interpolation=cv2.INTER_AREA)
    return [np.ascontiguousarray(big[i * step_px // 2:i * step_px // 2 + h, i * step_px:i * step_px + w])
            for i in range(steps)]


def bench_node(report, device, photos, resolutions, threshold, args) -> None:
    _isolate_dds()
    try:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2

        from superpoint_ros.params import frontend_conf, load_params, validate
        import superpoint_ros.ros.node  # noqa: F401 - the node must import here too
    except Exception as e:  # noqa: BLE001 - ROS not installed / node not written yet
        report.note(f"node section skipped: {type(e).__name__}: {e}")
        return
    from superpoint_ros import FeatureExtractor
    from superpoint_ros.frontend import Frontend

    from .images import RESOLUTIONS
    from .timing import time_variants

    params = node_params(args.weights_path, str(device), threshold)
    flat = validate({**load_params(PARAMS_FILE), **params})
    ros_args = ["--params-file", str(PARAMS_FILE)] + [a for name, value in params.items() for a in ("-p", f"{name}:={value}")]
    node_log = open(os.path.join(tempfile.gettempdir(), "superpoint_bench_node.log"), "w")
    process = subprocess.Popen([sys.executable, "-m", "superpoint_ros.ros.node", "--ros-args", *ros_args],
                               cwd=ROOT, stdout=node_log, stderr=subprocess.STDOUT, env=dict(os.environ))
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = rclpy.create_node("superpoint_bench_probe", context=context)
    received = {}
    arrived = threading.Condition()

    def on_features(msg):
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        with arrived:
            received[key] = (time.perf_counter(), msg.width)
            arrived.notify_all()

    qos_in = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)
    probe.create_subscription(PointCloud2, "features", on_features, qos_in)
    publisher = probe.create_publisher(Image, "image", QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                                                 reliability=ReliabilityPolicy.RELIABLE))
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 60.0
        while publisher.get_subscription_count() == 0 or probe.count_publishers("features") == 0:
            if process.poll() is not None or time.monotonic() > deadline:
                node_log.flush()
                tail = Path(node_log.name).read_text()[-800:]
                report.note(f"node section skipped: superpoint_node did not come up: {tail}")
                return
            time.sleep(0.1)
        stamp_ns = [1_000_000_000]

        def publish_and_wait(frame: np.ndarray, timeout: float = 20.0) -> float:
            stamp_ns[0] += 100_000_000  # 10 Hz stamps: always a forward step for the tracker
            msg = Image()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns[0], 1_000_000_000)
            msg.header.frame_id = "bench_camera"
            msg.height, msg.width = frame.shape[:2]
            msg.encoding, msg.is_bigendian, msg.step = "bgr8", 0, frame.strides[0]
            msg.data = frame.tobytes()
            key = divmod(stamp_ns[0], 1_000_000_000)
            t0 = time.perf_counter()
            publisher.publish(msg)
            with arrived:
                if not arrived.wait_for(lambda: key in received, timeout):
                    raise TimeoutError(f"no features for frame {key} within {timeout} s")
                return 1000.0 * (received[key][0] - t0)

        for resolution in resolutions:
            frames = moving_camera(photos, RESOLUTIONS[resolution])
            repeats = max(args.repeats, 6)
            try:
                for i in range(3):  # warm-up: model caches, DDS discovery of the big-message path
                    publish_and_wait(frames[i % len(frames)], timeout=60.0)
            except TimeoutError as e:
                report.note(f"node {resolution}: {e}")
                continue
            extractor = FeatureExtractor(frontend_conf(flat).extractor)
            frontend = Frontend(flat)
            clock = [0]

            def frontend_step(i):
                clock[0] += 100_000_000  # ns: 10 Hz
                frontend.process_mono(frames[i % len(frames)], clock[0], "bench_camera")

            # interleaved with the in-process runs so that background load hits all three alike
            try:
                samples = time_variants({
                    "node end-to-end (publish -> features received)": lambda i: publish_and_wait(frames[i % len(frames)]),
                    "extractor in-process": lambda i: extractor(frames[i % len(frames)]),
                    FRONTEND_VARIANT: frontend_step}, repeats, args.warmup, device, args.budget)
            except TimeoutError as e:
                report.note(f"node {resolution}: {e}")
                continue
            node_ms, local = samples["node end-to-end (publish -> features received)"], samples
            extractor_ms = float(np.median(local["extractor in-process"]))
            ratio = float(np.median(node_ms)) / extractor_ms
            report.add("node", resolution, samples, "extractor in-process", {
                "node end-to-end (publish -> features received)": {
                    "overhead_ratio": ratio, "backend": extractor.backend_name,
                    "fastdds_profile": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "default")}})
            for row in report.rows:
                if row["section"] == "node" and row["resolution"] == resolution and "end-to-end" in row["variant"]:
                    row["overhead_ratio"] = ratio
    finally:
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown(context=context)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        node_log.close()
