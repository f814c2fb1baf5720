"""docs/ARCHITECTURE.md stays true, and the server's modules import no cycle.

The guide's conventions, which this test reads: a ``*.py`` path in backticks names a file of the
repository (given from the repository's root, from ``server/``, or by its name alone where the text
has said which package it is in); a code name in backticks outside code blocks is checked when it
is written as a call (``plan_task()``), as ``Class.member``, or as a class or constant name
(``GenerationPlan``, ``RULES``). Names of the worked examples' own new code (``foo``, ``rpd``)
are not expected to exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "ARCHITECTURE.md"
EXAMPLE_NAMES = ("foo", "rpd")


def _modules() -> dict[str, Path]:
    out = {}
    for path in (ROOT / "server").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _definitions() -> tuple[set[str], dict[str, set[str]]]:
    """Every name defined in server/ (functions, classes, module and class attributes), and each
    class's members."""
    names: set[str] = set()
    members: dict[str, set[str]] = {}
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.ClassDef):
                names.add(node.name)
                own = members.setdefault(node.name, set())
                for item in node.body:
                    if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                        own.add(item.name)
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        own.add(item.target.id)
                    elif isinstance(item, ast.Assign):
                        own.update(t.id for t in item.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
    return names, members


def _guide_tokens() -> tuple[list[str], list[str]]:
    """(backticked tokens anywhere, backticked tokens outside fenced code blocks)."""
    text = GUIDE.read_text()
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    everywhere = re.findall(r"`([^`\n]+)`", text) + re.findall(r"[\w/]+\.py", text)
    return everywhere, re.findall(r"`([^`\n]+)`", prose)


def _is_example(token: str) -> bool:
    return any(word in token.lower() for word in EXAMPLE_NAMES)


def test_every_path_the_guide_names_exists() -> None:
    files = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py") if ".venv" not in p.parts]
    everywhere, _ = _guide_tokens()
    paths = {t for t in everywhere if re.fullmatch(r"[\w/]+\.py", t) and not _is_example(t)}
    assert paths, "the guide names no module"
    missing = [p for p in sorted(paths) if not any(f == p or f.endswith("/" + p) for f in files)]
    assert not missing, f"docs/ARCHITECTURE.md names modules that do not exist: {missing}"


def test_every_code_name_the_guide_uses_is_defined() -> None:
    names, members = _definitions()
    _, prose = _guide_tokens()
    missing = []
    checked = 0
    for token in prose:
        if _is_example(token):
            continue
        call = re.fullmatch(r"([A-Za-z_]\w*)\(\)", token)
        dotted = re.fullmatch(r"([A-Z]\w*)\.(\w+)(?:\(\))?", token)
        named = re.fullmatch(r"[A-Z][A-Za-z0-9_]*", token)
        if call:
            ok = call.group(1) in names
        elif dotted:
            ok = dotted.group(2) in members.get(dotted.group(1), set())
        elif named:
            ok = token in names
        else:
            continue
        checked += 1
        if not ok:
            missing.append(token)
    assert checked > 30, checked  # the guide names the code it describes
    assert not missing, f"docs/ARCHITECTURE.md names code that is not defined in server/: {missing}"


def _imports() -> dict[str, set[str]]:
    """Each server module's imports of other server modules, wherever in the module they are."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("server"):
                deps.update(m for m in (node.module, *(f"{node.module}.{a.name}" for a in node.names)) if m in modules)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
        graph[name] = deps - {name, "server"}
    return graph


def test_no_import_cycle() -> None:
    graph = _imports()
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        path.append(module)
        for dep in sorted(graph[module]):
            visit(dep)
        path.pop()
        done.add(module)

    assert len(graph) > 50
    for module in sorted(graph):
        visit(module)
