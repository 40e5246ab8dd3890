"""The session's cookies: Set-Cookie parsed by the standard library, expiry honoured, invalid ones ignored."""

from __future__ import annotations

import asyncio
import http.cookiejar
import time
from email.utils import formatdate

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from h2o_fsm._session import Session

SECRET = "s3cr3t-9f8e7d"


def response(*set_cookies: bytes | str) -> httpx.Response:
    raw = [(b"content-type", b"application/json")]
    raw += [(b"set-cookie", v.encode("latin-1") if isinstance(v, str) else v) for v in set_cookies]
    return httpx.Response(200, headers=raw)


def http_date(offset: float) -> str:
    return formatdate(time.time() + offset, usegmt=True)


def test_a_fresh_session_takes_the_cookie_and_reports_no_loss() -> None:
    session = Session()
    assert session.cookie_header is None
    assert session.update(response("hf-chat=abc; Path=/; HttpOnly; SameSite=Lax")) is False
    assert session.cookie_header == "hf-chat=abc"
    assert session.cookies == {"hf-chat": "abc"}


def test_responses_without_set_cookie_change_nothing() -> None:
    session = Session({"hf-chat": "abc"})
    assert session.update(response()) is False
    assert session.cookie_header == "hf-chat=abc"


def test_a_refreshed_cookie_with_the_same_value_is_not_a_lost_session() -> None:
    # chat-ui re-sets its session cookie on every POST to push the expiry
    session = Session({"hf-chat": "abc"})
    assert session.update(response(f"hf-chat=abc; Path=/; Expires={http_date(14 * 86400)}")) is False
    assert session.cookies == {"hf-chat": "abc"}


def test_a_replaced_cookie_is_a_lost_session() -> None:
    session = Session({"hf-chat": "old"})
    assert session.update(response("hf-chat=new; Path=/")) is True
    assert session.cookie_header == "hf-chat=new"


def test_a_new_second_cookie_is_not_a_lost_session() -> None:
    session = Session({"hf-chat": "abc"})
    assert session.update(response("other=1")) is False
    assert session.cookie_header == "hf-chat=abc; other=1"


@pytest.mark.parametrize(
    "header",
    [
        "hf-chat=; Max-Age=0; Path=/",
        "hf-chat=deleted; Max-Age=-1",
        f"hf-chat=; Expires={http_date(-3600)}",
        "hf-chat=; Expires=Thu, 01 Jan 1970 00:00:00 GMT",  # epoch 0: falsy, still in the past
        "hf-chat=x; Max-Age=abc; Expires=Thu, 01 Jan 1970 00:00:00 GMT",  # invalid Max-Age is ignored
    ],
    ids=["max-age-0", "max-age-negative", "expires-past", "expires-epoch", "bad-max-age"],  # same on every xdist worker
)
def test_an_expired_cookie_is_removed_and_reported(header: str) -> None:
    session = Session({"hf-chat": "abc", "token": "t"})
    assert session.update(response(header)) is True
    assert session.cookies == {"token": "t"}
    assert session.cookie_header == "token=t"


def test_removing_the_last_cookie_leaves_no_header() -> None:
    session = Session({"hf-chat": "abc"})
    assert session.update(response("hf-chat=; Max-Age=0")) is True
    assert session.cookie_header is None


def test_expiring_a_cookie_we_do_not_have_changes_nothing() -> None:
    session = Session()
    assert session.update(response("hf-chat=; Max-Age=0")) is False
    assert session.cookie_header is None


@pytest.mark.parametrize(
    "header",
    [
        f"hf-chat=abc; Max-Age=3600; Expires={http_date(-3600)}",  # Max-Age wins over Expires
        f"hf-chat=abc; Expires={http_date(3600)}",
        "hf-chat=abc; Expires=not a date",
    ],
    ids=["max-age-wins", "expires-future", "bad-date"],
)
def test_a_cookie_that_is_not_expired_is_kept(header: str) -> None:
    session = Session()
    session.update(response(header))
    assert session.cookies == {"hf-chat": "abc"}


def test_attributes_simplecookie_would_misread_do_not_become_cookies_or_drop_one() -> None:
    session = Session()
    session.update(response("hf-chat=abc; Path=/; Priority=High; HttpOnly; Partitioned"))
    assert session.cookies == {"hf-chat": "abc"}


