"""The daemon's code never loads the simulated world: simulators may use the product,
never the other way round (docs/architecture.md "Where things are")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PRODUCTION = ["supervisor.cli", "supervisor.daemon", "supervisor.deskctl", "supervisor.metrics",
              "supervisor.runtime", "supervisor.control", "supervisor.gate", "hardware"]


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
    graph["supervisor.config"].add("supervisor.runtime")  # what used to close the loop
    (found,) = cycles(graph)
    assert {"supervisor.config", "supervisor.runtime"} <= set(found)


def test_no_production_module_imports_the_simulators_even_lazily() -> None:
    graph = import_graph()
    offenders = sorted(f"{m} -> {t}" for m, targets in graph.items() for t in targets
                       if not m.startswith("simulators") and t.startswith("simulators")
                       and m != "supervisor.cli")
    assert offenders == []
    # the one door: `desk-supervisor demo` loads the simulated world for that command
    assert {t for t in graph["supervisor.cli"] if t.startswith("simulators")} == {
        "simulators.demo", "simulators.scenarios"}


def test_the_pure_core_loads_no_io_and_nothing_else_of_the_project() -> None:
    """The desk state machine, its events and the protocol messages: no trio, no HTTP,
    no SQLite, no hardware; of the project only themselves and the playbook's data."""
    code = ("import sys\n"
            "import supervisor.desk, supervisor.events, supervisor.protocol\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('supervisor', 'actors', 'hardware', 'simulators')))\n"
            "print(sorted(m for m in ('trio', 'httpx', 'sqlite3', 'hypercorn', 'gpiozero', "
            "'serial') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    project, io = done.stdout.splitlines()
    assert eval(project) == [
        "supervisor", "supervisor.desk", "supervisor.events", "supervisor.playbook",
        "supervisor.playbook.ledger", "supervisor.playbook.probes",
        "supervisor.playbook.runbooks", "supervisor.playbook.trees", "supervisor.protocol"]
    assert io == "[]"
