"""Pairing left/right messages by header stamp, for when ``message_filters`` is not installed.

Same contract as ``message_filters.TimeSynchronizer`` (``mode="exact"``) and
``ApproximateTimeSynchronizer`` with two inputs (``mode="approximate"``, pairs whose stamps differ
by at most ``slop`` seconds): feed messages with :meth:`StereoSynchronizer.add_left` /
``add_right`` and the callback receives ``(left, right)``. The pairing rule here is simpler than
message_filters' (for two inputs it amounts to the same thing on a steady camera): a new message
pairs with the closest-in-time unpaired message of the other side within ``slop``; every message
older than a formed pair is discarded, as it can no longer pair with anything newer. At most
``queue_size`` unpaired messages are kept per side (the oldest goes first).

No rclpy import: stamps are read duck-typed from ``msg.header.stamp.sec/nanosec``.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Deque, Tuple


def stamp_ns(msg: Any) -> int:
    """Header stamp of a message in integer nanoseconds (exact, no float rounding)."""
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class StereoSynchronizer:
    """Pairs two message streams by stamp; thread-safe (callbacks may come from two threads)."""

    def __init__(self, callback: Callable[[Any, Any], None], mode: str = "approximate", slop: float = 0.005,
                 queue_size: int = 10):
        if mode not in ("exact", "approximate"):
            raise ValueError(f"sync mode must be exact or approximate, got {mode!r}")
        self.callback = callback
        self.slop_ns = 0 if mode == "exact" else int(round(slop * 1e9))
        self.queues: Tuple[Deque, Deque] = (deque(maxlen=queue_size), deque(maxlen=queue_size))
        self.unpaired_dropped = 0  # messages discarded without a partner
        self._lock = threading.Lock()

    def add_left(self, msg: Any) -> None:
        self._add(0, msg)

    def add_right(self, msg: Any) -> None:
        self._add(1, msg)

    def _add(self, side: int, msg: Any) -> None:
        t = stamp_ns(msg)
        with self._lock:
            other = self.queues[1 - side]
            best = min(range(len(other)), key=lambda i: abs(other[i][0] - t), default=None)
            if best is None or abs(other[best][0] - t) > self.slop_ns:
                own = self.queues[side]
                if len(own) == own.maxlen:
                    self.unpaired_dropped += 1
                own.append((t, msg))
                return
            t_other, partner = other[best]
            # everything not newer than the pair can no longer pair with anything newer
            for queue, limit in ((other, t_other), (self.queues[side], t)):
                kept = [(s, m) for s, m in queue if s > limit]
                self.unpaired_dropped += len(queue) - len(kept) - (1 if queue is other else 0)
                queue.clear()
                queue.extend(kept)
        pair = (msg, partner) if side == 0 else (partner, msg)
        self.callback(*pair)
