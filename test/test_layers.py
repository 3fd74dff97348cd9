"""The package's import directions, checked on its source with ``ast`` (every import statement,
those inside functions included, relative and absolute):

- core (``superpoint_ros/*.py`` and any subpackage not named below) imports only core;
- ``io/`` (message codec, rosbag I/O, image decoding) imports only core;
- ``evaluation/`` and ``training/`` import core and ``io/`` (not ``ros/``, not each other);
- ``ros/`` (the rclpy glue, the top layer) may import anything; nothing else imports it.

and the package has no import cycle, so no import has to hide inside a function to break one.
"""
import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

PACKAGE = "superpoint_ros"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE
LAYERS = ("io", "ros", "evaluation", "training")  # subpackages with rules; everything else is core
ALLOWED = {
    "core": {"core"},
    "io": {"core", "io"},
    "evaluation": {"core", "io", "evaluation"},
    "training": {"core", "io", "training"},
    "ros": {"core", "io", "evaluation", "training", "ros"},
}


def module_name(path: Path, root: Path = PACKAGE_DIR) -> str:
    """``root/ros/sync.py`` -> ``superpoint_ros.ros.sync``; ``root/io/__init__.py`` -> ``superpoint_ros.io``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def layer_of(module: str) -> str:
    """The layer of a dotted module name inside the package (``superpoint_ros.io.bags`` -> ``io``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "core"


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> Iterator[Tuple[int, str]]:
    """``(line, dotted name)`` of every package module an import statement names, anywhere in
    ``tree``. ``from X import name`` yields ``X.name`` (name may be a submodule) as well as ``X``."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            yield node.lineno, node.args[0].value  # importlib.import_module("superpoint_ros.ros.sync")


def _inside_package(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def violations(source: str, module: str, is_package: bool = False, where: str = "?") -> List[str]:
    """``"where:line imports X (io may import only core, io)"`` for each import against the rules."""
    layer = layer_of(module)
    bad: Dict[int, Set[str]] = {}
    for line, name in imported_modules(ast.parse(source), module, is_package):
        if _inside_package(name) and name != PACKAGE and layer_of(name) not in ALLOWED[layer]:
            bad.setdefault(line, set()).add(name)
    allowed = ", ".join(sorted(ALLOWED[layer]))
    return [f"{where}:{line} imports {name} ({layer} may import only {allowed})"
            for line in sorted(bad) for name in sorted(bad[line])
            if not any(other.startswith(name + ".") for other in bad[line])]  # the most specific name


def _package_modules() -> Dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def import_graph(modules: Dict[str, Path]) -> Dict[str, Set[str]]:
    """Module -> the package modules it imports explicitly (any import statement, any depth)."""
    graph: Dict[str, Set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for _, imported in imported_modules(ast.parse(path.read_text()), name, path.name == "__init__.py"):
            if imported in modules and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import cycle (``[a, b, ..., a]``) or None (depth-first search)."""
    state: Dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


# --- the package ---------------------------------------------------------------------------------
def test_every_layer_imports_only_what_it_may():
    modules = _package_modules()
    assert {layer_of(name) for name in modules} == {"core", *LAYERS}  # the walk sees every layer
    problems = []
    for name, path in modules.items():
        where = path.relative_to(PACKAGE_DIR.parent)
        problems += violations(path.read_text(), name, path.name == "__init__.py", str(where))
    assert not problems, "import directions broken:\n" + "\n".join(problems)


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph(_package_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# --- the checks themselves -----------------------------------------------------------------------
def test_the_checks_see_every_form_of_import():
    core, io, evaluation = f"{PACKAGE}.frontend", f"{PACKAGE}.io.bags", f"{PACKAGE}.evaluation.bag_eval"
    forbidden_in_core = [
        "from .ros import node\n",
        "from .ros.messages import x\n",
        "from . import ros\n",
        "from .io import bags\n",
        "import superpoint_ros.ros.sync\n",
        "from superpoint_ros.evaluation import bag_eval\n",
        "from superpoint_ros import training\n",
        "def f():\n    from .training.config import load_config\n",
        "class A:\n    def m(self):\n        import superpoint_ros.io.bags as b\n",
        "import importlib\nimportlib.import_module('superpoint_ros.ros.sync')\n",
    ]
    for source in forbidden_in_core:
        assert violations(source, core, where="x.py"), source
    assert violations("from ..ros import messages\n", evaluation, where="bag_eval.py") == [
        "bag_eval.py:1 imports superpoint_ros.ros.messages (evaluation may import only core, evaluation, io)"]
    assert violations("def f():\n    from ..training import engine\n", evaluation)
    assert violations("from ..evaluation.bags import BagError\n", io)
    assert violations("from .. import ros\n", f"{PACKAGE}.io", is_package=True)  # in io/__init__.py
    assert not violations("from . import messages\n", f"{PACKAGE}.io", is_package=True)
    # allowed: core from anywhere, io from evaluation, anything from ros, outside imports
    assert not violations("from ..image import ImageError\nimport numpy\nfrom . import messages\n", io)
    assert not violations("from ..io import bags, messages\nfrom .pose import NS\n", evaluation)
    assert not violations("from ..evaluation.bag_eval import FrameRecord\nfrom ..io import bags\n",
                          f"{PACKAGE}.ros.demo")
    assert not violations("from .extractor import FeatureExtractor\nimport superpoint_ros\n", core)


def test_the_cycle_search_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
