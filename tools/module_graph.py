"""Print fer-tune's module graph: modules, import edges (top-level and inside functions), cycles, longest function.

    python tools/module_graph.py            # from the repository root

Used for the floor-plan issue's before/after figures; reads source only (nothing is imported).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("fer_tune", "trainables")


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `name` (a module or module.attribute) is, or lives in."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def edges(known: dict[str, Path]) -> dict[str, dict[str, bool]]:
    """module -> {imported module: imported only inside a function body}."""
    graph: dict[str, dict[str, bool]] = {m: {} for m in known}
    for module, path in known.items():
        tree = ast.parse(path.read_text())
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node, nested in _imports(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] or [base]
            for target in targets:
                hit = resolve(target, known)
                if hit and hit != module:
                    graph[module][hit] = graph[module].get(hit, True) and nested
    return graph


def _imports(tree, nested=False):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, nested
        else:
            inner = nested or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            yield from _imports(node, inner)


def cycles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return found


def longest_functions(known: dict[str, Path], top: int = 5) -> list[tuple[int, str]]:
    sizes = []
    for module, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                sizes.append((node.end_lineno - node.lineno + 1, f"{module}.{node.name}"))
    return sorted(sizes, reverse=True)[:top]


def main() -> None:
    known = modules(Path.cwd())
    graph = edges(known)
    total = sum(len(t) for t in graph.values())
    nested = sum(n for t in graph.values() for n in t.values())
    print(f"modules: {len(known)}")
    print(f"import edges: {total} ({nested} only inside functions)")
    found = cycles(graph)
    print(f"cycles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))
    print("longest functions (lines):")
    for lines, name in longest_functions(known):
        print(f"  {lines:4d}  {name}")
    print("edges:")
    for module in sorted(graph):
        for target in sorted(graph[module]):
            print(f"  {module} -> {target}{'  (in a function)' if graph[module][target] else ''}")


if __name__ == "__main__":
    main()
