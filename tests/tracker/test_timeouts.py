"""Deadlines on the tracker port: hello, login, and the ping of an idle logged-in connection."""

import json
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import ensureDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.test import iosim

from fileshare.peer.tracker_link import TrackerClientProtocol, TrackerLink
from fileshare.ratelog import RateLimitedLog
from fileshare.secure import server_factory
from fileshare.tls import generate
from fileshare.tracker import directory as directory_module
from fileshare.tracker import passwords
from fileshare.tracker.directory import Directory
from fileshare.tracker.memory_store import MemoryTrackerStore
from fileshare.tracker.protocol import TrackerFactory
from fileshare.tracker.timeouts import CLOSE_GRACE, HELLO_TIMEOUT, IDLE_TIMEOUT, LOGIN_TIMEOUT, PING_TIMEOUT, Timeouts
from tests.peer.test_tracker_link import EmptyRepository

ADDRESS = IPv4Address("TCP", "192.0.2.7", 40000)


@pytest.fixture(autouse=True)
def no_threads_and_cheap_hashing(monkeypatch):
    monkeypatch.setattr(directory_module, "deferToThreadPool", lambda r, t, f, *a: defer.maybeDeferred(f, *a))
    original = passwords.hash_password
    monkeypatch.setattr(passwords, "hash_password", lambda password: original(password, n=16, r=1, p=1))


def build_factory(timeouts: Timeouts | None = None) -> tuple[TrackerFactory, list[str]]:
    """A tracker factory on a Clock, with an account alice/pw; its timeout log lines land in the list."""
    directory = Directory(MemoryTrackerStore(), Clock(), reactor=None, threadpool=None)
    ensureDeferred(directory.store.create_account("alice", passwords.hash_password("pw")))
    factory = TrackerFactory(directory, timeouts)
    lines: list[str] = []
    factory.warnings = RateLimitedLog(Logger(observer=lambda e: lines.append(formatEvent(e))), directory.clock)
    return factory, lines


class Client:
    """One connection to the tracker through its factory, speaking raw lines."""

    def __init__(self, factory: TrackerFactory, address: Any = ADDRESS) -> None:
        self.clock: Clock = factory.directory.clock
        self.protocol = factory.buildProtocol(address)
        self.transport = StringTransport(peerAddress=address)
        self.protocol.makeConnection(self.transport)
        self._ids = iter(range(1, 1_000_000))

    def send(self, op: str, **fields: Any) -> None:
        self.protocol.dataReceived(json.dumps({"id": next(self._ids), "op": op, **fields}).encode() + b"\n")

    def received(self) -> list[dict[str, Any]]:
        frames = [json.loads(line) for line in self.transport.value().split(b"\n")[:-1]]
        self.transport.clear()
        return frames

    def log_in(self) -> None:
        self.send("hello", versions=[1])
        self.send("login", name="alice", password="pw", port=7710)
        assert [f["ok"] for f in self.received()] == [True, True]

    @property
    def closing(self) -> bool:
        return self.transport.disconnecting

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def test_a_silent_connection_is_closed_at_the_hello_timeout_with_a_timeout_error():
    factory, lines = build_factory()
    client = Client(factory)

    client.clock.advance(HELLO_TIMEOUT - 0.1)
    assert not client.closing

    client.clock.advance(0.1)
    assert client.closing
    assert client.received() == [
        {"re": None, "ok": False, "code": "timeout", "message": "did not say hello within 10 s of connecting; closing"}
    ]
    assert lines == ["closed the connection from 192.0.2.7: it did not say hello within 10 s of connecting"]


def test_a_connection_that_does_not_drain_is_aborted_a_grace_period_after_its_deadline():
    factory, _ = build_factory()
    client = Client(factory)

    client.clock.advance(HELLO_TIMEOUT)
    client.clock.advance(CLOSE_GRACE - 0.1)
    assert client.closing and not client.transport.disconnected

    client.clock.advance(0.1)
    assert client.transport.disconnected


def test_slow_loris_before_hello_meets_the_hello_deadline_from_the_connection():
    factory, _ = build_factory()
    client = Client(factory)

    for _ in range(4):  # a byte every 2 s of a line that never ends
        client.protocol.dataReceived(b"{")
        client.clock.advance(2)
    client.protocol.dataReceived(b'"')
    assert not client.closing
    client.clock.advance(HELLO_TIMEOUT - 8)
    assert client.closing


def test_hello_in_time_but_no_login_is_closed_at_the_login_timeout():
    factory, lines = build_factory()
    client = Client(factory)
    client.send("hello", versions=[1])
    client.received()

    client.clock.advance(LOGIN_TIMEOUT - 0.1)
    assert not client.closing

    client.clock.advance(0.1)
    assert client.closing
    assert client.received()[0]["message"] == "did not log in within 30 s of connecting; closing"
    assert lines == [
        "closed the connection from 192.0.2.7: it did not log in within 30 s of connecting (--login-timeout)"
    ]


def test_slow_loris_after_hello_meets_the_login_deadline_from_the_connection():
    factory, _ = build_factory()
    client = Client(factory)
    client.send("hello", versions=[1])

    for _ in range(14):
        client.protocol.dataReceived(b"x")
        client.clock.advance(2)
    assert not client.closing
    client.clock.advance(LOGIN_TIMEOUT - 28)
    assert client.closing


