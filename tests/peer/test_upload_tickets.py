"""Members-only downloads: UploadProtocol refuses a fetcher without a valid ticket, before the upload queue."""

import json
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs

from fileshare.peer.upload import UploadProtocol, UploadService
from fileshare.tickets import LIFETIME, NO_BINDING, TicketKey, issue

from .test_upload import GRANTED, KEY, build_service, connect, hello, messages, request, ticket_for

OTHER_BINDING = "sha256:" + "ee" * 32


class RecordingSlots:
    """Wraps the service's UploadSlots, noting every connection that asked for a slot."""

    def __init__(self, slots: Any) -> None:
        self.slots = slots
        self.asked: list[UploadProtocol] = []

    def request(self, protocol: UploadProtocol) -> None:
        self.asked.append(protocol)
        self.slots.request(protocol)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.slots, name)


def served(tmp_path) -> tuple[UploadService, Any, RecordingSlots]:
    service, entry, _, _ = build_service(tmp_path)
    slots = RecordingSlots(service.slots)
    service.slots = slots
    return service, entry, slots


def refused_hello(service: UploadService, line: bytes) -> tuple[dict[str, Any], StringTransport, list[dict]]:
    protocol, transport = connect(service, host="203.0.113.66")
    with capturedLogs() as events:
        protocol.dataReceived(line)
    (reply,) = messages(transport)
    return reply, transport, [e for e in events if e.get("log_level") == LogLevel.warn]


def hello_with(ticket: Any) -> bytes:
    return json.dumps({"op": "hello", "versions": [1], "ticket": ticket}).encode() + b"\n"


def assert_refused(tmp_path, make_line, code: str, advance: float = 0) -> None:
    service, entry, slots = served(tmp_path)
    line = make_line(service, entry)
    service.clock.advance(advance)
    reply, transport, warnings = refused_hello(service, line)
    assert (reply["ok"], reply["code"]) == (False, code)
    assert transport.disconnecting
    assert slots.asked == [] and not slots.active and not slots.waiting
    (warning,) = warnings
    assert (warning["address"], warning["code"]) == ("203.0.113.66:50000", code)
    assert warning["log_format"].startswith("refused fetcher {address}")


def test_a_hello_without_a_ticket_is_refused_with_ticket_missing(tmp_path):
    assert_refused(tmp_path, lambda s, e: b'{"op":"hello","versions":[1]}\n', "ticket-missing")


def test_an_expired_ticket_is_refused_with_ticket_expired(tmp_path):
    assert_refused(tmp_path, lambda s, e: hello(s, e.root), "ticket-expired", advance=LIFETIME)


def test_a_forged_ticket_is_refused_with_ticket_invalid(tmp_path):
    forged = lambda s, e: hello_with(issue(b"not the key" * 3, "fetcher", NO_BINDING, e.root, KEY.host, 0))  # noqa: E731
    assert_refused(tmp_path, forged, "ticket-invalid")


def test_garbage_for_a_ticket_is_refused_with_ticket_invalid(tmp_path):
    assert_refused(tmp_path, lambda s, e: hello_with({"root": e.root}), "ticket-invalid")


def test_another_hosts_ticket_bound_to_its_key_is_refused_with_ticket_misbound(tmp_path):
    stolen = lambda s, e: hello_with(issue(KEY.key, "alice", OTHER_BINDING, e.root, KEY.host, 0))  # noqa: E731
    assert_refused(tmp_path, stolen, "ticket-misbound")


def test_a_ticket_for_another_source_is_refused_with_ticket_misbound(tmp_path):
    other = lambda s, e: hello_with(issue(KEY.key, "fetcher", NO_BINDING, e.root, "carol", 0))  # noqa: E731
    assert_refused(tmp_path, other, "ticket-misbound")


def test_a_source_not_logged_in_refuses_every_ticket(tmp_path):
    service, entry, slots = served(tmp_path)
    service.ticket_key = lambda: None
    reply, transport, warnings = refused_hello(service, hello(service, entry.root))
    assert reply["code"] == "ticket-unverifiable"
    assert transport.disconnecting and slots.asked == []


