"""The chat-ui emulator's data and pure helpers: a conversation with its message tree and runs, its
superjson views, the multipart reader, the send and stop-point schemas, and SvelteKit's error pages
(HTML unless the request's ``Accept`` negotiates to JSON, as on a real server)."""

from __future__ import annotations

import dataclasses
import html
import re
import time
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from ._chatui_stream import Generation, StoredMessage
from ._faults import Fault
from ._state import StoredConversation, apply_request_fault

__all__ = [
    "StoredChatUiConversation",
    "error_page",
    "fault_answer",
    "form_fields",
    "iso",
    "send_problem",
    "stop_point",
    "superjson",
    "wants_json",
]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_RUNS_KEPT = 8  # runs a conversation remembers for reattaching (the newest)


@dataclasses.dataclass
class StoredChatUiConversation(StoredConversation):
    preprompt: str = ""
    title: str = "New Chat"
    messages: list[StoredMessage] = dataclasses.field(default_factory=list)
    created_at: float = dataclasses.field(default_factory=time.time)
    updated_at: float = dataclasses.field(default_factory=time.time)
    runs: dict[str, Generation] = dataclasses.field(default_factory=dict)  # by generation id, newest last

    @property
    def root(self) -> str:
        return self.messages[0].id

    @property
    def generation(self) -> Generation | None:
        """The newest run."""
        return next(reversed(self.runs.values()), None)

    def add_run(self, run: Generation) -> None:
        self.runs[run.generation_id] = run
        while len(self.runs) > _RUNS_KEPT:
            del self.runs[next(iter(self.runs))]

    def close(self) -> None:
        for run in self.runs.values():
            run.stop()

    def find(self, message_id: object) -> StoredMessage | None:
        return next((m for m in self.messages if m.id == message_id), None)


def iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at * 1000) % 1000:03d}Z"


def superjson(cid: str, conv: StoredChatUiConversation) -> dict[str, object]:
    """The conversation as ``GET /api/v2/conversations/{id}`` serves it (superjson: ``json`` + ``meta``)."""
    return {
        "json": {
            "id": cid,
            "title": conv.title,
            "model": conv.model,
            "preprompt": conv.preprompt,
            "rootMessageId": conv.root,
            "messages": [m.as_json() for m in conv.messages],
            "createdAt": iso(conv.created_at),
            "updatedAt": iso(conv.updated_at),
        },
        "meta": {"values": {"createdAt": ["Date"], "updatedAt": ["Date"]}},
    }


def form_fields(content_type: str, body: bytes) -> dict[str, str] | None:
    """The text fields of a ``multipart/form-data`` body, or ``None`` if it is not one."""
    if content_type.split(";", maxsplit=1)[0].strip().lower() != "multipart/form-data":
        return None
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    parsed = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not isinstance(parsed, EmailMessage) or not parsed.is_multipart():
        return None
    fields: dict[str, str] = {}
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            fields[name] = payload.decode("utf-8", "replace")
    return fields


def send_problem(data: object) -> str | None:
    if not isinstance(data, dict):
        return "the data part must be a JSON object"
    inputs = data.get("inputs")
    if not isinstance(inputs, str) or not inputs.strip():
        return "inputs must be a non-empty string"
    if data.get("is_retry", False) is not False:
        return "is_retry is not emulated"
    for key in ("id", "generationId"):
        value = data.get(key)
        if value is not None and not (isinstance(value, str) and _UUID.match(value)):
            return f"{key} must be a UUID"
    return None


def stop_point(body: object) -> tuple[str, int] | None:
    """``(generationId, seenContentLength)`` of a stop-generating body, or ``None``: chat-ui parses it
    leniently and discards anything that does not fit the schema (the stop still happens)."""
    if not isinstance(body, dict):
        return None
    gid, seen = body.get("generationId"), body.get("seenContentLength")
    if not isinstance(gid, str) or not _UUID.match(gid):
        return None
    if isinstance(seen, bool) or not isinstance(seen, int) or seen < 0:
        return None
    return gid, seen


def _quality(accept: str, media: str) -> float:
    """The q-value ``accept`` gives ``media`` (the most specific matching range decides)."""
    kind = media.split("/", maxsplit=1)[0]
    best, specificity = 0.0, -1
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        rng, q = fields[0].lower(), 1.0
        for f in fields[1:]:
            if f.startswith("q="):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        rank = 2 if rng == media else 1 if rng == f"{kind}/*" else 0 if rng == "*/*" else -1
        if rank > specificity:
            best, specificity = q, rank
    return best if specificity >= 0 else 0.0


def wants_json(request: Request) -> bool:
    """SvelteKit's negotiation for error pages: JSON when ``Accept`` prefers it (``*/*`` counts; no
    ``Accept`` header counts as ``text/html``)."""
    accept = request.headers.get("accept") or "text/html"
    return _quality(accept, "application/json") >= max(_quality(accept, "text/html"), 1e-9)


def error_page(request: Request, status: int, message: str, **extra: object) -> Response:
    """An error as the real server answers it: ``{"message": ...}`` or SvelteKit's HTML error page."""
    if wants_json(request):
        return JSONResponse({"message": message, **extra}, status_code=status)
    text = html.escape(message)
    page = (
        '<!doctype html>\n<html lang="en">\n<head><meta charset="utf-8" /><title>' + text + "</title></head>\n"
        '<body><div class="error"><span class="status">' + str(status) + '</span><div class="message"><h1>'
        + text + "</h1></div></div></body>\n</html>\n"
    )  # fmt: skip
    return HTMLResponse(page, status_code=status)


async def fault_answer(request: Request, fault: Fault | None) -> Response | None:
    """The answer an injected request fault gives (``None``: carry on, after a stall if any)."""
    return await apply_request_fault(fault, as_json=True, render=lambda status, text: error_page(request, status, text))
