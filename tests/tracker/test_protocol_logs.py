"""The tracker's log: one line per login and one per connection when it closes (from where, who, why)."""

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from fileshare.tracker.protocol import TrackerFactory

from .test_protocol import (
    build_connection,
    build_directory,
    build_online,
    no_threads_and_cheap_hashing,  # noqa: F401  (autouse fixture)
    now,
)


def lines(events: list[dict]) -> list[str]:
    return [formatEvent(e) for e in events if e["log_namespace"].startswith("fileshare.tracker")]


def test_a_login_logs_the_host_its_address_and_where_fetchers_reach_it():
    directory = build_directory()

    with capturedLogs() as events:
        build_online(directory, "alice", port=7710)

    assert lines(events) == [
        "account alice registered from 192.0.2.7",
        "host alice logged in from 192.0.2.7; fetchers reach it at 192.0.2.7:7710",
    ]


def test_a_closed_connection_logs_its_address_age_host_and_why_then_the_logout():
    directory = build_directory()
    alice = build_online(directory, "alice", port=7710)
    directory.clock.advance(12.5)

    with capturedLogs() as events:
        alice.lose()

    assert lines(events) == [
        "connection from 192.0.2.7:40000 closed after 12.5 s (host alice): closed cleanly",
        "host alice logged out (was at 192.0.2.7:7710)",
    ]


def test_a_connection_lost_before_login_says_so():
    directory = build_directory()
    connection = build_connection(directory, IPv6Address("TCP", "2001:db8::5", 40001))

    with capturedLogs() as events:
        connection.protocol.connectionLost(Failure(ConnectionLost()))

    assert lines(events) == ["connection from [2001:db8::5]:40001 closed after 0.0 s (not logged in): connection lost"]


def test_logout_logs_the_host_and_where_it_was():
    directory = build_directory()
    alice = build_online(directory, "alice", port=7710)

    with capturedLogs() as events:
        assert alice.ask("logout") == {"ok": True}

    assert lines(events) == ["host alice logged out (was at 192.0.2.7:7710)"]


def test_a_login_refused_because_the_account_is_online_elsewhere_says_where():
    directory = build_directory()
    build_online(directory, "alice", port=7710)
    second = build_connection(directory, IPv4Address("TCP", "198.51.100.3", 40002))

    with capturedLogs() as events:
        assert second.ask("login", name="alice", password="alice-secret", port=7720)["code"] == "online-elsewhere"

    assert lines(events) == ["refused a second login for alice from 198.51.100.3: online from 192.0.2.7:7710"]


def test_a_login_refused_because_the_account_is_banned_says_so():
    directory = build_directory()
    connection = build_connection(directory)
    assert connection.ask("register", name="alice", password="alice-secret") == {"ok": True}
    now(directory.ban("alice", "spam"))

    with capturedLogs() as events:
        assert connection.ask("login", name="alice", password="alice-secret", port=7710)["code"] == "banned"

    assert lines(events) == ["refused a login for banned alice from 192.0.2.7"]


def test_connections_that_never_log_in_write_one_closing_line_per_address_a_minute():
    directory = build_directory()
    factory = TrackerFactory(directory)
    address = IPv4Address("TCP", "192.0.2.66", 40000)

    with capturedLogs() as events:
        for _ in range(100):
            protocol = factory.buildProtocol(address)
            protocol.makeConnection(StringTransport(peerAddress=address))
            protocol.connectionLost(Failure(ConnectionLost()))
        directory.clock.advance(60)
        protocol = factory.buildProtocol(address)
        protocol.makeConnection(StringTransport(peerAddress=address))
        protocol.connectionLost(Failure(ConnectionLost()))

    assert lines(events) == [
        "connection from 192.0.2.66:40000 closed after 0.0 s (not logged in): connection lost",
        "connection from 192.0.2.66:40000 closed after 0.0 s (not logged in): connection lost"
        " (99 more like this in the last 60 s)",
    ]
