"""RPCProtocol's bounds: reading pauses while replies wait or MAX_IN_FLIGHT requests run; long replies to calls fail."""

import json
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger

from fileshare.errors import NotFound, Unavailable
from fileshare.wire import rpc as rpc_module
from fileshare.wire.framing import EncodedItems
from fileshare.wire.rpc import MAX_IN_FLIGHT, MAX_REPLY_BYTES, MAX_REPLY_ITEMS, RPCProtocol

from .flow import TCP_BUFFER, BoundedTransport
from .test_rpc import result_of

#: One item of a ``blob`` reply: 100 bytes of JSON with its comma.
ITEM = "x" * 97


class Ops:
    def __init__(self) -> None:
        self.handled: list[int] = []
        self.slow: list[Deferred] = []

    def install(self, protocol: RPCProtocol) -> RPCProtocol:
        protocol.handlers.update(blob=self.blob, encoded_blob=self.encoded_blob, slow=self.wait)
        return protocol

    def blob(self, message: dict[str, Any]) -> dict[str, Any]:
        self.handled.append(message["id"])
        return {"items": [ITEM] * message["n"]}

    def encoded_blob(self, message: dict[str, Any]) -> EncodedItems:
        """The same reply as ``blob``, its items encoded by the handler (as the tracker's ``sources``)."""
        self.handled.append(message["id"])
        return EncodedItems([json.dumps(ITEM).encode()] * message["n"])

    def wait(self, message: dict[str, Any]) -> Deferred:
        d: Deferred = Deferred()
        self.slow.append(d)
        return d


def build_end(transport: StringTransport | None = None) -> tuple[RPCProtocol, Ops, Any]:
    ops = Ops()
    protocol = ops.install(RPCProtocol(Clock()))
    transport = transport if transport is not None else BoundedTransport()
    protocol.makeConnection(transport)
    return protocol, ops, transport


def requests(op: str, count: int, **fields: Any) -> bytes:
    return b"".join(json.dumps({"id": i, "op": op, **fields}).encode() + b"\n" for i in range(1, count + 1))


