"""The node's input queue: bounded, newest frame wins, with drop accounting. Pure Python.

The subscription callbacks :meth:`FrameQueue.put` frames; the worker thread :meth:`FrameQueue.get`s
them. When the queue is full the oldest waiting frame is dropped, so latency never builds up
behind a slow front-end. :class:`DropReport` turns the drops into one throttled explanation:
how many, and the processing time per frame against the input period.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Optional, Sequence

from .throttle import LOG_THROTTLE_S

#: arrivals remembered for the input period in drop reports
ARRIVAL_HISTORY = 20


@dataclass(frozen=True)
class QueuedFrame:
    """One input: ``item`` (a tuple of messages: the mono image, or left and right) and when it
    arrived, ``received_at`` (``time.perf_counter()`` s, for the latency)."""

    received_at: float
    item: Any


class FrameQueue:
    """At most ``maxsize`` frames waiting; :meth:`put` on a full queue drops the oldest.

    ``dropped``: frames dropped so far. After :meth:`close`, :meth:`get` returns ``None`` and
    :meth:`put` ignores frames. Thread-safe.
    """

    def __init__(self, maxsize: int):
        if int(maxsize) < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = int(maxsize)
        self.dropped = 0
        self._frames: Deque[QueuedFrame] = deque()
        self._ready = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        with self._ready:
            return len(self._frames)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: Any, received_at: Optional[float] = None) -> bool:
        """Queue ``item`` (arrival ``received_at``, default now); returns whether the oldest
        waiting frame was dropped to make room for it."""
        frame = QueuedFrame(time.perf_counter() if received_at is None else received_at, item)
        with self._ready:
            if self._closed:
                return False
            dropped = len(self._frames) >= self.maxsize
            if dropped:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append(frame)
            self._ready.notify()
        return dropped

    def get(self, timeout: Optional[float] = None) -> Optional[QueuedFrame]:
        """The oldest waiting frame; waits for one (up to ``timeout`` s, ``None`` = until one
        comes or the queue closes). ``None`` when closed or timed out."""
        with self._ready:
            self._ready.wait_for(lambda: self._frames or self._closed, timeout)
            if self._closed or not self._frames:
                return None
            return self._frames.popleft()

    def clear(self) -> int:
        """Drops the waiting frames (not counted as dropped); returns how many."""
        with self._ready:
            n = len(self._frames)
            self._frames.clear()
            return n

    def close(self) -> None:
        """No more frames: a waiting :meth:`get` returns ``None``."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()


class DropReport:
    """Why frames are being dropped, at most once per ``period_s`` (monotonic s): the drops since
    the last report, the recent processing time per frame and the input period.

    :meth:`arrived` is told of every input (and whether it caused a drop); :meth:`report` gives the
    text when one is due (and starts a new report period), else ``None``. Thread-safe.
    """

    def __init__(self, queue_size: int, period_s: float = LOG_THROTTLE_S):
        self.queue_size, self.period_s = int(queue_size), float(period_s)
        self.arrivals: Deque[float] = deque(maxlen=ARRIVAL_HISTORY)
        self.unreported = 0
        self.reported_at: Optional[float] = None
        self._lock = threading.Lock()

    def arrived(self, now: float, dropped: bool) -> None:
        with self._lock:
            self.arrivals.append(now)
            self.unreported += int(dropped)

    @property
    def pending(self) -> bool:
        """Drops not reported yet."""
        return self.unreported > 0

    def report(self, now: float, process_ms: Sequence[float] = (), busy_ms: Optional[float] = None) -> Optional[str]:
        """The report when drops are pending and none was given in the last ``period_s``.
        ``process_ms``: recent per-frame processing times (ms); ``busy_ms``: how long the current
        frame has been processing, when no frame has finished yet."""
        with self._lock:
            if not self.unreported or not self.arrivals:
                return None
            since = self.reported_at if self.reported_at is not None else self.arrivals[0]
            if self.reported_at is not None and now - since < self.period_s:
                return None
            if len(process_ms):
                processing = f"processing {sum(process_ms) / len(process_ms):.0f} ms per frame"
            elif busy_ms is not None:  # the first frame is still running
                processing = f"the first frame still processing after {busy_ms:.0f} ms"
            else:
                processing = "processing not started"
            if len(self.arrivals) > 1:
                period_ms = (self.arrivals[-1] - self.arrivals[0]) / (len(self.arrivals) - 1) * 1e3
                processing += f" > input period {period_ms:.0f} ms"
            n, self.unreported, self.reported_at = self.unreported, 0, now
        return (f"dropped {n} frame(s) in the last {now - since:.1f} s: {processing} (input.queue_size="
                f"{self.queue_size}, the newest frame wins); lower the input rate or the work per frame, or raise "
                f"input.queue_size (rides out bursts)")
