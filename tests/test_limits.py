"""Connection caps on a listening port: per address, in total, and not yet authenticated."""

import json

import pytest
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.python.usage import UsageError

from fileshare.limits import (
    CONSOLE_CAPS,
    PEER_CAPS,
    TRACKER_CAPS,
    Caps,
    LimitedConnection,
    LimitingFactory,
    admitted,
)
from fileshare.peer.service import Options as PeerOptions
from fileshare.ratelog import RateLimitedLog
from fileshare.secure import PlainGuardFactory
from fileshare.tracker import directory as directory_module
from fileshare.tracker import passwords
from fileshare.tracker.directory import Directory
from fileshare.tracker.memory_store import MemoryTrackerStore
from fileshare.tracker.protocol import TrackerFactory
from fileshare.tracker.service import Options as TrackerOptions
from tests.peer.test_upload import build_service
from tests.peer.test_upload import hello as upload_hello


class App(Protocol):
    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.lost = True


class Port:
    """A LimitingFactory in front of *inner* (App by default), connected as a TCP port would."""

    def __init__(self, caps: Caps, inner: Factory | None = None, **options) -> None:
        self.app = inner or Factory.forProtocol(App)
        self.lines: list[str] = []
        warnings = RateLimitedLog(Logger(observer=lambda e: self.lines.append(formatEvent(e))), Clock())
        self.factory = LimitingFactory(self.app, caps, Clock(), "tracker port", warnings=warnings, **options)

    def connect(self, host: str = "192.0.2.7", port: int = 40000) -> tuple[LimitedConnection, StringTransport] | None:
        address = IPv4Address("TCP", host, port)
        protocol = self.factory.buildProtocol(address)
        if protocol is None:
            return None  # Twisted closes the socket at once
        transport = StringTransport(peerAddress=address)
        transport.protocol = protocol  # as a TCP connection dispatches to its protocol
        protocol.makeConnection(transport)
        return protocol, transport


def lose(connection: tuple[LimitedConnection, StringTransport]) -> None:
    connection[0].connectionLost(Failure(ConnectionDone()))


def test_the_defaults_are_the_documented_ones():
    assert TRACKER_CAPS == Caps(total=4096, per_address=64, pending=256)
    assert PEER_CAPS == Caps(total=1024, per_address=32, pending=128)
    assert CONSOLE_CAPS == Caps(total=16, per_address=16, pending=16)


def test_a_connection_over_the_per_address_cap_is_refused_before_the_application_sees_it():
    built = []

    class Counting(Factory):
        def buildProtocol(self, addr):
            built.append(addr)
            return App()

    port = Port(Caps(total=100, per_address=2, pending=100), Counting())

    assert port.connect(port=1) and port.connect(port=2)
    assert port.connect(port=3) is None
    assert len(built) == 2
    assert port.lines == [
        "refused a connection from 192.0.2.7 to the tracker port: 2 connections from that address (--max-per-address)"
    ]
    assert port.connect("192.0.2.8") is not None
    assert port.factory.refused == {"total": 0, "per_address": 1, "pending": 0}


def test_a_closed_connection_frees_its_place():
    port = Port(Caps(total=100, per_address=1, pending=100))
    first = port.connect()

    assert port.connect() is None
    lose(first)
    assert first[0].wrappedProtocol.lost
    assert port.connect() is not None
    assert (port.factory.total, port.factory.pending, port.factory.per_address) == (1, 1, {"192.0.2.7": 1})


def test_a_connection_over_the_total_cap_is_refused():
    port = Port(Caps(total=3, per_address=3, pending=3))
    for i in range(3):
        assert port.connect(f"192.0.2.{i}") is not None

    assert port.connect("192.0.2.200") is None
    assert port.lines == [
        "refused a connection from 192.0.2.200 to the tracker port: 3 connections (--max-connections)"
    ]


def test_pending_connections_fill_the_pending_cap_and_an_admitted_one_makes_room():
    port = Port(Caps(total=10, per_address=10, pending=2), pending="not yet logged in")
    first = port.connect("192.0.2.1")
    port.connect("192.0.2.2")

    assert port.connect("192.0.2.3") is None
    assert port.lines == [
        "refused a connection from 192.0.2.3 to the tracker port: 2 connections not yet logged in (--max-pending)"
    ]
    admitted(first[0].wrappedProtocol.transport)
    assert port.connect("192.0.2.3") is not None
    assert (port.factory.total, port.factory.pending) == (3, 2)


def test_an_admitted_connection_that_closes_does_not_free_a_pending_place_twice():
    port = Port(Caps(total=10, per_address=10, pending=2))
    first = port.connect()
    admitted(first[1])
    admitted(first[1])
    lose(first)

    assert (port.factory.total, port.factory.pending, port.factory.per_address) == (0, 0, {})


