"""``superpoint_node``: the SuperPoint visual front-end as a ROS 2 node.

Subscribes (relative names, remap as usual):
  mono:   ``image`` (sensor_msgs/Image) or ``<image>/compressed`` (CompressedImage, ``input.compressed``:
          the resolved ``image`` topic + ``/compressed``, as image_transport names it)
  stereo: ``left/image_rect`` + ``right/image_rect`` (``stereo.enabled``; ``/compressed`` likewise)
  with the reliability the publishers offer (``qos.reliability: auto``) unless told otherwise
  ``camera_info`` / ``left/camera_info`` + ``right/camera_info`` (sensor_msgs/CameraInfo, next to the
  image topics; ``camera_info.mode``): the intrinsics, paired with the images by stamp, else the latest
Publishes:
  ``features`` (PointCloud2: track_id, x, y, score, track_length, descriptor[D], x_n, y_n, vx, vy,
  vx_n, vy_n) for the mono/left image (normalised fields NaN without intrinsics)
  ``features_right`` (stereo) the right image's features, same stamp
  ``stereo_matches`` (PointCloud2, stereo) rows of features/features_right with the same stamp
  ``temporal_matches`` (PointCloud2) previous/current feature rows, previous stamp in the rows
  ``vins_feature`` (PointCloud, ``output.vins_feature``) VINS-Fusion/Mono's feature message, with intrinsics
  ``debug_image`` (Image bgr8) keypoints and track trails, drawn only while someone subscribes
  ``/diagnostics`` (diagnostic_msgs/DiagnosticArray) rates, drops, latency, stage timings
Layouts: docs/messages.md (codec in ``superpoint_ros.io.messages``). Parameters: docs/node.md
(the table in ``superpoint_ros.params``).

Threading: the subscription callbacks only enqueue (camera_info: only store); one worker thread
decodes, picks the frame's intrinsics, runs the :class:`~superpoint_ros.frontend.Frontend` and publishes. The queue is bounded
(``input.queue_size``, default 1): when it is full the oldest frame is dropped and counted, so the
newest frame wins and latency never builds up.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, Dict, List, Optional

import numpy as np
import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.utilities import get_rmw_implementation_identifier
from sensor_msgs.msg import CompressedImage, Image

from ..backends import configure_process
from ..frontend import FrameResult, FrameSkipped, Frontend
from ..image import ImageError
from ..io.image_decoding import decode_compressed_image, decode_image
from ..params import PARAMETERS, ParamsError
from ..stamps import message_stamp_ns
from ..sync import StampSynchronizer
from ..weights import WeightsError
from . import parameters
from .diagnostics import Stats, diagnostic_array, diagnostic_status, input_warnings, pairing_window_due
from .camera_info import CameraInfoInputs, CameraInfoChoice
from .frame_queue import DropReport, FrameQueue
from .inputs import COMPRESSED_SUFFIX, ImageInput, SharedMemoryCheck, input_topic
from .publishers import QOS_OVERRIDE_POLICIES, DebugImage, OutputPublishers, output_topics
from .throttle import ThrottledLog

NODE_NAME = "superpoint_node"
MONO_TOPIC, LEFT_TOPIC, RIGHT_TOPIC = "image", "left/image_rect", "right/image_rect"
MONO_INFO_TOPIC, LEFT_INFO_TOPIC, RIGHT_INFO_TOPIC = "camera_info", "left/camera_info", "right/camera_info"
#: every image topic the node subscribes to (relative names; remap them)
INPUT_TOPICS = tuple(t + s for t in (MONO_TOPIC, LEFT_TOPIC, RIGHT_TOPIC) for s in ("", COMPRESSED_SUFFIX))
#: the camera_info topics (relative; by default next to the resolved image topics: camera_info.py)
CAMERA_INFO_TOPICS = (MONO_INFO_TOPIC, LEFT_INFO_TOPIC, RIGHT_INFO_TOPIC)
INPUT_REFRESH_S = 0.5  # qos.reliability auto: how often the input topics' publishers are looked up
WORKER_STOP_S = 5.0  # how long stopping waits for the worker's current frame
#: the stereo synchroniser's inputs, in pair order
STEREO_INPUTS = ("left", "right")


class SuperPointNode(Node):
    """The front-end node. Construction raises (WeightsError, ParamsError, RuntimeError for a
    missing CUDA, rclpy ParameterException) on start-up faults; :func:`main` turns those into a
    one-line message and a non-zero exit."""

    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **{**node_kwargs, **parameters.NODE_OPTIONS})
        # the start-up steps, in order; SuperPointLifecycleNode (lifecycle_node.py) runs the same
        # steps at its transitions instead of all here
        self._declare_parameters()
        self.params = self._read_parameters()
        self._create_frontend()
        self._create_publishers()
        self._init_pipeline_state()
        self._create_subscriptions()
        self._watch_parameters()
        self._create_diagnostics_timer()
        self._start_worker()
        self._log_ready()

    # --- start-up steps (SuperPointLifecycleNode runs them at its transitions) --------------------
    def _declare_parameters(self) -> None:
        """Checks the start-up values against the table (every problem at once) and declares
        the table's parameters (:func:`superpoint_ros.ros.parameters.declare_checked`)."""
        stereo = parameters.start_up_value(self, "stereo.enabled")
        vins = bool(parameters.start_up_value(self, "output.vins_feature"))
        parameters.declare_checked(self, output_topics(stereo, vins), QOS_OVERRIDE_POLICIES)

    def _read_parameters(self) -> Dict[str, Any]:
        """The declared parameters' current values, validated together (raises ParamsError)."""
        return parameters.read_values(self)

    def _watch_parameters(self) -> None:
        """Run-time changes: validated first, applied after they are set (ros2/demos' pattern)."""
        self.add_on_set_parameters_callback(self.on_set_parameters)
        self.add_post_set_parameters_callback(self.on_parameters_set)

    def _create_frontend(self) -> None:
        """Loads the weights and builds the front-end (raises WeightsError, RuntimeError, ...)."""
        p = self.params
        self.frontend = Frontend(p)
        self._frontend_lock = threading.Lock()
        self.stereo = p["stereo.enabled"]

    def _new_publisher(self, msg_type, topic: str, qos, **kwargs):
        return self.create_publisher(msg_type, topic, qos, **kwargs)

    def _create_publishers(self) -> None:
        p = self.params
        self.outputs = OutputPublishers(self._new_publisher, p["qos.depth"], self.stereo, p["output.vins_feature"])

    def _init_pipeline_state(self) -> None:
        """Counters, the frame queue, the throttled log and the debug trails: fresh for a new stream."""
        self.stats = Stats()
        self.log_throttled = ThrottledLog(self.get_logger())
        self._queue = FrameQueue(self.params["input.queue_size"])
        self._drops = DropReport(self.params["input.queue_size"])
        self._debug_image = DebugImage()
        if self.params["camera_info.mode"] == "off":
            self.stats.set_camera_state((), "off (camera_info.mode)")

    def _create_subscriptions(self) -> None:
        self._shm_check = SharedMemoryCheck(get_rmw_implementation_identifier())
        if self.stereo:
            p = self.params
            self.synchronizer = StampSynchronizer.from_params(STEREO_INPUTS, p["sync.mode"], p["sync.slop"],
                                                              p["sync.queue_size"])
            self.inputs = [self._image_input(LEFT_TOPIC, self.on_left_image),
                           self._image_input(RIGHT_TOPIC, self.on_right_image)]
        else:
            self.inputs = [self._image_input(MONO_TOPIC, self.on_image)]
        self.camera_info = self._camera_info_inputs()
        if any(i.auto for i in self._all_inputs()):  # publishers come and go: follow what they offer
            self.input_timer = self.create_timer(INPUT_REFRESH_S, self.on_input_timer)

    def _destroy_subscriptions(self) -> None:
        """Undoes :meth:`_create_subscriptions` (lifecycle deactivate): no more input callbacks."""
        timer = self.__dict__.pop("input_timer", None)  # qos.reliability auto's re-subscription timer
        if timer is not None:
            self.destroy_timer(timer)
        inputs = self._all_inputs()
        self.__dict__.pop("inputs", None)
        self.camera_info = None  # and the camera_info received
        for subscribed in inputs:
            if subscribed.subscription is not None:
                self.destroy_subscription(subscribed.subscription)
                subscribed.subscription = None
        self.synchronizer = None  # and its unpaired messages

    def _camera_info_inputs(self) -> Optional[CameraInfoInputs]:
        """The camera_info subscriptions (None with camera_info.mode off)."""
        p = self.params
        if p["camera_info.mode"] == "off":
            return None
        images, infos = ((LEFT_TOPIC, RIGHT_TOPIC), (LEFT_INFO_TOPIC, RIGHT_INFO_TOPIC)) if self.stereo else \
            ((MONO_TOPIC,), (MONO_INFO_TOPIC,))
        return CameraInfoInputs(self, p["camera_info.mode"], images, infos, p["qos.depth"], p["qos.reliability"],
                                p["sync.mode"], p["sync.slop"], p["sync.queue_size"], p["camera_info.images"])

    def _all_inputs(self) -> List[ImageInput]:
        """Every subscription that follows its publishers' QoS: images, then camera_info."""
        camera_info = getattr(self, "camera_info", None)
        return [*getattr(self, "inputs", ()), *(camera_info.inputs if camera_info is not None else ())]

    def _create_diagnostics_timer(self) -> None:
        self.diagnostics_timer = self.create_timer(self.params["diagnostics.period"], self.on_diagnostics_timer)

    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._work, args=(self._queue,), name="superpoint_worker", daemon=True)
        self._worker.start()

    def _log_ready(self) -> None:
        for warning in self.frontend.warnings:
            self.get_logger().warning(warning)
        inputs = "; ".join(i.describe() for i in self._all_inputs()) or "none until activated"
        outputs = ", ".join(pub.topic_name for pub in self.outputs.all())
        self.get_logger().info(f"inputs: {inputs}; outputs: {outputs}")
        ex = self.frontend.extractor
        self.get_logger().info(
            f"{'stereo' if self.stereo else 'mono'} front-end ready: weights {ex.weights_path or 'in-memory'} "
            f"({ex.provenance.get('format', 'superpoint_ros checkpoint')}), device {ex.device}, network "
            f"{ex.backend_name}, descriptor {ex.descriptor_dim}-d")
        for note in ex.provenance.get("load_notes", []):  # e.g. a stripped DDP prefix, a converted layout
            self.get_logger().info(f"weights: {note}")
        for reason in ex.runner.fallbacks:  # a fast path that could not be used (e.g. int8 quantisation)
            self.get_logger().warning(f"extractor fall-back: {reason}")

    def _image_input(self, name: str, callback) -> ImageInput:
        """The subscription of input ``name`` (e.g. ``"image"``), resolved, compressed or not."""
        p = self.params
        image_type = CompressedImage if p["input.compressed"] else Image
        return ImageInput(self, image_type, input_topic(self, name, p["input.compressed"]), callback,
                          p["qos.depth"], p["qos.reliability"])

    # --- callbacks: one per topic, enqueue only -------------------------------------------------------
    def on_image(self, msg) -> None:
        self._check_frame_size(msg)
        self._enqueue((msg,))

    def on_left_image(self, msg) -> None:
        self._on_side(0, msg)

    def on_right_image(self, msg) -> None:
        self._on_side(1, msg)

    def _on_side(self, side: int, msg) -> None:
        """Stereo input ``side`` (0 left, 1 right) into the synchroniser
        (:class:`superpoint_ros.sync.StampSynchronizer`, the same pairing superpoint-eval-bag reads
        bags with); a completed pair goes to the queue."""
        self._check_frame_size(msg)
        sync = self.synchronizer
        if sync is None:  # deactivated between the message and its callback
            return
        stamp_ns = message_stamp_ns(msg)
        pair = sync.add(STEREO_INPUTS[side], stamp_ns, msg)
        if pair is not None:
            self.stats.pair_formed()
            self._enqueue(pair)
        self.stats.side_received(side, stamp_ns, time.monotonic())  # per-side arrivals, for "never pair" reports

    def _check_frame_size(self, msg) -> None:
        warning = self._shm_check.check(msg)  # once: None after the first too-large frame
        if warning:
            self.stats.set_transport_warning(warning)
            self.get_logger().warning(warning)

    def on_input_timer(self) -> None:
        for subscribed in self._all_inputs():
            subscribed.refresh()

    def _enqueue(self, item) -> None:
        dropped = self._queue.put(item)  # a full queue drops its oldest: the newest frame wins
        now = time.monotonic()
        self.stats.frame_received(now, dropped)
        self._drops.arrived(now, dropped)
        if dropped:
            self._report_drops(now)

    def _report_drops(self, now: float) -> None:
        process_ms, busy_ms = self.stats.processing(time.perf_counter())
        report = self._drops.report(now, process_ms, busy_ms)
        if report:
            self.get_logger().warning(report)

    def on_set_parameters(self, parameters_) -> Any:
        """Validate: every value against the table, the whole set together (nothing changes if not)."""
        return parameters.check_changes(parameters_, self.params if self.frontend is not None else None)

    def on_parameters_set(self, parameters_) -> None:
        """Apply what :meth:`on_set_parameters` accepted, from the next frame on."""
        if self.frontend is None:  # a lifecycle node not configured yet: on_configure reads them
            return
        changes, _ = parameters.table_changes(parameters_)
        self.params = {**self.params, **changes}
        frontend_changes = {k: v for k, v in changes.items() if PARAMETERS[k].frontend}
        if frontend_changes:
            with self._frontend_lock:
                self.frontend.update(frontend_changes)

    def on_diagnostics_timer(self) -> None:
        sync = getattr(self, "synchronizer", None) if self.stereo else None
        unpaired = sync.dropped if sync is not None else None
        snapshot = self.stats.snapshot()
        self.stats.start_window(snapshot.now)
        if self.stereo and pairing_window_due(snapshot, self.params["diagnostics.period"]):
            self.stats.start_pairing_window(snapshot.now, unpaired or 0)
        warnings = input_warnings(snapshot, self.params, self.stereo, unpaired, (LEFT_TOPIC, RIGHT_TOPIC))
        if self._drops.pending:  # drops that stopped: reported even without a new one
            self._report_drops(snapshot.now)
        for warning in warnings:
            self.log_throttled(warning)
        status = diagnostic_status(snapshot, self.params, warnings, f"{self.get_name()}: SuperPoint front-end",
                                   self.frontend.extractor, self.inputs, unpaired)
        self.outputs.diagnostics.publish(diagnostic_array(status, self.get_clock().now().to_msg()))

    # --- worker ----------------------------------------------------------------------------------
    def _work(self, queue: FrameQueue) -> None:
        """The worker thread: frames from ``queue`` until it closes."""
        while True:
            frame = queue.get()
            if frame is None:
                return
            started = time.perf_counter()
            self.stats.frame_started(started)
            try:
                self._process(frame.item, frame.received_at)
            except (ImageError, FrameSkipped) as e:  # bad input, OOM: log (throttled), skip the frame, stay alive
                self._skip(str(e))
            except Exception as e:  # noqa: BLE001 - the node must outlive one bad frame
                self._skip(f"{type(e).__name__}: {e}")
            self.stats.frame_finished(started, time.perf_counter())

    def _skip(self, reason: str) -> None:
        self.stats.frame_skipped(reason)
        self.log_throttled(f"skipped a frame: {reason}")

    def _decode(self, msg) -> np.ndarray:
        return decode_compressed_image(msg) if isinstance(msg, CompressedImage) else decode_image(msg)

    def _run_frontend(self, item) -> tuple:
        """(FrameResult, the decoded mono/left image) of a queued frame (raises ImageError, FrameSkipped)."""
        header = item[0].header
        stamp_ns = message_stamp_ns(item[0])  # exact: sec * 10**9 + nanosec
        if len(item) == 2:
            left, right = self._decode(item[0]), self._decode(item[1])  # an unsupported encoding says so first
            encodings = [getattr(m, "encoding", None) for m in item]
            if isinstance(item[0], Image) and encodings[0] != encodings[1]:
                raise ImageError(f"stereo images differ in encoding: left {encodings[0]!r}, right {encodings[1]!r}")
            cameras = self._frame_cameras(stamp_ns, (left, right))
            with self._frontend_lock:
                self._use_cameras(cameras)
                return self.frontend.process_stereo(left, right, stamp_ns, header.frame_id), left
        image = self._decode(item[0])
        cameras = self._frame_cameras(stamp_ns, (image,))
        with self._frontend_lock:
            self._use_cameras(cameras)
            return self.frontend.process_mono(image, stamp_ns, header.frame_id), image

    def _frame_cameras(self, stamp_ns: int, images) -> Optional[CameraInfoChoice]:
        """The intrinsics of this frame (None with camera_info.mode off); problems are logged
        (throttled per kind) and shown in diagnostics."""
        camera_info = self.camera_info
        if camera_info is None:
            return None
        cameras = camera_info.for_frame(stamp_ns, [image.shape[:2] for image in images])
        for problem in cameras.problems:
            self.log_throttled(problem)
        self.stats.set_camera_state(cameras.problems, cameras.summary)
        return cameras

    def _use_cameras(self, cameras: Optional[CameraInfoChoice]) -> None:
        """Gives the Frontend this frame's intrinsics (the same calibration again is a no-op there;
        a changed one resets the tracks and the result's reset_reason says so, logged). Called with
        the front-end lock held."""
        if cameras is not None:
            self.frontend.set_cameras(cameras.left, cameras.right)

    def _process(self, item, received_at: float) -> None:
        header = item[0].header
        result, image = self._run_frontend(item)
        self._log_resize(result)
        if result.camera_problem:  # a camera the Frontend could not use for this frame: pixel-only
            self.log_throttled(result.camera_problem)
        self.outputs.publish_frame(result, header.frame_id, item[1].header.frame_id if len(item) == 2 else None)
        if self.outputs.debug_wanted():
            self.outputs.debug_image.publish(self._debug_image.render(image, result, header,
                                                                      self.params["debug.track_length"]))
            self.stats.debug_image_published()
        else:
            self._debug_image.clear()
        self.stats.frame_processed(result, (time.perf_counter() - received_at) * 1e3)
        if result.reset_reason:
            self.log_throttled(f"tracks reset: {result.reset_reason}", "info")  # throttled per reason

    def _log_resize(self, result: FrameResult) -> None:
        """One warning per input size that the network and flow run on resized images."""
        f = result.features
        if f.resized_to is None or f.image_size == getattr(self, "_logged_resize", None):
            return
        self._logged_resize = f.image_size
        (h, w), (rh, rw) = f.image_size, f.resized_to
        self.get_logger().warning(f"input images of {w}x{h} px are larger than image.max_size="
                                  f"{self.params['image.max_size']} px: resized to {rw}x{rh} px for the network "
                                  f"and optical flow (keypoints still in input pixels)")

    def _stop_worker(self) -> None:
        """Ends the worker thread after its current frame (waits up to WORKER_STOP_S)."""
        worker = getattr(self, "_worker", None)  # absent when construction failed
        if worker is not None:
            self._queue.close()
            if worker.is_alive() and worker is not threading.current_thread():
                worker.join(timeout=WORKER_STOP_S)

    def destroy_node(self) -> None:
        self._stop_worker()
        super().destroy_node()


