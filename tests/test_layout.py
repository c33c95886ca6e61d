"""The layout the design asks for: no import circle among modules or packages; ``compiler/`` stays small."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("compiler", "passes", "frontends", "backends", "models")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every project module ``path`` imports, at the top or inside a function (lazy imports count too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules) for p in files}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _package_of(module: str) -> str:
    return module.split(".")[0]


def test_no_import_circle_among_modules():
    graph = {m: {d for d in deps if not m.startswith(d + ".") and d != m.rpartition(".")[0]}
             for m, deps in _graph().items()}  # a module may import its own package's __init__
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph))}"


def test_no_import_circle_among_packages():
    graph: dict[str, set[str]] = {}
    for module, deps in _graph().items():
        graph.setdefault(_package_of(module), set()).update(
            _package_of(d) for d in deps if _package_of(d) != _package_of(module))
    assert _cycle(graph) is None, f"package import circle: {' -> '.join(_cycle(graph))}"


def test_quantization_workflow_never_imports_the_driver():
    driver = {"compiler.api", "compiler.cli"}
    for module, deps in _graph().items():
        if module.startswith("compiler.quantization"):
            assert not deps & driver, f"{module} imports {sorted(deps & driver)}"


def test_compiler_top_level_holds_under_30_percent_of_the_code():
    def lines(paths):
        return sum(len(p.read_text().splitlines()) for p in paths)

    total = lines(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
    top = lines((ROOT / "compiler").glob("*.py"))
    assert top / total < 0.30, f"compiler/*.py holds {top} of {total} lines ({top / total:.0%})"
