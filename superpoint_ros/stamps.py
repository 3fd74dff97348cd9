"""Timestamps: integer nanoseconds everywhere in the core (``int``, exact, like a ROS header).

A ROS ``builtin_interfaces/Time`` is ``sec`` + ``nanosec``; ``sec * 10**9 + nanosec`` is exact in a
Python int, while float seconds lose the nanoseconds of a present-day stamp (1.7e9 s needs 31 of
float64's 53 bits for the seconds). Seconds are for display only (:func:`seconds_text`).

>>> stamp_ns_from_ros(msg.header.stamp)        # 1_700_000_000_123_456_789
>>> stamp_ns_from_seconds(12.5)                # 12_500_000_000 (rounded to the nearest ns)
>>> ros_time_parts(1_700_000_000_123_456_789)  # (1700000000, 123456789)
"""
from __future__ import annotations

import numbers
from typing import Any, Tuple

import numpy as np

NS_PER_S = 1_000_000_000


def check_stamp_ns(value: Any, name: str = "stamp_ns") -> int:
    """``value`` as a Python int if it is an integer number of nanoseconds (a Python int or a
    numpy integer; ``bool`` is not), else ``TypeError`` saying what was given and how to convert."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    hint = ""
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        hint = (f"; for seconds use superpoint_ros.stamps.stamp_ns_from_seconds({float(value)!r}), "
                f"for a ROS stamp sec * 10**9 + nanosec (stamp_ns_from_ros)")
    shown = repr(value) if isinstance(value, str) else str(value)  # numpy 2's repr says np.float64(...)
    raise TypeError(f"{name} must be an integer number of nanoseconds (int or numpy integer), "
                    f"got {type(value).__name__} {shown}{hint}")


def stamp_ns_from_seconds(seconds: float) -> int:
    """Seconds (float) -> integer nanoseconds, rounded to the nearest nanosecond."""
    seconds = float(seconds)
    if not np.isfinite(seconds):
        raise ValueError(f"a stamp must be finite, got {seconds!r} s")
    return int(round(seconds * NS_PER_S))


def stamp_ns_from_ros(stamp: Any) -> int:
    """A ``builtin_interfaces/Time`` (rclpy or rosbags; anything with ``sec`` and ``nanosec``)
    -> integer nanoseconds, exact."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def message_stamp_ns(msg: Any) -> int:
    """The header stamp of a message (``msg.header.stamp``) in integer nanoseconds, exact."""
    return stamp_ns_from_ros(msg.header.stamp)


def ros_time_parts(stamp_ns: int) -> Tuple[int, int]:
    """Integer nanoseconds -> ``(sec, nanosec)`` as a ROS Time holds them (``0 <= nanosec < 10**9``)."""
    return divmod(check_stamp_ns(stamp_ns), NS_PER_S)


def seconds_text(duration_ns: int, decimals: int = 6) -> str:
    """A stamp or duration in ns as seconds for log and display text, e.g. ``"0.100000"``."""
    return f"{duration_ns / NS_PER_S:.{decimals}f}"
