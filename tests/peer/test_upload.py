"""UploadProtocol / UploadService: the serving side of the transfer protocol, on StringTransport and a Clock."""

import functools
import json
import os
import random
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from fileshare.errors import NotFound
from fileshare.peer import published as published_module
from fileshare.peer import senders as senders_module
from fileshare.peer import upload as upload_module
from fileshare.peer import upload_replies as upload_replies_module
from fileshare.peer.repository import Entry, Stamp
from fileshare.peer.source import SourceProtocol
from fileshare.peer.upload import CHUNK, IDLE_TIMEOUT, SLOT_IDLE_GRACE, UploadProtocol, UploadService
from fileshare.pieces import hash_file
from fileshare.tickets import NO_BINDING, TicketKey, issue

MiB = 1 << 20
#: The key of the source's tracker login in these tests.
KEY = TicketKey("source", b"s" * 32)
ANY_ROOT = "0" * 64


def hello(service: UploadService, root: str | None = None, **fields: Any) -> bytes:
    """A ``hello`` with a fresh ticket for *root* (by default the published file), as the tracker would
    issue it to a plain-text fetcher."""
    if root is None:
        published = list(service.repository.by_root)
        root = published[0] if len(published) == 1 else ANY_ROOT
    ticket = ticket_for(service, root)
    return json.dumps({"op": "hello", "versions": [1], "ticket": ticket, **fields}).encode() + b"\n"


def ticket_for(service: UploadService, root: str) -> str:
    return issue(KEY.key, "fetcher", NO_BINDING, root, KEY.host, service.clock.seconds())


GRANTED = {"ok": True, "version": 1}


class FakeRepository:
    """Just what UploadProtocol uses of a Repository: servable(root)."""

    def __init__(self) -> None:
        self.by_root: dict[str, Entry] = {}

    def publish(self, path: Path) -> Entry:
        entry = Entry(path.name, str(path), Stamp.of(os.stat(path)), hash_file(str(path)))
        self.by_root[entry.root] = entry
        return entry

    def servable(self, root: str) -> Entry:
        entry = self.by_root.get(root)
        if entry is None:
            raise NotFound("no such file is published here")
        return entry