USAGE = f"""usage: {NODE_NAME} [--help] --ros-args [--params-file FILE] [-p NAME:=VALUE ...] [-r FROM:=TO ...]

  {NODE_NAME} --ros-args --params-file config/superpoint_mono.yaml -r image:=/camera/image_raw
  {NODE_NAME} --ros-args --params-file config/superpoint_stereo.yaml \\
      -r left/image_rect:=/stereo/left/image_rect -r right/image_rect:=/stereo/right/image_rect
"""


def main(args: Optional[List[str]] = None, node_class: type = SuperPointNode) -> int:
    """``ros2 run superpoint_ros superpoint_node --ros-args --params-file config/superpoint_mono.yaml``

    ``node_class``: what to run (:mod:`superpoint_ros.ros.lifecycle_node` passes its managed node)."""
    argv = sys.argv[1:] if args is None else list(args[1:])
    own = argv[:argv.index("--ros-args")] if "--ros-args" in argv else argv
    if "-h" in own or "--help" in own:  # before --ros-args: ours (rclpy would start the node)
        print(USAGE + "\n" + __doc__.split("Threading:")[0].strip())
        return 0
    configure_process()  # before the node builds its extractor (extractor.num_threads: the network's)
    try:
        rclpy.init(args=args)
    except RuntimeError as e:  # rcl's RCLError: --ros-args it cannot parse (e.g. a YAML-invalid -p value)
        print(f"{NODE_NAME}: error: invalid command line: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    node = None
    try:
        executor = SingleThreadedExecutor()  # before the node: its "ready" line means spinning is next
        try:
            node = node_class()
        except (WeightsError, ParamsError, ParameterException, RuntimeError, ValueError) as e:
            # a start-up fault: one clear line, no traceback, non-zero exit
            print(f"{NODE_NAME}: error: {e}", file=sys.stderr)
            return 2
        executor.add_node(node)
        try:
            executor.spin()
        except RuntimeError:
            # Ctrl-C can shut the context down between two waits; rclpy then raises RCLError
            # ("context is not valid") instead of ExternalShutdownException: also a clean exit
            if rclpy.ok():
                raise
    except (KeyboardInterrupt, ExternalShutdownException):  # Ctrl-C at any point: a clean exit
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
