"""The suite's own rules, checked on its source: every test module that needs rclpy carries the
``ros`` marker (so ``-m "not ros"`` runs where ROS is not installed), and no test asserts on the
wall clock (speed lives in bench/)."""
import re
from pathlib import Path

TEST_DIR = Path(__file__).resolve().parent

# imports of ROS message/client packages, the in-process node harness, or starting a ROS tool in a
# child process (the node, the bag player, the demo, the soak benchmark)
NEEDS_ROS = re.compile(
    r"^\s*(import|from)\s+(rclpy|sensor_msgs|std_msgs|diagnostic_msgs|rcl_interfaces|lifecycle_msgs|node_harness)\b"
    r"|superpoint_ros\.ros\.(node|bag_play|demo|lifecycle\w*)\b|bench\.soak",
    re.MULTILINE)
MARKED_ROS = re.compile(r"^pytestmark\s*=.*pytest\.mark\.ros\b", re.MULTILINE)
# upper bounds on time (`assert elapsed < ...`, `assert time.monotonic() - t0 <= ...`): they fail on a
# loaded machine. (A lower bound, such as a player that paces its output, cannot.)
WALL_CLOCK_ASSERT = re.compile(r"^\s*assert\b[^\n]*\b(elapsed|duration|seconds|monotonic\(\)|perf_counter\(\)|time\.time\(\))"
                               r"[^\n]*<", re.MULTILINE)


def _test_modules():
    return sorted(TEST_DIR.glob("test_*.py"))


def test_every_module_that_needs_rclpy_is_marked_ros():
    unmarked = [p.name for p in _test_modules() if p.name != Path(__file__).name
                and NEEDS_ROS.search(p.read_text()) and not MARKED_ROS.search(p.read_text())]
    assert not unmarked, f"add `pytestmark = pytest.mark.ros` to {unmarked}"


def test_no_test_asserts_on_the_wall_clock():
    offenders = [f"{p.name}: {m.group(0).strip()}" for p in _test_modules() if p.name != Path(__file__).name
                 for m in WALL_CLOCK_ASSERT.finditer(p.read_text())]
    assert not offenders, offenders


def test_the_checks_see_what_they_look_for():
    assert NEEDS_ROS.search("from rclpy.qos import QoSProfile\n")
    assert NEEDS_ROS.search('    [sys.executable, "-m", "superpoint_ros.ros.node", "--ros-args"]\n')
    assert not NEEDS_ROS.search("from superpoint_ros.frontend import Frontend\n")
    assert not NEEDS_ROS.search("from superpoint_ros.io.messages import decode_features\n")  # numpy only
    assert MARKED_ROS.search("pytestmark = pytest.mark.ros\n")
    assert WALL_CLOCK_ASSERT.search("    assert elapsed < 0.5 * frames, elapsed\n")
    assert not WALL_CLOCK_ASSERT.search("    assert r['dropped'] + r['received'] == 120\n")
    assert not WALL_CLOCK_ASSERT.search("    assert duration >= 0.9 * span / rate\n")