def test_admitted_finds_the_connection_beneath_tls_and_other_wrappers():
    port = Port(Caps(total=10, per_address=10, pending=10), WrappingFactory(WrappingFactory(Factory.forProtocol(App))))
    limited, _ = port.connect()
    app = limited.wrappedProtocol.wrappedProtocol.wrappedProtocol
    assert isinstance(app, App)

    admitted(app.transport)

    assert limited.admitted and port.factory.pending == 0


def test_admitted_on_a_connection_without_limits_does_nothing():
    admitted(StringTransport())


def test_refusals_are_logged_once_a_minute_per_cap():
    port = Port(Caps(total=100, per_address=1, pending=100))
    port.connect()
    for i in range(100):
        assert port.connect(port=i + 1) is None

    assert len(port.lines) == 1


def test_fixed_caps_say_so_in_the_log_line():
    port = Port(Caps(total=1, per_address=1, pending=1), options=False)
    port.connect()
    port.connect("192.0.2.9")

    assert port.lines == ["refused a connection from 192.0.2.9 to the tracker port: 1 connections (fixed limit)"]


def test_the_plain_text_guard_steps_aside_behind_the_limits():
    """A --no-tls upload keeps the bare socket (sendfile) with the limits in front."""
    port = Port(Caps(total=10, per_address=10, pending=10), PlainGuardFactory(Factory.forProtocol(App), "", True))
    limited, transport = port.connect()
    guard = limited.wrappedProtocol

    limited.dataReceived(b'{"op":"hello"}\n')

    app = limited.wrappedProtocol
    assert app is not guard and isinstance(app, App)
    assert transport.protocol is limited and app.transport is transport
    assert app.received == b'{"op":"hello"}\n'
    lose((limited, transport))
    assert app.lost and port.factory.total == 0


@pytest.mark.parametrize("options", [TrackerOptions, PeerOptions])
def test_the_caps_are_options_of_both_programs(options):
    parsed = options()
    parsed.parseOptions(["--max-connections", "10", "--max-per-address", "2", "--max-pending", "5"])
    assert (parsed["max-connections"], parsed["max-per-address"], parsed["max-pending"]) == (10, 2, 5)


@pytest.mark.parametrize("options", [TrackerOptions, PeerOptions])
@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_a_cap_must_be_a_whole_number_at_least_one(options, value):
    with pytest.raises(UsageError):
        options().parseOptions(["--max-per-address", value])


def test_the_tracker_timeouts_are_options():
    parsed = TrackerOptions()
    parsed.parseOptions(["--login-timeout", "5", "--idle-timeout", "60.5"])
    assert (parsed["login-timeout"], parsed["idle-timeout"]) == (5.0, 60.5)
    with pytest.raises(UsageError):
        TrackerOptions().parseOptions(["--idle-timeout", "0"])


# -- who says "authenticated"


def upload_port(tmp_path) -> tuple[Port, object]:
    service, _, _, _ = build_service(tmp_path)
    return Port(Caps(total=10, per_address=10, pending=1), service), service


def test_a_fetcher_s_valid_ticket_hello_takes_its_connection_out_of_the_pending_count(tmp_path):
    port, service = upload_port(tmp_path)
    limited, _ = port.connect()

    limited.dataReceived(upload_hello(service))

    assert limited.admitted and port.factory.pending == 0
    assert port.connect("192.0.2.8") is not None


def test_a_hello_without_a_valid_ticket_leaves_its_connection_pending(tmp_path):
    port, _ = upload_port(tmp_path)
    limited, transport = port.connect()

    limited.dataReceived(b'{"op":"hello","versions":[1]}\n')

    assert transport.disconnecting and not limited.admitted and port.factory.pending == 1
    assert port.connect("192.0.2.8") is None


def test_a_successful_tracker_login_takes_its_connection_out_of_the_pending_count(monkeypatch):
    monkeypatch.setattr(directory_module, "deferToThreadPool", lambda r, t, f, *a: defer.maybeDeferred(f, *a))
    directory = Directory(MemoryTrackerStore(), Clock(), reactor=None, threadpool=None)
    defer.ensureDeferred(directory.store.create_account("alice", passwords.hash_password("pw", n=16, r=1, p=1)))
    port = Port(Caps(total=10, per_address=10, pending=1), TrackerFactory(directory))
    limited, transport = port.connect()

    limited.dataReceived(b'{"id":1,"op":"hello","versions":[1]}\n')
    limited.dataReceived(b'{"id":2,"op":"login","name":"alice","password":"wrong","port":7710}\n')
    assert not limited.admitted
    limited.dataReceived(b'{"id":3,"op":"login","name":"alice","password":"pw","port":7710}\n')

    assert limited.admitted and port.factory.pending == 0
    replies = [json.loads(line) for line in transport.value().splitlines()]
    assert [(r["re"], r["ok"]) for r in replies] == [(1, True), (2, False), (3, True)]
