"""Throttled logging, in one place: a flood of one fault is logged once per period, and does not
hide the first report of another.

rclpy's ``throttle_duration_sec`` throttles per call site, so one ``skipped a frame`` line would
hide every other reason for skipping. :class:`ThrottledLog` throttles per *kind* of message: the
text with its numbers blanked (``stamp 12.5 s`` and ``stamp 13.0 s`` are one kind), and counts the
repeats it swallowed into the next report. Pure Python (any logger with ``warning``/``info``/...
methods), thread-safe.
"""
from __future__ import annotations

import re
import threading
import time
from typing import Callable, Dict, List

#: seconds between two reports of one kind of message
LOG_THROTTLE_S = 5.0
#: kinds remembered before the memory is cleared (the texts of a fault with ever-new words)
MAX_KINDS = 256
KIND_CHARS = 160  # a kind is this much of the number-blanked text


def message_kind(message: str) -> str:
    """``message`` with its numbers blanked (``#``), cut to :data:`KIND_CHARS`: what repeats share."""
    return re.sub(r"\d+(\.\d+)?", "#", message)[:KIND_CHARS]


class ThrottledLog:
    """Logs through ``logger`` (e.g. ``node.get_logger()``) at most once per ``period_s`` per kind
    of message (:func:`message_kind`). ``clock``: monotonic seconds (for tests)."""

    def __init__(self, logger, period_s: float = LOG_THROTTLE_S, clock: Callable[[], float] = time.monotonic):
        self.logger, self.period_s, self.clock = logger, float(period_s), clock
        self._lock = threading.Lock()
        self._reports: Dict[str, List] = {}  # kind -> [last logged (clock s), calls since then]

    def __call__(self, message: str, severity: str = "warning") -> bool:
        """Log ``message`` at ``severity`` (a logger method name) unless one of its kind was logged
        less than ``period_s`` ago; the report says how many like it were held back. Returns
        whether it was logged."""
        kind, now = message_kind(message), self.clock()
        with self._lock:
            if len(self._reports) > MAX_KINDS:
                self._reports.clear()
            report = self._reports.setdefault(kind, [-float("inf"), 0])
            report[1] += 1
            due = now - report[0] >= self.period_s
            if due:
                similar, report[0], report[1] = report[1] - 1, now, 0
        if due:
            more = f" ({similar} more like it since the last report)" if similar else ""
            getattr(self.logger, severity)(message + more)
        return due

    def forget(self) -> None:
        """A fresh period for every kind: the next message of any kind is logged."""
        with self._lock:
            self._reports.clear()
