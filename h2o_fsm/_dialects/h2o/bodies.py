"""The 2023 dialect's request bodies (settings form, create, send), pure: no I/O."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from ..._protocol import JSONValue

__all__ = ["create_body", "send_body", "settings_form"]


def settings_form(model: str) -> dict[str, str]:
    """Form fields of ``POST /settings``."""
    return {
        "ethicsModalAccepted": "true",
        "shareConversationsWithModelAuthors": "true",
        "ethicsModalAcceptedAt": "",
        "activeModel": model,
        "searchEnabled": "true",
    }


def create_body(model: str) -> dict[str, str]:
    """JSON body of ``POST /conversation``."""
    return {"model": model}


def send_body(
    prompt: str,
    parameters: Mapping[str, JSONValue],
    *,
    message_id: str | None = None,
    response_id: str | None = None,
) -> dict[str, JSONValue]:
    """JSON body of ``POST /conversation/{id}``."""
    return {
        "inputs": prompt,
        "parameters": dict(parameters),
        "stream": True,
        "options": {
            "id": message_id or str(uuid.uuid4()),
            "response_id": response_id or str(uuid.uuid4()),
            "is_retry": False,
            "use_cache": False,
            "web_search_id": "",
        },
    }
