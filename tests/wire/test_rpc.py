"""RPCProtocol: requests and replies between two in-memory ends, ids, frames, errors, timeouts."""

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.test.iosim import IOPump, connectedServerAndClient

from fileshare.errors import BadRequest, Conflict, FileshareError, NotFound, RemoteError, Unavailable
from fileshare.wire import framing
from fileshare.wire import rpc as rpc_module
from fileshare.wire.rpc import RPCProtocol


class Handlers:
    """Ops served by one end; ``slow`` replies when the test fires its Deferred."""

    def __init__(self) -> None:
        self.slow: list[Deferred] = []
        self.seen: list[dict[str, Any]] = []

    def install(self, protocol: RPCProtocol) -> RPCProtocol:
        protocol.handlers.update(echo=self.echo, slow=self.wait, find=self.find, many=self.many, crash=self.crash)
        return protocol

    def echo(self, message: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(message)
        return {"said": message.get("say")}

    def wait(self, message: dict[str, Any]) -> Deferred:
        d: Deferred = Deferred()
        self.slow.append(d)
        return d

    async def find(self, message: dict[str, Any]) -> dict[str, Any]:
        raise NotFound(f"no file named {message['fname']!r}")

    async def many(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"items": list(range(message["n"])), "total": message["n"]}

    def crash(self, message: dict[str, Any]) -> dict[str, Any]:
        raise ZeroDivisionError("secret detail")


def build_pair() -> tuple[RPCProtocol, Handlers, RPCProtocol, Handlers, IOPump, Clock]:
    """Two connected ends (client, server), each serving the same ops."""
    clock = Clock()
    client_ops, server_ops = Handlers(), Handlers()
    client, server, pump = connectedServerAndClient(
        lambda: server_ops.install(RPCProtocol(clock)),
        lambda: client_ops.install(RPCProtocol(clock)),
        clock=clock,
    )
    return client, client_ops, server, server_ops, pump, clock


def build_end() -> tuple[RPCProtocol, Handlers, StringTransport, Clock]:
    """One end on a StringTransport, to read and write raw lines."""
    clock = Clock()
    ops = Handlers()
    protocol = ops.install(RPCProtocol(clock))
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, ops, transport, clock


def sent(transport: StringTransport) -> list[dict[str, Any]]:
    lines = transport.value().split(b"\n")
    transport.clear()
    assert lines[-1] == b""
    return [json.loads(line) for line in lines[:-1]]


def result_of(d: Deferred) -> Any:
    """The result of a fired Deferred; a failure is raised."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


@pytest.fixture
def logged(monkeypatch) -> list[dict]:
    """Log events of the module under test, kept here instead of reaching the global log."""
    events: list[dict] = []
    monkeypatch.setattr(rpc_module, "log", Logger(observer=events.append))
    return events


# -- calls and replies


def test_call_fires_with_the_reply_message():
    client, _, _, server_ops, pump, _ = build_pair()
    d = client.call("echo", say="hi")
    pump.flush()
    assert result_of(d) == {"re": 1, "ok": True, "said": "hi"}
    assert server_ops.seen == [{"id": 1, "op": "echo", "say": "hi"}]


def test_request_is_one_json_line_with_a_fresh_id():
    protocol, _, transport, _ = build_end()
    protocol.call("echo", say="a")
    protocol.call("echo", say="b")
    assert transport.value() == b'{"id":1,"op":"echo","say":"a"}\n{"id":2,"op":"echo","say":"b"}\n'


def test_replies_are_matched_by_id_when_answered_out_of_order():
    client, _, _, server_ops, pump, _ = build_pair()
    first, second = client.call("slow"), client.call("slow")
    pump.flush()
    server_ops.slow[1].callback({"n": "second"})
    server_ops.slow[0].callback({"n": "first"})
    pump.flush()
    assert result_of(first) == {"re": 1, "ok": True, "n": "first"}
    assert result_of(second) == {"re": 2, "ok": True, "n": "second"}


def test_both_ends_may_have_requests_outstanding_with_the_same_ids():
    client, client_ops, server, server_ops, pump, _ = build_pair()
    from_client = client.call("slow")
    from_server = server.call("slow")
    pump.flush()
    assert len(client_ops.slow) == len(server_ops.slow) == 1
    client_ops.slow[0].callback({"answered_by": "client"})
    pump.flush()
    assert result_of(from_server) == {"re": 1, "ok": True, "answered_by": "client"}
    assert not from_client.called
    server_ops.slow[0].callback({"answered_by": "server"})
    pump.flush()
    assert result_of(from_client) == {"re": 1, "ok": True, "answered_by": "server"}


def test_handler_may_return_none_for_an_empty_reply():
    client, _, server, server_ops, pump, _ = build_pair()
    d = client.call("slow")
    pump.flush()
    server_ops.slow[0].callback(None)
    pump.flush()
    assert result_of(d) == {"re": 1, "ok": True}


def test_reply_to_no_outstanding_request_is_ignored():
    protocol, _, transport, _ = build_end()
    protocol.dataReceived(b'{"re":7,"ok":true}\n')
    assert transport.value() == b""
    assert not transport.disconnecting


# -- multi-frame replies


def test_long_item_list_is_sent_as_frames_of_200_marked_more():
    protocol, _, transport, _ = build_end()
    protocol.dataReceived(b'{"id":4,"op":"many","n":450}\n')
    frames = sent(transport)
    assert [len(f["items"]) for f in frames] == [200, 200, 50]
    assert [f.get("more") for f in frames] == [True, True, None]
    assert all(f["re"] == 4 and f["ok"] is True for f in frames)
    assert "total" not in frames[0] and "total" not in frames[1]
    assert frames[2]["total"] == 450


def test_empty_item_list_is_one_frame():
    protocol, _, transport, _ = build_end()
    protocol.dataReceived(b'{"id":4,"op":"many","n":0}\n')
    assert sent(transport) == [{"re": 4, "ok": True, "items": [], "total": 0}]


def test_frames_are_merged_in_order_into_one_reply():
    client, _, _, _, pump, _ = build_pair()
    d = client.call("many", n=450)
    pump.flush()
    assert result_of(d) == {"re": 1, "ok": True, "items": list(range(450)), "total": 450}


def test_interleaved_frames_of_two_replies_are_merged_per_request():
    protocol, _, transport, _ = build_end()
    a, b = protocol.call("list"), protocol.call("list")
    protocol.dataReceived(
        b'{"re":2,"ok":true,"more":true,"items":["b1"]}\n'
        b'{"re":1,"ok":true,"more":true,"items":["a1"]}\n'
        b'{"re":2,"ok":true,"more":true,"items":["b2"]}\n'
        b'{"re":1,"ok":true,"items":["a2"]}\n'
    )
    assert result_of(a) == {"re": 1, "ok": True, "items": ["a1", "a2"]}
    assert not b.called
    protocol.dataReceived(b'{"re":2,"ok":true,"items":[],"done":1}\n')
    assert result_of(b) == {"re": 2, "ok": True, "items": ["b1", "b2"], "done": 1}


def test_error_after_some_frames_fails_the_call():
    protocol, _, _, _ = build_end()
    d = protocol.call("list")
    protocol.dataReceived(b'{"re":1,"ok":true,"more":true,"items":[1]}\n{"re":1,"ok":false,"code":"unavailable"}\n')
    with pytest.raises(Unavailable, match="request failed"):
        result_of(d)


# -- error replies


def test_error_reply_becomes_the_typed_error():
    client, _, _, _, pump, _ = build_pair()
    d = client.call("find", fname="song.ogg")
    pump.flush()
    with pytest.raises(NotFound) as caught:
        result_of(d)
    assert caught.value.code == "not-found"
    assert caught.value.message == "no file named 'song.ogg'"


def test_error_reply_is_sent_with_code_and_message():
    protocol, _, transport, _ = build_end()
    protocol.dataReceived(b'{"id":3,"op":"find","fname":"x"}\n')
    assert sent(transport) == [{"re": 3, "ok": False, "code": "not-found", "message": "no file named 'x'"}]


@pytest.mark.parametrize(
    ("code", "error"), [("conflict", Conflict), ("bad-request", BadRequest), ("no-such-code", RemoteError)]
)
def test_error_code_picks_the_error_class(code, error):
    protocol, _, _, _ = build_end()
    d = protocol.call("x")
    protocol.dataReceived(json.dumps({"re": 1, "ok": False, "code": code, "message": "m"}).encode() + b"\n")
    with pytest.raises(error) as caught:
        result_of(d)
    assert (caught.value.code, caught.value.message) == (code, "m")


def test_unknown_op_is_answered_with_code_unknown_op():
    protocol, _, transport, _ = build_end()
    protocol.dataReceived(b'{"id":2,"op":"frobnicate"}\n')
    assert sent(transport) == [{"re": 2, "ok": False, "code": "unknown-op", "message": "unknown op 'frobnicate'"}]


def test_unknown_op_fails_the_call_with_code_unknown_op():
    client, _, _, _, pump, _ = build_pair()
    d = client.call("frobnicate")
    pump.flush()
    with pytest.raises(FileshareError) as caught:
        result_of(d)
    assert (caught.value.code, caught.value.message) == ("unknown-op", "unknown op 'frobnicate'")


def test_unknown_op_fails_the_call_with_bad_request():
    client, _, _, _, pump, _ = build_pair()
    d = client.call("frobnicate")
    pump.flush()
    with pytest.raises(BadRequest):
        result_of(d)


def test_unexpected_exception_is_an_internal_error_without_details(logged):
    protocol, _, transport, _ = build_end()
    protocol.dataReceived(b'{"id":9,"op":"crash"}\n')
    assert sent(transport) == [{"re": 9, "ok": False, "code": "internal", "message": "internal error"}]
    failures = [e for e in logged if "log_failure" in e]
    assert len(failures) == 1 and failures[0]["log_failure"].check(ZeroDivisionError)


# -- bad input


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"garbage", "message is not JSON"),
        (b"\xff\xfe", "message is not UTF-8"),
        (b"[1, 2]", "message is not a JSON object"),
        (b'{"op":"echo"}', "message is neither a request nor a reply"),
    ],
)
def test_bad_line_gets_an_error_reply_to_no_request(line, reason):
    protocol, _, transport, _ = build_end()
    protocol.dataReceived(line + b"\n")
    assert sent(transport) == [{"re": None, "ok": False, "code": "bad-request", "message": reason}]
    assert not transport.disconnecting


@pytest.mark.parametrize("request_id", ['"1"', "true", "1.5", "null"])
def test_request_with_a_bad_id_is_rejected(request_id):
    protocol, ops, transport, _ = build_end()
    protocol.dataReceived(b'{"id":%s,"op":"echo"}\n' % request_id.encode())
    assert sent(transport) == [{"re": None, "ok": False, "code": "bad-request", "message": "bad 'id' or 'op'"}]
    assert ops.seen == []


def test_request_with_a_bad_op_is_rejected_naming_its_id():
    protocol, _, transport, _ = build_end()
    protocol.dataReceived(b'{"id":5,"op":7}\n')
    assert sent(transport) == [{"re": 5, "ok": False, "code": "bad-request", "message": "bad 'id' or 'op'"}]


def test_connection_stays_open_until_max_bad_messages():
    protocol, _, transport, _ = build_end()
    for _ in range(RPCProtocol.MAX_BAD_MESSAGES - 1):
        protocol.dataReceived(b"garbage\n")
    assert not transport.disconnecting
    protocol.dataReceived(b'{"id":1,"op":"echo","say":"still here"}\n')
    assert sent(transport)[-1] == {"re": 1, "ok": True, "said": "still here"}
    protocol.dataReceived(b"garbage\n")
    assert transport.disconnecting
    assert sent(transport) == [{"re": None, "ok": False, "code": "bad-request", "message": "message is not JSON"}]


def test_over_long_line_gets_an_error_and_the_connection_is_closed():
    protocol, ops, transport, _ = build_end()
    protocol.dataReceived(b'{"id":1,"op":"echo","say":"' + b"x" * framing.MAX_LINE)
    assert sent(transport) == [
        {"re": None, "ok": False, "code": "bad-request", "message": f"line longer than {framing.MAX_LINE} bytes"}
    ]
    assert transport.disconnecting
    assert ops.seen == []


def test_over_long_line_with_its_newline_is_refused_too():
    protocol, ops, transport, _ = build_end()
    protocol.dataReceived(b"x" * (framing.MAX_LINE + 1) + b'\n{"id":1,"op":"echo"}\n')
    assert [m["code"] for m in sent(transport)] == ["bad-request"]
    assert transport.disconnecting
    assert ops.seen == []


def test_reply_with_re_true_does_not_answer_request_1():
    protocol, _, _, _ = build_end()
    d = protocol.call("echo")
    protocol.dataReceived(b'{"re":true,"ok":true}\n')
    assert not d.called


# -- timeouts and lost connections


def test_call_times_out_as_unavailable():
    client, _, _, _, pump, clock = build_pair()
    d = client.call("slow", timeout=5)
    pump.flush()
    clock.advance(4.9)
    assert not d.called
    clock.advance(0.1)
    with pytest.raises(Unavailable) as caught:
        result_of(d)
    assert caught.value.message == "no answer within 5 s"


def test_late_reply_after_a_timeout_is_ignored():
    client, _, _, server_ops, pump, clock = build_pair()
    d = client.call("slow", timeout=2.5)
    pump.flush()
    clock.advance(2.5)
    with pytest.raises(Unavailable, match=r"^no answer within 2\.5 s$"):
        result_of(d)
    server_ops.slow[0].callback({"late": True})
    pump.flush()
    assert client._pending == {}
    assert not pump.clientIO.disconnecting


def test_answered_call_cancels_its_timer():
    client, _, _, _, pump, clock = build_pair()
    d = client.call("echo", timeout=5)
    pump.flush()
    assert result_of(d)["ok"] is True
    assert clock.getDelayedCalls() == []


def test_connection_lost_fails_every_pending_call_as_unavailable():
    client, _, _, _, pump, clock = build_pair()
    waiting = [client.call("slow"), client.call("slow", timeout=5)]
    pump.flush()
    pump.serverIO.loseConnection()
    pump.flush()
    for d in waiting:
        with pytest.raises(Unavailable, match="^connection lost$"):
            result_of(d)
    assert clock.getDelayedCalls() == []


def test_call_after_the_connection_is_lost_fails_as_unavailable():
    protocol, _, _, _ = build_end()
    protocol.connectionLost(Failure(ConnectionDone()))
    with pytest.raises(Unavailable, match="^not connected$"):
        result_of(protocol.call("echo"))


def test_reply_to_a_request_is_dropped_if_the_connection_is_gone():
    protocol, ops, transport, _ = build_end()
    protocol.dataReceived(b'{"id":1,"op":"slow"}\n')
    protocol.connectionLost(Failure(ConnectionDone()))
    ops.slow[0].callback({"late": True})
    assert transport.value() == b""
