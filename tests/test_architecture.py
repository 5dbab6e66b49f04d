"""The code's shape, checked: dependencies point down the layers, modules and functions stay small.

Layers, lowest first (docs/architecture.md): leaf helpers; model families and their registry; the runtime
(planner, scheduler, worker, devices); scoring jobs; the loader; the facade; settings; the front ends. A module may
import its own layer or lower ones, never a higher one, so the runtime cannot call back into the server or the
facade, and families cannot reach into the runtime.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "rerankd"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# Longest matching prefix wins.
LAYERS: dict[str, int] = {
    "rerankd.errors": 0,
    "rerankd.hardware": 0,
    "rerankd.validation": 0,
    "rerankd.jsonl": 0,
    "rerankd.loading": 0,
    "rerankd.chunking": 1,
    "rerankd.families": 1,
    "rerankd.registry": 1,
    "rerankd.runtime": 2,
    "rerankd.jobs": 3,
    "rerankd.builder": 4,
    "rerankd.reranker": 5,
    "rerankd.export": 5,
    "rerankd.settings": 6,
    "rerankd.server": 7,
    "rerankd.evaluation": 7,
    "rerankd.bench": 7,
    "rerankd.pipeline": 7,
    "rerankd.batch": 7,
    "rerankd.distributed": 8,
    "rerankd.cli": 9,
    "rerankd": 5,  # the package root re-exports the facade (and __version__)
}


def layer_of(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _type_checking_blocks(tree: ast.Module) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks (annotations only, not run)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(text: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """The rerankd modules (or names in them) that ``module``'s source imports, with line numbers."""
    tree = ast.parse(text)
    skipped = _type_checking_blocks(tree)
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or node.lineno in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                base = ".".join(parent[: len(parent) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}" if base else alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name == "rerankd" or name.startswith("rerankd.")]


def upward_imports(text: str, module: str, is_package: bool = False) -> list[str]:
    return [
        f"{module}:{line} -> {target}"
        for line, target in imports_of(text, module, is_package)
        if layer_of(target) > layer_of(module)
    ]


def test_no_import_points_up_a_layer() -> None:
    upward = []
    for path in sources():
        upward += upward_imports(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def test_the_layer_check_catches_upward_imports() -> None:
    """The check must be able to fail: absolute, relative and function-level upward imports are all caught,
    imports used only for type annotations are not."""
    text = (
        "from typing import TYPE_CHECKING\n"
        "from rerankd.families.base import Encoded\n"
        "from ..server import engine\n"
        "if TYPE_CHECKING:\n"
        "    from rerankd.reranker import Reranker\n"
        "def f():\n"
        "    import rerankd.cli.app\n"
    )
    assert upward_imports(text, "rerankd.runtime.scheduler") == [
        "rerankd.runtime.scheduler:3 -> rerankd.server.engine",
        "rerankd.runtime.scheduler:7 -> rerankd.cli.app",
    ]


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(SRC)))
def test_module_size(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(SRC)} has {lines} lines (limit {MAX_MODULE_LINES})"


def _is_cli_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Typer commands declare every flag in their signature; their length is the flag list, not logic."""
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name == "command":
            return True
    return False


def test_function_size() -> None:
    long = []
    for path in sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not _is_cli_command(node):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)
