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
