"""A turn's scopes: :class:`TurnScope`, one turn's steps around the caller's reading of the stream (what
``Conversation.turn`` returns), and :class:`OneShot`, the scope of ``H2oClient.ask``/``stream`` that
returns at the answer and leaves the ending to the client's task."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from ._aio import wait_owned
from ._reader import read_answer
from ._table import SPEC

if TYPE_CHECKING:
    from ._conversation import Conversation
    from ._driver import Driver

__all__ = ["OneShot", "TurnScope"]


class TurnScope:
    """One turn's steps around the caller's reading of the stream, with the ending guarantee."""

    __slots__ = ("_driver", "_preprompt", "_reader", "_text")

    def __init__(self, driver: Driver, preprompt: str | None, text: str) -> None:
        self._driver, self._preprompt, self._text = driver, preprompt, text
        self._reader: AsyncGenerator[str, None] | None = None

    async def __aenter__(self) -> AsyncGenerator[str, None]:
        d = self._driver
        d.check_can_send()
        d.busy = True
        try:
            await d.start_turn()
            d.set_prompt(self._preprompt, self._text)
            await d.advance(lambda p: SPEC[p].reads)
        except BaseException as exc:
            d.busy = False  # (the turn never started: the next one may)
            await d.abort(exc)
            raise
        self._reader = read_answer(d)
        return self._reader

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        d = self._driver
        try:
            reader = self._reader
            if reader is not None:
                await reader.aclose()
            if exc is None and not d.turn.generating:  # read to its final event
                await d.advance(lambda p: SPEC[p].rests)
            elif exc is None:  # the caller left the block before the end of the answer
                exc = GeneratorExit()
        except BaseException as err:
            await d.abort(err)
            raise
        else:
            if exc is not None and not d.state.is_terminal:
                if isinstance(exc, GeneratorExit):  # the consumer left the loop: the answer is cut, we end
                    ending = d.end("close")
                    await wait_owned(ending, d.rt.abandoned)
                else:
                    await d.abort(exc)
        finally:
            d.busy = False


class OneShot:
    """The scope of ``H2oClient.ask``/``stream``: leaving it after the answer starts the conversation's
    ending (the tail, then the DELETE) in the client's task and returns at once; leaving it with an error
    ends the conversation as ``async with conv`` does (the caller gets that error)."""

    __slots__ = ("_conv",)

    def __init__(self, conv: Conversation) -> None:
        self._conv = conv

    async def __aenter__(self) -> Conversation:
        self._conv._driver.one_shot = True  # the tail is read by the ending, not by a task of its own
        return self._conv

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            self._conv.close_soon()
        else:
            await self._conv.__aexit__(exc_type, exc, tb)