def test_a_ticket_bound_to_the_connections_tls_key_is_accepted_only_there(tmp_path):
    service, entry, slots = served(tmp_path)
    line = hello_with(issue(KEY.key, "fetcher", OTHER_BINDING, entry.root, KEY.host, 0))

    class TLSTransport(StringTransport):
        def getPeerCertificate(self) -> Any:
            return "certificate"

    import fileshare.tickets as tickets_module

    protocol = service.buildProtocol(IPv4Address("TCP", "192.0.2.9", 50000))
    transport = TLSTransport()
    protocol.makeConnection(transport)
    original = tickets_module.peer_fingerprint
    tickets_module.peer_fingerprint = lambda t: OTHER_BINDING if t is transport else original(t)
    try:
        protocol.dataReceived(line)
    finally:
        tickets_module.peer_fingerprint = original
    assert messages(transport) == [GRANTED]
    assert slots.asked == [protocol]


def test_a_ticket_for_another_root_does_not_open_this_one(tmp_path):
    service, entry, slots = served(tmp_path)
    protocol, transport = connect(service)
    protocol.dataReceived(hello(service, "1" * 64))
    assert messages(transport) == [GRANTED]
    with capturedLogs() as events:
        request(protocol, op="pieces", root=entry.root)
    (reply,) = messages(transport)
    assert (reply["ok"], reply["code"]) == (False, "ticket-missing")
    assert transport.disconnecting
    assert [e["code"] for e in events if e.get("log_level") == LogLevel.warn] == ["ticket-missing"]


def test_a_ticket_request_opens_the_next_file_on_the_same_connection(tmp_path):
    service, entry, _ = served(tmp_path)
    protocol, transport = connect(service)
    protocol.dataReceived(hello(service, "1" * 64))
    assert messages(transport) == [GRANTED]
    request(protocol, op="ticket", ticket=ticket_for(service, entry.root))
    request(protocol, op="pieces", root=entry.root)
    ok, pieces = messages(transport)
    assert ok == {"ok": True}
    assert pieces["ok"] is True and pieces["size"] == entry.size
    assert not transport.disconnecting


def test_an_expired_ticket_request_closes_the_connection_and_what_follows_is_not_answered(tmp_path):
    service, entry, _ = served(tmp_path)
    protocol, transport = connect(service)
    protocol.dataReceived(hello(service, "1" * 64))
    assert messages(transport) == [GRANTED]
    late = ticket_for(service, entry.root)
    service.clock.advance(LIFETIME)
    request(protocol, op="ticket", ticket=late)
    request(protocol, op="pieces", root=entry.root)
    (reply,) = messages(transport)
    assert reply["code"] == "ticket-expired"
    assert transport.disconnecting


def test_an_open_transfer_goes_on_after_its_ticket_expires(tmp_path):
    service, entry, _ = served(tmp_path)
    protocol, transport = connect(service)
    protocol.dataReceived(hello(service, entry.root))
    assert messages(transport) == [GRANTED]
    service.clock.advance(LIFETIME + 5)
    request(protocol, op="get", root=entry.root, offset=0, length=10)
    service.clock.advance(0)
    header, _, body = transport.value().partition(b"\n")
    assert json.loads(header) == {"ok": True, "length": 10} and len(body) == 10


@pytest.mark.parametrize("when", ["hello", "ticket"])
def test_a_ticket_is_checked_with_the_current_login_key(tmp_path, when):
    service, entry, slots = served(tmp_path)
    service.ticket_key = lambda: TicketKey(KEY.host, b"a later login" * 3)
    if when == "hello":
        reply, transport, _ = refused_hello(service, hello(service, entry.root))
        assert reply["code"] == "ticket-invalid" and slots.asked == []
    else:
        protocol, transport = connect(service)
        protocol.dataReceived(hello_with(issue(b"a later login" * 3, "fetcher", NO_BINDING, "1" * 64, KEY.host, 0)))
        assert messages(transport) == [GRANTED]
        request(protocol, op="ticket", ticket=ticket_for(service, entry.root))
        assert messages(transport)[0]["code"] == "ticket-invalid"
    assert transport.disconnecting
