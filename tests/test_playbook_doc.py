"""docs/playbook.md keeps its map honest: every playbook item is in the map, and every file,
symbol, test and link the page cites exists ("maps every playbook item ... to where it
lives in the code and to its test")."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

from supervisor.core.desk import SEED_CLASSES
from supervisor.playbook import RUNBOOKS, TREES
from supervisor.playbook.gates import GATE_IDS

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "playbook.md"

# Playbook 04, the twelve monitors in the playbook's words.
MONITORS = (
    "Inference worker liveness", "Broker heartbeat latency", "Job queue depth",
    "Market-data bar age", "Feature PSI vs. training", "Vendor-feed reconciliation",
    "Prediction distribution", "Feature-importance churn", "Inference latency",
    "Daily PnL vs. backtest band", "Slippage vs. expected", "Per-symbol concentration",
)
PRINCIPLES = tuple(f"{n:02d}" for n in range(1, 11))

# `path/file.py::Symbol.attr` (code or test) and bare `path/...` citations.
CITED_SYMBOL = re.compile(r"`((?:[\w-]+/)+[\w-]+\.py)::([\w.]+)`")
CITED_PATH = re.compile(
    r"`((?:supervisor|actors|simulators|hardware|tests|docs|scripts|systemd)/[\w./-]*)`")
LINK = re.compile(r"\]\(([\w./-]*)(?:#([\w-]+))?\)")


def _map_tables(text: str) -> dict[str, list[list[str]]]:
    """The map's tables, by their ``###`` heading: the cells of each body row."""
    m = re.search(r"^## The map.*?$(.*?)^## ", text, re.S | re.M)
    assert m, "docs/playbook.md has no '## The map' section"
    tables: dict[str, list[list[str]]] = {}
    heading = None
    for line in m.group(1).splitlines():
        if line.startswith("### "):
            heading = line[4:].strip()
            tables[heading] = []
        elif line.startswith("|") and heading is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if set("".join(cells)) <= set("-: "):
                continue  # the separator row
            tables[heading].append(cells)
    # drop each table's header row
    return {h: rows[1:] for h, rows in tables.items()}


def _table(tables: dict[str, list[list[str]]], title: str) -> list[list[str]]:
    found = [rows for h, rows in tables.items() if h.startswith(title)]
    assert found, f"the map has no '### {title}' table; it has {sorted(tables)}"
    return found[0]


def _first_ids(rows: list[list[str]]) -> list[str]:
    return [re.sub(r"[`*]", "", r[0]) for r in rows]


@cache
def _defined(path: str) -> frozenset[str]:
    """Names defined in a Python file: top-level functions, classes and assignments,
    and ``Class.member`` for their methods and class attributes."""
    tree = ast.parse((ROOT / path).read_text(), filename=path)
    names: set[str] = set()

    def targets(node: ast.stmt) -> list[str]:
        if isinstance(node, ast.Assign):
            return [t.id for t in node.targets if isinstance(t, ast.Name)]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            return [node.target.id]
        return []

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        names.update(targets(node))
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(f"{node.name}.{member.name}")
                for t in targets(member):
                    names.add(f"{node.name}.{t}")
    return frozenset(names)


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    out = set()
    in_code = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"^#{1,6} (.*)$", line)):
            out.add(_slug(m.group(1)))
    return out


@pytest.fixture(scope="module")
def text() -> str:
    return DOC.read_text()


@pytest.fixture(scope="module")
def tables(text: str) -> dict[str, list[list[str]]]:
    return _map_tables(text)


