"""The package's version, read from its installed metadata (``pyproject.toml`` is the one place it is written)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["VERSION"]

try:
    VERSION = version("h2o-fsm")
except PackageNotFoundError:  # pragma: no cover - run from a source tree that was never installed
    VERSION = "0+unknown"
