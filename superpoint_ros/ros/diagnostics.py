"""The node's counters and its ``/diagnostics`` message, built from an explicit snapshot.

:class:`Stats` is written by the callbacks and the worker (each writer takes the lock).
The diagnostics timer takes a :class:`Snapshot` (a copy; reading changes nothing) and then
starts the next window explicitly (:meth:`Stats.start_window`, :meth:`Stats.start_pairing_window`);
:func:`input_warnings` and :func:`diagnostic_status` are pure functions of a snapshot.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from ..stamps import seconds_text

#: stereo: left/right arrivals are judged over at least this long (slow cameras), s
PAIRING_WINDOW_S = 2.0
#: the stages of FrameResult.timings reported as mean_<stage>_ms
TIMED_STAGES = ("extract", "temporal_match", "ransac", "flow_refinement", "tracking", "stereo_match", "total")
LATENCY_HISTORY = 100  # frames averaged for mean_latency_ms and mean_<stage>_ms
PROCESS_HISTORY = 20  # frames averaged for the processing time in drop reports


@dataclass(frozen=True)
class Snapshot:
    """A copy of :class:`Stats` at ``now`` (monotonic s). ``window_*``: since the diagnostics
    window began ``window_s`` ago; ``side_images`` / ``pairs``: stereo arrivals and pairs since
    the pairing window began ``pairing_window_s`` ago."""

    now: float
    received: int
    processed: int
    dropped: int
    skipped: int
    debug_images: int
    latency_ms: Tuple[float, ...]
    timings: Tuple[Dict[str, float], ...]
    last: Any  # the last FrameResult, or None
    last_error: str
    last_reset: str
    last_received_at: Optional[float]
    window_s: float
    window_processed: int
    window_dropped: int
    window_skipped: int
    pairing_window_s: float
    side_images: Tuple[int, int]
    side_stamps: Tuple[Optional[int], Optional[int]]
    pairs: int
    unpaired_seen: int
    transport_warning: str
    camera_warnings: Tuple[str, ...] = ()
    camera_summary: str = ""


class Stats:
    """Counters for ``/diagnostics``: the callbacks and the worker write them (each method takes
    :attr:`lock`), the diagnostics timer reads a :meth:`snapshot`."""

    def __init__(self, now: Optional[float] = None):
        now = time.monotonic() if now is None else now
        self.lock = threading.Lock()
        self.received = self.processed = self.dropped = self.skipped = self.debug_images = 0
        self.latency_ms: deque = deque(maxlen=LATENCY_HISTORY)
        self.timings: deque = deque(maxlen=LATENCY_HISTORY)
        self.last = None  # the last FrameResult
        self.last_error = self.last_reset = ""
        self.last_received_at: Optional[float] = None  # monotonic s of the last image (camera stopped?)
        self.window_start = now
        self.window_processed = self.window_dropped = self.window_skipped = 0
        # stereo inputs since pairing_window_start: images per side, newest stamp per side, pairs formed
        self.pairing_window_start = now
        self.side_images, self.side_stamps, self.pairs = [0, 0], [None, None], 0
        self.unpaired_seen = 0  # the synchroniser's drop counter when the pairing window began
        self.process_ms: deque = deque(maxlen=PROCESS_HISTORY)  # per-frame processing time, ms
        self.busy_since: Optional[float] = None  # perf_counter s the worker began the current frame
        self.transport_warning = ""  # frames too large for the shared-memory segment (SharedMemoryCheck)
        # the last frame's camera_info problems and what it used (superpoint_ros.ros.camera_info.CameraInfoChoice)
        self.camera_warnings: Tuple[str, ...] = ()
        self.camera_summary = ""

    # --- writers ---------------------------------------------------------------------------------
    def frame_received(self, now: float, dropped: bool) -> None:
        """One input frame (mono image or stereo pair) queued; ``dropped``: it pushed out the oldest."""
        with self.lock:
            self.received += 1
            self.last_received_at = now
            if dropped:
                self.dropped += 1
                self.window_dropped += 1

    def side_received(self, side: int, stamp_ns: int, now: float) -> None:
        """Stereo: one image of ``side`` (0 left, 1 right), paired or not yet."""
        with self.lock:
            self.last_received_at = now
            self.side_images[side] += 1
            self.side_stamps[side] = stamp_ns

    def pair_formed(self) -> None:
        with self.lock:
            self.pairs += 1

    def frame_started(self, started: float) -> None:
        with self.lock:
            self.busy_since = started

    def frame_finished(self, started: float, finished: float) -> None:
        """The worker is done with a frame, processed or skipped (``perf_counter`` s)."""
        with self.lock:
            self.busy_since = None
            self.process_ms.append((finished - started) * 1e3)

    def frame_processed(self, result, latency_ms: float) -> None:
        with self.lock:
            self.processed += 1
            self.window_processed += 1
            self.latency_ms.append(latency_ms)
            self.timings.append(result.timings)
            self.last = result
            if result.reset_reason:
                self.last_reset = result.reset_reason

    def frame_skipped(self, reason: str) -> None:
        with self.lock:
            self.skipped += 1
            self.window_skipped += 1
            self.last_error = reason

    def debug_image_published(self) -> None:
        with self.lock:
            self.debug_images += 1

    def set_transport_warning(self, warning: str) -> None:
        with self.lock:
            self.transport_warning = warning

    def set_camera_state(self, warnings: Sequence[str], summary: str) -> None:
        """The intrinsics the last frame used (``summary``) and why it was pixel-only (``warnings``)."""
        with self.lock:
            self.camera_warnings, self.camera_summary = tuple(warnings), summary

    def processing(self, now_perf: float) -> Tuple[Tuple[float, ...], Optional[float]]:
        """(recent per-frame processing times ms, ms the current frame has run or ``None``): for
        :meth:`superpoint_ros.ros.frame_queue.DropReport.report`."""
        with self.lock:
            busy = None if self.busy_since is None else (now_perf - self.busy_since) * 1e3
            return tuple(self.process_ms), busy

    # --- the diagnostics timer -----------------------------------------------------------------------
    def snapshot(self, now: Optional[float] = None) -> Snapshot:
        """A copy of every counter at ``now`` (monotonic s); changes nothing."""
        now = time.monotonic() if now is None else now
        with self.lock:
            return Snapshot(
                now=now, received=self.received, processed=self.processed, dropped=self.dropped,
                skipped=self.skipped, debug_images=self.debug_images, latency_ms=tuple(self.latency_ms),
                timings=tuple(self.timings), last=self.last, last_error=self.last_error, last_reset=self.last_reset,
                last_received_at=self.last_received_at, window_s=now - self.window_start,
                window_processed=self.window_processed, window_dropped=self.window_dropped,
                window_skipped=self.window_skipped, pairing_window_s=now - self.pairing_window_start,
                side_images=tuple(self.side_images), side_stamps=tuple(self.side_stamps), pairs=self.pairs,
                unpaired_seen=self.unpaired_seen, transport_warning=self.transport_warning,
                camera_warnings=self.camera_warnings, camera_summary=self.camera_summary)

    def start_window(self, now: float) -> None:
        """A new diagnostics window (rate, drops and skips per window) from ``now``."""
        with self.lock:
            self.window_start, self.window_processed, self.window_dropped, self.window_skipped = now, 0, 0, 0

    def start_pairing_window(self, now: float, unpaired_dropped: int) -> None:
        """A new stereo pairing window from ``now``; ``unpaired_dropped``: the synchroniser's
        drop counter now."""
        with self.lock:
            self.side_images, self.pairs, self.pairing_window_start = [0, 0], 0, now
            self.unpaired_seen = unpaired_dropped

    def forget_last(self) -> None:
        """Drops the reference to the last FrameResult (lifecycle cleanup frees the network)."""
        with self.lock:
            self.last = None


def pairing_window_due(snapshot: Snapshot, period_s: float) -> bool:
    """Whether the stereo pairing window is long enough to judge (and restart)."""
    return snapshot.pairing_window_s >= max(PAIRING_WINDOW_S, period_s)


def input_warnings(snapshot: Snapshot, params: Mapping[str, Any], stereo: bool, unpaired_dropped: Optional[int],
                   topics: Tuple[str, str] = ("left/image_rect", "right/image_rect")) -> List[str]:
    """Problems with the input stream as a whole: the camera stopped, or (stereo, once the pairing
    window is due) left/right stamps that never pair or only one side arriving.
    ``unpaired_dropped``: the synchroniser's drop counter (``None`` without one); ``topics``:
    the left and right input names for the messages."""
    s, warnings = snapshot, []
    stale_after = params["diagnostics.stale_after"]
    if stale_after and s.last_received_at is not None:
        silent = s.now - s.last_received_at
        if silent > stale_after:
            warnings.append(f"no input images for {silent:.1f} s (diagnostics.stale_after={stale_after} s): "
                            f"camera stopped?")
    if not (stereo and pairing_window_due(s, params["diagnostics.period"])):
        return warnings
    (lefts, rights), window = s.side_images, s.pairing_window_s
    dropped = "" if unpaired_dropped is None else f", {unpaired_dropped - s.unpaired_seen} unpaired dropped"
    if lefts and rights and not s.pairs:
        left, right = (seconds_text(t) if t is not None else "none" for t in s.side_stamps)
        warnings.append(f"left/right images do not pair: {lefts} left and {rights} right images in "
                        f"{window:.1f} s, no pair formed{dropped} (last left stamp {left} s, last right "
                        f"{right} s; sync.mode={params['sync.mode']}, sync.slop={params['sync.slop']} s)")
    elif (lefts or rights) and not (lefts and rights):
        have, missing = ("left", topics[1]) if lefts else ("right", topics[0])
        warnings.append(f"only {have} images arrive: none on {missing} in {window:.1f} s "
                        f"(stereo.enabled: the pair needs both cameras)")
    return warnings


def diagnostic_status(snapshot: Snapshot, params: Mapping[str, Any], warnings: Sequence[str], name: str,
                      extractor, inputs: Sequence, unpaired_dropped: Optional[int] = None,
                      extra: Optional[Mapping[str, Any]] = None) -> DiagnosticStatus:
    """The node's one DiagnosticStatus (``name``; ``hardware_id`` the device): WARN with every
    problem of the window (latency, drops, skips, ``warnings``, transport, camera_info), else
    OK. ``extractor``: the Frontend's (device, weights, network); ``inputs``: the
    :class:`~superpoint_ros.ros.inputs.ImageInput` subscriptions; ``extra``: more values."""
    s = snapshot
    window = max(s.window_s, 1e-6)
    latency = float(np.mean(s.latency_ms)) if s.latency_ms else 0.0
    status = DiagnosticStatus(name=name, hardware_id=str(extractor.device))
    problems = []
    max_latency_ms = params["diagnostics.max_latency"] * 1e3
    if latency > max_latency_ms:
        problems.append(f"mean latency {latency:.0f} ms > {max_latency_ms:.0f} ms")
    if s.window_dropped:
        problems.append(f"{s.window_dropped} frames dropped (processing slower than input)")
    if s.window_skipped:
        problems.append(f"{s.window_skipped} bad frames skipped: {s.last_error}")
    problems.extend(warnings)
    problems.extend(s.camera_warnings)
    if s.transport_warning:
        problems.append(s.transport_warning)
    status.level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
    status.message = "; ".join(problems) if problems else ("running" if s.processed else "waiting for images")
    values: Dict[str, Any] = {
        "frames_received": s.received, "frames_processed": s.processed, "frames_dropped": s.dropped,
        "frames_skipped": s.skipped, "debug_images": s.debug_images, "rate_hz": f"{s.window_processed / window:.2f}",
        "mean_latency_ms": f"{latency:.2f}", "last_error": s.last_error, "last_track_reset": s.last_reset,
        "weights": str(extractor.weights_path), "device": str(extractor.device), "network": extractor.backend_name,
        "input_topics": ", ".join(i.topic for i in inputs),
        "input_reliability": ", ".join(i.reliability_text() for i in inputs),
    }
    if s.transport_warning:
        values["transport_warning"] = s.transport_warning
    if s.camera_summary:
        values["camera_info"] = s.camera_summary
    for stage in TIMED_STAGES:
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
    if unpaired_dropped is not None:
        values["stereo_unpaired_dropped"] = unpaired_dropped
    values.update(extra or {})
    status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    return status


def diagnostic_array(status: DiagnosticStatus, stamp) -> DiagnosticArray:
    """``status`` in a DiagnosticArray stamped ``stamp`` (builtin_interfaces/Time)."""
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array