def frames(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


@pytest.fixture
def logged(monkeypatch) -> list[dict]:
    events: list[dict] = []
    monkeypatch.setattr(rpc_module, "log", Logger(observer=events.append))
    return events


# -- answering: the transport's buffer


@pytest.mark.parametrize("op", ["blob", "encoded_blob"])
def test_a_long_reply_is_written_a_frame_at_a_time_while_the_buffer_has_room(op):
    protocol, _, transport = build_end()
    protocol.dataReceived(requests(op, 1, n=2000))
    # Frames of 200 items are ~20 KB: the fourth takes the buffer past 64 KiB.
    assert [len(f["items"]) for f in frames(transport.value())] == [200] * 4
    assert transport.producer is protocol and transport.producer_paused
    sent = frames(transport.drain())
    while transport.value():
        sent += frames(transport.drain())
    assert [len(f["items"]) for f in sent] == [200] * 10
    assert [f.get("more") for f in sent] == [True] * 9 + [None]
    assert protocol.in_flight == 0


def test_reading_pauses_while_the_transports_buffer_is_full_and_resumes_when_it_drains():
    protocol, ops, transport = build_end()
    # Each reply is 70 KB: it takes the buffer past 64 KiB, and reading stops.
    protocol.dataReceived(requests("blob", 3, n=700))
    assert ops.handled == [1]
    assert transport.producerState == "paused"
    transport.drain()
    assert ops.handled == [1, 2]
    assert transport.producerState == "paused"
    transport.drain()
    assert ops.handled == [1, 2, 3]
    assert transport.producerState == "paused"
    transport.drain()
    assert transport.producerState == "producing"
    assert transport.producer is None


def test_the_producer_is_registered_only_while_the_buffer_is_full():
    # A TLS transport does not close while a producer is registered.
    protocol, _, transport = build_end()
    protocol.dataReceived(requests("blob", 1, n=10))
    assert transport.producer is None
    protocol.dataReceived(b'{"id":2,"op":"blob","n":1000}\n')
    assert transport.producer is protocol
    while transport.value():
        transport.drain()
    assert transport.producer is None


@pytest.mark.parametrize("op", ["blob", "encoded_blob"])
def test_a_client_that_pipelines_1000_big_requests_and_never_reads_costs_one_buffer(op):
    protocol, ops, transport = build_end()
    protocol.dataReceived(requests(op, 1000, n=2000))
    assert ops.handled == [1]
    assert transport.producerState == "paused"
    assert TCP_BUFFER < transport.peak <= TCP_BUFFER + 20_200
    assert protocol.in_flight == 1


def test_every_pipelined_request_is_answered_once_the_client_reads():
    protocol, ops, transport = build_end()
    protocol.dataReceived(requests("blob", 50, n=700))
    answered: dict[int, int] = {}
    while transport.value():
        for frame in frames(transport.drain()):
            answered[frame["re"]] = answered.get(frame["re"], 0) + len(frame["items"])
    assert answered == {i: 700 for i in range(1, 51)}
    assert transport.peak <= TCP_BUFFER + 20_200
    assert transport.producerState == "producing"


def test_no_other_reply_comes_between_the_frames_of_a_reply_but_a_request_may():
    protocol, ops, transport = build_end()
    protocol.dataReceived(b'{"id":1,"op":"slow"}\n{"id":2,"op":"blob","n":1000}\n')
    protocol.call("ping")
    ops.slow[0].callback({"late": True})
    sent = []
    while transport.value():
        sent += frames(transport.drain())
    assert [f.get("re", "request") for f in sent] == [2, 2, 2, 2, "request", 2, 1]


def test_replies_finished_while_the_buffer_is_full_wait_for_it_to_drain():
    protocol, ops, transport = build_end()
    protocol.dataReceived(b'{"id":1,"op":"slow"}\n{"id":2,"op":"slow"}\n{"id":3,"op":"blob","n":700}\n')
    assert transport.producer_paused
    ops.slow[0].errback(NotFound("gone"))
    ops.slow[1].callback({"late": True})
    assert {f["re"] for f in frames(transport.value())} == {3}
    assert frames(transport.drain())[-1]["re"] == 3
    assert frames(transport.drain()) == [
        {"re": 1, "ok": False, "code": "not-found", "message": "gone"},
        {"re": 2, "ok": True, "late": True},
    ]
    assert protocol.in_flight == 0


def test_replies_waiting_when_the_connection_is_closed_are_dropped_and_the_transport_let_go():
    # A TLS transport closes only once its producer is gone, and must read the other end's close.
    protocol, ops, transport = build_end()
    protocol.dataReceived(requests("blob", 3, n=1000))
    transport.loseConnection()
    transport.drain()
    assert transport.value() == b""
    assert transport.producer is None
    assert transport.producerState == "producing"
    assert protocol.in_flight == 0


def test_a_reply_finished_after_the_connection_is_closed_is_written_without_a_producer():
    # As before flow control: TCP still sends it, TLS drops it; a producer would make TLS take it after its close.
    protocol, ops, transport = build_end()
    protocol.dataReceived(b'{"id":1,"op":"slow"}\n')
    transport.loseConnection()
    ops.slow[0].callback({"late": True})
    assert frames(transport.value()) == [{"re": 1, "ok": True, "late": True}]
    assert transport.registrations == 0
    assert protocol.in_flight == 0


# -- answering: requests in flight


def test_reading_pauses_at_max_in_flight_requests_and_resumes_when_one_is_answered():
    assert MAX_IN_FLIGHT == 16
    protocol, ops, transport = build_end(StringTransport())
    protocol.dataReceived(requests("slow", 18))
    assert len(ops.slow) == 16
    assert transport.producerState == "paused"
    ops.slow[0].callback({})
    assert len(ops.slow) == 17
    assert transport.producerState == "paused"
    ops.slow[1].callback({})
    assert len(ops.slow) == 18
    assert transport.producerState == "paused"
    ops.slow[2].callback({})
    assert transport.producerState == "producing"
    assert [f["re"] for f in frames(transport.value())] == [1, 2, 3]


def test_requests_answered_at_once_do_not_count_as_in_flight():
    protocol, ops, transport = build_end(StringTransport())
    protocol.dataReceived(requests("blob", 100, n=1))
    assert len(ops.handled) == 100
    assert transport.producerState == "producing"


def test_a_factory_may_set_max_in_flight():
    class Factory:
        max_in_flight = 2

    protocol = Ops().install(RPCProtocol(Clock()))
    protocol.factory = Factory()
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(requests("slow", 3))
    assert protocol.max_in_flight == 2
    assert transport.producerState == "paused"


def test_reaching_max_in_flight_logs_one_line_a_minute_per_address(logged):
    clock = Clock()
    connections = []
    for port, host in ((40000, "192.0.2.7"), (40001, "192.0.2.7"), (40002, "198.51.100.9")):
        ops = Ops()
        protocol = ops.install(RPCProtocol(clock))
        protocol.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", host, port)))
        protocol.dataReceived(requests("slow", 16))
        connections.append(protocol)
    warnings = [e for e in logged if e["log_level"].name == "warn"]
    assert [(e["peer"].host, e["peer"].port) for e in warnings] == [("192.0.2.7", 40000), ("198.51.100.9", 40002)]
    assert warnings[0]["log_format"] == (
        "{peer} has {limit} requests in flight; reading its requests pauses until one is answered"
    )
    assert warnings[0]["limit"] == 16
    clock.advance(60)
    ops.slow.pop().callback({})
    connections[2].dataReceived(b'{"id":17,"op":"slow"}\n')
    assert len([e for e in logged if e["log_level"].name == "warn"]) == 3


# -- asking: the length of a reply


def frame_line(request_id: int, items: list[Any], more: bool = True) -> bytes:
    message: dict[str, Any] = {"re": request_id, "ok": True, "items": items}
    if more:
        message["more"] = True
    return json.dumps(message).encode() + b"\n"


def test_a_reply_of_max_reply_items_is_accepted():
    protocol, _, transport = build_end(StringTransport())
    d = protocol.call("list")
    protocol.dataReceived(frame_line(1, [0] * 200) * (MAX_REPLY_ITEMS // 200 - 1) + frame_line(1, [0] * 200, False))
    assert len(result_of(d)["items"]) == MAX_REPLY_ITEMS == 100_000
    assert not transport.disconnecting


def test_a_reply_of_more_than_max_reply_items_fails_the_call_and_closes_the_connection(logged):
    protocol, _, transport = build_end(StringTransport())
    d = protocol.call("list")
    protocol.dataReceived(frame_line(1, [0] * 200) * (MAX_REPLY_ITEMS // 200))
    assert not d.called
    protocol.dataReceived(frame_line(1, [0]) * 1000)
    with pytest.raises(Unavailable) as caught:
        result_of(d)
    assert caught.value.message == "reply too long (over 100000 items or 33554432 bytes)"
    assert transport.disconnecting
    assert protocol._pending == {}
    warnings = [e for e in logged if e["log_level"].name == "warn"]
    assert [e["log_format"] for e in warnings] == ["reply from {peer} too long (over {limits}); closing the connection"]


def test_a_reply_of_more_than_max_reply_bytes_fails_the_call():
    assert MAX_REPLY_BYTES == 32 * 1024 * 1024
    protocol, _, transport = build_end(StringTransport())
    d = protocol.call("list")
    line = frame_line(1, ["y" * 200_000])
    count = MAX_REPLY_BYTES // (len(line) - 1)
    protocol.dataReceived(line * count)
    assert not d.called
    protocol.dataReceived(line)
    with pytest.raises(Unavailable, match=r"^reply too long"):
        result_of(d)
    assert transport.disconnecting


def test_endless_empty_frames_count_against_max_reply_bytes():
    protocol, _, transport = build_end(StringTransport())
    d = protocol.call("list")
    line = b'{"re":1,"ok":true,"more":true,"pad":"' + b"z" * 100_000 + b'"}\n'
    protocol.dataReceived(line * (MAX_REPLY_BYTES // (len(line) - 1) + 1))
    with pytest.raises(Unavailable, match=r"^reply too long"):
        result_of(d)
    assert transport.disconnecting


def test_other_calls_on_the_connection_fail_when_it_closes_after_a_long_reply():
    protocol, _, transport = build_end(StringTransport())
    other = protocol.call("ping")
    long = protocol.call("list")
    protocol.dataReceived(frame_line(2, [0] * 200) * (MAX_REPLY_ITEMS // 200 + 1))
    assert long.called and not other.called
    protocol.connectionLost(None)
    with pytest.raises(Unavailable, match="^connection lost$"):
        result_of(other)
    with pytest.raises(Unavailable, match=r"^reply too long"):
        result_of(long)


def test_the_64_kib_bound_is_twisteds_tcp_write_buffer():
    from twisted.internet.abstract import FileDescriptor

    assert FileDescriptor.bufferSize == TCP_BUFFER == 64 * 1024
