"""``superpoint_node``: the SuperPoint visual front-end as a ROS 2 node.

Subscribes (relative names, remap as usual):
  mono:   ``image`` (sensor_msgs/Image) or ``<image>/compressed`` (CompressedImage, ``input.compressed``:
          the resolved ``image`` topic + ``/compressed``, as image_transport names it)
  stereo: ``left/image_rect`` + ``right/image_rect`` (``stereo.enabled``; ``/compressed`` likewise)
  with the reliability the publishers offer (``qos.reliability: auto``) unless told otherwise
Publishes:
  ``features`` (PointCloud2: track_id, x, y, score, track_length, descriptor[D]) for the mono/left image
  ``features_right`` (stereo) the right image's features, same stamp
  ``stereo_matches`` (PointCloud2, stereo) rows of features/features_right with the same stamp
  ``temporal_matches`` (PointCloud2) previous/current feature rows, previous stamp in the rows
  ``debug_image`` (Image bgr8) keypoints and track trails, drawn only while someone subscribes
  ``/diagnostics`` (diagnostic_msgs/DiagnosticArray) rates, drops, latency, stage timings
Layouts: docs/messages.md (codec in ``superpoint_ros.io.messages``). Parameters: docs/node.md
(the table in ``superpoint_ros.params``).

Threading: the subscription callbacks only enqueue; one worker thread decodes, runs the
:class:`~superpoint_ros.frontend.Frontend` and publishes. The queue is bounded
(``input.queue_size``, default 1): when it is full the oldest frame is dropped and counted, so the
newest frame wins and latency never builds up.
"""
from __future__ import annotations

import re
import sys
import threading
import time
from collections import deque
from typing import Any, Dict, List, Optional

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.utilities import get_rmw_implementation_identifier
from sensor_msgs.msg import CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import Header

from ..backends import configure_process
from ..frontend import FrameResult, FrameSkipped, Frontend
from ..image import ImageError
from ..io.image_decoding import decode_compressed_image, decode_image
from ..io.messages import MessageClasses, frame_messages
from ..params import PARAMETERS, ParamsError, check_value, coerce, validate
from ..stamps import message_stamp_ns, seconds_text
from ..sync import StampSynchronizer
from ..visualization import draw_keypoints, draw_tracks
from ..weights import WeightsError
from .inputs import COMPRESSED_SUFFIX, ImageInput, SharedMemoryCheck, input_topic

NODE_NAME = "superpoint_node"
MONO_TOPIC, LEFT_TOPIC, RIGHT_TOPIC = "image", "left/image_rect", "right/image_rect"
#: every topic the node subscribes to (relative names; remap them)
INPUT_TOPICS = tuple(t + s for t in (MONO_TOPIC, LEFT_TOPIC, RIGHT_TOPIC) for s in ("", COMPRESSED_SUFFIX))
LOG_THROTTLE_S = 5.0
PAIRING_WINDOW_S = 2.0  # stereo: left/right arrivals are judged over at least this long (slow cameras)
INPUT_REFRESH_S = 0.5  # qos.reliability auto: how often the input topics' publishers are looked up
#: the stereo synchroniser's inputs, in pair order
STEREO_INPUTS = ("left", "right")
#: what the node's output messages are built with (superpoint_ros.io.messages.frame_messages)
RCLPY_MESSAGES = MessageClasses(Header, Time, PointCloud2, PointField)
_ROS_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
              float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


def descriptor_for(name: str) -> ParameterDescriptor:
    """The ParameterDescriptor of a parameter of the table: type, description, range, read-only."""
    param = PARAMETERS[name]
    descriptor = ParameterDescriptor(name=name, type=_ROS_TYPES[param.kind], description=param.description,
                                     read_only=param.read_only)
    if param.limits is not None and param.kind is int:
        descriptor.integer_range = [IntegerRange(from_value=int(param.limits[0]), to_value=int(param.limits[1]), step=1)]
    elif param.limits is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(param.limits[0]),
                                                              to_value=float(param.limits[1]), step=0.0)]
    if param.choices is not None:
        descriptor.additional_constraints = "one of: " + ", ".join(param.choices)
    return descriptor


