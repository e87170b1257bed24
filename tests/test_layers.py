"""The daemon's code never loads the simulated world: simulators may use the product,
never the other way round (docs/architecture.md "Where things are")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PRODUCTION = ["supervisor.cli.main", "supervisor.runtime.daemon", "supervisor.cli.deskctl",
              "supervisor.ops.metrics", "supervisor.runtime.desk", "supervisor.control.server",
              "supervisor.control.gate", "hardware"]


def test_production_modules_import_no_simulator() -> None:
    code = ("import sys\n"
            f"for m in {PRODUCTION!r}: __import__(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'simulators'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_an_unknown_demo_scenario_is_a_usage_error_naming_the_scenarios() -> None:
    done = subprocess.run([sys.executable, "-m", "supervisor.cli", "demo", "--scenario",
                           "meteor"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown scenario 'meteor'; scenarios: " in done.stderr


ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("supervisor", "actors", "hardware", "simulators")


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, read from the source: every import,
    at the top, in a function or under TYPE_CHECKING (all are dependencies)."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_anywhere() -> None:
    graph = import_graph()
    assert len(graph) > 75  # every module of the four packages was read
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = import_graph()
    graph["supervisor.config"].add("supervisor.runtime.desk")  # what used to close the loop
    (found,) = cycles(graph)
    assert {"supervisor.config", "supervisor.runtime.desk"} <= set(found)


def test_no_production_module_imports_the_simulators_even_lazily() -> None:
    graph = import_graph()
    offenders = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                       if not m.startswith("simulators") and t.startswith("simulators")
                       and m != "supervisor.cli.main")
    assert offenders == []
    # the one door: `desk-supervisor demo` loads the simulated world for that command
    assert {t for t in graph["supervisor.cli.main"] if t.startswith("simulators")} == {
        "simulators.demo", "simulators.scenarios"}


def test_the_pure_core_loads_no_io_and_nothing_else_of_the_project() -> None:
    """The desk state machine, its events, the protocol messages, errors and the book:
    no trio, no HTTP, no SQLite, no hardware; of the project only the core itself."""
    core = sorted(f"supervisor.core.{p.stem}" for p in (ROOT / "supervisor" / "core").glob("*.py")
                  if p.stem != "__init__")
    assert "supervisor.core.desk" in core and len(core) >= 6
    code = ("import sys\n"
            f"for m in {core!r}: __import__(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('supervisor', 'actors', 'hardware', 'simulators')))\n"
            "print(sorted(m for m in ('trio', 'httpx', 'sqlite3', 'hypercorn', 'gpiozero', "
            "'serial', 'h11') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    project, io = done.stdout.splitlines()
    assert eval(project) == ["supervisor", "supervisor.core", *core]
    assert io == "[]"


# Who may import what, by folder: each prefix lists the only project modules (by prefix)
# its modules may import. docs/architecture.md "Layers" says why.
ALLOWED = {
    "supervisor.core": ("supervisor.core",),
    # an actor reads the core's types and the book, and the venues through their interface
    "actors": ("actors", "supervisor.core", "supervisor.venues.base", "supervisor.files"),
    "supervisor.venues": ("supervisor.venues", "supervisor.core", "supervisor.config"),
    "hardware": ("hardware", "supervisor.core", "actors.base"),
    # the outside world speaks the wire types; the demo (and only it) wires in a supervisor
    "simulators": ("simulators", "supervisor.core", "supervisor.venues",
                   "supervisor.control.client", "supervisor.control.gate",
                   "supervisor.ops.asgi", "hardware.protocol", "hardware.config"),
}
EXEMPT = {"simulators.demo"}


def layer_offences(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in graph.items():
        rule = next((p for p in ALLOWED if module == p or module.startswith(p + ".")), None)
        for target in sorted(targets):
            if rule and module not in EXEMPT and not any(
                    target == a or target.startswith(a + ".") for a in ALLOWED[rule]):
                found.append(f"{module} -> {target}")
            if target.startswith("supervisor.cli") and not module.startswith("supervisor.cli"):
                found.append(f"{module} -> {target} (nothing imports the commands)")
    return sorted(found)


def test_each_layer_imports_only_what_it_may() -> None:
    assert layer_offences(import_graph()) == []


def test_the_layer_check_finds_an_actor_importing_the_runtime() -> None:
    graph = import_graph()
    graph["actors.risk"].add("supervisor.runtime.desk")
    graph["supervisor.core.desk"].add("supervisor.config")
    graph["supervisor.ops.metrics"].add("supervisor.cli.deskctl")
    assert layer_offences(graph) == [
        "actors.risk -> supervisor.runtime.desk",
        "supervisor.core.desk -> supervisor.config",
        "supervisor.ops.metrics -> supervisor.cli.deskctl (nothing imports the commands)"]


def test_the_folders_are_the_architecture() -> None:
    """A reader who opens supervisor/ sees the layers; a new flat module must pick one."""
    top = sorted(p.name for p in (ROOT / "supervisor").iterdir()
                 if p.name != "__pycache__" and (p.suffix == ".py" or p.is_dir()))
    assert top == ["__init__.py", "cli", "config.py", "control", "core", "files.py", "ops",
                   "playbook", "runtime", "venues"]
