"""A hostile or careless client against a ``--web`` listener, on a real loopback socket.

What holds: the connection caps refuse at accept; a request must arrive within REQUEST_DEADLINE
(a byte-a-minute trickle is closed ``408``); twisted.web's header limits answer 400 and close;
path tricks, NUL bytes and bad hosts get exact JSON errors; sign-in is throttled, sessions are
per listener, bounded and ended server-side; cross-site writes are refused.  Time is driven with
``task.Clock`` where the site takes a clock; otherwise the tests wait for events with timeouts.
"""

from __future__ import annotations

import base64
import re
from importlib import resources
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import formatEvent, globalLogPublisher

from fileshare.tracker.store import FileRecord
from fileshare.web.access import MAX_SESSIONS, Access, Guarded
from fileshare.web.site import IDLE_TIMEOUT, MAX_BODY, REQUEST_DEADLINE, WebChannel, WebSite, package_file

from .http import request
from .test_site import listen, root, url
from .tracker_net import web_tracker

TIMEOUT = 10


class Raw(Protocol):
    """A client that writes raw bytes and records what comes back; ``closed`` fires on disconnect."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[None] = Deferred()
        self._waiting: list[tuple[bytes, Deferred[None]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        for marker, d in list(self._waiting):
            if marker in self.received:
                self._waiting.remove((marker, d))
                d.callback(None)

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(None)

    async def until(self, marker: bytes) -> None:
        d: Deferred[None] = Deferred()
        if marker in self.received:
            return
        self._waiting.append((marker, d))
        await d.addTimeout(TIMEOUT, reactor)

    async def gone(self) -> bytes:
        await self.closed.addTimeout(TIMEOUT, reactor)
        return self.received


async def connect(port: int, source: str = "127.0.0.1") -> Raw:
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=TIMEOUT, bindAddress=(source, 0))
    return await connectProtocol(endpoint, Raw())


class Clocked:
    """A WebSite on a real loopback port whose timeouts, deadline and throttle run on a task.Clock.

    ``received(n)`` waits until the server has read *n* bytes in all, so the test advances the
    clock only after the server has really seen what the client sent.
    """

    def __init__(self, password: str | None = None) -> None:
        self.clock = task.Clock()
        self.access = Access(self.clock, password, "test web")
        self.site = WebSite(Guarded(root(), self.access, package_file("login.html")), self.clock, "test web")
        self.bytes = 0
        self.channels: list[Any] = []
        self._waiting: list[tuple[int, Deferred[None]]] = []
        build = self.site.buildProtocol

        def counting(addr: Any) -> Any:
            channel = build(addr)
            self.channels.append(channel)
            inner = channel.dataReceived

            def data_received(data: bytes) -> None:
                self.bytes += len(data)
                inner(data)
                for n, d in list(self._waiting):
                    if self.bytes >= n:
                        self._waiting.remove((n, d))
                        d.callback(None)

            channel.dataReceived = data_received
            return channel

        self.site.buildProtocol = counting  # type: ignore[method-assign]
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")
        self.number = self.port.getHost().port

    async def received(self, n: int) -> None:
        if self.bytes >= n:
            return
        d: Deferred[None] = Deferred()
        self._waiting.append((n, d))
        await d.addTimeout(TIMEOUT, reactor)

    async def send(self, client: Raw, data: bytes) -> None:
        client.transport.write(data)
        await self.received(self.bytes + len(data))


@pytest_twisted.async_yield_fixture
async def clocked():
    made: list[Clocked] = []
    yield lambda password=None: made.append(Clocked(password)) or made[-1]
    for c in made:
        await c.port.stopListening()


@pytest.fixture
def stop_later():
    services: list[Any] = []
    yield services.append
    for s in services:
        s.stopService()


@pytest.fixture
def logged():
    lines: list[str] = []

    def observe(event: dict) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


GET = b"GET /api/v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def status_line(data: bytes) -> bytes:
    return data.split(b"\r\n", 1)[0]


# -- connections ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_connection_flood_is_refused_at_accept_and_honest_requests_still_served(tmp_path, stop_later, logged):
    """32 connections from one address, 64 in all; the next is closed unread, with one log line."""
    web = await listen(tmp_path)
    stop_later(web)
    mine = [await connect(web.port_number, "127.0.0.1") for _ in range(32)]
    one_more = await connect(web.port_number, "127.0.0.1")
    assert await one_more.gone() == b""
    others = [await connect(web.port_number, "127.0.0.2") for _ in range(32)]
    third = await connect(web.port_number, "127.0.0.3")
    assert await third.gone() == b""
    assert any("refused a connection from 127.0.0.1" in line for line in logged)
    held = mine + others
    for client in held[:2]:
        client.transport.write(GET)
        await client.until(b'"page":1}')
        assert status_line(client.received) == b"HTTP/1.1 200 OK"
    for client in held:
        client.transport.loseConnection()
        await client.gone()
    assert (await request(reactor, url(web, "/api/v1/echo"))).status == 200


@pytest_twisted.ensureDeferred
async def test_headers_trickled_a_byte_at_a_time_are_cut_off_at_the_request_deadline(clocked, logged):
    """The idle timeout restarts at each byte; the request deadline does not."""
    web = clocked()
    client = await connect(web.number)
    await web.send(client, b"GET /api/v1/echo HTTP/1.1\r\n")
    for _ in range(int(REQUEST_DEADLINE) - 1):
        web.clock.advance(1)
        await web.send(client, b"X")
    assert not client.closed.called
    web.clock.advance(1)
    assert status_line(await client.gone()) == b"HTTP/1.1 408 Request Timeout"
    assert [line for line in logged if "closed a connection" in line] == [
        "test web: closed a connection from 127.0.0.1 that sent a request over 30 s"
    ]


@pytest_twisted.ensureDeferred
async def test_the_log_says_it_once_a_minute_per_limit_and_address(clocked, logged):
    web = clocked()

    async def too_slow() -> list[str]:
        client = await connect(web.number)
        await web.send(client, b"GET /")
        web.clock.advance(REQUEST_DEADLINE)
        await client.gone()
        return [line for line in logged if "closed a connection" in line]

    assert len(await too_slow()) == 1  # at 30 s
    assert len(await too_slow()) == 1  # at 60 s: within the minute, held back
    lines = await too_slow()  # at 90 s: a minute after the first line
    assert len(lines) == 2 and lines[1].startswith("test web: closed a connection from 127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_a_body_promised_by_content_length_but_never_sent_is_cut_off(clocked):
    web = clocked()
    client = await connect(web.number)
    await web.send(
        client,
        b"POST /api/v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10\r\n\r\n{",
    )
    web.clock.advance(REQUEST_DEADLINE - 0.5)
    assert not client.closed.called
    web.clock.advance(0.5)
    assert status_line(await client.gone()) == b"HTTP/1.1 408 Request Timeout"


@pytest_twisted.ensureDeferred
async def test_a_kept_alive_connection_may_idle_before_its_next_request(clocked):
    """The deadline starts at a request's first byte, not at the previous reply."""
    web = clocked()
    client = await connect(web.number)
    await web.send(client, GET)
    await client.until(b'"page":1}')
    web.clock.advance(IDLE_TIMEOUT - 1)
    client.received = b""
    await web.send(client, GET)
    await client.until(b'"page":1}')
    assert status_line(client.received) == b"HTTP/1.1 200 OK"
    assert not client.closed.called


