"""``superpoint-demo``: the sample bag replayed through ``superpoint_node`` on this machine.

1. builds (once, cached in ``--output``) the sample bag: a rectified stereo camera moving smoothly
   through a room papered with real photos, with exact ground truth
   (:mod:`superpoint_ros.evaluation.sample_data`);
2. starts ``superpoint_node`` (a separate process, the shipped parameter file, the default model
   unless ``--weights``) in namespace ``/superpoint``;
3. replays the bag into it (:class:`superpoint_ros.ros.bag_play.BagPlayer`) and collects the node's
   ``features``, ``temporal_matches`` and ``stereo_matches`` over DDS. By default the replay is
   lock-step (the next frame is sent when the node has answered the previous one), so a slow CPU
   processes every frame; ``--rate R`` replays with the bag's timing instead (frames the node
   cannot keep up with are dropped by its newest-frame-wins queue, as on a robot);
4. prints a line per frame and a summary (tracks, inliers, stereo, ground-truth pose errors,
   latency) and writes ``tracks.png`` (the last frame with its tracks), ``per_frame.png`` and
   ``summary.json`` into ``--output``.

DDS never leaves the machine: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` is forced and
``ROS_STATIC_PEERS`` cleared for this process and the node.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np

from ..evaluation.bag_eval import default_params_file
from ..evaluation.bag_report import format_summary, tracks_picture
from ..evaluation.bag_stats import BagStats, FrameRecord
from ..evaluation.make_dataset import parse_size
from ..evaluation.plots import plot_bag_summary
from ..evaluation.pose import read_tum
from ..evaluation.sample_data import SampleConf, ensure_sample_bag
from ..io import bags
from ..io.messages import decode_features, decode_stereo_matches, decode_temporal_matches
from ..weights import WeightsError, default_weights_path, load_weights
from .bag_play import BagPlayer

NS = 1_000_000_000
NAMESPACE = "/superpoint"
RETRY_S = 30.0  # lock-step: resend a frame the node has not answered after this many seconds
#: Node parameters the demo sets before the user's --set: a reliable image subscription, so that a
#: replay on a busy machine loses no frame (explicit, though the default ``auto`` picks the same
#: from the reliable player).
DEMO_NODE_PARAMETERS = ("qos.reliability:=reliable",)
TRAIL_LENGTH = 12  # frames of each track drawn in the pictures
README_IMAGE_BYTES = 300_000
SETTLE_S = 1.0  # after discovery, before the first frame: let both ends finish matching


def local_dds_environment(env: Dict[str, str], log_dir: Path) -> Dict[str, str]:
    """The environment with DDS confined to this machine and a domain id of our own."""
    env = dict(env)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.pop("ROS_STATIC_PEERS", None)  # static peers would be contacted even with LOCALHOST
    env.setdefault("ROS_DOMAIN_ID", str(100 + random.randrange(100)))
    env.setdefault("ROS_LOG_DIR", str(log_dir))
    return env


def resolve_weights(path: Optional[str]) -> Path:
    if path:
        weights = Path(path)
        if not weights.is_file():
            raise FileNotFoundError(f"weight file not found: {weights}")
        return weights
    return default_weights_path()  # WeightsError with the places it looked when missing


def describe_weights(path: Path) -> str:
    _, _, provenance = load_weights(path)
    details = ", ".join(f"{k}: {provenance[k]}" for k in ("training_data", "iterations", "date") if k in provenance)
    return f"{path}" + (f" ({details})" if details else f" ({provenance.get('format', 'checkpoint')})")


class Collector:
    """Subscribes to the node's outputs and groups them by header stamp (rclpy node inside)."""

    def __init__(self, node, namespace: str, stereo: bool):
        # rclpy on use: main() confines DDS to this machine in os.environ before rclpy loads
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2

        self.stereo = stereo
        self.frames: Dict[int, dict] = {}
        self.arrival: Dict[int, float] = {}
        self.condition = threading.Condition()
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        decoders = {"features": decode_features, "temporal_matches": decode_temporal_matches}
        if stereo:
            decoders["stereo_matches"] = decode_stereo_matches
        self.subscriptions = []
        for name, decode in decoders.items():
            self.subscriptions.append(node.create_subscription(
                PointCloud2, f"{namespace}/{name}", self._callback(name, decode), qos))

    def _callback(self, name, decode):
        def on_message(msg):
            stamp = msg.header.stamp.sec * NS + msg.header.stamp.nanosec
            decoded = decode(msg)
            with self.condition:
                self.frames.setdefault(stamp, {})[name] = decoded
                if name == "features":
                    self.arrival[stamp] = time.monotonic()
                self.condition.notify_all()
        return on_message

    def wait_idle(self, expected: int, idle_s: float, timeout: float) -> None:
        """Return once ``expected`` frames have features, or nothing arrived for ``idle_s``."""
        deadline = time.monotonic() + timeout
        with self.condition:
            while time.monotonic() < deadline and len(self.arrival) < expected:
                last = max(self.arrival.values(), default=None)
                if last is not None and time.monotonic() - last > idle_s:
                    return
                self.condition.wait(0.05)

    def connected(self) -> bool:
        return all(s.get_publisher_count() > 0 for s in self.subscriptions)

    def wait_frame(self, stamp: int, expect_temporal: bool, timeout: float, grace: float = 0.5) -> Optional[dict]:
        """The outputs for ``stamp`` once features (+ stereo) (+ temporal, given ``grace`` seconds
        after the features: a track reset sends none) arrived, or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self.condition:
            while True:
                frame = self.frames.get(stamp, {})
                ready = "features" in frame and (not self.stereo or "stereo_matches" in frame)
                if ready and (not expect_temporal or "temporal_matches" in frame):
                    return frame
                if ready and time.monotonic() - self.arrival[stamp] > grace:
                    return frame
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.condition.wait(min(remaining, 0.05))


def record_from_messages(stamp: int, frame: dict, latency_ms: float):
    """Decoded node outputs of one frame -> :class:`superpoint_ros.evaluation.bag_stats.FrameRecord`."""
    features = frame["features"]
    temporal = frame.get("temporal_matches")
    stereo = frame.get("stereo_matches")
    previous = None
    if temporal is not None and temporal["previous_stamp"] is not None:
        previous = temporal["previous_stamp"][0] * NS + temporal["previous_stamp"][1]
    return FrameRecord(
        stamp, features.keypoints, features.track_ids, features.track_lengths,
        None if temporal is None else temporal["indices"], None if temporal is None else temporal["inliers"],
        True, previous,
        None if stereo is None else stereo["left_keypoints"], None if stereo is None else stereo["right_keypoints"],
        {"total": latency_ms})


def frame_line(index: int, total: int, stamp: int, t0: int, row: dict, longest: int) -> str:
    parts = [f"frame {index + 1:3d}/{total}", f"t={(stamp - t0) / NS:6.2f}s", f"kp {row['keypoints']:4d}"]
    if row["temporal_matches"] is not None:
        ratio = f"{row['inlier_ratio']:.2f}" if row["inlier_ratio"] is not None else "n/a"
        parts.append(f"matches {row['temporal_matches']:4d} (inliers {ratio})")
    else:
        parts.append("matches    - (first frame)     ")
    parts.append(f"tracked {row['tracks_continued']:4d} (longest {longest:3d})")
    if row["stereo_matches"] is not None:
        dy = f"{row['epipolar_error_px']:.2f}" if row["epipolar_error_px"] is not None else "-"
        parts.append(f"stereo {row['stereo_matches']:4d} (|dy| {dy} px)")
    if row["rotation_error_deg"] is not None:
        parts.append(f"rot.err {row['rotation_error_deg']:6.3f}deg dir.err {row['translation_direction_error_deg']:5.2f}deg")
    parts.append(f"latency {row['time_ms']:6.0f} ms")
    return "  ".join(parts)


def write_small_png(path: Path, image, trails, limit: int = README_IMAGE_BYTES) -> int:
    """The tracks picture as a PNG under ``limit`` bytes (for the README): the photo is posterised
    to 32 grey levels (compresses ~2x, invisible at this size), then shrunk until it fits."""
    background = (image // 8) * 8 if image.dtype.name == "uint8" else image
    for width in (640, 560, 480, 400, 320):
        picture = tracks_picture(background, trails, max_width=width)
        ok, data = cv2.imencode(".png", picture, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if ok and len(data) <= limit:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())
    return len(data)


def start_node(params_file: Path, weights: Path, stereo: bool, topics: Dict[str, str], env: Dict[str, str],
               log_path: Path, extra: List[str]) -> subprocess.Popen:
    remaps = (["-r", f"left/image_rect:={topics['left_image']}", "-r", f"right/image_rect:={topics['right_image']}"]
              if stereo else ["-r", f"image:={topics['left_image']}"])
    cmd = [sys.executable, "-m", "superpoint_ros.ros.node", "--ros-args", "-r", f"__ns:={NAMESPACE}",
           "--params-file", str(params_file), "-p", f"extractor.weights:={weights}", *remaps]
    for item in (*DEMO_NODE_PARAMETERS, *extra):  # later -p wins: the user's --set overrides ours
        cmd += ["-p", item]
    log = open(log_path, "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def stop_node(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="superpoint-demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None, help="weight file (default: the shipped model)")
    p.add_argument("--mono", action="store_true", help="run the mono node on the left camera")
    p.add_argument("--size", type=parse_size, default=(480, 640), help="HEIGHTxWIDTH of the sample bag")
    p.add_argument("--frames", type=int, default=40, help="frames in the sample bag")
    p.add_argument("--rate", type=float, default=0.0,
                   help="replay speed factor with the bag's timing; 0 = lock-step (default: every frame processed)")
    p.add_argument("--params", type=Path, default=None, help="node parameter file (default: the shipped one)")
    p.add_argument("--set", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra node parameter, e.g. --set extractor.max_keypoints:=500")
    p.add_argument("--exposure-jitter", type=float, default=0.0, metavar="J",
                   help="simulated auto-exposure in the sample bag: each image's gain is exp(U(-J, J)) (default 0)")
    p.add_argument("--motion-blur", type=float, default=0.0, metavar="F",
                   help="motion blur in the sample bag: shutter open for this fraction of the frame period (default 0)")
    p.add_argument("--output", "-o", type=Path, default=Path("out/demo"), help="cache and results folder")
    p.add_argument("--readme-image", type=Path, default=None, help="also write a small tracks PNG here")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the node to start / per frame")
    p.add_argument("--quiet", action="store_true", help="no per-frame lines")
    return p


def main(argv=None) -> int:
    from ..backends import configure_process  # torch only once the arguments are valid

    args = build_parser().parse_args(argv)
    configure_process()
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    dds_env = local_dds_environment(os.environ, Path(tempfile.gettempdir()) / "superpoint_ros_logs")
    os.environ.pop("ROS_STATIC_PEERS", None)
    os.environ.update(dds_env)  # before rclpy is imported: this process and the node stay local
    if args.frames < 2:
        print("superpoint-demo: --frames must be >= 2", file=sys.stderr)
        return 2
    if not 0.0 <= args.exposure_jitter <= 1.0:
        print("superpoint-demo: --exposure-jitter must be in [0, 1]", file=sys.stderr)
        return 2
    if not 0.0 <= args.motion_blur <= 1.0:
        print("superpoint-demo: --motion-blur must be in [0, 1] (a fraction of the frame period)", file=sys.stderr)
        return 2
    try:
        weights = resolve_weights(args.weights)
        weights_text = describe_weights(weights)
        params_file = args.params or default_params_file(stereo=not args.mono)
    except (WeightsError, FileNotFoundError) as e:
        print(f"superpoint-demo: {e}", file=sys.stderr)
        return 2
    started = time.monotonic()
    conf = SampleConf(size=tuple(args.size), num_frames=args.frames, exposure_jitter=args.exposure_jitter,
                      motion_blur=args.motion_blur)
    print(f"[1/4] sample bag ({conf.size[0]}x{conf.size[1]}, {conf.num_frames} stereo frames at "
          f"{conf.rate_hz:g} Hz, exact ground truth"
          + (f", exposure jitter {conf.exposure_jitter:g}" if conf.exposure_jitter else "")
          + (f", motion blur {conf.motion_blur:g}" if conf.motion_blur else "") + ") ...", flush=True)
    sample = ensure_sample_bag(out / "cache", conf)
    print(f"      {sample.bag}")
    stereo = not args.mono
    print(f"[2/4] starting superpoint_node ({'stereo' if stereo else 'mono'}, {params_file.name}, "
          f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}, DDS on localhost only)\n      weights: {weights_text}",
          flush=True)
    node_log = out / "node.log"
    process = start_node(params_file, weights, stereo, sample.topics, dict(os.environ), node_log, args.set)

    import rclpy  # only now: os.environ above keeps this process's DDS on localhost
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    node = rclpy.create_node("superpoint_demo")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    image_topics = [sample.topics["left_image"]] + ([sample.topics["right_image"]] if stereo else [])
    info_topics = [sample.topics["left_info"]] + ([sample.topics["right_info"]] if stereo else [])
    last_image_topic = image_topics[-1]
    stats = BagStats(sample.K, read_tum(sample.groundtruth), trail_length=TRAIL_LENGTH)
    lost = []
    try:
        collector = Collector(node, NAMESPACE, stereo)
        player = BagPlayer(node, sample.bag, image_topics + info_topics, args.rate or None, qos="reliable", depth=10)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and process.poll() is None:
            if player.wait_for_subscribers(1, 0.2, image_topics) and collector.connected():
                break
        if process.poll() is not None or time.monotonic() >= deadline:
            print("superpoint-demo: the node did not come up; its log:\n" + node_log.read_text()[-3000:], file=sys.stderr)
            return 1
        time.sleep(SETTLE_S)
        print(f"[3/4] replaying {conf.num_frames} frames "
              f"({'lock-step' if not args.rate else f'{args.rate:g}x real time'}) ...", flush=True)
        t0 = None
        sent: Dict[int, float] = {}
        longest = 0

        def finish(stamp: int, frame: Optional[dict]) -> None:
            nonlocal longest
            if frame is None:
                lost.append(stamp)
                if not args.quiet:
                    print(f"frame at t={(stamp - t0) / NS:.2f}s: no answer from the node (dropped)", flush=True)
                return
            latency = (collector.arrival[stamp] - sent[stamp]) * 1e3
            row = stats.add(record_from_messages(stamp, frame, latency))
            longest = max(longest, int(np.max(frame["features"].track_lengths, initial=0)))
            if not args.quiet:
                print(frame_line(len(stats.frames) + len(lost) - 1, conf.num_frames, stamp, t0, row, longest), flush=True)

        current_images: Dict[str, object] = {}

        def after_publish(item) -> None:
            nonlocal t0
            if item.topic in image_topics:
                current_images[item.topic] = item
            if item.topic != last_image_topic:
                return
            stamp = bags.stamp_ns(bags.typestore().deserialize_cdr(item.raw, item.msgtype))
            t0 = stamp if t0 is None else t0
            sent[stamp] = time.monotonic()
            if args.rate:
                return
            # lock-step: wait for this frame's answer before sending the next. Should a frame still
            # be lost (a best-effort subscription via --set), send it again once after RETRY_S.
            frame = collector.wait_frame(stamp, expect_temporal=bool(stats.frames), timeout=min(RETRY_S, args.timeout))
            if frame is None and process.poll() is None:
                for topic in image_topics:
                    player.publishers[topic].publish(current_images[topic].raw)
                frame = collector.wait_frame(stamp, bool(stats.frames), timeout=args.timeout)
            finish(stamp, frame)
            if process.poll() is not None:
                player.stop()

        player.play(after_publish=after_publish)
        if args.rate:  # timed replay: collect what came back; frames the node dropped never will
            collector.wait_idle(len(sent), idle_s=3.0, timeout=args.timeout)
            for stamp in sorted(sent):
                finish(stamp, collector.wait_frame(stamp, bool(stats.frames), timeout=0.0, grace=0.0))
        if process.poll() is not None:
            print("superpoint-demo: the node stopped; its log:\n" + node_log.read_text()[-3000:], file=sys.stderr)
            return 1
    finally:
        stop_node(process)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()

    print("[4/4] summary", flush=True)
    if not stats.frames:
        print("superpoint-demo: no frame came back from the node; its log:\n" + node_log.read_text()[-3000:],
              file=sys.stderr)
        return 1
    summary = stats.summary()
    summary.update({"weights": str(weights), "weights_description": weights_text, "params_file": str(params_file),
                    "mode": "stereo" if stereo else "mono", "replay": "lock-step" if not args.rate else f"{args.rate}x",
                    "frames_sent": conf.num_frames, "frames_without_answer": len(lost), "bag": str(sample.bag),
                    "wall_time_s": time.monotonic() - started})
    summary["time_ms_note"] = "time_ms = end-to-end latency: image published -> features received"
    print(f"weights: {weights_text}")
    print(format_summary(summary).replace("processing time [ms]", "latency [ms]"))
    if lost:
        print(f"{len(lost)} of {conf.num_frames} frames got no answer (dropped by the node's queue or lost)")
    last = None
    for item in bags.read_messages(sample.bag, [sample.topics["left_image"]]):
        last = item.message
    picture = tracks_picture(bags.message_image(last), stats.trails)
    cv2.imwrite(str(out / "tracks.png"), picture)
    plot_bag_summary(stats.series(), np.array(list(stats.track_length.values()), np.int64), out / "per_frame.png")
    (out / "summary.json").write_text(json.dumps({**summary, "per_frame": stats.frames}, indent=1, default=float) + "\n")
    if args.readme_image:
        write_small_png(args.readme_image, bags.message_image(last), stats.trails)
    print(f"\nwrote {out / 'tracks.png'} (last frame with its tracks), {out / 'per_frame.png'}, "
          f"{out / 'summary.json'}; node log {node_log}  [{time.monotonic() - started:.0f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
