"""Packaging: the ROS-free core, and a real colcon build of the package."""
import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "superpoint_ros"


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


#: ROS message imports outside ros/ that are allowed, and why: io/messages.py's to_pointcloud2 builds
#: rclpy messages only when its caller passes no message classes (the node); inside that function.
ROS_IMPORTS_OUTSIDE_ROS = {"superpoint_ros/io/messages.py": ["sensor_msgs.msg"]}


def test_core_never_imports_rclpy():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if (PACKAGE / "ros") in path.parents:
            continue
        bad = [m for m in imported_modules(path) if m.split(".")[0] in ("rclpy", "sensor_msgs", "std_msgs")]
        if bad != ROS_IMPORTS_OUTSIDE_ROS.get(str(path.relative_to(ROOT)), []):
            offenders.append(f"{path.relative_to(ROOT)}: {bad}")
    assert not offenders


def test_io_imports_rclpy_messages_only_inside_a_function():
    tree = ast.parse((PACKAGE / "io" / "messages.py").read_text())
    top_level = [m for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                 for m in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])]
    assert not [m for m in top_level if m.split(".")[0] in ("rclpy", "sensor_msgs", "std_msgs")], top_level
    code = ("import sys; sys.modules['rclpy'] = None; sys.modules['sensor_msgs'] = None\n"
            "import superpoint_ros.io, superpoint_ros.io.messages, superpoint_ros.io.image_decoding, superpoint_ros.io.bags\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_core_imports_in_a_process_without_rclpy():
    code = ("import sys; sys.modules['rclpy'] = None\n"
            "import superpoint_ros, superpoint_ros.extractor, superpoint_ros.matching\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def _ignore(directory, names):
    return {n for n in names if n in {".venv", ".git", "build", "install", "log", "__pycache__", ".pytest_cache",
                                      "runs", "out", "ws"} or n.endswith(".egg-info")}


@pytest.mark.slow
def test_colcon_build_installs_package_entry_points_and_share_files(tmp_path):
    pytest.importorskip("colcon_core")
    ws = tmp_path / "ws"
    shutil.copytree(ROOT, ws / "src" / "superpoint_ros", ignore=_ignore)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run([sys.executable, "-m", "colcon", "build", "--base-paths", "src"],
                            cwd=ws, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    prefix = ws / "install" / "superpoint_ros"
    share = prefix / "share" / "superpoint_ros"
    assert (share / "package.xml").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "superpoint_ros").is_file()
    for folder in ("launch", "config", "models"):
        shipped = [p for p in (ROOT / folder).glob("*") if p.is_file() and p.suffix in (".py", ".yaml", ".xml", ".pt")]
        for p in shipped:
            assert (share / folder / p.name).is_file(), f"{folder}/{p.name} not installed"
    lib = prefix / "lib" / "superpoint_ros"
    for exe in ("superpoint_node", "superpoint_lifecycle_node", "superpoint-extract", "superpoint-eval",
                "superpoint-train"):
        assert (lib / exe).is_file(), f"entry point {exe} not installed in {lib}"
    # the installed package (its subpackages too) imports from the install space
    site = next(prefix.glob("lib/python3*/site-packages"))
    probe = subprocess.run([sys.executable, "-c", "import superpoint_ros, superpoint_ros.io.messages, sys; print(superpoint_ros.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True,
                           env=dict(env, PYTHONPATH=str(site)))
    assert probe.returncode == 0, probe.stderr
    assert str(prefix) in probe.stdout or str(ws / "build") in probe.stdout
    # README's "Building with colcon": source the workspace, start the installed node (no ros2 CLI)
    scripts = ["setup.sh"] + (["setup.bash"] if importlib.util.find_spec("colcon_bash") else [])
    for script in scripts:
        assert (ws / "install" / script).is_file(), f"colcon wrote no install/{script}"
        started = subprocess.run(["bash", "-c", f'. "{ws / "install" / script}" && "{lib / "superpoint_node"}" --help'],
                                 cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
        assert started.returncode == 0, started.stderr[-3000:]
        assert started.stdout.startswith("usage: superpoint_node"), started.stdout[:500]
