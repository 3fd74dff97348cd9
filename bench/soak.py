"""Soak test: thousands of frames through the live ``superpoint_node`` (its own process, loopback DDS).

    python -m bench.soak --frames 5000 --rate 0 --size 480x640 --params config/superpoint_mono.yaml --out soak.json
    python -m bench.soak --frames 150 --rate 30 --size 96x128 --weights random       # the CI version

A driver node in this process publishes ``sensor_msgs/Image`` frames of a camera panning over a
real photo (``--rate`` Hz open loop, where a rate above the node's throughput makes its queue
drop; ``0`` = the maximum rate the node sustains: closed loop, the next frame as soon as the
previous one's features arrive, 1 s without an answer counts it lost), optionally a bad frame every ``--bad-every``
frames (each kind of the issue-8 matrix in turn), and records every ``features`` message. The node
process's resident memory (VmRSS) is sampled every ``--rss-period`` s.

Report (JSON on stdout and in ``--out``): frames published / received, ``dropped`` (good frames
published but never answered), the node's own counters from ``/diagnostics`` (received,
processed, dropped by its queue, skipped bad frames), end-to-end latency percentiles (publish ->
features callback, ms), achieved input and output rates, RSS at start (after warm-up), end and
max with the growth, and whether the node stayed up and exited cleanly on SIGINT. ``ok`` is true
when the node never died, exited with 0, no bad frame produced features (the node skipped them,
or its queue dropped one for a newer frame) and the RSS growth stayed within
``--max-rss-growth-mb``; the exit status is 0 exactly then.

DDS never leaves the machine: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a private ROS_DOMAIN_ID
are set before rclpy is imported (the node inherits them).
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _isolate_dds() -> None:
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("ROS_DOMAIN_ID", str(170 + random.Random(os.getpid()).randrange(30)))
    os.environ.setdefault("ROS_LOG_DIR", os.path.join(tempfile.gettempdir(), "superpoint_soak_ros_logs"))


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=5000, help="good frames to publish after the warm-up")
    p.add_argument("--rate", type=float, default=30.0,
                   help="Hz, open loop; 0 = closed loop at the node's maximum rate")
    p.add_argument("--size", default="480x640", help="HEIGHTxWIDTH of the frames")
    p.add_argument("--weights", default="", help="weight file; '' = the shipped model; 'random' = random init")
    p.add_argument("--device", default="cpu", help="extractor.device of the node")
    p.add_argument("--queue-size", type=int, default=1, help="input.queue_size of the node")
    p.add_argument("--bad-every", type=int, default=0, help="publish a bad frame after every N good ones; 0 = none")
    p.add_argument("--warmup", type=int, default=10, help="frames answered one by one before measuring")
    p.add_argument("--rss-period", type=float, default=0.5, help="s between RSS samples")
    p.add_argument("--max-rss-growth-mb", type=float, default=64.0,
                   help="allowed RSS growth end - start (after warm-up) in MiB")
    p.add_argument("--param", action="append", default=[], metavar="NAME:=VALUE", help="extra node parameter")
    p.add_argument("--params", type=Path, default=None,
                   help="node parameter file (e.g. config/superpoint_mono.yaml); default: the node's defaults")
    p.add_argument("--out", default="", help="write the JSON report here too")
    args = p.parse_args(argv)
    try:
        args.height, args.width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must be HEIGHTxWIDTH, got {args.size!r}")
    if args.frames < 1 or args.rate < 0 or args.bad_every < 0 or args.height < 16 or args.width < 16:
        p.error("--frames >= 1, --rate >= 0, --bad-every >= 0 and a size of at least 16x16 are required")
    return args


def random_weights_file(directory: str) -> str:
    import torch

    from superpoint_ros.model import SuperPointConfig, SuperPointNet
    from superpoint_ros.weights import save_checkpoint

    torch.manual_seed(0)
    path = os.path.join(directory, "random.pt")
    save_checkpoint(path, SuperPointNet(SuperPointConfig()).eval(), {"training_data": "none (soak test)"})
    return path


def panning_frames(height: int, width: int, steps: int = 48, step_px: int = 2) -> List[np.ndarray]:
    """Gray frames of a camera panning back and forth over a real photo (tracking does real work)."""
    import cv2
    from skimage import data

    photo = data.camera()
    span_x, span_y = steps * step_px, steps * step_px // 2
    big = cv2.resize(photo, (width + span_x, height + span_y), interpolation=cv2.INTER_AREA)
    forth = [np.ascontiguousarray(big[k * step_px // 2:k * step_px // 2 + height, k * step_px:k * step_px + width])
             for k in range(steps)]
    return forth + forth[-2:0:-1]  # ping-pong: the motion stays smooth when the sequence repeats


def bad_messages(Image, height: int, width: int) -> List:
    """One bad message per kind (the issue-8 matrix the node must skip)."""
    def msg(encoding="mono8", h=height, w=width, step=None, data=None):
        m = Image(height=h, width=w, encoding=encoding, is_bigendian=0, step=w if step is None else step)
        m.data = bytes(m.step * h) if data is None else data
        return m

    nan = np.full((height, width), 0.5, np.float32)
    nan[1, 1] = np.nan
    return [msg(encoding="32SC4"), msg(data=b""), msg(step=width - 1), msg(h=height + 1, data=bytes(width * height)),
            msg(h=4, w=4), msg(encoding="32FC1", step=width * 4, data=nan.tobytes())]


class RssSampler(threading.Thread):
    """VmRSS of a process every ``period`` s, in MiB."""

    def __init__(self, pid: int, period: float):
        super().__init__(daemon=True)
        self.pid, self.period, self.samples = pid, period, []
        self._stop = threading.Event()

    def read(self) -> Optional[float]:
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            return None
        return None

    def run(self) -> None:
        while not self._stop.wait(self.period):
            value = self.read()
            if value is not None:
                self.samples.append((time.monotonic(), value))

    def stop(self) -> None:
        self._stop.set()


def percentiles(values: List[float]) -> Dict[str, float]:
    if not values:
        return {}
    v = np.asarray(values)
    return {"p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)),
            "p99": float(np.percentile(v, 99)), "max": float(v.max()), "mean": float(v.mean())}


def run(args: argparse.Namespace) -> dict:
    _isolate_dds()
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2

    workdir = tempfile.mkdtemp(prefix="superpoint_soak_")
    weights = random_weights_file(workdir) if args.weights == "random" else args.weights
    params = {"extractor.device": args.device, "input.queue_size": args.queue_size, "diagnostics.period": 0.5}
    if weights:  # rcl cannot parse an empty override (-p name:=); the node's default is the shipped model
        params["extractor.weights"] = weights
    ros_args = ["--params-file", str(args.params)] if args.params else []
    ros_args += [a for name, value in params.items() for a in ("-p", f"{name}:={value}")]
    for extra in args.param:
        ros_args += ["-p", extra]
    log_path = os.path.join(workdir, "node.log")
    log = open(log_path, "w")
    node_proc = subprocess.Popen([sys.executable, "-m", "superpoint_ros.ros.node", "--ros-args", *ros_args],
                                 cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    report: dict = {"config": {k: getattr(args, k) for k in ("frames", "rate", "size", "device", "queue_size",
                                                                "bad_every", "warmup", "max_rss_growth_mb")},
                    "node_log": log_path}
    rclpy.init()
    driver = rclpy.create_node("soak_driver")
    lock = threading.Lock()
    published: Dict[int, float] = {}  # stamp ns -> publish time (perf_counter)
    latencies: List[float] = []
    received: List[int] = []
    received_at: List[float] = []
    diagnostics: List[dict] = []

    def on_features(msg):
        now = time.perf_counter()
        t = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with lock:
            received.append(t)
            received_at.append(now)
            if t in published:
                latencies.append((now - published.pop(t)) * 1e3)

    def on_diagnostics(msg):
        for status in msg.status:
            if "superpoint" in status.name:
                with lock:
                    diagnostics.append({kv.key: kv.value for kv in status.values} | {"message": status.message})

    reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
    pub = driver.create_publisher(Image, "image", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    driver.create_subscription(PointCloud2, "features", on_features, reliable)
    driver.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(driver)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    sampler = RssSampler(node_proc.pid, args.rss_period)
    frames = panning_frames(args.height, args.width)
    bad = bad_messages(Image, args.height, args.width)
    stamp_ns = 1_000_000_000
    period_ns = int(1e9 / args.rate) if args.rate else 33_333_333  # camera time; also when publishing flat out

    def make(frame: np.ndarray, t: int) -> Image:
        m = Image(height=frame.shape[0], width=frame.shape[1], encoding="mono8", is_bigendian=0, step=frame.shape[1])
        m.header.stamp.sec, m.header.stamp.nanosec = divmod(t, 1_000_000_000)
        m.header.frame_id = "soak_camera"
        m.data = frame.tobytes()
        return m

    def wait(predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            if node_proc.poll() is not None:
                return False
            time.sleep(0.005)
        return False

    try:
        if not wait(lambda: pub.get_subscription_count() > 0 and driver.count_publishers("features") > 0, 120.0):
            raise RuntimeError(f"the node did not come up (exit {node_proc.poll()}); log: {log_path}")
        # warm-up: one frame at a time, each answered (the first frames allocate the network's memory);
        # a frame is sent again while discovery may still lose it (best-effort image subscription)
        for k in range(args.warmup):
            before = len(received)
            for _attempt in range(60):
                published[stamp_ns] = time.perf_counter()
                pub.publish(make(frames[k % len(frames)], stamp_ns))
                stamp_ns += period_ns
                if wait(lambda: len(received) > before, 1.0):
                    break
            else:
                raise RuntimeError(f"no features during warm-up (node exit {node_proc.poll()}); log: {log_path}")
        with lock:
            latencies.clear()
            received.clear()
            received_at.clear()
            published.clear()
        rss_start = sampler.read()
        sampler.start()
        good = bad_sent = 0
        bad_stamps = set()
        start = time.perf_counter()
        k = args.warmup
        while good < args.frames and node_proc.poll() is None:
            if args.rate:
                delay = start + (good + bad_sent) / args.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            if args.bad_every and good and good % args.bad_every == 0 and bad_sent < good // args.bad_every:
                msg = bad[bad_sent % len(bad)]
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
                bad_stamps.add(stamp_ns)
                bad_sent += 1
            else:
                msg = make(frames[k % len(frames)], stamp_ns)
                with lock:
                    published[stamp_ns] = time.perf_counter()
                good += 1
                k += 1
            answered_before = len(received)
            pub.publish(msg)
            stamp_ns += period_ns
            if not args.rate:
                if stamp_ns - period_ns in bad_stamps:
                    time.sleep(0.05)  # let the bad frame reach the worker before the next one replaces it
                else:  # closed loop: the next frame as soon as this one is answered (1 s without: lost)
                    wait(lambda: len(received) > answered_before, 1.0)
        publish_s = time.perf_counter() - start
        # drain: until nothing new arrives for 2 s (or 30 s in all)
        last, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + 30.0
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 2.0 and node_proc.poll() is None:
            if len(received) != last:
                last, quiet_since = len(received), time.monotonic()
            time.sleep(0.05)
        total_s = time.perf_counter() - start
        time.sleep(1.2)  # one more diagnostics period with the final counters
        sampler.stop()
        alive = node_proc.poll() is None
        rss_end = sampler.read() if alive else None
        rss = [v for _, v in sampler.samples]
        with lock:
            answered = len(received)
            last_diag = diagnostics[-1] if diagnostics else {}
            lat = list(latencies)
            span = received_at[-1] - received_at[0] if len(received_at) > 1 else 0.0
        node_counts = {key: int(last_diag[key]) for key in ("frames_received", "frames_processed", "frames_dropped",
                                                            "frames_skipped") if key in last_diag}
        report.update({
            "published_good": good, "published_bad": bad_sent, "received_features": answered,
            "bad_frames_answered": len(bad_stamps.intersection(received)),
            "dropped": good - answered, "drop_rate": (good - answered) / good,
            "node": node_counts, "node_last_error": last_diag.get("last_error", ""),
            "input_rate_hz": (good + bad_sent) / publish_s, "output_rate_hz": (answered - 1) / span if span else 0.0,
            "duration_s": total_s,
            "latency_ms": percentiles(lat),
            "rss_mb": {"start": rss_start, "end": rss_end, "max": max(rss) if rss else None,
                       "growth": (rss_end - rss_start) if rss_end is not None and rss_start is not None else None,
                       "bound": args.max_rss_growth_mb, "samples": len(rss)},
            "node_alive_at_end": alive,
        })
    finally:
        # the spinning thread must have left rclpy before the node and context go: a thread still
        # inside the executor's wait at interpreter exit aborts the process (seen on a loaded box)
        executor.shutdown(timeout_sec=10.0)
        spinner.join(timeout=10.0)
        driver.destroy_node()
        rclpy.try_shutdown()
        if node_proc.poll() is None:
            node_proc.send_signal(signal.SIGINT)
            try:
                node_proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node_proc.kill()
                node_proc.wait()
        log.close()
    report["node_exit_code"] = node_proc.returncode
    growth = report.get("rss_mb", {}).get("growth")
    # a bad frame must never produce features; the node skips it (or its queue drops it for a newer frame)
    report["ok"] = bool(report.get("node_alive_at_end") and node_proc.returncode == 0 and growth is not None
                        and growth <= args.max_rss_growth_mb and report.get("bad_frames_answered") == 0
                        and (report["published_bad"] == 0 or report["node"].get("frames_skipped", 0) > 0))
    return report


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except RuntimeError as e:  # the node did not start or never answered: say so, no traceback
        print(f"soak: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
