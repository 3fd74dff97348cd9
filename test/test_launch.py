"""Launch files, checked statically (launch/launch_ros are not installable here): they parse, name
only installed executables, use only declared launch arguments, remap only topics the node has,
and point at shipped parameter files that set only declared parameters."""
import ast
from pathlib import Path

import pytest

from superpoint_ros.params import load_params
from superpoint_ros.ros.node import INPUT_TOPICS

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


def console_scripts():
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    return {ast.literal_eval(e).split("=")[0].strip() for e in value.elts}
    raise AssertionError("no console_scripts in setup.py")


def calls(tree, name):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called == name:
                yield node


def keyword(call, name):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def string_arg(call, position=0, name=None):
    node = keyword(call, name) if name else None
    if node is None and len(call.args) > position:
        node = call.args[position]
    return node.value if isinstance(node, ast.Constant) else None


@pytest.fixture(params=LAUNCH_FILES, ids=lambda p: p.name)
def launch_file(request):
    return request.param


def test_the_three_launch_files_exist():
    assert {p.name for p in LAUNCH_FILES} >= {"mono.launch.py", "stereo.launch.py", "bag_replay.launch.py"}


def test_parses_and_defines_generate_launch_description(launch_file):
    tree = ast.parse(launch_file.read_text(), str(launch_file))
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    assert ast.get_docstring(tree)


def test_executables_are_console_entry_points(launch_file):
    tree = ast.parse(launch_file.read_text())
    scripts = console_scripts()
    named = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            exe = keyword(node, "executable")
            if isinstance(exe, ast.Constant):
                named.append(exe.value)
                package = keyword(node, "package")
                assert package is None or (isinstance(package, ast.Constant) and package.value == "superpoint_ros")
    assert named, "no executable named"
    assert set(named) <= scripts, set(named) - scripts
    if launch_file.name == "bag_replay.launch.py":
        assert {"superpoint-bag-play", "superpoint_node"} <= set(named)


def test_launch_configurations_are_declared(launch_file):
    tree = ast.parse(launch_file.read_text())
    declared = {string_arg(c) for c in calls(tree, "DeclareLaunchArgument")}
    used = {string_arg(c) for c in calls(tree, "LaunchConfiguration")}
    assert None not in used and used <= declared, used - declared


def test_remappings_name_topics_the_node_subscribes_to(launch_file):
    tree = ast.parse(launch_file.read_text())
    sources = []
    for call in [*calls(tree, "Node"), *calls(tree, "LifecycleNode")]:
        remaps = keyword(call, "remappings")
        if remaps is not None:
            sources += [pair.elts[0].value for pair in remaps.elts]
    assert set(sources) <= set(INPUT_TOPICS), set(sources) - set(INPUT_TOPICS)


def test_referenced_config_files_exist_and_set_only_declared_parameters(launch_file):
    tree = ast.parse(launch_file.read_text())
    files = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and n.value.endswith((".yaml", ".xml"))]
    assert files
    for name in files:
        path = ROOT / "config" / name
        assert path.is_file(), f"{launch_file.name} refers to missing config/{name}"
        if name.endswith(".yaml"):
            load_params(path)  # raises for unknown names, bad types, out-of-range values


def test_lifecycle_launch_starts_the_managed_node_by_its_usual_name():
    """launch_ros's LifecycleNode needs name and namespace; the name is the node's own, so
    ``<namespace>/superpoint_node`` is what a lifecycle manager lists."""
    tree = ast.parse((ROOT / "launch" / "mono_lifecycle.launch.py").read_text())
    (node,) = list(calls(tree, "LifecycleNode"))
    assert string_arg(node, name="executable") == "superpoint_lifecycle_node"
    assert string_arg(node, name="name") == "superpoint_node"
    assert keyword(node, "namespace") is not None
    transitions = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("TRANSITION_")}
    assert transitions == {"TRANSITION_CONFIGURE", "TRANSITION_ACTIVATE"}
