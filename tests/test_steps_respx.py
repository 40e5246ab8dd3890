"""Unit tests of single steps with respx (no server): requests as sent, and each step's error paths."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from h2o_fsm import (
    H2oClient,
    H2oProtocolError,
    H2oStatusError,
    H2oTimeoutError,
    H2oTransportError,
    Phase,
    Retries,
)

BASE = "http://h2o.test"
CID = "64b7f1c2a9e8d7c6b5a49382"
NO_RETRY = Retries(attempts=1)


def ok_stream(*texts: str, crlf: bool = False) -> bytes:
    nl = b"\r\n" if crlf else b"\n"
    out = b""
    for t in texts:
        out += b"data:" + json.dumps({"token": {"id": 1, "text": t, "special": False}, "generated_text": None}).encode()
        out += nl + nl
    final = {"token": {"id": 2, "text": "</s>", "special": True}, "generated_text": "".join(texts)}
    return out + b"data:" + json.dumps(final).encode()  # no trailing newline (defect 3)


def routes(router: respx.MockRouter, stream: bytes | httpx.Response = ok_stream("Hi", " there")) -> dict[str, respx.Route]:
    return {
        "settings": router.post("/settings").respond(303, headers={"Location": "/", "Set-Cookie": "hf-chat=abc; Path=/"}),
        "create": router.post("/conversation").respond(200, json={"conversationId": CID}),
        "send": router.post(f"/conversation/{CID}").mock(
            return_value=stream
            if isinstance(stream, httpx.Response)
            else httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})
        ),
        "delete": router.delete(f"/conversation/{CID}").respond(200),
    }


async def test_the_four_requests_as_sent() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router, ok_stream("Hi", " there", crlf=True))
        async with H2oClient(BASE, transport="httpx") as client:
            assert await client.ask([{"role": "user", "content": "Hello"}], temperature=0.5) == "Hi there"
        settings = r["settings"].calls.last.request
        assert settings.headers["content-type"] == "application/x-www-form-urlencoded"
        assert settings.headers["referer"] == BASE + "/"
        assert b"activeModel=h2oai%2Fh2ogpt-gm-oasst1-en-2048-falcon-40b-v1" in settings.content
        assert json.loads(r["create"].calls.last.request.content) == {"model": "h2oai/h2ogpt-gm-oasst1-en-2048-falcon-40b-v1"}
        send = r["send"].calls.last.request
        body = json.loads(send.content)
        assert body["inputs"] == "Hello" and body["stream"] is True
        assert body["parameters"]["temperature"] == 0.5 and "stream" not in body["parameters"]
        assert send.headers["cookie"] == "hf-chat=abc"  # session cookie carried to every step
        delete = r["delete"].calls.last.request
        assert delete.content == b""  # defect 6: no body on DELETE
        assert delete.headers["cookie"] == "hf-chat=abc"


@pytest.mark.parametrize("step", ["settings", "create"])
@pytest.mark.parametrize("status", [400, 403, 500])
async def test_status_errors_before_create_leave_nothing(step: str, status: int) -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router)
        r[step].respond(status, text="nope")
        async with H2oClient(BASE, retries=NO_RETRY, transport="httpx") as client:
            with pytest.raises(H2oStatusError) as info:
                await client.ask("x")
        assert info.value.phase is Phase(step) and info.value.status == status
        assert info.value.body == "nope"
        assert not r["delete"].called


@pytest.mark.parametrize("status", [404, 410, 422, 500])
async def test_send_status_errors_delete(status: int) -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router, httpx.Response(status, json={"error": "bad", "error_type": "validation"}))
        async with H2oClient(BASE, retries=NO_RETRY, transport="httpx") as client:
            with pytest.raises(H2oStatusError) as info:
                await client.ask("x")
        assert info.value.phase is Phase.SEND and info.value.conversation_id == CID
        assert '"error"' in info.value.body
        assert r["delete"].call_count == 1


async def test_create_without_conversation_id_is_a_protocol_error() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router)
        r["create"].respond(200, json={"id": "x"})
        async with H2oClient(BASE, transport="httpx") as client:
            with pytest.raises(H2oProtocolError, match="conversationId"):
                await client.ask("x")


class Broken(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield ok_stream("Hi").split(b"data:")[1].join([b"data:", b"\n\n"])
        raise httpx.ReadError("connection reset")


async def test_stream_read_error_is_a_transport_error_and_deletes() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router, httpx.Response(200, stream=Broken(), headers={"content-type": "text/event-stream"}))
        async with H2oClient(BASE, transport="httpx") as client:
            with pytest.raises(H2oTransportError) as info:
                await client.ask("x")
        assert info.value.phase is Phase.STREAM and isinstance(info.value.__cause__, httpx.ReadError)
        assert r["delete"].call_count == 1


async def test_connect_timeout_on_create_is_retried_then_reported() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router)
        r["create"].side_effect = [httpx.ConnectTimeout("slow"), httpx.Response(200, json={"conversationId": CID})]
        async with H2oClient(BASE, retries=Retries(backoff=0.001), transport="httpx") as client:
            assert await client.ask("x") == "Hi there"
        assert r["create"].call_count == 2


async def test_read_timeout_on_send_is_not_retried() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router)
        r["send"].side_effect = httpx.ReadTimeout("slow")
        async with H2oClient(BASE, retries=Retries(backoff=0.001), transport="httpx") as client:
            with pytest.raises(H2oTimeoutError) as info:
                await client.ask("x")
        assert info.value.phase is Phase.SEND
        assert r["send"].call_count == 1 and r["delete"].call_count == 1


async def test_delete_404_counts_as_deleted() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router)
        r["delete"].respond(404)
        async with H2oClient(BASE, transport="httpx") as client:
            conv = client.conversation()
            async with conv:
                await conv.ask("x")
        assert conv.state is Phase.CLOSED


async def test_proxy_credentials_never_in_errors_or_repr() -> None:
    client = H2oClient(BASE, proxy="http://user:s3cret@127.0.0.1:9")
    try:
        assert "s3cret" not in repr(client)
        with pytest.raises(H2oTransportError) as info:
            await client.ask("x")
        assert "s3cret" not in str(info.value)
    finally:
        await client.aclose()


async def test_retry_after_is_honoured() -> None:
    import time

    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router)
        r["settings"].side_effect = [
            httpx.Response(429, headers={"Retry-After": "0.3"}),
            httpx.Response(303, headers={"Location": "/", "Set-Cookie": "hf-chat=abc; Path=/"}),
        ]
        async with H2oClient(BASE, transport="httpx", retries=Retries(backoff=0.001, max_wait=2)) as client:
            t0 = time.monotonic()
            assert await client.ask("x") == "Hi there"
            assert time.monotonic() - t0 >= 0.3
        assert r["settings"].call_count == 2


async def test_oversized_create_answer_is_refused() -> None:
    from h2o_fsm import H2oLimitError, Limits

    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        r = routes(router)
        r["create"].respond(200, content=b"{" + b" " * 5000 + b"}")
        async with H2oClient(BASE, transport="httpx", limits=Limits(max_json_body_bytes=1024)) as client:
            with pytest.raises(H2oLimitError) as info:
                await client.ask("x")
        assert info.value.phase is Phase.CREATE


def test_backoff_doubles_honours_retry_after_and_is_capped() -> None:
    from h2o_fsm._retry import delay as _delay

    policy = Retries(attempts=5, backoff=0.1, max_wait=1.0)
    assert [_delay(policy, n, None) for n in (1, 2, 3, 4, 5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    limited = H2oStatusError("x", status=429, retry_after=0.5)
    assert _delay(policy, 1, limited) == 0.5 and _delay(policy, 4, limited) == 0.8
    assert _delay(policy, 1, H2oStatusError("x", status=429, retry_after=30)) == 1.0
