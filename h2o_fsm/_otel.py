"""OpenTelemetry for operators (the ``otel`` extra: ``pip install 'h2o-fsm[otel]'``).

Fed from the one place the engine reports every transition (``_history.report``):

* a span per conversation (``h2o-fsm conversation``, from its first step to its end: ERROR when it
  failed or was not deleted) and, inside it, a span per step (``h2o-fsm <trigger>``) with
  ``h2o_fsm.phase`` (the state entered), ``h2o_fsm.source``, ``http.response.status_code``,
  ``h2o_fsm.conversation_id``, ``h2o_fsm.dialect``, ``server.address``; a failed step is ERROR with
  the error's type (its message too only with ``log_content=True``). Never a prompt, an answer or a
  cookie.
* ``h2o_fsm.step.duration`` (histogram, seconds; by phase, dialect, status, error type),
  ``h2o_fsm.conversations.live`` and ``h2o_fsm.conversations.undeleted`` (observed from each client).

Providers: those given as ``H2oClient(tracer_provider=..., meter_provider=...)``, else the global
ones — used when the application has imported OpenTelemetry (as it does to set them up). A process
that never imports it pays nothing: this module does not import it then.
"""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._log import redact
from ._version import VERSION

if TYPE_CHECKING:
    from ._driver import Driver
    from ._records import TransitionRecord
    from ._runtime import Runtime

__all__ = ["OTEL_EXTRA", "Telemetry", "telemetry_for"]

OTEL_EXTRA = "pip install 'h2o-fsm[otel]'"
_SCOPE = "h2o_fsm"
# per meter provider: the observable instruments (made once) and the runtimes they observe
_OBSERVED: dict[int, tuple[Any, weakref.WeakSet[Runtime]]] = {}


def telemetry_for(
    tracer_provider: Any, meter_provider: Any, *, base_url: str, log_content: bool
) -> Telemetry | None:
    """The client's telemetry, or ``None`` (nothing given and OpenTelemetry never imported)."""
    given = tracer_provider is not None or meter_provider is not None
    if not given and "opentelemetry" not in sys.modules:
        return None
    try:
        from opentelemetry import metrics, trace  # noqa: F401
    except ImportError:
        if given:
            raise ImportError(f"tracer_provider/meter_provider need the otel extra: {OTEL_EXTRA}") from None
        return None
    return Telemetry(tracer_provider, meter_provider, base_url=base_url, log_content=log_content)


def _observe(runtimes: weakref.WeakSet[Runtime], measure: str) -> Any:
    from opentelemetry.metrics import CallbackOptions, Observation

    def callback(options: CallbackOptions) -> Iterable[Observation]:
        totals: dict[str, int] = {}
        for rt in list(runtimes):
            value = len(rt.live) if measure == "live" else rt.undeleted
            totals[rt.dialect.name] = totals.get(rt.dialect.name, 0) + value
        return [Observation(value, {"h2o_fsm.dialect": name}) for name, value in totals.items()]

    return callback


class Telemetry:
    """Spans and metrics of one client's conversations."""

    def __init__(
        self, tracer_provider: Any, meter_provider: Any, *, base_url: str, log_content: bool
    ) -> None:
        from opentelemetry import metrics, trace

        self._trace = trace
        self.tracer = trace.get_tracer(_SCOPE, VERSION, tracer_provider=tracer_provider)
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter(_SCOPE, VERSION)
        self.durations = meter.create_histogram(
            "h2o_fsm.step.duration", unit="s", description="time of one step of a conversation"
        )
        known = _OBSERVED.get(id(provider))
        if known is None or known[0] is not provider:
            runtimes: weakref.WeakSet[Runtime] = weakref.WeakSet()
            meter.create_observable_up_down_counter(
                "h2o_fsm.conversations.live", [_observe(runtimes, "live")], unit="{conversation}",
                description="conversations started and not yet ended")
            meter.create_observable_up_down_counter(
                "h2o_fsm.conversations.undeleted", [_observe(runtimes, "undeleted")], unit="{conversation}",
                description="conversations whose DELETE failed or was given up")
            known = _OBSERVED[id(provider)] = (provider, runtimes)
        self._runtimes = known[1]
        self.address, self.log_content = redact(base_url), log_content
        self._spans: weakref.WeakKeyDictionary[Driver, Any] = weakref.WeakKeyDictionary()

    def watch(self, rt: Runtime) -> None:
        """Count ``rt``'s live and undeleted conversations in the observed metrics."""
        self._runtimes.add(rt)

    def _error(self, error: str | None) -> str | None:
        if error is None:
            return None
        return error if self.log_content else error.split(":", 1)[0]  # the type: a message may quote the server

    def on_transition(self, d: Driver, record: TransitionRecord) -> None:
        from opentelemetry.trace import Status, StatusCode

        end = time.time_ns()
        start = end - int(record.duration_ms * 1e6)
        common: dict[str, Any] = {"h2o_fsm.dialect": d.rt.dialect.name}
        conversation = self._spans.get(d)
        if conversation is None:
            conversation = self.tracer.start_span(
                "h2o-fsm conversation", start_time=start,
                attributes={**common, "server.address": self.address, "h2o_fsm.model": d.conv.model})
            self._spans[d] = conversation
        attributes = {**common, "h2o_fsm.phase": record.dest.value, "h2o_fsm.source": record.source.value,
                      "h2o_fsm.trigger": record.trigger, "h2o_fsm.skipped": record.skipped,
                      "h2o_fsm.retries": record.retries}
        if record.status is not None:
            attributes["http.response.status_code"] = record.status
        if record.conversation_id is not None:
            attributes["h2o_fsm.conversation_id"] = record.conversation_id
        error = self._error(record.error)
        step = self.tracer.start_span(f"h2o-fsm {record.trigger}", context=self._trace.set_span_in_context(
            conversation), start_time=start, attributes=attributes)
        if error is not None:
            step.set_status(Status(StatusCode.ERROR, error))
        step.end(end_time=end)
        measured: dict[str, Any] = {**common, "h2o_fsm.phase": record.dest.value}
        if record.status is not None:
            measured["http.response.status_code"] = record.status
        if error is not None:
            measured["error.type"] = error.split(":", 1)[0]
        self.durations.record(record.duration_ms / 1000.0, measured)
        if record.dest.is_terminal:
            if d.conv.cid is not None:
                conversation.set_attribute("h2o_fsm.conversation_id", d.conv.cid)
            conversation.set_attribute("h2o_fsm.outcome", record.dest.value)
            conversation.set_attribute("h2o_fsm.deleted", d.conv.cid is None or d.conv.cleanup_error is None)
            if d.conv.cleanup_error is not None:
                conversation.set_status(Status(StatusCode.ERROR, "the conversation was not deleted"))
            elif record.dest.value == "failed":
                conversation.set_status(Status(StatusCode.ERROR, self._error(_error_of(d)) or "failed"))
            conversation.end(end_time=end)
            del self._spans[d]


def _error_of(d: Driver) -> str | None:
    err = d.conv.error
    if err is None:
        return None
    from ._exceptions import H2oError

    return f"{type(err).__name__}: {err.message}" if isinstance(err, H2oError) else type(err).__name__
