"""config/fastdds_shm.xml: Fast DDS accepts it and really creates a 16 MB shared-memory segment."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "config" / "fastdds_shm.xml"

PROBE = r"""
import glob, os, time
before = set(glob.glob("/dev/shm/fast*"))
import rclpy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("shm_probe")
received = []
node.create_subscription(Image, "shm_probe_image", received.append, 10)
pub = node.create_publisher(Image, "shm_probe_image", 10)
msg = Image(height=720, width=1280, encoding="bgr8", step=3840)
msg.data = bytes(range(256)) * (720 * 3840 // 256)
deadline = time.time() + 10
while not received and time.time() < deadline:
    pub.publish(msg)
    rclpy.spin_once(node, timeout_sec=0.1)
new = [f for f in set(glob.glob("/dev/shm/fast*")) - before if os.path.isfile(f)]
print("RECEIVED", len(received), bytes(received[0].data[:4]) == bytes(range(4)) if received else None)
print("SEGMENT", max((os.path.getsize(f) for f in new), default=0))
"""


def run_probe(profile):
    env = dict(os.environ)
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(profile)
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm (Linux shared memory)")
def test_profile_loads_and_creates_a_16_mb_segment():
    result = run_probe(PROFILE)
    assert result.returncode == 0, result.stderr
    assert "XMLPARSER" not in result.stderr and "Error" not in result.stderr, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert lines["RECEIVED"] == "1 True"  # a 2.7 MB image went through
    assert int(lines["SEGMENT"]) >= 16 * 1024 * 1024