class _Stats:
    """Counters for /diagnostics (written by the worker and the callbacks, read by the timer)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received = self.processed = self.dropped = self.skipped = self.debug_images = 0
        self.latency_ms: deque = deque(maxlen=100)
        self.timings: deque = deque(maxlen=100)
        self.last: Optional[FrameResult] = None
        self.last_error = ""
        self.last_reset = ""
        self.window_start = time.monotonic()
        self.skip_reports: Dict[str, list] = {}  # kind of warning -> [last logged (monotonic s), repeats since]
        self.last_received_at: Optional[float] = None  # monotonic s of the last image (camera stopped?)
        # stereo inputs since pairing_window_start: images per side, newest stamp per side, pairs formed
        self.side_images, self.side_stamps, self.pairs = [0, 0], [None, None], 0
        self.unpaired_seen = 0  # the synchroniser's drop counter at the last window
        self.pairing_window_start = time.monotonic()
        self.window_processed = self.window_dropped = self.window_skipped = 0
        # "processing slower than input" reports: drops since the last one, when it was (monotonic s),
        # recent arrival times (monotonic s) and per-frame processing times (ms)
        self.drops_unreported, self.drops_reported_at = 0, None
        self.arrivals: deque = deque(maxlen=20)
        self.process_ms: deque = deque(maxlen=20)
        self.busy_since: Optional[float] = None  # perf_counter s the worker began the current frame
        self.transport_warning = ""  # frames too large for the shared-memory segment (SharedMemoryCheck)


class SuperPointNode(Node):
    """The front-end node. Construction raises (WeightsError, ParamsError, RuntimeError for a
    missing CUDA, rclpy ParameterException) on start-up faults; :func:`main` turns those into a
    one-line message and a non-zero exit."""

    def __init__(self, **node_kwargs):
        super().__init__(NODE_NAME, **node_kwargs)
        # the start-up steps, in order; SuperPointLifecycleNode (lifecycle_node.py) runs the same
        # steps at its transitions instead of all here
        self._declare_parameters()
        self.params = self._read_parameters()
        self._create_frontend()
        self._create_publishers()
        self._init_pipeline_state()
        self._create_subscriptions()
        self.add_on_set_parameters_callback(self.on_set_parameters)
        self._create_diagnostics_timer()
        self._start_worker()
        self._log_ready()

    # --- start-up steps (SuperPointLifecycleNode runs them at its transitions) --------------------
    def _create_frontend(self) -> None:
        """Loads the weights and builds the front-end (raises WeightsError, RuntimeError, ...)."""
        p = self.params
        self.frontend = Frontend(p)
        self._frontend_lock = threading.Lock()
        self.stereo = p["stereo.enabled"]

    def _new_publisher(self, msg_type, topic: str, qos):
        return self.create_publisher(msg_type, topic, qos)

    def _create_publishers(self) -> None:
        p = self.params
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=p["qos.depth"], reliability=ReliabilityPolicy.RELIABLE)
        self.features_pub = self._new_publisher(PointCloud2, "features", out_qos)
        self.temporal_pub = self._new_publisher(PointCloud2, "temporal_matches", out_qos)
        self.debug_pub = self._new_publisher(Image, "debug_image", out_qos)
        self.diagnostics_pub = self._new_publisher(DiagnosticArray, "/diagnostics", 10)
        if self.stereo:
            self.right_features_pub = self._new_publisher(PointCloud2, "features_right", out_qos)
            self.stereo_pub = self._new_publisher(PointCloud2, "stereo_matches", out_qos)

    def _init_pipeline_state(self) -> None:
        """Counters, the frame queue and the per-stream state (debug trails)."""
        p = self.params
        self.stats = _Stats()
        self._queue: deque = deque(maxlen=p["input.queue_size"])
        self._wakeup = threading.Condition()
        self._running = True
        self._trails: Dict[int, deque] = {}

    def _create_subscriptions(self) -> None:
        self._shm_check = SharedMemoryCheck(get_rmw_implementation_identifier())
        if self.stereo:
            p = self.params
            self.synchronizer = StampSynchronizer.from_params(STEREO_INPUTS, p["sync.mode"], p["sync.slop"],
                                                              p["sync.queue_size"])
            self.inputs = [self._image_input(LEFT_TOPIC, self._side_feed(0)),
                           self._image_input(RIGHT_TOPIC, self._side_feed(1))]
        else:
            self.inputs = [self._image_input(MONO_TOPIC, self.on_image)]
        if any(i.auto for i in self.inputs):  # publishers come and go: follow what they offer
            self.input_timer = self.create_timer(INPUT_REFRESH_S, self.on_input_timer)

    def _destroy_subscriptions(self) -> None:
        """Undoes :meth:`_create_subscriptions` (lifecycle deactivate): no more input callbacks."""
        timer = self.__dict__.pop("input_timer", None)  # qos.reliability auto's re-subscription timer
        if timer is not None:
            self.destroy_timer(timer)
        for image_input in self.__dict__.pop("inputs", ()):
            if image_input.subscription is not None:
                self.destroy_subscription(image_input.subscription)
                image_input.subscription = None
        self.synchronizer = None  # and its unpaired messages

    def _create_diagnostics_timer(self) -> None:
        self.diagnostics_timer = self.create_timer(self.params["diagnostics.period"], self.on_diagnostics_timer)

    def _start_worker(self) -> None:
        self._worker = threading.Thread(target=self._work, name="superpoint_worker", daemon=True)
        self._worker.start()

    def _log_ready(self) -> None:
        for warning in self.frontend.warnings:
            self.get_logger().warning(warning)
        outputs = [self.features_pub, self.temporal_pub, self.debug_pub, self.diagnostics_pub]
        if self.stereo:
            outputs[1:1] = [self.right_features_pub, self.stereo_pub]
        inputs = "; ".join(i.describe() for i in getattr(self, "inputs", ())) or "none until activated"
        self.get_logger().info(f"inputs: {inputs}; outputs: {', '.join(pub.topic_name for pub in outputs)}")
        ex = self.frontend.extractor
        self.get_logger().info(
            f"{'stereo' if self.stereo else 'mono'} front-end ready: weights {ex.weights_path or 'in-memory'} "
            f"({ex.provenance.get('format', 'superpoint_ros checkpoint')}), device {ex.device}, network "
            f"{ex.backend_name}, descriptor {ex.descriptor_dim}-d")
        for note in ex.provenance.get("load_notes", []):  # e.g. a stripped DDP prefix, a converted layout
            self.get_logger().info(f"weights: {note}")
        for reason in ex.runner.fallbacks:  # a fast path that could not be used (e.g. int8 quantisation)
            self.get_logger().warning(f"extractor fall-back: {reason}")

    # --- start-up ------------------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        # Check the start-up values (params file, -p, launch) against the table first: every
        # problem is reported at once, with the table's reasons, and an integer written for a
        # float (``threshold: 2``) is accepted as load_params accepts it, so the node and the
        # ROS-free Frontend read the same file the same way.
        overrides = getattr(self, "_parameter_overrides", {})
        problems = []
        for name, override in list(overrides.items()):
            if name not in PARAMETERS:
                # rclpy's own (use_sim_time, start_type_description_service) are declared by now
                if not self.has_parameter(name) and not name.startswith("qos_overrides."):
                    problems.append(f"unknown parameter {name!r}")
                continue
            value = coerce(name, override.value)
            reason = check_value(name, value)
            if reason:
                problems.append(reason)
            elif value is not override.value:
                overrides[name] = Parameter(name, value=value)
        if problems:
            raise ParamsError("invalid parameters: " + "; ".join(problems) + " (see docs/node.md)")
        for name, param in PARAMETERS.items():
            self.declare_parameter(name, param.default, descriptor_for(name))

    def _read_parameters(self) -> Dict[str, Any]:
        """The declared parameters' current values, validated together (raises ParamsError)."""
        return validate({name: self.get_parameter(name).value for name in PARAMETERS})

    def _image_input(self, name: str, callback) -> ImageInput:
        """The subscription of input ``name`` (e.g. ``"image"``), resolved, compressed or not."""
        p = self.params
        image_type = CompressedImage if p["input.compressed"] else Image

        def on_message(msg) -> None:
            self._check_frame_size(msg)
            callback(msg)

        return ImageInput(self, image_type, input_topic(self, name, p["input.compressed"]), on_message,
                          p["qos.depth"], p["qos.reliability"])

    def _side_feed(self, side: int):
        """The subscription callback of stereo input ``side`` (0 left, 1 right): into the
        synchroniser (:class:`superpoint_ros.sync.StampSynchronizer`, the same pairing
        superpoint-eval-bag reads bags with); a completed pair goes to the queue."""
        def on_side(msg) -> None:
            sync = self.synchronizer
            if sync is None:  # deactivated between the message and its callback
                return
            pair = sync.add(STEREO_INPUTS[side], message_stamp_ns(msg), msg)
            if pair is not None:
                self.on_stereo_pair(*pair)
            self._mark_side(msg, side)  # per-side arrivals, for "never pair" reports
        return on_side

    # --- callbacks: enqueue only -----------------------------------------------------------------
    def on_image(self, msg) -> None:
        self._enqueue((msg,))

    def _check_frame_size(self, msg) -> None:
        warning = self._shm_check.check(msg)  # once: None after the first too-large frame
        if warning:
            with self.stats.lock:
                self.stats.transport_warning = warning
            self.get_logger().warning(warning)

    def on_input_timer(self) -> None:
        for image_input in self.inputs:
            image_input.refresh()

    def _mark_side(self, msg, side: int) -> None:
        with self.stats.lock:
            s = self.stats
            s.last_received_at = time.monotonic()
            s.side_images[side] += 1
            s.side_stamps[side] = message_stamp_ns(msg)

    def on_stereo_pair(self, left, right) -> None:
        with self.stats.lock:
            self.stats.pairs += 1
        self._enqueue((left, right))

    def _enqueue(self, item) -> None:
        report = None
        with self._wakeup, self.stats.lock:
            s = self.stats
            s.received += 1
            s.last_received_at = time.monotonic()
            s.arrivals.append(s.last_received_at)
            if len(self._queue) == self._queue.maxlen:
                s.dropped += 1  # the deque drops the oldest: the newest frame wins
                s.window_dropped += 1
                s.drops_unreported += 1
                report = self._drop_report()
            self._queue.append((time.perf_counter(), item))
            self._wakeup.notify()
        if report:
            self.get_logger().warning(report)

    def _drop_report(self) -> Optional[str]:
        """Why frames are being dropped, at most once per LOG_THROTTLE_S (stats lock held): the
        drops since the last report, the recent processing time per frame and input period."""
        s, now = self.stats, time.monotonic()
        since = s.drops_reported_at if s.drops_reported_at is not None else s.arrivals[0]
        if s.drops_reported_at is not None and now - since < LOG_THROTTLE_S:
            return None
        if s.process_ms:
            processing = f"processing {np.mean(s.process_ms):.0f} ms per frame"
        elif s.busy_since is not None:  # the first frame is still running
            processing = f"the first frame still processing after {(time.perf_counter() - s.busy_since) * 1e3:.0f} ms"
        else:
            processing = "processing not started"
        if len(s.arrivals) > 1:
            processing += f" > input period {(s.arrivals[-1] - s.arrivals[0]) / (len(s.arrivals) - 1) * 1e3:.0f} ms"
        n, s.drops_unreported, s.drops_reported_at = s.drops_unreported, 0, now
        return (f"dropped {n} frame(s) in the last {now - since:.1f} s: {processing} (input.queue_size="
                f"{self._queue.maxlen}, the newest frame wins); lower the input rate or the work per frame, or raise "
                f"input.queue_size (rides out bursts)")

    def on_set_parameters(self, parameters) -> SetParametersResult:
        changes = {}
        for parameter in parameters:
            if parameter.name not in PARAMETERS:
                continue  # e.g. use_sim_time: not ours
            value = coerce(parameter.name, parameter.value)
            reason = check_value(parameter.name, value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            changes[parameter.name] = value
        if self.frontend is None:  # a lifecycle node not configured yet: on_configure validates the whole set
            return SetParametersResult(successful=True)
        try:
            merged = validate({**self.params, **changes})
            frontend_changes = {k: v for k, v in changes.items() if PARAMETERS[k].frontend}
            with self._frontend_lock:
                self.frontend.update(frontend_changes)
        except ParamsError as e:
            return SetParametersResult(successful=False, reason=str(e))
        self.params = merged
        return SetParametersResult(successful=True)

    def on_diagnostics_timer(self) -> None:
        with self.stats.lock:
            warnings = self._input_warnings()
            drops = self._drop_report() if self.stats.drops_unreported else None  # drops that stopped
            diagnostics = self._diagnostics(warnings)
        for warning in warnings:
            self._warn_throttled(warning)
        if drops:
            self.get_logger().warning(drops)
        self.diagnostics_pub.publish(diagnostics)

    # --- worker ----------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._wakeup:
                while self._running and not self._queue:
                    self._wakeup.wait(0.5)
                if not self._running:
                    return
                received_at, item = self._queue.popleft()
            started = time.perf_counter()
            with self.stats.lock:
                self.stats.busy_since = started
            try:
                self._process(item, received_at)
            except (ImageError, FrameSkipped) as e:  # bad input, OOM: log (throttled), skip the frame, stay alive
                self._skip(str(e))
            except Exception as e:  # noqa: BLE001 - the node must outlive one bad frame
                self._skip(f"{type(e).__name__}: {e}")
            with self.stats.lock:
                self.stats.busy_since = None
                self.stats.process_ms.append((time.perf_counter() - started) * 1e3)

    def _skip(self, reason: str) -> None:
        with self.stats.lock:
            self.stats.skipped += 1
            self.stats.window_skipped += 1
            self.stats.last_error = reason
        self._warn_throttled(f"skipped a frame: {reason}")

    def _warn_throttled(self, message: str) -> None:
        self._log_throttled(message, "warning")

    def _log_throttled(self, message: str, severity: str = "warning") -> None:
        """Log ``message`` (``severity``: a logger method name) at most once per LOG_THROTTLE_S per
        kind of message (the text with its numbers blanked), not per call site as rclpy's throttle
        does: a flood of one fault, or one reason, must not hide the first report of another.
        Repeats in between are counted in the next report."""
        kind = re.sub(r"\d+(\.\d+)?", "#", message)[:160]
        now = time.monotonic()
        with self.stats.lock:
            reports = self.stats.skip_reports
            if len(reports) > 256:
                reports.clear()
            report = reports.setdefault(kind, [-float("inf"), 0])
            report[1] += 1
            log = now - report[0] >= LOG_THROTTLE_S
            if log:
                similar, report[0], report[1] = report[1] - 1, now, 0
        if log:
            more = f" ({similar} more like it since the last report)" if similar else ""
            getattr(self.get_logger(), severity)(message + more)

    def _decode(self, msg) -> np.ndarray:
        return decode_compressed_image(msg) if isinstance(msg, CompressedImage) else decode_image(msg)

    def _process(self, item, received_at: float) -> None:
        header = item[0].header
        stamp_ns = message_stamp_ns(item[0])  # exact: sec * 10**9 + nanosec
        if len(item) == 2:
            left, right = self._decode(item[0]), self._decode(item[1])  # an unsupported encoding says so first
            encodings = [getattr(m, "encoding", None) for m in item]
            if isinstance(item[0], Image) and encodings[0] != encodings[1]:
                raise ImageError(f"stereo images differ in encoding: left {encodings[0]!r}, right {encodings[1]!r}")
            with self._frontend_lock:
                result = self.frontend.process_stereo(left, right, stamp_ns, header.frame_id)
            image = left
        else:
            image = self._decode(item[0])
            with self._frontend_lock:
                result = self.frontend.process_mono(image, stamp_ns, header.frame_id)
        self._log_resize(result)
        self._publish(result, header, item)
        if self.debug_pub.get_subscription_count() > 0:
            self._publish_debug(image, result, header)
        else:
            self._trails.clear()
        stats = self.stats
        with stats.lock:
            stats.processed += 1
            stats.window_processed += 1
            stats.latency_ms.append((time.perf_counter() - received_at) * 1e3)
            stats.timings.append(result.timings)
            stats.last = result
            if result.reset_reason:
                stats.last_reset = result.reset_reason
        if result.reset_reason:
            self._log_throttled(f"tracks reset: {result.reset_reason}", "info")  # throttled per reason

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

    def _publish(self, result: FrameResult, header, item) -> None:
        """The result's output messages (:func:`~superpoint_ros.io.messages.frame_messages`, as
        the output bag writes them), each on its topic."""
        right_frame_id = item[1].header.frame_id if len(item) == 2 else None
        publishers = {"features": self.features_pub, "temporal_matches": self.temporal_pub}
        if self.stereo:
            publishers.update(features_right=self.right_features_pub, stereo_matches=self.stereo_pub)
        for name, msg in frame_messages(result, header.frame_id, RCLPY_MESSAGES, right_frame_id).items():
            publishers[name].publish(msg)

    def _publish_debug(self, image: np.ndarray, result: FrameResult, header) -> None:
        """Keypoints coloured by score and each track's last ``debug.track_length`` positions."""
        length = self.params["debug.track_length"]
        if result.reset_reason or result.temporal is None:
            self._trails.clear()
        current = {}
        for track_id, xy in zip(result.track_ids.tolist(), result.features.keypoints):
            trail = self._trails.get(track_id) or deque(maxlen=max(length, 1))
            trail.append(xy)
            current[track_id] = trail
        self._trails = current
        canvas = draw_keypoints(image, result.features.keypoints, result.features.scores)
        if length > 1:
            draw_tracks(canvas, [np.array(t) for t in current.values() if len(t) > 1])
        msg = Image(header=header, height=canvas.shape[0], width=canvas.shape[1], encoding="bgr8",
                    is_bigendian=0, step=canvas.shape[1] * 3)
        msg.data = canvas.tobytes()
        self.debug_pub.publish(msg)
        with self.stats.lock:
            self.stats.debug_images += 1

    # --- diagnostics -------------------------------------------------------------------------------
    def _input_warnings(self) -> List[str]:
        """Problems with the input stream as a whole (called with the stats lock held): the camera
        stopped, or left/right stamps that never pair."""
        s, p, warnings = self.stats, self.params, []
        stale_after = p["diagnostics.stale_after"]
        if stale_after and s.last_received_at is not None:
            silent = time.monotonic() - s.last_received_at
            if silent > stale_after:
                warnings.append(f"no input images for {silent:.1f} s (diagnostics.stale_after={stale_after} s): "
                                f"camera stopped?")
        window = time.monotonic() - s.pairing_window_start
        if self.stereo and window >= max(PAIRING_WINDOW_S, p["diagnostics.period"]):
            (lefts, rights), pairs = s.side_images, s.pairs
            sync = getattr(self, "synchronizer", None)
            dropped = ""
            if sync is not None:
                dropped = f", {sync.dropped - s.unpaired_seen} unpaired dropped"
                s.unpaired_seen = sync.dropped
            if lefts and rights and not pairs:
                left, right = (seconds_text(t) if t is not None else "none" for t in s.side_stamps)
                warnings.append(f"left/right images do not pair: {lefts} left and {rights} right images in "
                                f"{window:.1f} s, no pair formed{dropped} (last left stamp {left} s, last right "
                                f"{right} s; sync.mode={p['sync.mode']}, sync.slop={p['sync.slop']} s)")
            elif (lefts or rights) and not (lefts and rights):
                have, missing = (("left", RIGHT_TOPIC) if lefts else ("right", LEFT_TOPIC))
                warnings.append(f"only {have} images arrive: none on {missing} in {window:.1f} s "
                                f"(stereo.enabled: the pair needs both cameras)")
            s.side_images, s.pairs, s.pairing_window_start = [0, 0], 0, time.monotonic()
        return warnings

    def _diagnostics(self, warnings: List[str] = ()) -> DiagnosticArray:
        s, p = self.stats, self.params
        now = time.monotonic()
        window = max(now - s.window_start, 1e-6)
        latency = float(np.mean(s.latency_ms)) if s.latency_ms else 0.0
        status = DiagnosticStatus(name=f"{self.get_name()}: SuperPoint front-end",
                                  hardware_id=str(self.frontend.extractor.device))
        problems = []
        if latency > p["diagnostics.max_latency"] * 1e3:
            problems.append(f"mean latency {latency:.0f} ms > {p['diagnostics.max_latency'] * 1e3:.0f} ms")
        if s.window_dropped:
            problems.append(f"{s.window_dropped} frames dropped (processing slower than input)")
        if s.window_skipped:
            problems.append(f"{s.window_skipped} bad frames skipped: {s.last_error}")
        problems.extend(warnings)
        if s.transport_warning:
            problems.append(s.transport_warning)
        status.level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        status.message = "; ".join(problems) if problems else ("running" if s.processed else "waiting for images")
        values = {
            "frames_received": s.received, "frames_processed": s.processed, "frames_dropped": s.dropped,
            "frames_skipped": s.skipped, "debug_images": s.debug_images, "rate_hz": f"{s.window_processed / window:.2f}",
            "mean_latency_ms": f"{latency:.2f}", "last_error": s.last_error, "last_track_reset": s.last_reset,
            "weights": str(self.frontend.extractor.weights_path), "device": str(self.frontend.extractor.device),
            "network": self.frontend.extractor.backend_name,
            "input_topics": ", ".join(i.topic for i in self.inputs),
            "input_reliability": ", ".join(i.reliability_text() for i in self.inputs),
        }
        if s.transport_warning:
            values["transport_warning"] = s.transport_warning
        if s.timings:
            for stage in ("extract", "temporal_match", "ransac", "flow_refinement", "tracking", "stereo_match", "total"):
                samples = [t[stage] for t in s.timings if stage in t]
                if samples:
                    values[f"mean_{stage}_ms"] = f"{np.mean(samples):.2f}"
        if s.last is not None:
            last = s.last
            values["keypoints"] = len(last.features)
            values["tracked_keypoints"] = int((last.track_lengths > 1).sum())
            if last.temporal is not None:
                values["temporal_inliers"] = int(last.temporal.inliers.sum())
            if last.stereo is not None:
                values["stereo_matches"] = len(last.stereo)
        if self.stereo and getattr(self, "synchronizer", None) is not None:
            values["stereo_unpaired_dropped"] = self.synchronizer.dropped
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        s.window_start, s.window_processed, s.window_dropped, s.window_skipped = now, 0, 0, 0
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        return array

    def _stop_worker(self) -> None:
        """Ends the worker thread after its current frame (waits up to 5 s)."""
        worker = getattr(self, "_worker", None)  # absent when construction failed
        if worker is not None:
            with self._wakeup:
                self._running = False
                self._wakeup.notify_all()
            if worker.is_alive() and worker is not threading.current_thread():
                worker.join(timeout=5.0)

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
