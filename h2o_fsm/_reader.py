"""The stream reader: one turn's answer, read through its dialect's parser under every limit (bytes,
tokens, the token gap, the turn's deadline), as a generator of answer text that ends at the final answer
(the stream's tail is ``_tail``'s)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, NoReturn

from ._aio import Deadline
from ._events import Event, FinalAnswer, StreamError
from ._exceptions import H2oError, H2oLimitError, H2oProtocolError, H2oTimeoutError, H2oUpstreamError
from ._phase import Phase
from ._resume import resume
from ._stream import Parser, StreamSyntaxError
from ._tail import Tail
from ._translate import translate
from ._transport import raw_chunks

if TYPE_CHECKING:
    from ._driver import Driver

__all__ = ["read_answer"]

_STREAM = Phase.STREAM


async def read_answer(d: Driver) -> AsyncGenerator[str, None]:
    """Yield the answer's text as it arrives; end at the final answer. Every failure is an ``H2oError`` of
    phase ``stream``. Once the answer is complete the open body is kept in ``d.turn.tail`` (its tail is read
    later, ``_tail``); otherwise the body is closed however the generator is left."""
    turn = d.turn  # (one object for the conversation's life)
    response, parser = turn.response, turn.parser
    assert response is not None and parser is not None
    limits = d.rt.limits
    max_bytes, max_tokens = limits.max_stream_bytes, limits.max_tokens
    deadline = turn.deadline
    tokens = 0
    turn.delivered, turn.resume = 0, None

    def take(events: list[Event]) -> tuple[list[str], list[Event] | None]:
        nonlocal tokens
        texts, rest = _answer(d, events)
        tokens += len(texts)
        if tokens > max_tokens:
            raise _error(d, H2oLimitError, f"stream exceeded {max_tokens} tokens")
        turn.delivered += sum(map(len, texts))
        return texts, rest

    async def reattach(exc: Exception, ended: bool = False) -> tuple[AsyncGenerator[bytes, None], Parser]:
        """Go on reading from the run's log (a state of the table), or fail the turn as before."""
        await body.aclose()
        failure = await resume(d, exc, ended=ended)
        if failure is not None:
            _fail(d, failure)
        assert turn.response is not None and turn.parser is not None
        return raw_chunks(turn.response), turn.parser

    body = raw_chunks(response)
    handed = False
    try:
        while True:
            try:
                if deadline is None:
                    chunk = await body.__anext__()
                else:
                    async with Deadline(deadline):
                        chunk = await body.__anext__()
                events = parser.feed(chunk)
            except StopAsyncIteration:
                try:
                    events = parser.close()
                except Exception as exc:  # ended before the final answer: chat-ui may reattach
                    body, parser = await reattach(exc, ended=True)
                    continue
                texts, _ = take(events)  # the body is over: no tail to read
                for text in texts:
                    yield text
                break
            except Exception as exc:  # a dropped connection: chat-ui may reattach
                body, parser = await reattach(exc)
                continue
            if parser.bytes_seen > max_bytes:
                raise _error(d, H2oLimitError, f"stream exceeded {max_bytes} bytes")
            texts, rest = take(events)
            for text in texts:
                yield text
            if rest is not None:  # the answer is complete: what follows is the server's, read later
                # (from the reattach stream's body when the answer was reattached: ``turn.response`` is that one;
                # a cut there is the tail's, counted, never a reattach into a caller that already returned)
                assert turn.response is not None
                turn.final, turn.generating = parser.final, False
                turn.tail, turn.response = Tail(body, turn.response, parser, rest), None
                handed = True
                return
    finally:
        if not handed:
            await body.aclose()
    turn.final = parser.final
    turn.generating = False


def _answer(d: Driver, events: list[Event]) -> tuple[list[str], list[Event] | None]:
    """The answer text among ``events`` and, once the final answer is among them, the events after it
    (``None`` before); an error event before it fails the turn."""
    texts = []
    for i, ev in enumerate(events):
        if type(ev) is str:
            texts.append(ev)
        elif type(ev) is FinalAnswer:
            return texts, events[i + 1 :]
        elif type(ev) is StreamError:
            d.turn.generating = False  # the server ended the run itself: nothing to stop
            raise H2oUpstreamError(
                f"the server reported an error: {ev.message}",
                phase=_STREAM,
                status=ev.status if ev.status is not None else d.turn.send_status,
                conversation_id=d.conv.cid,
                error_type=ev.error_type,
            )
    return texts, None


def _error(d: Driver, cls: type[H2oError], message: str) -> H2oError:
    return cls(message, phase=_STREAM, status=d.turn.send_status, conversation_id=d.conv.cid)


def _fail(d: Driver, exc: Exception) -> NoReturn:
    if isinstance(exc, StreamSyntaxError):
        raise _error(d, H2oProtocolError, str(exc)) from exc
    if isinstance(exc, asyncio.TimeoutError):  # our Deadline: the turn's
        raise _error(d, H2oTimeoutError, "the conversation's deadline passed while streaming") from exc
    raise translate(exc, _STREAM, d.conv.cid, d.turn.send_status, "the stream") from exc
