"""How services use TLS: tracker addresses, source records, the plain-text guard."""

import pytest
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport

from fileshare.errors import BadRequest
from fileshare.secure import PlainAddress, PlainGuardFactory, address_from_wire, tcp_host_and_port
from fileshare.tls import PinnedAddress, generate

FP = str(generate("source").fingerprint)


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("tcp:host=127.0.0.1:port=7700", ("127.0.0.1", 7700)),
        ("tcp:tracker.example.org:7700", ("tracker.example.org", 7700)),
        ("tcp:host=tracker:port=7700:timeout=5", ("tracker", 7700)),
        ("tcp6:host=2001\\:db8\\:\\:1:port=7700", ("2001:db8::1", 7700)),
    ],
)
def test_the_tracker_option_gives_host_and_port(description, expected):
    assert tcp_host_and_port(description) == expected


@pytest.mark.parametrize(
    ("description", "message"),
    [
        (
            "unix:/tmp/tracker",
            "the tracker must be a tcp: endpoint such as tcp:host=127.0.0.1:port=7700, not 'unix:/tmp/tracker'",
        ),
        ("tcp:host=tracker", "the tracker endpoint 'tcp:host=tracker' needs a host and a port"),
        ("tcp:host=tracker:port=http", "the tracker endpoint 'tcp:host=tracker:port=http' needs a host and a port"),
        ("tcp:host=tracker:port=70000", "not a TCP port: 70000"),
    ],
)
def test_a_tracker_option_that_is_not_a_tcp_address_is_refused(description, message):
    with pytest.raises(BadRequest) as e:
        tcp_host_and_port(description)
    assert e.value.message == message


def test_a_tls_fetcher_rebuilds_a_pinned_address_and_a_plain_one_ignores_the_fingerprint():
    record = {"host": "192.0.2.11", "port": 7710, "fingerprint": FP}

    assert address_from_wire(record, tls=True) == PinnedAddress.from_wire(record)
    assert address_from_wire(record, tls=False) == PlainAddress("192.0.2.11", 7710)


@pytest.mark.parametrize(
    "record",
    [
        "tcp:host=192.0.2.11:port=7710",
        {"host": "192.0.2.11", "port": 7710},
        {"host": "unix:/run/x", "port": 7710, "fingerprint": FP},
        {"host": "-evil", "port": 7710, "fingerprint": FP},
        {"host": "192.0.2.11", "port": "7710", "fingerprint": FP},
        {"host": "192.0.2.11", "port": 7710, "fingerprint": "md5:00"},
    ],
)
def test_a_tls_fetcher_refuses_a_source_record_that_does_not_check(record):
    with pytest.raises(BadRequest):
        address_from_wire(record, tls=True)


@pytest.mark.parametrize("record", ["tcp:host=x:port=1", {"host": "a b", "port": 1}, {"host": "x", "port": 0}])
def test_a_plain_fetcher_refuses_a_source_record_that_does_not_check(record):
    with pytest.raises(BadRequest):
        address_from_wire(record, tls=False)


class Recorder(Protocol):
    def __init__(self):
        self.received = b""

    def dataReceived(self, data):
        self.received += data


def guarded(answer: bool):
    seen = []
    inner = Recorder()
    factory = PlainGuardFactory(Factory.forProtocol(lambda: inner), "the other end speaks TLS", answer, seen.append)
    transport = StringTransport()
    guard = factory.buildProtocol(None)
    guard.makeConnection(transport)
    return guard, transport, inner, seen


def test_a_plain_text_server_answers_tls_with_one_line_and_closes():
    guard, transport, inner, seen = guarded(answer=True)

    guard.dataReceived(b"\x16\x03\x01\x02\x00")

    assert transport.value() == b"ERR the other end speaks TLS\n" and transport.disconnecting
    assert inner.received == b"" and seen == ["the other end speaks TLS"]


def test_a_plain_text_client_hearing_a_tls_alert_reports_it_and_aborts():
    guard, transport, inner, seen = guarded(answer=False)

    guard.dataReceived(b"\x15")
    guard.dataReceived(b"\x03\x03\x00\x02\x02\x46")

    assert transport.value() == b"" and transport.disconnecting
    assert inner.received == b"" and seen == ["the other end speaks TLS"]


def test_plain_text_passes_the_guard_whole_even_one_byte_at_a_time():
    guard, transport, inner, seen = guarded(answer=True)

    for byte in b'{"op":"hello"}\n':
        guard.dataReceived(bytes([byte]))

    assert inner.received == b'{"op":"hello"}\n' and seen == [] and not transport.disconnecting


def test_after_plain_text_the_guard_steps_aside_for_the_socket():
    guard, transport, inner, seen = guarded(answer=True)
    transport.protocol = guard  # as a TCP connection dispatches to its protocol

    guard.dataReceived(b'{"op":"hello"}\n')

    assert transport.protocol is inner and inner.transport is transport
    assert inner.received == b'{"op":"hello"}\n' and guard.factory.protocols == {}