def test_the_login_timeout_is_the_factory_s_option():
    factory, _ = build_factory(Timeouts(login=5))
    client = Client(factory)
    client.send("hello", versions=[1])

    client.clock.advance(5)
    assert client.closing


def test_failed_logins_do_not_stop_the_login_deadline():
    factory, _ = build_factory()
    client = Client(factory)
    client.send("hello", versions=[1])
    for _ in range(2):
        client.send("login", name="alice", password="wrong", port=7710)

    client.clock.advance(LOGIN_TIMEOUT)
    assert client.closing


def test_a_logged_in_connection_outlives_both_deadlines():
    factory, lines = build_factory()
    client = Client(factory)
    client.log_in()

    client.clock.advance(IDLE_TIMEOUT - 0.1)
    assert not client.closing and client.received() == [] and lines == []


def test_an_idle_logged_in_connection_is_pinged_and_stays_when_it_answers():
    factory, _ = build_factory()
    client = Client(factory)
    client.log_in()

    client.clock.advance(IDLE_TIMEOUT)
    (ping,) = client.received()
    assert ping["op"] == "ping"
    client.protocol.dataReceived(json.dumps({"re": ping["id"], "ok": True}).encode() + b"\n")

    client.clock.advance(PING_TIMEOUT)
    assert not client.closing and client.received() == []
    client.clock.advance(IDLE_TIMEOUT - PING_TIMEOUT)
    assert [m["op"] for m in client.received()] == ["ping"]


def test_the_idle_check_s_ping_records_the_rtt():
    factory, _ = build_factory()
    client = Client(factory)
    client.log_in()
    client.clock.advance(IDLE_TIMEOUT)
    (ping,) = client.received()
    client.clock.advance(0.5)
    client.protocol.dataReceived(json.dumps({"re": ping["id"], "ok": True}).encode() + b"\n")
    assert factory.directory.online["alice"].rtt == 0.5


def test_an_idle_connection_that_answers_no_ping_is_closed_and_its_host_goes_offline():
    factory, lines = build_factory()
    client = Client(factory)
    client.log_in()
    client.clock.advance(IDLE_TIMEOUT)
    assert [m["op"] for m in client.received()] == ["ping"]

    client.clock.advance(PING_TIMEOUT - 0.1)
    assert not client.closing
    client.clock.advance(0.1)
    assert client.closing
    assert client.received()[0]["message"] == "no answer to ping within 30 s; closing"
    assert lines == [
        "closed the connection from 192.0.2.7: idle for 120 s (--idle-timeout) and no answer to ping within 30 s"
    ]
    assert "alice" in factory.directory.online
    client.lose()  # the socket closes
    assert "alice" not in factory.directory.online


def test_anything_received_puts_the_ping_off():
    factory, _ = build_factory()
    client = Client(factory)
    client.log_in()

    client.clock.advance(IDLE_TIMEOUT - 1)
    client.send("search", pattern="*")
    client.received()
    client.clock.advance(IDLE_TIMEOUT - 1)
    assert client.received() == []
    client.clock.advance(1)
    assert [m["op"] for m in client.received()] == ["ping"]


def test_a_connection_closed_for_one_deadline_is_not_closed_again_by_the_next():
    factory, lines = build_factory(Timeouts(hello=10, login=12))
    client = Client(factory)

    client.clock.advance(10)
    client.received()
    client.clock.advance(2)
    assert client.received() == [] and len(lines) == 1


def test_a_lost_connection_leaves_no_timer_behind():
    factory, _ = build_factory()
    client = Client(factory)
    client.log_in()
    client.lose()

    assert client.clock.getDelayedCalls() == []


def test_a_flood_of_timeouts_writes_one_line_a_minute():
    factory, lines = build_factory()
    clients = [Client(factory, IPv4Address("TCP", f"192.0.2.{i}", 40000)) for i in range(1, 101)]

    clients[0].clock.advance(HELLO_TIMEOUT)
    assert all(c.closing for c in clients)
    assert lines == ["closed the connection from 192.0.2.1: it did not say hello within 10 s of connecting"]


def test_the_hello_deadline_counts_the_tls_handshake():
    """Behind TLS the deadline runs from the TCP connection, so it ends a handshake that never finishes."""
    factory, _ = build_factory()
    clock = factory.directory.clock
    tls = server_factory(factory, generate("tracker"), clock, "peer", "peer")
    socket = StringTransport(peerAddress=ADDRESS)
    tls.buildProtocol(ADDRESS).makeConnection(socket)

    clock.advance(HELLO_TIMEOUT)
    clock.advance(CLOSE_GRACE - 0.1)
    assert not socket.disconnected
    clock.advance(0.1)
    assert socket.disconnected


def test_the_peer_answers_the_tracker_s_ping_so_an_honest_idle_peer_stays_online():
    factory, lines = build_factory()
    clock = factory.directory.clock
    link = TrackerLink(None, EmptyRepository(), clock, lambda: 7710)
    server = factory.buildProtocol(ADDRESS)
    client = TrackerClientProtocol(link)
    pump = iosim.connect(
        server,
        iosim.FakeTransport(server, isServer=True, peerAddress=ADDRESS),
        client,
        iosim.FakeTransport(client, isServer=False),
    )
    pump.flush()
    ensureDeferred(link.login("alice", "pw"))
    pump.flush()
    assert "alice" in factory.directory.online

    for _ in range(10):
        clock.advance(IDLE_TIMEOUT)
        pump.flush()
    assert "alice" in factory.directory.online and not server.transport.disconnecting and lines == []
