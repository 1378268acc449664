"""Sizes that keep the package readable: no module over 500 lines, no function over 80 lines (tests
are exempt). A module that must grow splits by job (see docs/architecture.md) instead.

No module is exempt (the command line is a cli/ package, one module per command group)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ordinalage"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules() -> list[tuple[str, str]]:
    return [(path.relative_to(PACKAGE.parent).as_posix(), path.read_text(encoding="utf-8"))
            for path in sorted(PACKAGE.rglob("*.py"))]


def long_modules(modules: list[tuple[str, str]], limit: int = MAX_MODULE_LINES) -> list[str]:
    return [f"{name}: {text.count(chr(10))} lines" for name, text in modules if text.count("\n") > limit]


def long_functions(modules: list[tuple[str, str]], limit: int = MAX_FUNCTION_LINES) -> list[str]:
    out = []
    for name, text in modules:
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > limit:
                    out.append(f"{name}:{node.lineno} {node.name}: {lines} lines")
    return out


def test_no_module_over_500_lines() -> None:
    assert long_modules(_modules()) == []


def test_no_function_over_80_lines() -> None:
    assert long_functions(_modules()) == []


def test_the_checks_see_a_long_module_and_a_long_function() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(81))
    text = f"def long():\n{body}\n" + "\n" * 420
    assert long_modules([("m.py", text)]) == ["m.py: 502 lines"]
    assert long_functions([("m.py", text)]) == ["m.py:1 long: 82 lines"]
    assert long_functions([("m.py", "def short():\n    return 1\n")]) == []

