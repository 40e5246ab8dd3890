"""JSON in one place: orjson when the ``fast`` extra is installed, the standard library otherwise."""

from __future__ import annotations

import json
from collections.abc import Callable

__all__ = ["dumps", "loads"]

loads: Callable[[bytes], object]

try:
    from orjson import dumps as _orjson_dumps
    from orjson import loads as _orjson_loads

    def dumps(obj: object) -> bytes:
        """Compact UTF-8 JSON. Raises ``TypeError`` for what JSON cannot hold."""
        return _orjson_dumps(obj)

    loads = _orjson_loads
except ImportError:  # pragma: no cover - without the fast extra

    def dumps(obj: object) -> bytes:
        """Compact UTF-8 JSON. Raises ``TypeError``/``ValueError`` for what JSON cannot hold."""
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

    loads = json.loads
