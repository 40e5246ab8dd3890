"""The house rules that tools check: mypy --strict and ruff are clean on the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_mypy_strict_is_clean() -> None:
    result = run("mypy", "--strict", "h2o_fsm")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", "h2o_fsm")
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_is_typed() -> None:
    assert (ROOT / "h2o_fsm" / "py.typed").exists()


def test_every_module_uses_postponed_annotations() -> None:
    for path in (ROOT / "h2o_fsm").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if text.strip():
            assert "from __future__ import annotations" in text, path


def _module_imports(path: Path, package: str) -> set[str]:
    """Modules of h2o_fsm imported at module level by ``path`` (not under TYPE_CHECKING, not in functions)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if isinstance(node, (ast.Try, ast.If)) else [node]:
            if isinstance(sub, ast.ImportFrom):
                if sub.level:
                    base = package.split(".")
                    if path.name != "__init__.py" or sub.level > 1:
                        base = base[: len(base) - (sub.level - 1)]
                    target = ".".join(base + ([sub.module] if sub.module else []))
                    found.add(target)
                    found.update(f"{target}.{a.name}" for a in sub.names)
                elif sub.module and sub.module.startswith("h2o_fsm"):
                    found.add(sub.module)
            elif isinstance(sub, ast.Import):
                found.update(a.name for a in sub.names if a.name.startswith("h2o_fsm"))
    return found


def test_no_import_cycle_and_no_module_over_the_size_limit() -> None:
    modules: dict[str, Path] = {}
    for path in (ROOT / "h2o_fsm").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 330, f"{path} is over the ~300-line limit"
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        graph[name] = {m for m in _module_imports(path, package) if m in modules and m != name}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1 and not nxt.startswith(node + ".") and not node.startswith(nxt + "."):
                raise AssertionError(f"import cycle: {' -> '.join([*stack, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
