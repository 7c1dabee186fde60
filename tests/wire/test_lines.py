"""MessageReceiver: the JSON-lines framing every fileshare protocol is built on, on StringTransport."""

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from fileshare.errors import BadRequest, NotFound
from fileshare.wire.lines import MessageReceiver


class Recorder(MessageReceiver):
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.bad: list[str] = []

    def messageReceived(self, message: dict[str, Any]) -> None:
        self.received.append(message)

    def badMessage(self, error: BadRequest) -> None:
        self.bad.append(error.message)


def build() -> tuple[Recorder, StringTransport]:
    protocol, transport = Recorder(), StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


def test_each_line_is_one_message_in_order():
    protocol, _ = build()
    protocol.dataReceived(b'{"a":1}\n{"b":')
    protocol.dataReceived(b'[2]}\r\n{"c":"\xc3\xa9"}\n')
    assert protocol.received == [{"a": 1}, {"b": [2]}, {"c": "é"}]
    assert protocol.bad == []


def test_lines_that_are_not_json_objects_are_bad_messages_and_reading_goes_on():
    protocol, _ = build()
    protocol.dataReceived(b'garbage\n\xff\n[1]\n{"ok":true}\n')
    assert protocol.bad == ["message is not JSON", "message is not UTF-8", "message is not a JSON object"]
    assert protocol.received == [{"ok": True}]


def test_messages_are_sent_as_compact_lines():
    protocol, transport = build()
    protocol.sendMessage({"op": "hello", "versions": [1]})
    assert transport.value() == b'{"op":"hello","versions":[1]}\n'


def test_an_error_is_sent_after_its_envelope():
    protocol, transport = build()
    protocol.sendError(NotFound("gone"), re=4)
    protocol.sendError(BadRequest("no"))
    assert transport.value() == (
        b'{"re":4,"ok":false,"code":"not-found","message":"gone"}\n{"ok":false,"code":"bad-request","message":"no"}\n'
    )


def test_nothing_is_sent_once_the_connection_is_lost():
    protocol, transport = build()
    protocol.connectionLost(Failure(ConnectionDone()))
    protocol.sendMessage({"late": True})
    assert transport.value() == b""