class FakeReactor(Clock):
    """A Clock that takes results back from the (fake) threads at once."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class FakeThreads:
    """The upload thread pool, run on the test's thread: deterministic.

    Jobs run as soon as they are submitted, unless ``held``; then they wait
    in ``jobs`` until the test runs them with :meth:`run`.  ``ran`` names
    every job run, in order (``check_published``, ``open_range``, ``pread``).
    """

    def __init__(self) -> None:
        self.held = False
        self.jobs: deque[tuple[Callable[..., Any], Callable[..., Any], tuple[Any, ...]]] = deque()
        self.ran: list[str] = []
        self._running = False

    def callInThreadWithCallback(self, on_result: Callable[..., Any], f: Callable[..., Any], *args: Any) -> None:
        self.jobs.append((on_result, f, args))
        if not self.held:
            self.run()

    @property
    def waiting(self) -> list[str]:
        return [f.__name__ for _, f, _ in self.jobs]

    def run(self, count: int | None = None) -> None:
        """Run *count* waiting jobs (all, and any they lead to, by default), oldest first."""
        if self._running:
            return
        self._running = True
        try:
            while self.jobs and (count is None or count > 0):
                on_result, f, args = self.jobs.popleft()
                self.ran.append(f.__name__)
                if count is not None:
                    count -= 1
                try:
                    result = f(*args)
                except BaseException:
                    on_result(False, Failure())
                else:
                    on_result(True, result)
        finally:
            self._running = False


def content(size: int) -> bytes:
    """Random but repeatable bytes, so a misplaced range shows."""
    return random.Random(size).randbytes(size)


def build_service(
    tmp_path: Path, size: int = 3000, max_uploads: int | None = None, upload_rate: int | None = None
) -> tuple[UploadService, Entry, bytes, FakeReactor]:
    data = content(size)
    path = tmp_path / "shared.bin"
    path.write_bytes(data)
    repository = FakeRepository()
    entry = repository.publish(path)
    reactor = FakeReactor()
    service = UploadService(repository, reactor, max_uploads, upload_rate, FakeThreads())
    service.cached_reads = False  # every read goes to the threads; see test_cached_chunk_*
    service.ticket_key = lambda: KEY
    return service, entry, data, reactor


def connect(service: UploadService, host: str = "192.0.2.9") -> tuple[UploadProtocol, StringTransport]:
    address = IPv4Address("TCP", host, 50000)
    protocol = service.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


def connect_served(service: UploadService) -> tuple[UploadProtocol, StringTransport]:
    """A connection that said hello with a ticket for the published file, and got its slot."""
    protocol, transport = connect(service)
    protocol.dataReceived(hello(service))
    assert messages(transport) == [GRANTED]
    return protocol, transport


def messages(transport: StringTransport) -> list[dict[str, Any]]:
    """The control lines written since the last look."""
    lines = transport.value().split(b"\n")
    transport.clear()
    assert lines[-1] == b""
    return [json.loads(line) for line in lines[:-1]]


def header_and_body(transport: StringTransport) -> tuple[dict[str, Any], bytes]:
    header, _, body = transport.value().partition(b"\n")
    transport.clear()
    return json.loads(header), body


def request(protocol: UploadProtocol, **message: Any) -> None:
    protocol.dataReceived(json.dumps(message).encode() + b"\n")


def lose(protocol: UploadProtocol) -> None:
    protocol.connectionLost(Failure(ConnectionDone()))


# -- hello


def test_request_before_hello_is_refused_and_the_connection_closed(tmp_path):
    service, entry, _, _ = build_service(tmp_path)
    protocol, transport = connect(service)
    request(protocol, op="pieces", root=entry.root)
    assert transport.value() == b'{"ok":false,"code":"hello-required","message":"send \'hello\' first"}\n'
    assert transport.disconnecting
    assert service.slots.active == set()


def test_garbage_before_hello_is_refused_and_the_connection_closed(tmp_path):
    service, _, _, _ = build_service(tmp_path)
    protocol, transport = connect(service)
    protocol.dataReceived(b"hello there\n")
    assert messages(transport) == [{"ok": False, "code": "bad-request", "message": "message is not JSON"}]
    assert transport.disconnecting


def test_hello_with_no_common_version_is_refused_and_the_connection_closed(tmp_path):
    service, _, _, _ = build_service(tmp_path)
    protocol, transport = connect(service)
    protocol.dataReceived(b'{"op":"hello","versions":[2]}\n')
    assert messages(transport) == [
        {"ok": False, "code": "version", "message": "no common protocol version (this peer speaks 1)"}
    ]
    assert transport.disconnecting


def test_hello_is_answered_ok_with_the_version(tmp_path):
    service, _, _, _ = build_service(tmp_path)
    protocol, transport = connect(service)
    protocol.dataReceived(hello(service))
    assert transport.value() == b'{"ok":true,"version":1}\n'
    assert service.slots.active == {protocol}


def test_unknown_op_after_hello_is_refused_and_the_connection_stays(tmp_path):
    service, entry, _, _ = build_service(tmp_path)
    protocol, transport = connect_served(service)
    request(protocol, op="delete", root=entry.root)
    assert messages(transport) == [{"ok": False, "code": "unknown-op", "message": "unknown op 'delete'"}]
    assert not transport.disconnecting


# -- pieces and get


def test_pieces_answers_the_piece_list(tmp_path):
    service, entry, _, _ = build_service(tmp_path, size=3000)
    protocol, transport = connect_served(service)
    request(protocol, op="pieces", root=entry.root)
    assert messages(transport) == [{"ok": True, "size": 3000, "piece_size": MiB, "pieces": entry.digest.pieces.hex()}]


def test_get_streams_exactly_the_range(tmp_path):
    size = 2 * CHUNK + 5000
    service, entry, data, clock = build_service(tmp_path, size=size)
    protocol, transport = connect_served(service)
    offset, length = 1234, CHUNK + 4000
    service.threads.held = True
    request(protocol, op="get", root=entry.root, offset=offset, length=length)
    service.threads.run(1)  # open_range
    assert transport.value() == b'{"ok":true,"length":%d}\n' % length
    assert transport.producer is not None and transport.streaming is True
    service.threads.run()
    header, body = header_and_body(transport)
    assert header == {"ok": True, "length": length}
    assert body == data[offset : offset + length]
    assert transport.producer is None
    assert protocol.sent_bytes == service.sent_bytes == length


@pytest.mark.parametrize(("offset", "length"), [(0, 3000), (2999, 1), (3000, 0), (0, 0)])
def test_get_up_to_the_end_of_the_file_is_served(tmp_path, offset, length):
    service, entry, data, clock = build_service(tmp_path, size=3000)
    protocol, transport = connect_served(service)
    request(protocol, op="get", root=entry.root, offset=offset, length=length)
    clock.advance(0)
    assert header_and_body(transport) == ({"ok": True, "length": length}, data[offset : offset + length])


def test_paused_sender_writes_nothing_until_resumed(tmp_path):
    service, entry, data, clock = build_service(tmp_path, size=3000)
    protocol, transport = connect_served(service)
    service.threads.held = True
    request(protocol, op="get", root=entry.root, offset=0, length=3000)
    service.threads.run(1)  # open_range
    transport.producer.pauseProducing()
    service.threads.run()
    clock.advance(10)
    assert header_and_body(transport) == ({"ok": True, "length": 3000}, b"")
    transport.producer.resumeProducing()
    assert transport.value() == data


def test_pipelined_requests_are_answered_in_order_after_the_data(tmp_path):
    service, entry, data, clock = build_service(tmp_path, size=3000)
    protocol, transport = connect_served(service)
    protocol.dataReceived(
        json.dumps({"op": "get", "root": entry.root, "offset": 10, "length": 20}).encode()
        + b"\n"
        + json.dumps({"op": "pieces", "root": entry.root}).encode()
        + b"\n"
        + json.dumps({"op": "get", "root": entry.root, "offset": 0, "length": 5}).encode()
        + b"\n"
    )
    pieces = json.dumps({"ok": True, "size": 3000, "piece_size": MiB, "pieces": entry.digest.pieces.hex()})
    assert transport.value() == (
        b'{"ok":true,"length":20}\n' + data[10:30] + pieces.replace(" ", "").encode() + b"\n"
        b'{"ok":true,"length":5}\n' + data[:5]
    )


def test_unknown_root_is_not_found_and_nothing_is_served(tmp_path):
    service, entry, data, clock = build_service(tmp_path)
    protocol, transport = connect_served(service)
    protocol.roots.add("f" * 64)  # as a ticket for it would (the tracker's index may be stale)
    request(protocol, op="get", root="f" * 64, offset=0, length=10)
    clock.advance(1)
    assert messages(transport) == [{"ok": False, "code": "not-found", "message": "no such file is published here"}]
    assert transport.producer is None
    assert not transport.disconnecting
    request(protocol, op="get", root=entry.root, offset=0, length=3)
    clock.advance(0)
    assert header_and_body(transport) == ({"ok": True, "length": 3}, data[:3])


def test_file_changed_since_publishing_is_not_served(tmp_path):
    service, entry, _, clock = build_service(tmp_path)
    protocol, transport = connect_served(service)
    with open(entry.path, "ab") as f:
        f.write(b"appended")
    request(protocol, op="get", root=entry.root, offset=0, length=10)
    clock.advance(0)
    assert messages(transport) == [
        {"ok": False, "code": "not-found", "message": "the published file has changed since it was published"}
    ]


def test_file_gone_from_disk_is_not_served(tmp_path):
    service, entry, _, _ = build_service(tmp_path)
    protocol, transport = connect_served(service)
    os.unlink(entry.path)
    request(protocol, op="pieces", root=entry.root)
    assert messages(transport) == [
        {"ok": False, "code": "not-found", "message": "the published file is gone from disk"}
    ]


@pytest.mark.parametrize(("offset", "length"), [(0, 3001), (3000, 1), (2990, 11), (10**12, 1)])
def test_range_beyond_the_end_is_refused_with_code_range(tmp_path, offset, length):
    service, entry, _, clock = build_service(tmp_path, size=3000)
    protocol, transport = connect_served(service)
    request(protocol, op="get", root=entry.root, offset=offset, length=length)
    clock.advance(0)
    assert messages(transport) == [{"ok": False, "code": "range", "message": "range is beyond the end of the file"}]
    assert not transport.disconnecting


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"offset": -1, "length": 1}, "field 'offset' must not be negative"),
        ({"offset": 0, "length": -5}, "field 'length' must not be negative"),
        ({"offset": 0}, "missing field 'length'"),
        ({"offset": "0", "length": 1}, "field 'offset' has the wrong type"),
    ],
)
def test_get_with_a_bad_range_is_a_bad_request(tmp_path, fields, message):
    service, entry, _, _ = build_service(tmp_path)
    protocol, transport = connect_served(service)
    request(protocol, op="get", root=entry.root, **fields)
    assert messages(transport) == [{"ok": False, "code": "bad-request", "message": message}]


@pytest.mark.parametrize("greeted", [False, True])
def test_over_long_line_is_refused_and_the_connection_closed(tmp_path, greeted):
    service, _, _, _ = build_service(tmp_path)
    protocol, transport = connect_served(service) if greeted else connect(service)
    protocol.dataReceived(b"x" * 5000)
    assert messages(transport) == [{"ok": False, "code": "bad-request", "message": "line longer than 4096 bytes"}]
    assert transport.disconnecting


# -- upload slots


def test_with_one_slot_later_connections_queue_and_are_granted_in_order(tmp_path):
    service, entry, data, clock = build_service(tmp_path, max_uploads=1)
    first, first_transport = connect_served(service)
    second, second_transport = connect(service)
    third, third_transport = connect(service)
    second.dataReceived(hello(service))
    third.dataReceived(hello(service))
    assert messages(second_transport) == [{"queued": 1}]
    assert messages(third_transport) == [{"queued": 2}]
    request(second, op="get", root=entry.root, offset=0, length=4)  # waits for the slot
    clock.advance(0)
    assert second_transport.value() == b""
    lose(first)
    clock.advance(0)
    assert header_and_body(second_transport) == (GRANTED, b'{"ok":true,"length":4}\n' + data[:4])
    assert messages(third_transport) == [{"queued": 1}]
    lose(second)
    assert messages(third_transport) == [GRANTED]


def test_a_queued_connection_leaving_moves_the_others_up(tmp_path):
    service, _, _, clock = build_service(tmp_path, max_uploads=1)
    connect_served(service)
    second, second_transport = connect(service)
    third, third_transport = connect(service)
    second.dataReceived(hello(service))
    third.dataReceived(hello(service))
    messages(third_transport)
    lose(second)
    clock.advance(0)  # moves are told at the end of the reactor's turn
    assert messages(third_transport) == [{"queued": 1}]
    assert list(service.slots.waiting) == [third]


def test_a_freed_slot_goes_to_the_host_holding_fewest_slots(tmp_path):
    service, entry, _, clock = build_service(tmp_path, max_uploads=2)
    greedy_first, _ = connect(service, "192.0.2.1")
    greedy_second, _ = connect(service, "192.0.2.1")
    greedy_third, greedy_third_transport = connect(service, "192.0.2.1")
    service.threads.held = True
    for protocol in (greedy_first, greedy_second, greedy_third):
        protocol.dataReceived(hello(service))
        request(protocol, op="get", root=entry.root, offset=0, length=10)
    service.threads.run(2)  # both holders opened the file and wait for their read: mid-body
    modest, modest_transport = connect(service, "192.0.2.2")
    modest.dataReceived(hello(service))
    clock.advance(0)  # moves are told at the end of the reactor's turn
    # The modest host holds no slot: it is served before the greedy one's third connection.
    assert messages(greedy_third_transport) == [{"queued": 1}, {"queued": 2}]
    assert messages(modest_transport) == [{"queued": 1}]

    lose(greedy_first)
    clock.advance(0)

    assert messages(modest_transport) == [GRANTED]
    assert messages(greedy_third_transport) == [{"queued": 1}]
    assert list(service.slots.waiting) == [greedy_third]


def test_an_idle_slot_holder_is_closed_after_the_grace_while_others_wait(tmp_path):
    service, _, _, clock = build_service(tmp_path, max_uploads=1)
    holder, holder_transport = connect_served(service)
    clock.advance(1.0)
    waiter, waiter_transport = connect(service)
    waiter.dataReceived(hello(service))
    assert messages(waiter_transport) == [{"queued": 1}]

    clock.advance(SLOT_IDLE_GRACE - 1.0 - 0.01)
    assert not holder_transport.disconnecting
    clock.advance(0.02)

    assert holder_transport.disconnecting
    lose(holder)
    assert messages(waiter_transport) == [GRANTED]


def test_an_idle_slot_holder_keeps_its_slot_when_nobody_waits(tmp_path):
    service, _, _, clock = build_service(tmp_path, max_uploads=1)
    _, holder_transport = connect_served(service)
    clock.advance(SLOT_IDLE_GRACE * 10)
    assert not holder_transport.disconnecting


def test_without_a_limit_every_connection_is_served(tmp_path):
    service, _, _, _ = build_service(tmp_path, max_uploads=None)
    for _ in range(5):
        connect_served(service)
    assert len(service.slots.active) == 5


# -- pacing and timeouts


def test_upload_rate_is_kept_over_three_seconds(tmp_path):
    size = 5 * MiB
    service, entry, data, clock = build_service(tmp_path, size=size, upload_rate=MiB)
    protocol, transport = connect_served(service)
    request(protocol, op="get", root=entry.root, offset=0, length=size)
    for _ in range(30):
        clock.advance(0.1)
    header, body = header_and_body(transport)
    assert header == {"ok": True, "length": size}
    assert abs(len(body) - 3 * MiB) <= 0.15 * 3 * MiB
    assert body == data[: len(body)]


def test_idle_connection_is_closed_after_the_idle_timeout(tmp_path):
    service, _, _, clock = build_service(tmp_path)
    _, transport = connect_served(service)
    clock.advance(IDLE_TIMEOUT - 1)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting


def test_connection_that_never_says_hello_is_closed_after_the_idle_timeout(tmp_path):
    service, _, _, clock = build_service(tmp_path)
    _, transport = connect(service)
    clock.advance(IDLE_TIMEOUT)
    assert transport.disconnecting


def test_waiting_for_a_slot_is_not_idling(tmp_path):
    service, _, _, clock = build_service(tmp_path, max_uploads=1)
    connect_served(service)
    waiting, transport = connect(service)
    waiting.dataReceived(hello(service))
    clock.advance(IDLE_TIMEOUT * 3)
    assert not transport.disconnecting


def test_a_slow_transfer_is_not_idling(tmp_path):
    service, entry, _, clock = build_service(tmp_path, size=3 * MiB, upload_rate=64 * 1024)
    protocol, transport = connect_served(service)
    request(protocol, op="get", root=entry.root, offset=0, length=3 * MiB)
    clock.advance(IDLE_TIMEOUT + 1)
    assert not transport.disconnecting
    assert transport.producer is not None


def test_stopped_transfer_aborts_the_connection(tmp_path):
    service, entry, _, clock = build_service(tmp_path, size=3 * MiB, upload_rate=MiB)
    protocol, transport = connect_served(service)
    request(protocol, op="get", root=entry.root, offset=0, length=3 * MiB)
    clock.advance(1)
    transport.producer.stopProducing()
    assert transport.disconnected  # abortConnection
    lose(protocol)
    assert clock.getDelayedCalls() == []


def test_connection_lost_closes_the_open_files_and_frees_the_slot(tmp_path):
    service, entry, _, clock = build_service(tmp_path, max_uploads=1)
    protocol, transport = connect_served(service)
    request(protocol, op="get", root=entry.root, offset=0, length=10)
    clock.advance(0)
    (fd,) = protocol._files.values()
    lose(protocol)
    with pytest.raises(OSError):
        os.fstat(fd)
    assert service.slots.active == set()
    assert protocol not in service.connections


# -- known bugs


def test_error_for_a_pipelined_bad_request_comes_after_the_data_before_it(tmp_path):
    service, entry, data, clock = build_service(tmp_path)
    protocol, transport = connect_served(service)
    request(protocol, op="get", root=entry.root, offset=0, length=100)
    request(protocol, op="delete", root=entry.root)
    clock.advance(0)
    assert transport.value() == (
        b'{"ok":true,"length":100}\n'
        + data[:100]
        + b'{"ok":false,"code":"unknown-op","message":"unknown op \'delete\'"}\n'
    )


def test_replaced_and_republished_file_is_served_with_its_new_content(tmp_path):
    service, entry, _, clock = build_service(tmp_path)
    protocol, transport = connect_served(service)
    request(protocol, op="get", root=entry.root, offset=0, length=10)
    clock.advance(0)
    transport.clear()
    new = content(5000)
    (tmp_path / "new.bin").write_bytes(new)
    os.replace(tmp_path / "new.bin", entry.path)
    republished = service.repository.publish(Path(entry.path))
    protocol.roots.add(republished.root)  # as a ticket for it would
    request(protocol, op="get", root=republished.root, offset=0, length=10)
    clock.advance(0)
    assert header_and_body(transport) == ({"ok": True, "length": 10}, new[:10])


# -- the upload threads


class RecordingOs:
    """The ``os`` module as upload.py and published.py see it: file calls are noted, some replaced."""

    FILE_CALLS = frozenset({"stat", "open", "fstat", "pread", "close"})

    def __init__(self, **replaced: Callable[..., Any]) -> None:
        self.calls: list[str] = []
        self.replaced = replaced

    def __getattr__(self, name: str) -> Any:
        real = self.replaced.get(name, getattr(os, name))
        if name not in self.FILE_CALLS:
            return real

        @functools.wraps(real)
        def call(*args: Any) -> Any:
            self.calls.append(name)
            return real(*args)

        return call


def test_files_are_only_touched_by_the_upload_threads(tmp_path, monkeypatch):
    service, entry, _, _ = build_service(tmp_path, size=3000)
    protocol, transport = connect_served(service)
    recording = RecordingOs()
    monkeypatch.setattr(upload_module, "os", recording)
    monkeypatch.setattr(published_module, "os", recording)
    service.threads.held = True
    request(protocol, op="pieces", root=entry.root)
    request(protocol, op="get", root=entry.root, offset=0, length=3000)
    assert recording.calls == []
    assert transport.value() == b""
    service.threads.run()
    assert recording.calls == ["stat", "stat", "open", "fstat", "pread"]
    assert service.threads.ran == ["check_published", "open_range", "pread"]
    assert transport.value().startswith(b'{"ok":true,"size":3000,')


def test_requests_are_checked_one_at_a_time_so_replies_keep_their_order(tmp_path):
    service, entry, data, _ = build_service(tmp_path, size=3000)
    protocol, transport = connect_served(service)
    threads = service.threads
    threads.held = True
    request(protocol, op="get", root=entry.root, offset=10, length=20)
    request(protocol, op="pieces", root=entry.root)
    protocol.roots.add("f" * 64)  # as a ticket for it would
    request(protocol, op="get", root="f" * 64, offset=0, length=5)
    request(protocol, op="get", root=entry.root, offset=0, length=5)
    # Nothing of a request starts before the one ahead of it is answered.
    assert threads.waiting == ["open_range"]
    threads.run(1)
    assert threads.waiting == ["pread"]
    threads.run(1)
    assert threads.waiting == ["check_published"]
    threads.run(1)
    assert threads.waiting == ["open_range"]  # the unknown root was answered without a thread
    threads.run()
    pieces = {"ok": True, "size": 3000, "piece_size": MiB, "pieces": entry.digest.pieces.hex()}
    not_found = {"ok": False, "code": "not-found", "message": "no such file is published here"}
    assert transport.value() == (
        b'{"ok":true,"length":20}\n'
        + data[10:30]
        + json.dumps(pieces, separators=(",", ":")).encode()
        + b"\n"
        + json.dumps(not_found, separators=(",", ":")).encode()
        + b'\n{"ok":true,"length":5}\n'
        + data[:5]
    )


def test_file_changed_after_the_connection_opened_it_is_not_served(tmp_path):
    service, entry, data, _ = build_service(tmp_path)
    protocol, transport = connect_served(service)
    request(protocol, op="get", root=entry.root, offset=0, length=10)
    assert header_and_body(transport) == ({"ok": True, "length": 10}, data[:10])
    with open(entry.path, "r+b") as f:
        f.write(b"changed")
    request(protocol, op="get", root=entry.root, offset=0, length=10)
    assert messages(transport) == [
        {"ok": False, "code": "not-found", "message": "the published file has changed since it was published"}
    ]
    assert not transport.disconnecting


def test_one_chunk_is_read_ahead_and_no_more_while_paused(tmp_path):
    size = 4 * CHUNK
    service, entry, data, _ = build_service(tmp_path, size=size)
    protocol, transport = connect_served(service)
    threads = service.threads
    threads.held = True
    request(protocol, op="get", root=entry.root, offset=0, length=size)
    threads.run(1)  # open_range; the sender asks for the first chunk
    transport.clear()
    assert threads.waiting == ["pread"]
    threads.run(1)
    # The first chunk is written and the next one is read ahead at once...
    assert transport.value() == data[:CHUNK]
    assert threads.waiting == ["pread"]
    sender = transport.producer
    sender.pauseProducing()
    threads.run()
    # ...but while the transport is full, one chunk waits in hand and nothing more is read.
    assert transport.value() == data[:CHUNK]
    assert threads.waiting == []
    assert sender.ready == CHUNK and not sender.reading
    sender.resumeProducing()
    assert transport.value() == data[: 2 * CHUNK]
    assert threads.waiting == ["pread"]
    threads.run()
    assert transport.value() == data
    assert transport.producer is None
    assert protocol.sent_bytes == size


def test_file_shrinking_mid_send_aborts_the_connection(tmp_path):
    size = 3 * CHUNK
    service, entry, data, _ = build_service(tmp_path, size=size)
    protocol, transport = connect_served(service)
    threads = service.threads
    threads.held = True
    request(protocol, op="get", root=entry.root, offset=0, length=size)
    threads.run(2)  # open_range and the first chunk; the second is being read
    os.truncate(entry.path, CHUNK + 100)
    threads.run()
    assert header_and_body(transport) == ({"ok": True, "length": size}, data[:CHUNK])
    assert transport.disconnected  # aborted: the fetcher must not wait for the rest
    assert protocol.sent_bytes == 0


def test_connection_lost_during_a_read_closes_the_file_after_the_read(tmp_path):
    service, entry, _, _ = build_service(tmp_path, size=3 * CHUNK)
    protocol, _ = connect_served(service)
    threads = service.threads
    threads.held = True
    request(protocol, op="get", root=entry.root, offset=0, length=3 * CHUNK)
    threads.run(1)  # open_range
    (fd,) = protocol._files.values()
    assert threads.waiting == ["pread"]
    lose(protocol)
    os.fstat(fd)  # still open: the read in flight uses it
    threads.run()
    with pytest.raises(OSError):
        os.fstat(fd)
    assert threads.waiting == []


def test_connection_lost_while_its_file_is_opened_closes_the_file_and_sends_nothing(tmp_path, monkeypatch):
    service, entry, _, _ = build_service(tmp_path)
    protocol, transport = connect_served(service)
    opened: list[int] = []
    monkeypatch.setattr(published_module, "os", RecordingOs(open=lambda *a: opened.append(os.open(*a)) or opened[-1]))
    service.threads.held = True
    request(protocol, op="get", root=entry.root, offset=0, length=10)
    lose(protocol)
    service.threads.run()
    (fd,) = opened
    with pytest.raises(OSError):
        os.fstat(fd)
    assert transport.value() == b""
    assert protocol._files == {}


def test_unexpected_failure_in_a_check_drops_the_connection(tmp_path, monkeypatch):
    service, entry, _, _ = build_service(tmp_path)
    protocol, transport = connect_served(service)
    monkeypatch.setattr(published_module, "os", RecordingOs(fstat=lambda fd: 1 / 0))
    monkeypatch.setattr(upload_replies_module, "log", Logger(observer=lambda event: None))
    request(protocol, op="get", root=entry.root, offset=0, length=10)
    assert transport.value() == b""
    assert transport.disconnected
    request(protocol, op="pieces", root=entry.root)
    assert transport.value() == b""


class PageCache:
    """``os`` as senders.py sees it, with a preadv that says which reads the page cache could serve."""

    def __init__(self, cached: bool) -> None:
        self.cached = cached
        self.reads: list[tuple[int, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def preadv(self, fd: int, buffers: list[memoryview], offset: int, flags: int) -> int:
        assert flags == os.RWF_NOWAIT
        (buf,) = buffers
        self.reads.append((offset, len(buf)))
        if not self.cached:
            raise BlockingIOError()
        data = os.pread(fd, len(buf), offset)
        buf[: len(data)] = data
        return len(data)


def test_cached_chunks_are_read_at_once_without_a_thread(tmp_path, monkeypatch):
    size = 3 * CHUNK
    service, entry, data, _ = build_service(tmp_path, size=size)
    service.cached_reads = True
    cache = PageCache(cached=True)
    monkeypatch.setattr(senders_module, "os", cache)
    protocol, transport = connect_served(service)
    service.threads.held = True
    request(protocol, op="get", root=entry.root, offset=0, length=size)
    service.threads.run()
    assert service.threads.ran == ["open_range"]
    assert header_and_body(transport) == ({"ok": True, "length": size}, data)
    assert cache.reads == [(0, CHUNK), (CHUNK, CHUNK), (2 * CHUNK, CHUNK)]


class FillingTransport(StringTransport):
    """Like a TCP transport, pauses its streaming producer on every write: the buffer is full."""

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and self.streaming:
            self.producer.pauseProducing()


def connect_filling(service: UploadService) -> tuple[UploadProtocol, FillingTransport]:
    protocol = service.buildProtocol(IPv4Address("TCP", "192.0.2.9", 50000))
    transport = FillingTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(hello(service))
    assert messages(transport) == [GRANTED]
    return protocol, transport


def test_cached_chunks_are_read_when_they_can_be_written_not_ahead(tmp_path, monkeypatch):
    size = 3 * CHUNK
    service, entry, data, _ = build_service(tmp_path, size=size)
    service.cached_reads = True
    cache = PageCache(cached=True)
    monkeypatch.setattr(senders_module, "os", cache)
    protocol, transport = connect_filling(service)
    request(protocol, op="get", root=entry.root, offset=0, length=size)
    # The first chunk is read and written, which fills the transport; nothing is read meanwhile.
    assert cache.reads == [(0, CHUNK)]
    sender = transport.producer
    assert sender.ready == 0 and not sender.reading
    sender.resumeProducing()
    assert cache.reads == [(0, CHUNK), (CHUNK, CHUNK)]
    sender.resumeProducing()
    assert cache.reads == [(0, CHUNK), (CHUNK, CHUNK), (2 * CHUNK, CHUNK)]
    assert transport.producer is None
    assert header_and_body(transport) == ({"ok": True, "length": size}, data)
    assert service.threads.ran == ["open_range"]


def test_the_next_request_is_checked_while_a_range_streams_and_answered_after_it(tmp_path, monkeypatch):
    size = 2 * CHUNK
    service, entry, data, _ = build_service(tmp_path, size=size)
    service.cached_reads = True
    monkeypatch.setattr(senders_module, "os", PageCache(cached=True))
    protocol, transport = connect_filling(service)
    threads = service.threads
    threads.held = True
    request(protocol, op="get", root=entry.root, offset=0, length=size)
    request(protocol, op="get", root=entry.root, offset=5, length=10)
    request(protocol, op="pieces", root=entry.root)
    threads.run(1)  # the first range is checked and starts streaming
    assert threads.waiting == ["open_range"]  # the second is checked meanwhile, the third not yet
    threads.run()
    assert threads.waiting == []
    assert transport.value() == b'{"ok":true,"length":%d}\n' % size + data[:CHUNK]
    transport.producer.resumeProducing()  # the rest of the first range; then the second goes out
    assert threads.waiting == ["check_published"]
    threads.run()
    pieces = {"ok": True, "size": size, "piece_size": MiB, "pieces": entry.digest.pieces.hex()}
    assert transport.value() == (
        b'{"ok":true,"length":%d}\n' % size
        + data
        + b'{"ok":true,"length":10}\n'
        + data[5:15]
        + json.dumps(pieces, separators=(",", ":")).encode()
        + b"\n"
    )


def test_a_file_replaced_during_a_range_is_closed_only_after_it(tmp_path, monkeypatch):
    size = 2 * CHUNK
    service, entry, data, _ = build_service(tmp_path, size=size)
    service.cached_reads = True
    monkeypatch.setattr(senders_module, "os", PageCache(cached=True))
    protocol, transport = connect_filling(service)
    threads = service.threads
    threads.held = True
    request(protocol, op="get", root=entry.root, offset=0, length=size)
    threads.run()
    (first,) = protocol._files.values()
    new = content(3000)
    (tmp_path / "new.bin").write_bytes(new)
    os.replace(tmp_path / "new.bin", entry.path)
    republished = service.repository.publish(Path(entry.path))
    protocol.roots.add(republished.root)  # as a ticket for it would
    request(protocol, op="get", root=republished.root, offset=0, length=10)
    threads.run()  # checked while the first range streams: the path is opened again
    os.fstat(first)  # still open: the first range is read from it
    transport.producer.resumeProducing()
    with pytest.raises(OSError):
        os.fstat(first)
    header, body = header_and_body(transport)
    assert body == data[:size] + b'{"ok":true,"length":10}\n' + new[:10]


def test_chunks_from_the_disk_are_read_ahead_in_a_thread_until_the_cache_has_them(tmp_path, monkeypatch):
    size = 4 * CHUNK
    service, entry, data, _ = build_service(tmp_path, size=size)
    service.cached_reads = True
    cache = PageCache(cached=False)
    monkeypatch.setattr(senders_module, "os", cache)
    protocol, transport = connect_filling(service)
    threads = service.threads
    threads.held = True
    request(protocol, op="get", root=entry.root, offset=0, length=size)
    threads.run(1)  # open_range
    assert threads.waiting == ["pread"]
    threads.run(1)  # the first chunk is written, the transport is full: the next is read ahead
    assert threads.waiting == ["pread"]
    threads.run()
    assert threads.waiting == []  # one chunk in hand, nothing more while paused
    sender = transport.producer
    assert sender.ready == CHUNK
    cache.cached = True
    sender.resumeProducing()  # writes the chunk in hand; the page cache has the next one
    assert threads.waiting == []
    assert cache.reads[-1] == (2 * CHUNK, CHUNK)
    sender.resumeProducing()
    sender.resumeProducing()
    assert transport.producer is None
    assert header_and_body(transport) == ({"ok": True, "length": size}, data)


def test_a_chunk_not_in_the_page_cache_is_read_by_a_thread(tmp_path, monkeypatch):
    service, entry, data, _ = build_service(tmp_path, size=3000)
    service.cached_reads = True
    monkeypatch.setattr(senders_module, "os", PageCache(cached=False))
    protocol, transport = connect_served(service)
    service.threads.held = True
    request(protocol, op="get", root=entry.root, offset=100, length=2000)
    service.threads.run(1)
    assert service.threads.waiting == ["pread"]
    service.threads.run()
    assert header_and_body(transport) == ({"ok": True, "length": 2000}, data[100:2100])


# -- over a real socket, with real threads


class Collect:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: memoryview) -> None:
        self.chunks.append(bytes(data))


@pytest.mark.parametrize(
    ("sendfile", "cached_reads"),
    [(False, False), (False, True), (True, False)],
    ids=["read-in-threads", "read-from-page-cache", "sendfile"],
)
@pytest_twisted.ensureDeferred
async def test_ranges_are_served_over_loopback_by_either_sender(tmp_path, sendfile, cached_reads):
    from twisted.internet import reactor

    size = 5 * CHUNK + 123
    data = content(size)
    path = tmp_path / "shared.bin"
    path.write_bytes(data)
    repository = FakeRepository()
    entry = repository.publish(path)
    threads = ThreadPool(minthreads=0, maxthreads=2, name="test-upload")
    threads.start()
    service = UploadService(repository, reactor, None, None, threads)
    service.sendfile = sendfile
    service.cached_reads = cached_reads
    service.ticket_key = lambda: KEY
    port = reactor.listenTCP(0, service, interface="127.0.0.1")
    source = None
    try:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        source = await connectProtocol(endpoint, SourceProtocol(reactor, None, ticket_for(service, entry.root)))
        await source.greeted
        whole, tail = Collect(), Collect()
        pieces = source.pieces(entry.root)
        got = await source.get(entry.root, 0, size, whole)
        assert (await pieces)["size"] == size
        assert got == size and b"".join(whole.chunks) == data
        assert await source.get(entry.root, size - 200, 200, tail) == 200
        assert b"".join(tail.chunks) == data[-200:]
    finally:
        if source is not None:
            source.transport.loseConnection()
        await port.stopListening()
        threads.stop()
    assert service.sent_bytes == size + 200