@pytest.mark.parametrize(("title", "expected"), [
    ("Runbooks", tuple(RUNBOOKS)),
    ("Incident classes", tuple(SEED_CLASSES)),
    ("Recovery trees", tuple(TREES)),
    ("Monitors", MONITORS),
    ("Gates", GATE_IDS),
    ("Principles", PRINCIPLES),
])
def test_every_seed_item_has_one_row_in_the_map(
        tables: dict[str, list[list[str]]], title: str, expected: tuple[str, ...]) -> None:
    ids = _first_ids(_table(tables, title))
    assert sorted(ids) == sorted(expected), (
        f"{title}: missing {sorted(set(expected) - set(ids))}, "
        f"not in the seed {sorted(set(ids) - set(expected))}, "
        f"twice {sorted({i for i in ids if ids.count(i) > 1})}")
    assert len(expected) == {"Runbooks": 10, "Incident classes": 6, "Recovery trees": 6,
                             "Monitors": 12, "Gates": 20, "Principles": 10}[title]


def test_every_row_of_the_map_names_code_and_a_test(
        tables: dict[str, list[list[str]]]) -> None:
    for title, rows in tables.items():
        for row in rows:
            line = " | ".join(row)
            tests = [p for p, _ in CITED_SYMBOL.findall(line) if p.startswith("tests/")]
            code = [p for p, _ in CITED_SYMBOL.findall(line) if not p.startswith("tests/")]
            code += [p for p in CITED_PATH.findall(line) if not p.startswith("tests/")]
            assert tests, f"{title} {row[0]}: no test cited"
            assert code, f"{title} {row[0]}: no code location cited"


def test_every_cited_file_and_symbol_exists(text: str) -> None:
    problems = []
    for path, symbol in sorted(set(CITED_SYMBOL.findall(text))):
        if not (ROOT / path).is_file():
            problems.append(f"{path}: no such file")
        elif symbol not in _defined(path):
            problems.append(f"{path}::{symbol}: not defined in {path}")
    for path in sorted(set(CITED_PATH.findall(text))):
        if not (ROOT / path).exists():
            problems.append(f"{path}: no such file")
    assert not problems, "docs/playbook.md cites:\n" + "\n".join(problems)


def test_cited_tests_are_test_functions(text: str) -> None:
    cited = {(p, s) for p, s in CITED_SYMBOL.findall(text) if p.startswith("tests/")}
    assert len(cited) > 50
    bad = [f"{p}::{s}" for p, s in sorted(cited) if not s.startswith("test_")]
    assert not bad, f"cited as tests but not test functions: {bad}"


def test_links_to_and_from_the_playbook_resolve(text: str) -> None:
    problems = []
    own = _anchors(DOC)
    for target, anchor in LINK.findall(text):
        if target.startswith("http"):
            continue
        path = DOC if not target else DOC.parent / target
        if not path.exists():
            problems.append(f"playbook.md links to missing {target}")
        elif anchor and anchor not in (own if not target else _anchors(path)):
            problems.append(f"playbook.md links to {target}#{anchor}: no such heading")
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for anchor in re.findall(r"playbook\.md#([\w-]+)", doc.read_text()):
            if anchor not in own:
                problems.append(f"{doc.name} links to playbook.md#{anchor}: no such heading")
    assert not problems, "\n".join(problems)


def test_the_parser_catches_a_broken_reference(tmp_path: Path, text: str) -> None:
    """The checks above can fail: a renamed test, a dropped gate, a missing symbol."""
    broken = text.replace("tests/test_gates.py::test_p2_limits_committed_and_matching",
                          "tests/test_gates.py::test_p2_renamed_away")
    assert broken != text
    missing = [(p, s) for p, s in CITED_SYMBOL.findall(broken)
               if (ROOT / p).is_file() and s not in _defined(p)]
    assert missing == [("tests/test_gates.py", "test_p2_renamed_away")]
    dropped = re.sub(r"^\| `W3` .*\n", "", text, flags=re.M)
    assert dropped != text
    assert "W3" not in _first_ids(_table(_map_tables(dropped), "Gates"))
    assert "Desk.no_such_method" not in _defined("supervisor/runtime/desk.py")
    assert "Desk.policy" in _defined("supervisor/runtime/desk.py")