def test_several_headers_apply_in_order() -> None:
    session = Session({"hf-chat": "old"})
    assert session.update(response("hf-chat=new", "a=1", "a=; Max-Age=0", "b=2")) is True
    assert session.cookie_header == "hf-chat=new; b=2"


@pytest.mark.parametrize(
    "raw",
    [
        b"bad=caf\xc3\xa9; Path=/",  # non-ASCII value
        b"caf\xc3\xa9=1",  # non-ASCII name
        b"bad=a b",  # space
        b"bad=a,b",
        b'bad=a"b',
        b"bad=a\\b",
        b"bad=a\x01b",
        b'bad="abc',  # unbalanced quote
        b"b@d=1",  # not a token
        b"noequals; Path=/",
        b"=value",
        b"",
    ],
)
def test_cookies_we_could_not_send_back_are_ignored(raw: bytes) -> None:
    session = Session({"hf-chat": "abc"})
    assert session.update(response(raw, b"ok=1")) is False
    assert session.cookies == {"hf-chat": "abc", "ok": "1"}
    # and the header we send stays something httpx can encode
    header = session.cookie_header
    assert header is not None
    request = httpx.Request("GET", "http://127.0.0.1/", headers={"Cookie": header})
    assert request.headers["cookie"] == "hf-chat=abc; ok=1"


def test_a_quoted_value_is_kept_as_sent() -> None:
    session = Session()
    session.update(response('q="a=b"'))
    assert session.cookie_header == 'q="a=b"'


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=4))
def test_any_set_cookie_bytes_never_raise_and_keep_the_header_ascii(values: list[bytes]) -> None:
    session = Session({"hf-chat": "abc"})
    session.update(response(*(v.replace(b"\r", b"").replace(b"\n", b"") for v in values)))
    header = session.cookie_header
    if header is not None:
        header.encode("ascii")
        httpx.Request("GET", "http://127.0.0.1/", headers={"Cookie": header})


# --- cookies the user hands in -------------------------------------------------------------


def test_user_cookies_are_taken_and_copied() -> None:
    given_cookies = {"hf-chat": "abc", "token": "t0k"}
    session = Session(given_cookies)
    given_cookies["token"] = "changed"
    assert session.cookie_header == "hf-chat=abc; token=t0k"
    copy = session.cookies
    copy["x"] = "y"
    assert session.cookies == {"hf-chat": "abc", "token": "t0k"}


@pytest.mark.parametrize(
    ("cookies", "error", "names"),
    [
        ({"token": 123}, TypeError, "'token'"),
        ({"token": f"caf\u00e9-{SECRET}"}, ValueError, "'token'"),
        ({"token": f"{SECRET} x"}, ValueError, "'token'"),
        ({"bad name": SECRET}, ValueError, "'bad name'"),
        ({f"token={SECRET}": "v"}, ValueError, "cookie names cannot contain '='"),
        ({1: SECRET}, TypeError, "cookie names must be str"),
        ([("token", SECRET)], TypeError, "mapping"),
    ],
)
def test_bad_user_cookies_are_refused_without_showing_the_value(cookies: object, error: type, names: str) -> None:
    with pytest.raises(error) as info:
        Session(cookies)  # type: ignore[arg-type]
    assert names in str(info.value)
    assert SECRET not in str(info.value)


def test_repr_shows_names_never_values() -> None:
    session = Session({"hf-chat": SECRET, "token": SECRET})
    session.settings_model = "m"
    text = repr(session)
    assert SECRET not in text
    assert "hf-chat" in text and "token" in text and "'m'" in text


def test_public_shape() -> None:
    session = Session()
    assert isinstance(session.lock, asyncio.Lock)
    assert session.settings_model is None
    with pytest.raises(AttributeError):
        session.other = 1  # type: ignore[attr-defined]


def test_the_standard_library_helper_we_rely_on_still_behaves() -> None:
    """``http.cookiejar.parse_ns_headers`` is undocumented: pin the shape ``Session.update`` reads."""
    parsed = http.cookiejar.parse_ns_headers(  # type: ignore[attr-defined]
        ["a=b; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/", "novalue"]
    )
    assert parsed[0][:4] == [("a", "b"), ("max-age", "0"), ("expires", 0), ("path", "/")]
    assert parsed[1][0] == ("novalue", None)
