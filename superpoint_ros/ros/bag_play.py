"""``superpoint-bag-play BAG``: publish a bag's messages on their topics with the original timing.

A small stand-in for ``ros2 bag play`` (not installable everywhere): messages are read with
``rosbags`` (sqlite3 or mcap; ROS 1 ``.bag`` files are converted to ROS 2 messages) and published
as their CDR bytes, so headers, stamps and data arrive exactly as recorded. Timing follows the bag's receive times divided by ``--rate``.

    superpoint-bag-play out/demo/cache/sample_480x640_40f_10hz_s0_sqlite3/bag --rate 0.5 \\
        --topics /stereo/left/image_rect /stereo/right/image_rect --wait-for-subscribers 1

(``out/demo/cache/sample_480x640_40f_10hz_s0_sqlite3/bag`` is the sample bag ``superpoint-demo``
writes with its defaults; any rosbag2 folder or ROS 1 ``.bag`` works.) At ``--rate 1`` a node
slower than the bag drops frames (the newest wins) and logs how many and why.

``--remap FROM:=TO`` renames topics. ``--wait-for-subscribers N`` holds the first message until
every played image topic (every topic, if the bag has no images) has N subscribers, so nothing is
lost to discovery. Keep DDS local with
``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` (``scripts/ros_env.sh`` does).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

from ..io.bags import IMAGE_TYPES, BagError, read_messages, topics as bag_topics


def message_type(msgtype: str):
    """``"sensor_msgs/msg/Image"`` -> the rclpy message class (ImportError if not installed)."""
    package, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def parse_remaps(items: Sequence[str]) -> Dict[str, str]:
    remaps = {}
    for item in items:
        if ":=" not in item:
            raise ValueError(f"remap {item!r} must look like FROM:=TO")
        source, target = item.split(":=", 1)
        if not source.startswith("/") or not target.startswith("/"):
            raise ValueError(f"remap {item!r}: both topics must be absolute (start with /)")
        remaps[source] = target
    return remaps


@dataclass
class PlayStats:
    """What was published: ``counts`` per output topic, ``skipped`` topics with the reason,
    ``duration_s`` wall time from first to last message."""

    counts: Dict[str, int] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)
    duration_s: float = 0.0


class BagPlayer:
    """Publishes a bag through an existing rclpy node (so a demo can run it in-process).

    ``qos``: ``"reliable"`` (keep-last ``depth``) or ``"sensor_data"`` (best effort).
    ``rate``: speed factor of the bag's timing; ``None`` publishes without pacing (lock-step
    replays pace themselves through :meth:`play`'s ``after_publish``).
    """

    def __init__(self, node, bag: Path, topic_names: Optional[Sequence[str]] = None, rate: float = 1.0,
                 remaps: Optional[Dict[str, str]] = None, qos: str = "reliable", depth: int = 10):
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # rclpy on use, as in main()

        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.node, self.bag, self.rate = node, Path(bag), None if rate is None else float(rate)
        self.remaps = dict(remaps or {})
        available = bag_topics(self.bag)
        names = list(topic_names) if topic_names else sorted(available)
        missing = [t for t in names if t not in available]
        if missing:
            raise BagError(f"{bag}: topic(s) {', '.join(missing)} not in the bag (available: {', '.join(sorted(available))})")
        if qos == "sensor_data":
            profile = qos_profile_sensor_data
        elif qos == "reliable":
            profile = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        else:
            raise ValueError(f"qos must be 'reliable' or 'sensor_data', got {qos!r}")
        self.stats = PlayStats()
        self.publishers = {}
        #: the image topics among those played (what a front-end subscribes to)
        self.image_topics = [t for t in names if available[t][0] in IMAGE_TYPES]
        for topic in names:
            msgtype = available[topic][0]
            try:
                cls = message_type(msgtype)
            except (ImportError, AttributeError, ValueError):
                self.stats.skipped[topic] = f"message type {msgtype} not available in this ROS install"
                continue
            out = self.remaps.get(topic, topic)
            self.publishers[topic] = node.create_publisher(cls, out, profile)
            self.stats.counts[out] = 0
        if not self.publishers:
            raise BagError(f"{bag}: nothing to play ({'; '.join(f'{t}: {r}' for t, r in self.stats.skipped.items())})")
        self._stop = threading.Event()

    def wait_for_subscribers(self, count: int, timeout_s: float, topics: Optional[Sequence[str]] = None) -> bool:
        """Block until every publisher (of the bag ``topics``, default all) has ``count``
        subscriptions (True) or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        publishers = [self.publishers[t] for t in (topics or self.publishers)]
        while True:
            if all(p.get_subscription_count() >= count for p in publishers):
                return True
            if time.monotonic() >= deadline or self._stop.is_set():
                return False
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()

    def play(self, progress=None, after_publish=None) -> PlayStats:
        """Publish every message once, paced by the bag's receive times / rate. ``progress``:
        optional callable ``(topic, count_so_far)``; ``after_publish``: optional callable
        ``(BagMessage)`` run after each message (e.g. to wait for a node's answer)."""
        first_log, start = None, None
        published = 0
        for item in read_messages(self.bag, list(self.publishers), deserialize=False):
            if self._stop.is_set():
                break
            if first_log is None:
                first_log, start = item.log_time_ns, time.monotonic()
            if self.rate is not None:
                due = start + (item.log_time_ns - first_log) / 1e9 / self.rate
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
            self.publishers[item.topic].publish(item.raw)  # original CDR bytes: stamps untouched
            out = self.remaps.get(item.topic, item.topic)
            self.stats.counts[out] += 1
            published += 1
            if progress is not None:
                progress(out, published)
            if after_publish is not None:
                after_publish(item)
        self.stats.duration_s = 0.0 if start is None else time.monotonic() - start
        return self.stats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="superpoint-bag-play", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bag", type=Path, help="rosbag2 folder (sqlite3 or mcap) or file, or a ROS 1 .bag")
    p.add_argument("--topics", nargs="+", default=None, help="topics to play (default: all)")
    p.add_argument("--rate", type=float, default=1.0, help="speed factor (2 = twice as fast)")
    p.add_argument("--remap", action="append", default=[], metavar="FROM:=TO")
    p.add_argument("--qos", choices=["reliable", "sensor_data"], default="reliable")
    p.add_argument("--depth", type=int, default=10, help="history depth of reliable publishers")
    p.add_argument("--wait-for-subscribers", type=int, default=0, metavar="N",
                   help="wait until every topic has N subscribers before playing")
    p.add_argument("--wait-timeout", type=float, default=30.0, help="seconds to wait for subscribers")
    p.add_argument("--loop", action="store_true", help="play again and again until interrupted")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        remaps = parse_remaps(args.remap)
        if args.rate <= 0:
            raise ValueError(f"--rate must be > 0, got {args.rate}")
        available = bag_topics(args.bag)
        missing = [t for t in args.topics or () if t not in available]
        if missing:
            raise BagError(f"{args.bag}: topic(s) {', '.join(missing)} not in the bag "
                           f"(available: {', '.join(sorted(available))})")
    except (BagError, ValueError) as e:
        print(f"superpoint-bag-play: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # rosbags raises its own types for unreadable bags
        print(f"superpoint-bag-play: cannot read {args.bag}: {e}", file=sys.stderr)
        return 2
    import rclpy  # on use: the argument and bag checks above (and --help) need no sourced ROS

    rclpy.init(args=None)
    node = rclpy.create_node("superpoint_bag_play")
    try:
        player = BagPlayer(node, args.bag, args.topics, args.rate, remaps, args.qos, args.depth)
        for topic, reason in player.stats.skipped.items():
            print(f"superpoint-bag-play: skipping {topic}: {reason}", file=sys.stderr)
        waited = [t for t in player.image_topics if t in player.publishers] or None  # images, else every topic
        if args.wait_for_subscribers and not player.wait_for_subscribers(args.wait_for_subscribers, args.wait_timeout,
                                                                         waited):
            print(f"superpoint-bag-play: not every topic had {args.wait_for_subscribers} subscriber(s) after "
                  f"{args.wait_timeout:g} s; playing anyway", file=sys.stderr)
        if not args.quiet:
            total = sum(available[t][1] for t in player.publishers)
            print(f"playing {total} messages on {len(player.publishers)} topics at {args.rate:g}x", flush=True)
        while True:
            stats = player.play()
            if not args.loop:
                break
            player.stats.counts = dict.fromkeys(player.stats.counts, 0)
        if not args.quiet:
            for topic, count in stats.counts.items():
                print(f"  {topic}: {count} messages")
            print(f"done in {stats.duration_s:.2f} s", flush=True)
        # give reliable subscribers a moment to take the last messages before the writer goes away
        time.sleep(0.5)
        return 0
    except (BagError, ValueError) as e:
        print(f"superpoint-bag-play: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
