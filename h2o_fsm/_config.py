"""Timeouts and limits of a client. Plain frozen dataclasses, validated on construction."""

from __future__ import annotations

import dataclasses

__all__ = ["Limits", "Timeouts"]


def _positive(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for each step, wall clock: a stalled or trickled answer fails in time.

    ``total`` is an overall deadline per turn (settings to the last token), ``token`` the longest gap
    between two chunks of the stream. ``delete`` bounds one DELETE attempt (and chat-ui's
    stop-generating), ``cleanup`` the whole ending including retries: it runs in a task the client
    owns (a cancelled caller does not wait for it) and ``H2oClient.aclose()`` waits at most that long."""

    connect: float = 10.0
    settings: float = 30.0
    create: float = 30.0
    fetch: float = 30.0
    send: float = 60.0
    token: float = 60.0
    delete: float = 10.0
    cleanup: float = 30.0
    total: float | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _positive(f"Timeouts.{field.name}", getattr(self, field.name), optional=field.name == "total")


@dataclasses.dataclass(frozen=True)
class Limits:
    """Bounds on what the server may send back: a hostile or broken server cannot make the client
    use unbounded memory or run forever; and ``max_prompt_bytes`` on what a turn sends (UTF-8, the
    system prompt included), refused with a ``ValueError`` before anything is sent."""

    max_line_bytes: int = 1 << 20
    max_stream_bytes: int = 64 << 20
    max_tokens: int = 1_000_000
    max_error_body_bytes: int = 4096
    max_json_body_bytes: int = 1 << 20
    max_prompt_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Limits.{field.name} must be an int, not {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"Limits.{field.name} must be > 0, got {value!r}")

    def check_prompt(self, *parts: str | None) -> None:
        """Refuse a prompt over ``max_prompt_bytes`` (before anything is sent)."""
        limit = self.max_prompt_bytes
        if sum(len(p) for p in parts if p) * 4 <= limit:  # at most 4 UTF-8 bytes a character: surely fits
            return
        size = sum(len(p.encode("utf-8", "surrogatepass")) for p in parts if p)
        if size > limit:
            raise ValueError(f"the prompt is {size} bytes, over Limits.max_prompt_bytes ({limit})")