@pytest_twisted.ensureDeferred
async def test_an_idle_connection_is_closed_after_the_idle_timeout(clocked):
    web = clocked()
    client = await connect(web.number)
    await web.received(0)
    web.clock.advance(IDLE_TIMEOUT)
    assert await client.gone() == b""


BAD = b"HTTP/1.1 400 Bad Request\r\n\r\n"
TOO_LONG = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
URI_TOO_LONG = b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


@pytest.mark.parametrize(
    "what, data, reply",
    [
        ("a request line over 16 KiB", b"GET /" + b"a" * 17000 + b" HTTP/1.1\r\n\r\n", URI_TOO_LONG),
        (
            "a header over 16 KiB",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n",
            TOO_LONG,
        ),
        (
            "headers over 16 KiB in all",
            b"GET / HTTP/1.1\r\n" + (b"X-Many: " + b"a" * 100 + b"\r\n") * 200 + b"\r\n",
            BAD,
        ),
        ("501 headers", b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(501)) + b"\r\n", BAD),
        ("a NUL in the request line", b"GET /api/v1/echo\x00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", BAD),
        ("no version", b"GET /api/v1/echo\r\nHost: 127.0.0.1\r\n\r\n", BAD),
        ("a negative length", b"POST /api/v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\n", BAD),
        (
            "two lengths",
            b"POST /api/v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            BAD,
        ),
        (
            "a length and chunks",
            b"POST /api/v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            BAD,
        ),
        (
            "a bad chunk",
            b"POST /api/v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            BAD,
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_oversized_or_malformed_heads_get_an_error_and_are_closed(
    tmp_path, stop_later, logged, what, data, reply
):
    web = await listen(tmp_path)
    stop_later(web)
    client = await connect(web.port_number)
    client.transport.write(data)
    assert await client.gone() == reply, what
    why = (
        "a line over 16384 bytes"
        if reply != BAD
        else "a request it could not read (malformed, or headers over 16384 bytes)"
    )
    assert [line for line in logged if "closed a connection" in line] == [
        f"test web: closed a connection from 127.0.0.1 that sent {why}"
    ]
    assert (await request(reactor, url(web, "/api/v1/echo"))).status == 200


@pytest.mark.parametrize("expect", [False, True])
@pytest_twisted.ensureDeferred
async def test_a_huge_content_length_is_closed_before_any_body_is_read(tmp_path, stop_later, expect):
    """Even with ``Expect: 100-continue`` the client is never invited to send it."""
    web = await listen(tmp_path)
    stop_later(web)
    client = await connect(web.port_number)
    client.transport.write(
        b"POST /api/v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000000000000\r\n" + (b"Expect: 100-continue\r\n" if expect else b"") + b"\r\n"
    )
    assert await client.gone() == b""
    assert (await request(reactor, url(web, "/api/v1/echo"))).status == 200


@pytest_twisted.ensureDeferred
async def test_a_chunked_body_over_the_limit_closes_the_connection(tmp_path, stop_later, logged):
    web = await listen(tmp_path)
    stop_later(web)
    client = await connect(web.port_number)
    chunk = b"%x\r\n%s\r\n" % (4096, b" " * 4096)
    client.transport.write(
        b"POST /api/v1/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunk * (MAX_BODY // 4096 + 1)
    )
    assert await client.gone() == b""
    assert any("sending a request body over 65536 bytes" in line for line in logged)
    assert (await request(reactor, url(web, "/api/v1/echo"))).status == 200


PIPELINED = 2000


@pytest_twisted.ensureDeferred
async def test_replies_to_pipelined_requests_wait_while_the_client_does_not_read(clocked):
    """twisted.web stops reading a socket whose replies are unread, but answers every request it
    has read already; the listener holds the rest of the pipeline until the client reads."""
    web = clocked()
    client = await connect(web.number)
    client.transport.pauseProducing()  # read nothing for now
    asset = b"GET /static/style.css HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    more = (
        b"GET /api/v1/echo?q=more HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 10_000
    )  # 500 KB the server need not read yet
    client.transport.write(asset * PIPELINED + more + b"GET /api/v1/echo?q=last HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    server = await _wait_for(lambda: _paused_channel(web))
    await _wait_for(lambda: server.transport not in reactor.getReaders() or None)  # it stopped reading
    assert _buffered(server.transport) < 64 * 1024 + len(package_file("style.css")) + 1024
    assert sum(map(len, server._dataBuffer)) + len(server._buffer) < 192 * 1024
    client.transport.resumeProducing()
    await client.until(b'"q":"last"')
    assert client.received.count(b"HTTP/1.1 200 OK\r\n") == PIPELINED + 10_000 + 1


@pytest_twisted.ensureDeferred
async def test_a_client_that_never_reads_is_closed_by_the_idle_timeout(clocked):
    """Held replies do not hold the connection: it closes after the idle timeout, and is aborted
    15 s later (twisted's abortTimeout) when the client still reads nothing."""
    web = clocked()
    client = await connect(web.number)
    client.transport.pauseProducing()
    client.transport.write(b"GET /static/peer.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * PIPELINED)
    server = await _wait_for(lambda: _paused_channel(web))
    web.clock.advance(IDLE_TIMEOUT)
    assert (server.transport.disconnecting, server.transport.disconnected) == (True, False)
    web.clock.advance(server.abortTimeout)
    await _wait_for(lambda: server.transport.disconnected or None)


def _paused_channel(web: Clocked) -> Any:
    for channel in list(getattr(web, "channels", [])):
        if channel._held is not None:  # the pipeline waits for the client to read
            return channel
    return None


def _buffered(transport: Any) -> int:
    return len(transport.dataBuffer) + transport._tempDataLen


async def _wait_for(condition: Any) -> Any:
    for _ in range(TIMEOUT * 100):
        value = condition()
        if value is not None:
            return value
        await task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("condition not met")


# -- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/static/../static/style.css",
        "/static/%2e%2e/static/style.css",
        "/static/%2e%2e%2fstyle.css",
        "/api/v1/../v1/echo",
        "/api//v1/echo",
        "/api/v1//echo",
        "/api/v1/echo%00",
        "/static/style.css%00.js",
        "/api/v1/" + "a" * 8000,
        "/api/v1/%FF",
        "/static/%FF",
    ],
)
@pytest_twisted.ensureDeferred
async def test_path_tricks_are_404_json(tmp_path, stop_later, path):
    web = await listen(tmp_path)
    stop_later(web)
    client = await connect(web.port_number)
    client.transport.write(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path.encode())
    reply = await client.gone()
    assert status_line(reply) == b"HTTP/1.1 404 Not Found"
    assert b"content-type: application/json; charset=utf-8" in reply.lower()
    assert b'"error":"not-found"' in reply


@pytest_twisted.ensureDeferred
async def test_a_nul_in_the_query_is_data_not_a_terminator(tmp_path, stop_later):
    web = await listen(tmp_path)
    stop_later(web)
    reply = await request(reactor, url(web, "/api/v1/echo?q=a%00%3Cscript%3E"))
    assert (reply.status, reply.json) == (200, {"q": "a\x00<script>", "page": 1})


# -- what a browser might run ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/echo?q=%3Cscript%3Ealert(1)%3C/script%3E", "/api/v1/%3Cscript%3E"])
@pytest_twisted.ensureDeferred
async def test_api_replies_are_json_a_browser_will_not_sniff_as_html(tmp_path, stop_later, path):
    web = await listen(tmp_path)
    stop_later(web)
    reply = await request(reactor, url(web, path))
    assert reply.header("content-type") == "application/json; charset=utf-8"
    assert reply.header("x-content-type-options") == "nosniff"
    assert reply.header("content-security-policy").startswith("default-src 'self'")
    assert reply.json["q" if reply.status == 200 else "error"] in ("<script>alert(1)</script>", "not-found")


@pytest.mark.parametrize("name", ["tracker.js", "peer.js"])
def test_the_pages_put_data_into_the_dom_only_as_text(name):
    """Names of files and hosts are the peers' to choose: the scripts never parse them as HTML."""
    source = resources.files("fileshare.web").joinpath("static", name).read_text()
    assert re.findall(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", source) == []
    assert "textContent" in source


# -- Host ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host, status",
    [
        (None, 403),
        ("", 403),
        ("evil.example@127.0.0.1", 403),
        ("127.0.0.1@evil.example", 403),
        ("127.0.0.1.nip.io", 403),
        ("localhost.", 403),
        ("localhost.evil.example", 403),
        ("127.1", 403),
        ("0x7f000001", 403),
        ("[::ffff:127.0.0.1]", 403),
        ("LOCALHOST", 200),
        ("127.0.0.1", 200),
        ("127.0.0.2", 200),
        ("[::1]", 200),
        ("app.localhost", 200),
    ],
)
@pytest_twisted.ensureDeferred
async def test_only_loopback_host_names_are_answered(tmp_path, stop_later, host, status):
    web = await listen(tmp_path)
    stop_later(web)
    client = await connect(web.port_number)
    line = b"" if host is None else b"Host: %s:%d\r\n" % (host.encode(), web.port_number)
    if host == "":
        line = b"Host: \r\n"
    version = b"HTTP/1.0" if host is None else b"HTTP/1.1"
    client.transport.write(b"GET /api/v1/echo %s\r\n%sConnection: close\r\n\r\n" % (version, line))
    reply = await client.gone()
    assert int(status_line(reply).split()[1]) == status, host
    if status == 403:
        assert b'"error":"bad-host"' in reply


# -- signing in ----------------------------------------------------------------------------------

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def sign_in(base: str, password: str) -> Any:
    return await request(reactor, base + "/login", "POST", FORM, b"password=" + password.encode())


def cookie_of(reply: Any) -> dict[str, str]:
    return {"Cookie": reply.header("set-cookie").split(";")[0]}


@pytest_twisted.ensureDeferred
async def test_guessing_the_password_is_throttled_and_the_right_one_waits_too(clocked, logged):
    web = clocked("hunter2")
    base = f"http://127.0.0.1:{web.number}"
    for _ in range(4):
        assert (await sign_in(base, "guess")).status == 401
    refused = await sign_in(base, "hunter2")  # the 4th failure closed the address for 1 s
    assert (refused.status, refused.header("retry-after")) == (429, "1")
    assert b"Too many wrong passwords: try again in 1 s." in refused.body
    web.clock.advance(0.5)
    assert (await sign_in(base, "hunter2")).status == 429
    web.clock.advance(0.5)
    assert (await sign_in(base, "hunter2")).status == 303
    assert [line for line in logged if "wrong password" in line] == ["test web: wrong password from 127.0.0.1"]


@pytest_twisted.ensureDeferred
async def test_ten_wrong_passwords_lock_the_address_out_for_15_minutes(clocked):
    web = clocked("hunter2")
    base = f"http://127.0.0.1:{web.number}"
    for _ in range(10):
        web.clock.advance(60)
        assert (await sign_in(base, "guess")).status == 401
    web.clock.advance(15 * 60 - 1)
    locked = await sign_in(base, "hunter2")
    assert (locked.status, locked.header("retry-after")) == (429, "1")
    web.clock.advance(1)
    assert (await sign_in(base, "hunter2")).status == 303


@pytest_twisted.ensureDeferred
async def test_a_session_is_valid_only_on_the_listener_that_made_it(clocked):
    one, two = clocked("hunter2"), clocked("hunter2")
    signed = await sign_in(f"http://127.0.0.1:{one.number}", "hunter2")
    assert (
        await request(reactor, f"http://127.0.0.1:{one.number}/api/v1/echo", headers=cookie_of(signed))
    ).status == 200
    other = await request(reactor, f"http://127.0.0.1:{two.number}/api/v1/echo", headers=cookie_of(signed))
    assert (other.status, other.json["error"]) == (401, "unauthorized")


@pytest_twisted.ensureDeferred
async def test_logging_out_ends_the_session_on_the_server(clocked):
    web = clocked("hunter2")
    base = f"http://127.0.0.1:{web.number}"
    cookie = cookie_of(await sign_in(base, "hunter2"))
    out = await request(reactor, base + "/logout", "POST", cookie)
    assert out.status == 303
    again = await request(reactor, base + "/api/v1/echo", headers=cookie)  # the browser kept it anyway
    assert (again.status, again.json["error"]) == (401, "unauthorized")


@pytest_twisted.ensureDeferred
async def test_sessions_are_bounded_and_the_oldest_is_signed_out(clocked):
    web = clocked("hunter2")
    base = f"http://127.0.0.1:{web.number}"
    cookies = [cookie_of(await sign_in(base, "hunter2")) for _ in range(MAX_SESSIONS + 1)]
    assert len(web.access._sessions) == MAX_SESSIONS
    assert (await request(reactor, base + "/api/v1/echo", headers=cookies[0])).status == 401
    assert (await request(reactor, base + "/api/v1/echo", headers=cookies[1])).status == 200
    assert (await request(reactor, base + "/api/v1/echo", headers=cookies[-1])).status == 200


@pytest_twisted.ensureDeferred
async def test_a_session_expires_after_12_hours(clocked):
    web = clocked("hunter2")
    base = f"http://127.0.0.1:{web.number}"
    cookie = cookie_of(await sign_in(base, "hunter2"))
    web.clock.advance(12 * 3600 - 1)
    assert (await request(reactor, base + "/api/v1/echo", headers=cookie)).status == 200
    web.clock.advance(1)
    assert (await request(reactor, base + "/api/v1/echo", headers=cookie)).status == 401


@pytest_twisted.ensureDeferred
async def test_basic_auth_on_plain_http_is_refused_even_with_the_right_password(clocked):
    web = clocked("hunter2")
    basic = {"Authorization": "Basic " + base64.b64encode(b"admin:hunter2").decode()}
    reply = await request(reactor, f"http://127.0.0.1:{web.number}/api/v1/echo", headers=basic)
    assert (reply.status, reply.json["error"]) == (401, "unauthorized")


# -- cross-site ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, body, status, code",
    [
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"name=x", 415, "unsupported-media-type"),
        ({"Content-Type": "text/plain"}, b'{"name": "x"}', 415, "unsupported-media-type"),
        (
            {"Content-Type": "multipart/form-data; boundary=x"},
            b'--x\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--x--\r\n',
            415,
            "unsupported-media-type",
        ),
        ({"Content-Type": "application/json", "Origin": "null"}, b"{}", 403, "cross-site"),
        ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, b"{}", 403, "cross-site"),
        ({"Content-Type": "application/json", "Origin": "http://127.0.0.1.nip.io"}, b"{}", 403, "cross-site"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_cross_site_writes_are_refused(tmp_path, stop_later, headers, body, status, code):
    web = await listen(tmp_path)
    stop_later(web)
    reply = await request(reactor, url(web, "/api/v1/echo"), "POST", headers, body)
    assert (reply.status, reply.json["error"]) == (status, code)


# -- the real pages ------------------------------------------------------------------------------

NAME = "account name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


@pytest.mark.parametrize(
    "path, status, message",
    [
        ("/api/v1/peers/%FF/files", 400, "a host name is UTF-8"),
        ("/api/v1/peers/%00/files", 400, NAME),
        ("/api/v1/peers/%2e%2e/files", 400, NAME),
        ("/api/v1/peers/%3Cb%3E/files", 400, NAME),
        ("/api/v1/peers/alice/files/extra", 404, "no such path: /api/v1/peers/alice/files/extra"),
        ("/api/v1/files?q=%00", 200, None),
    ],
)
@pytest_twisted.ensureDeferred
async def test_tracker_paths_with_odd_bytes_get_exact_json(net, path, status, message):
    tracker = await web_tracker(net)
    reply = await request(reactor, tracker.base + path)
    assert reply.status == status
    if message is not None:
        assert reply.json["message"] == message


@pytest.mark.parametrize(
    "method, path, status, message",
    [
        ("GET", "fetches/%FF", 400, "a file name in the path must be UTF-8"),
        ("DELETE", "fetches/%FF", 400, "a file name in the path must be UTF-8"),
        ("GET", "fetches/%00", 404, "no fetch of '\\x00' in progress"),
        ("GET", "fetches/..", 404, "no fetch of '..' in progress"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_peer_paths_with_odd_bytes_get_exact_json(net, method, path, status, message):
    await net.start_tracker()
    peer = await net.start_peer("carol", web="tcp:0:interface=127.0.0.1")
    reply = await request(reactor, f"http://127.0.0.1:{peer.web.port_number}/api/v1/{path}", method)
    assert (reply.status, reply.json["message"]) == (status, message)


@pytest_twisted.ensureDeferred
async def test_a_big_index_to_a_client_that_does_not_read_queues_about_one_page(net, monkeypatch):
    """Pipelined ``files`` requests on a 10,000-file index: replies wait for the client to read."""
    channels: list[WebChannel] = []
    made = WebChannel.connectionMade
    monkeypatch.setattr(WebChannel, "connectionMade", lambda self: (channels.append(self), made(self))[1])
    tracker = await web_tracker(net)
    await tracker.directory.register("alice", "secret")
    records = [FileRecord(f"file-{i:05d}.bin", i, "a" * 64) for i in range(10_000)]
    await tracker.directory.announce("alice", records, reset=True)
    one_page = len((await request(reactor, tracker.base + "/api/v1/files?q=*.bin")).body)
    client = await connect(int(tracker.base.rsplit(":", 1)[1]))
    client.transport.pauseProducing()
    ask = b"GET /api/v1/files?q=*.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    client.transport.write(ask * 300 + b"GET /api/v1/files?q=*-09999.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    server = await _wait_for(lambda: next((c for c in channels if c._held is not None), None))  # the pipeline waits
    assert _buffered(server.transport) < 64 * 1024 + one_page + 1024
    client.transport.resumeProducing()
    await client.until(b'"file-09999.bin"')
    assert client.received.count(b"HTTP/1.1 200 OK\r\n") == 301


@pytest.mark.parametrize(
    "headers, body, status, code",
    [
        ({"Content-Type": "application/x-www-form-urlencoded"}, b"name=x", 415, "unsupported-media-type"),
        ({"Content-Type": "text/plain"}, b'{"name": "x"}', 415, "unsupported-media-type"),
        ({"Content-Type": "application/json", "Origin": "null"}, b'{"name": "x"}', 403, "cross-site"),
        ({"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}, b'{"name": "x"}', 403, "cross-site"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_a_peer_refuses_a_cross_site_fetch(net, headers, body, status, code):
    await net.start_tracker()
    peer = await net.start_peer("carol", web="tcp:0:interface=127.0.0.1")
    base = f"http://127.0.0.1:{peer.web.port_number}/api/v1/fetches"
    reply = await request(reactor, base, "POST", headers, body)
    assert (reply.status, reply.json["error"]) == (status, code)
    assert (await request(reactor, base)).json["fetches"] == []


@pytest_twisted.ensureDeferred
async def test_a_file_named_like_html_comes_back_as_json_text(net, tmp_path):
    tracker = await web_tracker(net)
    _, alice = await net.user("alice")
    name = "<img src=x onerror=alert(1)>.txt"
    (tmp_path / "a.txt").write_text("x")
    assert (await alice.command(f"publish {tmp_path / 'a.txt'} '{name}'")).ok
    reply = await request(reactor, tracker.base + "/api/v1/files")
    assert reply.header("x-content-type-options") == "nosniff"
    assert [f["name"] for f in reply.json["files"]] == [name]
