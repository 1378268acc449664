"""The package's import graph, read from the AST (every import, function-level ones included): no
cycle, and nothing below training (evaluation, inference, models, runs, posterior) imports training.
`lint-imports` checks the full layer contracts of pyproject.toml; this test keeps the two rules that
matter most visible in the test suite, with the offending modules named."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ordinalage"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(name: str, modules: set[str]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (relative imports resolved, `from pkg import mod` to mod)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for name in names:
                target = _resolve(name, modules) if name.startswith("ordinalage") else None
                if target and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_known_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50  # the whole package was read
    assert cycles(graph) == []


def test_nothing_below_training_imports_training() -> None:
    lower = ("ordinalage.evaluation", "ordinalage.inference", "ordinalage.reporting", "ordinalage.models",
             "ordinalage.runs", "ordinalage.posterior", "ordinalage.data", "ordinalage.config")
    upward = sorted(f"{m} -> {t}" for m, targets in import_graph().items() if m.startswith(lower)
                    for t in targets if t.startswith(("ordinalage.training", "ordinalage.tuning")))
    assert upward == []


def test_the_posterior_layer_needs_no_torch() -> None:
    for path in (PACKAGE / "posterior").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "torch" not in imported, path.name


def contract_layers() -> list[str]:
    """The layers of pyproject.toml's "ordinalage layers" contract, without the package prefix."""
    import tomllib

    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["name"] == "ordinalage layers")
    return [" | ".join(part.strip().removeprefix("ordinalage.") for part in layer.split("|"))
            for layer in contract["layers"]]


def pictured_layers() -> list[str]:
    """The layers of docs/architecture.md's picture: the names before the description on each line."""
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("<!-- layers:start -->", 1)[1].split("<!-- layers:end -->", 1)[0]
    rows = [line for line in block.strip().strip("`").strip().splitlines() if line.strip()]
    return [" | ".join(name.strip() for name in line.split("  ", 1)[0].split("|")) for line in rows]


def test_the_architecture_picture_lists_the_contracts_layers() -> None:
    assert pictured_layers() == contract_layers()
    assert "reporting" in contract_layers() and "zoo" in contract_layers()
