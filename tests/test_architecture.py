"""The rules of the house, read off the package's source: who may import what, and how long a module may grow.

- adapt/ and models/ know nothing of Ray, HTML or the report (nor of the sweep that drives them);
- report/ reads only what runs wrote to disk: no torch, no models, no training code;
- only sweep/ imports ray;
- no two packages import each other (the package graph has no cycle);
- no module is longer than MAX_LINES.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from report_helpers import fake_trial, line

PACKAGE = Path(__file__).resolve().parent.parent / "nada_sweep"
MAX_LINES = 500
HTML = {"jinja2", "markupsafe"}
TORCH = {"torch", "torchvision", "clip"}

# (package, what it must not import, why)
FORBIDDEN = [
    ("adapt", {"ray", *HTML, "nada_sweep.report", "nada_sweep.sweep"}, "adapt/ knows nothing of Ray, HTML or the report"),
    ("models", {"ray", *HTML, "nada_sweep.report", "nada_sweep.sweep", "nada_sweep.adapt"},
     "models/ knows nothing of Ray, HTML, the report or training"),
    ("report", {"ray", *TORCH, "nada_sweep.adapt", "nada_sweep.models", "nada_sweep.sweep"},
     "report/ reads only disk and imports no torch"),
]


def imports_of(path: Path, root: Path) -> set[str]:
    """Every module the file at `path` (inside the package tree `root`) imports, top level or in a function."""
    rel = path.relative_to(root).with_suffix("").parts
    package = ["nada_sweep", *(rel if rel[-1] == "__init__" else rel[:-1])]
    package = package[:-1] if package[-1] == "__init__" else package
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def matches(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def sources(root: Path = PACKAGE) -> list[Path]:
    return sorted(root.rglob("*.py"))


def package_of(module: str, root: Path) -> str | None:
    """The package (adapt, models, ...) of a nada_sweep module name; None for top-level modules."""
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and (root / parts[1]).is_dir() else None


def violations(root: Path = PACKAGE) -> list[str]:
    """Every broken rule of the tree under `root` (a copy of the package in the failing-case test)."""
    problems = []
    graph: dict[str, set[str]] = {}
    for path in sources(root):
        rel = path.relative_to(root)
        names = imports_of(path, root)
        package = rel.parts[0] if len(rel.parts) > 1 else None
        for owner, banned, why in FORBIDDEN:
            if package == owner:
                for name in sorted(names):
                    if any(matches(name, b) for b in banned):
                        problems.append(f"{rel}: imports {name} ({why})")
        if package != "sweep":
            for name in sorted(names):
                if matches(name, "ray"):
                    problems.append(f"{rel}: imports {name} (only sweep/ imports ray)")
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            problems.append(f"{rel}: {lines} lines (at most {MAX_LINES}: split it by concern)")
        if package:
            for name in names:
                other = package_of(name, root) if matches(name, "nada_sweep") else None
                if other and other != package:
                    graph.setdefault(package, set()).add(other)
    problems += [f"packages import each other: {' -> '.join(cycle)}" for cycle in _cycles(graph)]
    return problems


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, seen = [], set()
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in sorted(graph.get(node, ())):
                if nxt == start:
                    key = frozenset(trail)
                    if key not in seen:
                        seen.add(key)
                        cycles.append([*trail, start])
                elif nxt not in trail:
                    stack.append((nxt, [*trail, nxt]))
    return cycles


def test_the_package_keeps_the_rules_of_the_house():
    assert violations() == []


@pytest.mark.parametrize(
    ("file", "code", "expected"),
    [
        ("adapt/bad.py", "import ray\n", "adapt/bad.py: imports ray"),
        ("adapt/bad.py", "from ..report import gallery\n", "imports nada_sweep.report"),
        ("models/bad.py", "import jinja2\n", "models/bad.py: imports jinja2"),
        ("report/bad.py", "def f():\n    import torch\n", "report/bad.py: imports torch"),
        ("report/bad.py", "from nada_sweep.models.checkpoints import load_generator\n", "imports nada_sweep.models"),
        ("generate_more.py", "from ray import tune\n", "only sweep/ imports ray"),
        ("sweep/long.py", "x = 1\n" * (MAX_LINES + 1), f"{MAX_LINES + 1} lines"),
        ("models/bad.py", "from nada_sweep.sweep import plan\n", "imports nada_sweep.sweep"),
    ],
)
def test_each_rule_fails_when_broken(tmp_path, file, code, expected):
    copy = tmp_path / "nada_sweep"
    for path in sources():
        target = copy / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    (copy / file).write_text(code)
    assert any(expected in problem for problem in violations(copy)), violations(copy)


def test_a_cycle_between_packages_fails(tmp_path):
    copy = tmp_path / "nada_sweep"
    for path in sources():
        target = copy / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    # sweep/ imports adapt/ already; adapt/ importing sweep/ back closes a cycle.
    (copy / "adapt" / "cycle.py").write_text("from nada_sweep.sweep.plan import ResolvedSweep\n")
    assert any(problem.startswith("packages import each other") for problem in violations(copy))


def test_report_command_runs_without_loading_torch(tmp_path):
    root = tmp_path / "sweep"
    fake_trial(root, "sketch", "k=0", [line(2), line(4)])
    code = (
        "import sys\n"
        "from nada_sweep.cli import main\n"
        f"assert main(['report', {str(root)!r}]) == 0\n"
        "loaded = sorted(m for m in ('torch', 'torchvision', 'clip', 'ray') if m in sys.modules)\n"
        "print('loaded:', loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout
