"""Grouping messages of several inputs by stamp: the node's stereo pairing and the bag reader's.

:class:`StampSynchronizer` takes messages of N named inputs (``("left", "right")``; later
``("image", "camera_info")``) one at a time, each with its stamp in integer nanoseconds, and
returns a complete set -- one message per input -- as soon as the newest message completes one:

- every other input has a queued message with **exactly** the same stamp (preferred), or, failing
  that, its closest one within ``slop_ns`` of the new message's stamp (``slop_ns = 0``: exact only,
  as ``message_filters.TimeSynchronizer``);
- once a set is formed, every queued message not newer than the set's message of its input is
  discarded (and counted): it can no longer form a set with anything newer. Messages arriving out
  of order still pair as long as their partners are queued;
- at most ``queue_size`` messages wait per input; a full queue drops its oldest arrival (counted).

For two inputs on a steady camera this pairs as message_filters' ``ApproximateTimeSynchronizer``
does; its rule is simpler (no search over the whole queue for the best set). No ROS import: the
caller reads the stamps (:func:`superpoint_ros.stamps.message_stamp_ns`). Thread-safe.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Dict, Hashable, Optional, Sequence, Tuple

from .stamps import check_stamp_ns, stamp_ns_from_seconds

SYNC_MODES = ("exact", "approximate")


def slop_ns_for(mode: str, slop_s: float) -> int:
    """The ``sync.mode`` / ``sync.slop`` (seconds) parameters as a slop in ns (0 for ``exact``)."""
    if mode not in SYNC_MODES:
        raise ValueError(f"sync mode must be exact or approximate, got {mode!r}")
    return 0 if mode == "exact" else stamp_ns_from_seconds(slop_s)


class StampSynchronizer:
    """Groups messages of ``inputs`` (names, in the order sets are returned) by stamp.

    Counters (read them for diagnostics): ``received`` messages, ``sets`` formed,
    ``dropped_overflow`` (a full queue dropped its oldest), ``dropped_unpaired`` (discarded as
    older than a formed set, or replaced by a later message with the same stamp and input).
    """

    def __init__(self, inputs: Sequence[Hashable], slop_ns: int = 0, queue_size: int = 10):
        if not inputs or len(set(inputs)) != len(inputs):
            raise ValueError(f"inputs must be distinct names, got {list(inputs)!r}")
        self.slop_ns = check_stamp_ns(slop_ns, "slop_ns")
        if self.slop_ns < 0:
            raise ValueError(f"slop_ns must be >= 0, got {self.slop_ns}")
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.inputs: Tuple[Hashable, ...] = tuple(inputs)
        self.queue_size = int(queue_size)
        # per input: stamp ns -> message, in arrival order
        self._queues: Dict[Hashable, "OrderedDict[int, Any]"] = {name: OrderedDict() for name in self.inputs}
        self.received = self.sets = self.dropped_overflow = self.dropped_unpaired = 0
        self._lock = threading.Lock()

    @classmethod
    def from_params(cls, inputs: Sequence[Hashable], mode: str, slop_s: float, queue_size: int) -> "StampSynchronizer":
        """Built from the ``sync.mode``, ``sync.slop`` (s) and ``sync.queue_size`` parameters."""
        return cls(inputs, slop_ns_for(mode, slop_s), queue_size)

    @property
    def dropped(self) -> int:
        """Messages discarded without forming a set (overflow + unpaired)."""
        return self.dropped_overflow + self.dropped_unpaired

    def queued(self, name: Hashable) -> int:
        """Messages of input ``name`` waiting for partners."""
        with self._lock:
            return len(self._queues[name])

    def add(self, name: Hashable, stamp_ns: int, msg: Any) -> Optional[Tuple[Any, ...]]:
        """Feed ``msg`` of input ``name`` stamped ``stamp_ns``; returns the set it completes (one
        message per input, in :attr:`inputs` order) or ``None`` (it waits, or was dropped)."""
        if name not in self._queues:
            raise KeyError(f"unknown input {name!r} (inputs: {', '.join(map(str, self.inputs))})")
        stamp_ns = check_stamp_ns(stamp_ns)
        with self._lock:
            self.received += 1
            partners = self._partners(name, stamp_ns)
            if partners is None:
                self._enqueue(name, stamp_ns, msg)
                return None
            members = {name: (stamp_ns, msg)}
            for other, stamp in partners.items():
                members[other] = (stamp, self._queues[other].pop(stamp))
            for other, (stamp, _) in members.items():
                self._discard_not_newer(other, stamp)
            self.sets += 1
            return tuple(members[n][1] for n in self.inputs)

    def _partners(self, name: Hashable, stamp_ns: int) -> Optional[Dict[Hashable, int]]:
        """The stamp of each other input's partner for ``stamp_ns`` (exact, else the closest
        within the slop; the older one on a tie), or ``None`` when one input has none."""
        partners = {}
        for other in self.inputs:
            if other == name:
                continue
            queue = self._queues[other]
            if stamp_ns in queue:
                partners[other] = stamp_ns
                continue
            best = min(queue, key=lambda s: (abs(s - stamp_ns), s), default=None)
            if best is None or abs(best - stamp_ns) > self.slop_ns:
                return None
            partners[other] = best
        return partners

    def _enqueue(self, name: Hashable, stamp_ns: int, msg: Any) -> None:
        queue = self._queues[name]
        if stamp_ns in queue:  # a repeated stamp on one input: the later message wins
            del queue[stamp_ns]
            self.dropped_unpaired += 1
        elif len(queue) >= self.queue_size:
            queue.popitem(last=False)
            self.dropped_overflow += 1
        queue[stamp_ns] = msg

    def _discard_not_newer(self, name: Hashable, stamp_ns: int) -> None:
        queue = self._queues[name]
        stale = [s for s in queue if s <= stamp_ns]
        for s in stale:
            del queue[s]
        self.dropped_unpaired += len(stale)
