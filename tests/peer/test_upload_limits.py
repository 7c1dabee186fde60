"""What a client that does not read, reads too slowly, or never says hello gets from the upload port.

The transport here behaves like Twisted's TCP transport: what is written
waits in its buffer until the client takes it; a streaming producer is
paused when the buffer holds more than BUFFER bytes and resumed once the
client has taken all of it.
"""

import hashlib
import json
import os

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent

from fileshare.peer.flow import SEND_CHECK_INTERVAL, SEND_PROGRESS_WINDOW, SEND_TIMEOUT
from fileshare.peer.repository import Entry, Stamp
from fileshare.peer.upload import HELLO_TIMEOUT, MAX_QUEUED_REQUESTS
from fileshare.pieces import Digest

from .test_upload import GRANTED, MiB, build_service, connect, hello, lose, messages, request

BUFFER = 65536


class SocketTransport(StringTransport):
    """A StringTransport with a write buffer the client drains with :meth:`take`, as TCP's."""

    def __init__(self, host: str) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", host, 50000))
        self.unsent = 0
        self._paused_producer = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self.unsent += len(data)
        if self.producer is not None and self.streaming and self.unsent > BUFFER and not self._paused_producer:
            self._paused_producer = True
            self.producer.pauseProducing()

    def take(self, n: int) -> int:
        """The client reads up to *n* bytes; the producer resumes once the buffer is empty."""
        n = min(n, self.unsent)
        self.unsent -= n
        if not self.unsent and self.producer is not None and (self._paused_producer or not self.streaming):
            self._paused_producer = False
            self.producer.resumeProducing()
        return n


def connect_socket(service, host="192.0.2.9"):
    service.unsent = lambda transport: transport.unsent
    protocol = service.buildProtocol(IPv4Address("TCP", host, 50000))
    transport = SocketTransport(host)
    protocol.makeConnection(transport)
    return protocol, transport


def publish_big(service, tmp_path) -> Entry:
    """A 2 GiB file (sparse) with the largest piece list there is: 2048 pieces, a 131 kB ``pieces`` reply."""
    path = tmp_path / "big.bin"
    with open(path, "wb") as f:
        f.truncate(2048 * MiB)
    pieces = os.urandom(2048 * 32)
    digest = Digest(2048 * MiB, MiB, pieces, hashlib.sha256(pieces).hexdigest())
    entry = Entry("big.bin", str(path), Stamp.of(os.stat(path)), digest)
    service.repository.by_root[entry.root] = entry
    return entry


def warnings(events):
    return [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]


# -- bounded reply memory


def test_a_client_that_pipelines_pieces_requests_and_never_reads_costs_one_reply_more_than_the_buffer(tmp_path):
    service, _, _, _ = build_service(tmp_path)
    entry = publish_big(service, tmp_path)
    protocol, transport = connect_socket(service)
    stream = hello(service, entry.root) + (json.dumps({"op": "pieces", "root": entry.root}).encode() + b"\n") * 20000
    fed = 0
    while fed < len(stream) and transport.producerState == "producing":  # a socket is read while not paused
        protocol.dataReceived(stream[fed : fed + 4096])
        fed += 4096

    reply = len(transport.value().split(b"\n")[1]) + 1
    assert reply > 131000
    assert transport.producerState == "paused"  # reading stopped
    assert len(protocol._requests) <= MAX_QUEUED_REQUESTS + 1
    assert transport.unsent <= BUFFER + reply  # the first reply filled the buffer; nothing more was written
    assert fed < 4 * 4096

    # Each time the client has read all it was sent, the next reply goes out, one at a time.
    for _ in range(3):
        transport.clear()
        transport.take(transport.unsent)
        assert transport.unsent == reply
        assert len(protocol._requests) <= MAX_QUEUED_REQUESTS + 1


def test_error_replies_wait_for_the_buffer_too(tmp_path):
    service, _, _, _ = build_service(tmp_path)
    protocol, transport = connect_socket(service)
    protocol.dataReceived(hello(service))
    transport.write(b"x" * BUFFER)  # the buffer is full already (a body the client has not read)
    protocol.dataReceived(b'{"op":"steal"}\n' * 3)
    assert transport.value().count(b"unknown-op") == 1
    transport.take(transport.unsent)
    assert transport.value().count(b"unknown-op") == 3


# -- the send timeout


