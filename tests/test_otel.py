"""OpenTelemetry (the ``otel`` extra) through the SDK's in-memory exporters, against the real emulator."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
from support import FAST_RETRIES, FAST_TIMEOUTS, assert_clean

from h2o_fsm import H2oClient, H2oError
from h2o_fsm.server import Fault, LocalServer, ServerConfig

pytest.importorskip("opentelemetry.sdk", reason="the otel test needs opentelemetry-sdk (the test extra has it)")

from opentelemetry.sdk.metrics import MeterProvider  # noqa: E402
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

SECRET = "s3cr3t-cookie-value"
PROMPT = "my very private prompt"


def providers() -> tuple[TracerProvider, InMemorySpanExporter, MeterProvider, InMemoryMetricReader]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return tracer_provider, exporter, MeterProvider(metric_readers=[reader]), reader


def metrics_of(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    found: dict[str, list[Any]] = {}
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


@pytest.mark.parametrize("dialect", ["h2o", "chat-ui"])
async def test_a_span_per_conversation_and_per_step_and_the_metrics(dialect: str) -> None:
    tp, exporter, mp, reader = providers()
    with LocalServer(ServerConfig(max_tokens=8), dialect=dialect) as server:  # type: ignore[arg-type]
        async with H2oClient(server.url, dialect=dialect, tracer_provider=tp, meter_provider=mp,  # type: ignore[arg-type]
                             cookies={"hf-chat": SECRET}, retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS) as client:
            async with client.conversation() as conv:
                answer = await conv.ask(PROMPT)
                live = metrics_of(reader)["h2o_fsm.conversations.live"]
                assert sum(p.value for p in live) == 1  # observed while it is open
        assert_clean(server)
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.name == "h2o-fsm conversation"]
    steps = [s for s in spans if s is not root]
    assert len(steps) == len(conv.history)
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in steps)
    assert {s.attributes["h2o_fsm.phase"] for s in steps} >= {"create", "send", "stream", "delete", "closed"}
    created = [s for s in steps if s.attributes["h2o_fsm.phase"] == "create"][0]
    assert created.attributes["http.response.status_code"] == 200
    assert all(s.attributes["h2o_fsm.dialect"] == dialect for s in spans)
    assert root.attributes["h2o_fsm.conversation_id"] == conv.conversation_id
    assert root.attributes["h2o_fsm.deleted"] is True and root.status.status_code is not StatusCode.ERROR
    everything = repr([(s.name, dict(s.attributes or {}), s.status.description) for s in spans])
    assert SECRET not in everything and PROMPT not in everything and answer not in everything
    found = metrics_of(reader)
    durations = found["h2o_fsm.step.duration"]
    assert sum(p.count for p in durations) == len(conv.history)
    assert sum(p.value for p in found["h2o_fsm.conversations.live"]) == 0
    assert sum(p.value for p in found["h2o_fsm.conversations.undeleted"]) == 0


async def test_a_failed_step_and_an_undeleted_conversation_are_errors(server: LocalServer) -> None:
    tp, exporter, mp, reader = providers()
    server.set_faults([Fault("send", "status", status=404), Fault("delete", "status", status=403, count=-1)])
    async with H2oClient(server.url, tracer_provider=tp, meter_provider=mp, retries=FAST_RETRIES,
                         timeouts=FAST_TIMEOUTS) as client:
        conv = client.conversation()
        with pytest.raises(H2oError):
            async with conv:
                await conv.ask(PROMPT)
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.name == "h2o-fsm conversation"]
    assert root.status.status_code is StatusCode.ERROR and root.attributes["h2o_fsm.deleted"] is False
    failed = [s for s in spans if s.status.status_code is StatusCode.ERROR and s is not root]
    assert failed and all(":" not in (s.status.description or "") for s in failed)  # the type only
    assert sum(p.value for p in metrics_of(reader)["h2o_fsm.conversations.undeleted"]) == 1
    errors = {p.attributes.get("error.type") for p in metrics_of(reader)["h2o_fsm.step.duration"]}
    assert "H2oStatusError" in errors


def test_the_global_providers_are_used_when_none_is_given(server: LocalServer) -> None:
    code = textwrap.dedent(f"""
        import asyncio
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from h2o_fsm import H2oClient

        exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)  # as an application does, once, at start
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

        async def main():
            async with H2oClient({server.url!r}) as client:
                assert await client.ask("hi")
        asyncio.run(main())
        names = {{s.name for s in exporter.get_finished_spans()}}
        assert "h2o-fsm conversation" in names and "h2o-fsm create" in names, names
        data = reader.get_metrics_data()
        measured = {{m.name for r in data.resource_metrics for sc in r.scope_metrics for m in sc.metrics}}
        assert "h2o_fsm.step.duration" in measured, measured
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr


def test_without_the_extra_in_use_nothing_of_opentelemetry_is_imported(server: LocalServer) -> None:
    code = textwrap.dedent(f"""
        import asyncio, sys
        import h2o_fsm
        from h2o_fsm import H2oClient, H2oSyncClient

        async def main():
            async with H2oClient({server.url!r}) as client:
                assert await client.ask("hi")
        asyncio.run(main())
        with H2oSyncClient({server.url!r}) as client:
            assert client.ask("hi")
        leaked = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not leaked, leaked
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr


async def test_auto_detected_dialect_is_reported(chatui_server: LocalServer) -> None:
    # dialect="auto" builds the client's runtime again once detected: the telemetry follows it
    tp, exporter, mp, reader = providers()
    async with H2oClient(chatui_server.url, dialect="auto", tracer_provider=tp, meter_provider=mp,
                         retries=FAST_RETRIES, timeouts=FAST_TIMEOUTS) as client:
        async with client.conversation() as conv:
            await conv.ask("Hi")
            live = metrics_of(reader)["h2o_fsm.conversations.live"]
            assert [(p.attributes["h2o_fsm.dialect"], p.value) for p in live if p.value] == [("chat-ui", 1)]
    spans = exporter.get_finished_spans()
    assert spans and {s.attributes["h2o_fsm.dialect"] for s in spans if s.attributes
                      and "h2o_fsm.dialect" in s.attributes} == {"chat-ui"}
    assert any(s.name == "h2o-fsm conversation" for s in spans)
    assert_clean(chatui_server)


async def test_a_step_span_says_how_often_its_request_was_retried(server: LocalServer) -> None:
    """The settings POST answered 503 twice, then 303: its span and its transition record say 2 retries."""
    from h2o_fsm import Retries

    tp, exporter, mp, _ = providers()
    server.set_faults([Fault("settings", "status", status=503, count=2)])
    async with H2oClient(server.url, tracer_provider=tp, meter_provider=mp, timeouts=FAST_TIMEOUTS,
                         retries=Retries(attempts=3, backoff=0.01, max_wait=0.02, max_time=5.0)) as client:
        conv = client.conversation()
        async with conv:
            assert await conv.ask(PROMPT)
    (into_settings,) = [r for r in conv.history if r.dest.value == "settings"]
    assert into_settings.retries == 2 and into_settings.status == 303, into_settings
    assert all(r.retries == 0 for r in conv.history if r is not into_settings)
    spans = {s.name: s for s in exporter.get_finished_spans() if s.attributes.get("h2o_fsm.phase") == "settings"}
    assert spans["h2o-fsm start"].attributes["h2o_fsm.retries"] == 2
    assert_clean(server)
