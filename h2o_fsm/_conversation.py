"""One conversation: the public API (:class:`Conversation`), a thin face over its
:class:`~h2o_fsm._driver.Driver` (what runs the table and owns the ending) and the stepper (``_stepper``).

A turn ends at the final answer; the stream's tail, then the next turn or the ending, follow (``_tail``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from . import _stepper
from ._aio import wait_owned
from ._attach import attach, detach
from ._driver import Driver
from ._exceptions import H2oStateError
from ._phase import Phase
from ._table import SPEC
from ._tail import settle
from ._turn import TurnScope

if TYPE_CHECKING:
    from ._events import FinalAnswer
    from ._exceptions import H2oCleanupError
    from ._protocol import Messages, Parameters
    from ._records import StepResult, TransitionRecord
    from ._runtime import Runtime
    from ._session import Session

__all__ = ["Conversation"]


class Conversation:
    """A server-side conversation driven by the shared machine.

    Use it as an async context manager; leaving the block deletes the conversation (if one was
    created), whatever happened inside::

        async with client.conversation() as conv:
            async for chunk in conv.stream("Hello"):
                print(chunk, end="")
            print(await conv.ask("And again?"))

    Inspect ``state``, ``conversation_id`` and ``history`` at any time.
    """

    def __init__(self, rt: Runtime, *, model: str, parameters: Parameters, session: Session) -> None:
        self._driver = Driver(rt, model=model, parameters=parameters, session=session, log=rt.log)

    # ------------------------------------------------------------------ what it is
    @property
    def state(self) -> Phase:
        """The machine's state (a :class:`Phase`)."""
        return self._driver.state

    @property
    def conversation_id(self) -> str | None:
        """The server's id, once ``create`` succeeded."""
        return self._driver.conv.cid

    @property
    def model(self) -> str:
        """The model that answers (``""`` until the server's default is looked up, when none was named)."""
        return self._driver.conv.model

    @property
    def history(self) -> tuple[TransitionRecord, ...]:
        """Every transition so far, in order."""
        return tuple(self._driver.conv.records)

    @property
    def final(self) -> FinalAnswer | None:
        """The last complete answer (its ``generated_text``, ``details``; in chat-ui ``reasoning``,
        ``title``, ``interrupted``), or ``None``."""
        return self._driver.turn.final

    @property
    def error(self) -> BaseException | None:
        """What ended the conversation, if anything did."""
        return self._driver.conv.error

    @property
    def cleanup_error(self) -> H2oCleanupError | None:
        """Why its DELETE failed (or never ran), if it did."""
        return self._driver.conv.cleanup_error

    def __repr__(self) -> str:
        d = self._driver
        return f"<Conversation state={d.state.value} id={d.conv.cid} model={d.conv.model!r}>"

    # ------------------------------------------------------------------ turns
    async def __aenter__(self) -> Conversation:
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            await self.aclose()
        else:
            await self._driver.abort(exc)

    def stream(self, prompt: str | Messages) -> AsyncGenerator[str, None]:
        """Send one turn and yield the answer's text chunks as they arrive.

        ``prompt`` is a string (sent as is) or a list of ``{"role", "content"}`` messages. Leaving the
        loop early ends the whole conversation (it is deleted).
        """
        scope = self.turn(prompt)  # validates now, before the first chunk is asked for
        return self._stream(scope)

    async def _stream(self, scope: TurnScope) -> AsyncGenerator[str, None]:
        async with scope as reader:
            async for text in reader:
                yield text

    async def ask(self, prompt: str | Messages) -> str:
        """Send one turn and return the whole answer."""
        async with self.turn(prompt) as reader:
            parts = [chunk async for chunk in reader]
        return "".join(parts)

    async def settle(self) -> None:
        """Wait until the server has finished the last answer's run (its stream's tail read, bounded by half
        of ``Timeouts.cleanup``): then ``final.title`` holds a title chat-ui sent after the answer."""
        await settle(self._driver)

    def turn(self, prompt: str | Messages) -> TurnScope:
        """One turn as an async context manager yielding the answer's chunks (what :meth:`stream` and
        :meth:`ask` use). The prompt is validated here, before anything is sent."""
        d = self._driver
        preprompt, text = d.validate(prompt)
        d.check_can_send()
        return TurnScope(d, preprompt, text)

    async def open(self) -> None:
        """Run the steps up to ``create`` now (otherwise the first turn does it)."""
        d = self._driver
        if d.state is not Phase.NEW:
            raise H2oStateError(f"open() needs state 'new', not {d.state.value!r}", phase=d.state)
        d.check_can_send()

        async def up_to_create() -> None:
            await d.start_turn()
            await d.advance(lambda p: SPEC[p].rests)

        await d.guarded(up_to_create)

    async def aclose(self) -> None:
        """Delete the conversation (if created) and end in ``closed``. Idempotent.

        Raises :class:`H2oCleanupError` if the DELETE failed and nothing else had failed before.
        """
        d = self._driver
        if d.state.is_terminal:
            return
        if d.transitioning and d.ending is None:  # a turn in another task is inside a step
            raise H2oStateError("cannot close while another task runs one of its steps; cancel that task",
                                phase=d.state, conversation_id=d.conv.cid)
        await wait_owned(d.end("close"), d.rt.abandoned)
        if d.conv.cleanup_error is not None and d.conv.error is None:
            raise d.conv.cleanup_error

    def attach(self, conversation_id: str) -> None:
        """Continue ``conversation_id``, a conversation on the server, instead of creating one (what
        ``client.conversation(conversation_id=...)`` does); deleted at its end unless detached."""
        attach(self._driver, conversation_id)

    async def detach(self) -> str:
        """Leave the conversation on the server on purpose (not deleted, out of the journal, logged);
        returns its id."""
        return await detach(self._driver)

    def close_soon(self) -> None:
        """Start ending the conversation in the client's task without waiting for it (unless a step of
        it runs in another task right now: ending it is that task's job). ``H2oClient.aclose()`` uses it."""
        self._driver.close_soon()

    # ------------------------------------------------------------------ the stepper
    async def step(self, prompt: str | Messages | None = None) -> StepResult:
        """Run exactly one state's step and return what it did.

        From ``new`` it posts settings; then create; then fetch (chat-ui: the parent message); then
        ``send`` (needs ``prompt`` for the turn, or the one given earlier to :meth:`queue`); then
        ``stream`` (enters the state); then reads the whole stream (``finish``); from ``ready`` without
        a prompt it ends the conversation (deletes it). A step after a terminal state raises
        :class:`H2oStateError`. A step that fails raises its error and leaves the conversation there, its
        ending pending: each next ``step()`` runs one step of it (``abort``, stop, DELETE), and leaving the
        block, ``aclose()`` or a cancellation run all of it, as for any other failure.
        """
        return await _stepper.step(self._driver, prompt)

    def queue(self, prompt: str | Messages) -> None:
        """Set the prompt the next ``send`` step will post (validated now)."""
        _stepper.queue(self._driver, prompt)

    def next_trigger(self) -> str:
        """The trigger :meth:`step` would fire now."""
        return _stepper.next_trigger(self._driver)

    def describe_next(self) -> str:
        """What the next step will send, with secrets redacted (for ``--step``)."""
        return _stepper.describe_next(self._driver)

    def diagram(self, fmt: str = "mermaid") -> str:
        """The machine's diagram with this conversation's current state highlighted."""
        from ._diagram import render

        if fmt not in ("mermaid", "dot"):
            raise ValueError(f"unknown diagram format {fmt!r}; expected 'mermaid' or 'dot'")
        return render("mermaid" if fmt == "mermaid" else "dot", highlight=self.state)