def test_a_client_that_takes_no_bytes_is_disconnected_after_the_send_timeout(tmp_path):
    service, entry, _, clock = build_service(tmp_path, size=3 * MiB)
    protocol, transport = connect_socket(service)
    protocol.dataReceived(hello(service))
    request(protocol, op="get", root=entry.root, offset=0, length=3 * MiB)
    transport.take(MiB // 2)  # it read a little, then stopped
    with capturedLogs() as events:
        clock.pump([SEND_CHECK_INTERVAL] * int(SEND_TIMEOUT - 1))
        assert not transport.disconnecting
        clock.advance(SEND_CHECK_INTERVAL)
    assert transport.disconnected  # aborted: it would never drain
    assert warnings(events) == [
        "closing upload connection of 192.0.2.9:50000: it took no bytes for 30 s (--send-timeout)"
    ]


def test_the_send_timeout_is_an_option(tmp_path):
    service, entry, _, clock = build_service(tmp_path, size=3 * MiB)
    service.send_timeout = 5.0
    protocol, transport = connect_socket(service)
    protocol.dataReceived(hello(service))
    request(protocol, op="get", root=entry.root, offset=0, length=3 * MiB)
    clock.pump([SEND_CHECK_INTERVAL] * 5)
    assert transport.disconnected


def test_a_client_that_reads_slowly_is_not_timed_out_while_nobody_waits(tmp_path):
    service, entry, _, clock = build_service(tmp_path, size=3 * MiB)
    protocol, transport = connect_socket(service)
    protocol.dataReceived(hello(service))
    request(protocol, op="get", root=entry.root, offset=0, length=3 * MiB)
    for _ in range(int(SEND_TIMEOUT * 3)):
        transport.take(1)
        clock.advance(SEND_CHECK_INTERVAL)
    assert not transport.disconnecting


def test_a_transfer_held_back_by_the_upload_rate_is_not_timed_out(tmp_path):
    service, entry, _, clock = build_service(tmp_path, size=3 * MiB, upload_rate=16 * 1024)
    protocol, transport = connect_socket(service)
    protocol.dataReceived(hello(service))
    request(protocol, op="get", root=entry.root, offset=0, length=3 * MiB)
    for _ in range(int(SEND_TIMEOUT * 4)):
        transport.take(transport.unsent)  # a client that reads all it gets, while we wait for the bucket
        clock.advance(SEND_CHECK_INTERVAL)
    assert not transport.disconnecting


# -- no progress while others wait


def test_a_slot_making_no_real_progress_while_others_wait_is_taken_back(tmp_path):
    service, entry, _, clock = build_service(tmp_path, size=3 * MiB, max_uploads=1)
    protocol, transport = connect_socket(service)
    protocol.dataReceived(hello(service))
    request(protocol, op="get", root=entry.root, offset=0, length=3 * MiB)
    waiter, waiter_transport = connect(service, "192.0.2.66")
    waiter.dataReceived(hello(service))
    assert messages(waiter_transport) == [{"queued": 1}]
    with capturedLogs() as events:
        for _ in range(int(SEND_PROGRESS_WINDOW)):
            transport.take(1)  # one byte a second
            clock.advance(SEND_CHECK_INTERVAL)
        assert not transport.disconnecting
        transport.take(1)
        clock.advance(SEND_CHECK_INTERVAL)

    assert transport.disconnected
    assert messages(waiter_transport) == [{"queued": 1}, GRANTED]  # its place again at 10 s, then the slot
    assert warnings(events) == ["took back the upload slot of 192.0.2.9: sent 10 bytes in 10 s while 1 wait"]
    lose(protocol)
    assert list(service.slots.granted) == [waiter]


def test_a_slot_reading_above_the_floor_keeps_it_while_others_wait(tmp_path):
    service, entry, _, clock = build_service(tmp_path, size=3 * MiB, max_uploads=1)
    protocol, transport = connect_socket(service)
    protocol.dataReceived(hello(service))
    request(protocol, op="get", root=entry.root, offset=0, length=3 * MiB)
    waiter, waiter_transport = connect(service, "192.0.2.66")
    waiter.dataReceived(hello(service))
    for _ in range(int(SEND_PROGRESS_WINDOW * 5)):
        transport.take(4096)  # 4 kB/s: slow, but above 16 kB in 10 s
        clock.advance(SEND_CHECK_INTERVAL)
    assert not transport.disconnecting
    assert messages(waiter_transport)[-1] == {"queued": 1}


def test_an_idle_holder_whose_client_does_not_read_the_end_of_a_body_frees_its_slot_at_once(tmp_path):
    service, entry, data, clock = build_service(tmp_path, size=3000, max_uploads=1)
    protocol, transport = connect_socket(service)
    protocol.dataReceived(hello(service))
    request(protocol, op="get", root=entry.root, offset=0, length=3000)  # all in the buffer, never read
    waiter, waiter_transport = connect(service, "192.0.2.66")
    waiter.dataReceived(hello(service))
    clock.advance(2.0)  # SLOT_IDLE_GRACE
    assert transport.disconnecting
    assert messages(waiter_transport) == [{"queued": 1}, GRANTED]  # before the holder's socket is gone


# -- the hello timeout


def test_a_connection_that_trickles_bytes_without_hello_is_closed_after_the_hello_timeout(tmp_path):
    service, _, _, clock = build_service(tmp_path)
    protocol, transport = connect(service)
    with capturedLogs() as events:
        for byte in b'{"op":"hel':
            protocol.dataReceived(bytes([byte]))
            clock.advance(1.0)
            if clock.seconds() < HELLO_TIMEOUT:
                assert not transport.disconnecting
    assert clock.seconds() == HELLO_TIMEOUT
    assert transport.disconnected
    assert warnings(events) == ["closing upload connection from 192.0.2.9:50000: no hello within 10 s"]


def test_a_hello_just_before_the_hello_timeout_is_served(tmp_path):
    service, _, _, clock = build_service(tmp_path)
    protocol, transport = connect(service)
    clock.advance(HELLO_TIMEOUT - 0.1)
    protocol.dataReceived(hello(service))
    clock.advance(1.0)
    assert messages(transport) == [GRANTED]
    assert not transport.disconnecting
