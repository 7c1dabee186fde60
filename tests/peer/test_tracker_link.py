"""The peer's side of the tracker connection: re-login rules, on StringTransport and a Clock."""

import json
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import ensureDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.test import iosim

from fileshare.peer.tracker_link import CALL_TIMEOUT, TrackerLink
from fileshare.peer.tracker_protocol import TrackerClientProtocol
from fileshare.tracker import directory as directory_module
from fileshare.tracker import passwords
from fileshare.tracker.directory import Directory
from fileshare.tracker.memory_store import MemoryTrackerStore
from fileshare.tracker.protocol import TrackerServerProtocol


class EmptyRepository:
    by_name: dict[str, Any] = {}

    def entries(self) -> list[Any]:
        return []


class Tracker:
    """One connection of the link, with the test playing the tracker."""

    def __init__(self, link: TrackerLink) -> None:
        self.protocol = TrackerClientProtocol(link)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def sent(self) -> list[dict[str, Any]]:
        """What the peer wrote since the last look."""
        lines = self.transport.value().split(b"\n")[:-1]
        self.transport.clear()
        return [json.loads(line) for line in lines]

    def ops(self) -> list[str]:
        return [m.get("op", "reply") for m in self.sent()]

    def reply(self, request_id: int, **fields: Any) -> None:
        self.protocol.dataReceived(json.dumps({"re": request_id, "ok": True, **fields}).encode() + b"\n")

    def refuse(self, request_id: int, code: str, message: str) -> None:
        self.protocol.dataReceived(
            json.dumps({"re": request_id, "ok": False, "code": code, "message": message}).encode() + b"\n"
        )

    def request(self, op: str, **fields: Any) -> None:
        self.protocol.dataReceived(json.dumps({"id": 900, "op": op, **fields}).encode() + b"\n")

    def greet(self) -> None:
        (hello,) = self.sent()
        assert hello["op"] == "hello"
        self.reply(hello["id"], version=1)

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def build_link(port: int = 7710) -> TrackerLink:
    return TrackerLink(None, EmptyRepository(), Clock(), lambda: port)


def logged_in_link() -> tuple[TrackerLink, Tracker]:
    """A link whose user logged in as alice on a first connection."""
    link = build_link()
    tracker = Tracker(link)
    tracker.greet()
    link.protocol = tracker.protocol
    done = ensureDeferred(link.login("alice", "pw"))
    (login,) = tracker.sent()
    tracker.reply(login["id"], host="alice", endpoint="tcp:host=127.0.0.1:port=7710", session="s1")
    (announce,) = tracker.sent()
    tracker.reply(announce["id"], count=0)
    assert done.called
    return link, tracker


def reconnect(link: TrackerLink, old: Tracker) -> Tracker:
    old.lose()
    tracker = Tracker(link)
    tracker.greet()
    return tracker


def test_a_reconnect_logs_in_again_with_the_session_secret():
    link, first = logged_in_link()
    second = reconnect(link, first)
    (login,) = second.sent()
    assert (login["op"], login["name"], login["password"], login["session"]) == ("login", "alice", "pw", "s1")
    assert "replace" not in login


def test_a_replaced_session_is_remembered_and_not_logged_in_again():
    link, first = logged_in_link()
    ended = link.when_ended()
    first.request("ended", code="replaced", reason="alice logged in from 127.0.0.1:7720 with --replace")
    assert first.sent() == [{"re": 900, "ok": True}]
    assert ended.result == "alice logged in from 127.0.0.1:7720 with --replace"
    assert link.credentials is None
    assert link.describe() == (
        "not logged in: the tracker ended the session: alice logged in from 127.0.0.1:7720 with --replace"
    )
    second = reconnect(link, first)
    link.clock.advance(3600)
    assert second.sent() == []


def test_an_ended_message_on_an_old_connection_is_ignored():
    link, first = logged_in_link()
    stale = first.protocol
    second = reconnect(link, first)
    second.sent()
    TrackerClientProtocol.session_ended(stale, {"code": "replaced", "reason": "x"})
    assert link.credentials == ("alice", "pw")


def test_a_timed_out_relogin_keeps_the_credentials_and_retries_with_backoff():
    link, first = logged_in_link()
    second = reconnect(link, first)
    assert second.ops() == ["login"]
    link.clock.advance(CALL_TIMEOUT)
    assert link.credentials == ("alice", "pw")
    assert link.describe() == "logging in again as alice (last try: no answer within 30 s)"
    link.clock.advance(0.75)
    assert second.sent() == []
    link.clock.advance(0.25)
    assert second.ops() == ["login"]
    link.clock.advance(CALL_TIMEOUT)
    link.clock.advance(1.75)
    assert second.sent() == []
    link.clock.advance(0.25)
    (login,) = second.sent()
    second.reply(login["id"], host="alice", session="s2")
    (announce,) = second.sent()
    second.reply(announce["id"], count=0)
    assert link.describe() == "logged in as alice"
    assert link.session == "s2"


def test_a_throttled_relogin_is_retried():
    link, first = logged_in_link()
    second = reconnect(link, first)
    (login,) = second.sent()
    second.refuse(login["id"], "throttled", "too many password checks at once from 127.0.0.1; wait for their answers")
    assert link.credentials == ("alice", "pw")
    link.clock.advance(1)
    assert second.ops() == ["login"]


def test_a_relogin_lost_with_its_connection_keeps_the_credentials_for_the_next_one():
    link, first = logged_in_link()
    second = reconnect(link, first)
    second.sent()
    third = reconnect(link, second)
    assert link.credentials == ("alice", "pw")
    assert third.ops() == ["login"]


def test_a_relogin_refused_for_the_password_forgets_the_credentials():
    link, first = logged_in_link()
    second = reconnect(link, first)
    (login,) = second.sent()
    second.refuse(login["id"], "auth", "unknown account or wrong password")
    assert link.credentials is None
    assert link.describe() == "not logged in"
    link.clock.advance(3600)
    assert second.sent() == []


def test_a_relogin_refused_because_the_account_is_online_elsewhere_stops_and_says_why():
    link, first = logged_in_link()
    second = reconnect(link, first)
    (login,) = second.sent()
    second.refuse(
        login["id"], "online-elsewhere", "alice is already logged in from 127.0.0.1:7720; use login --replace"
    )
    link.clock.advance(3600)
    assert second.sent() == []
    assert link.describe().startswith("not logged in: the tracker ended the session: alice is already logged in")


def test_login_with_replace_sends_the_replace_field():
    link = build_link()
    tracker = Tracker(link)
    tracker.greet()
    ensureDeferred(link.login("alice", "pw", replace=True))
    (login,) = tracker.sent()
    assert login["replace"] is True


def test_passwd_makes_relogins_use_the_new_password():
    link, first = logged_in_link()
    done = ensureDeferred(link.passwd("pw", "n3w"))
    (passwd,) = first.sent()
    assert (passwd["op"], passwd["old"], passwd["new"]) == ("passwd", "pw", "n3w")
    first.reply(passwd["id"])
    assert done.called
    assert link.credentials == ("alice", "n3w")


# -- against the real tracker protocol, in memory


def build_tracker_directory(monkeypatch) -> Directory:
    monkeypatch.setattr(directory_module, "deferToThreadPool", lambda r, t, f, *a: defer.maybeDeferred(f, *a))
    directory = Directory(MemoryTrackerStore(), Clock(), reactor=None, threadpool=None)
    ensureDeferred(directory.store.create_account("alice", passwords.hash_password("pw", n=16, r=1, p=1)))
    return directory


def connect(link: TrackerLink, directory: Directory, port: int) -> iosim.IOPump:
    """A connection from *link* to the tracker, greeted; returns the pump."""
    server = TrackerServerProtocol(directory)
    client = TrackerClientProtocol(link)
    pump = iosim.connect(
        server,
        iosim.FakeTransport(server, isServer=True, peerAddress=IPv4Address("TCP", "127.0.0.1", port)),
        client,
        iosim.FakeTransport(client, isServer=False),
    )
    pump.flush()
    return pump


def test_two_peers_sharing_an_account_do_not_fight_over_it(monkeypatch):
    directory = build_tracker_directory(monkeypatch)
    first, second = build_link(7710), build_link(7720)
    first_pump = connect(first, directory, 40001)
    second_pump = connect(second, directory, 40002)

    ensureDeferred(first.login("alice", "pw"))
    first_pump.flush()
    refused = ensureDeferred(second.login("alice", "pw"))
    second_pump.flush()
    assert refused.result.value.code == "online-elsewhere"
    refused.addErrback(lambda _: None)

    ensureDeferred(second.login("alice", "pw", replace=True))
    second_pump.flush()
    first_pump.flush()
    assert first.ended_reason == "alice logged in from 127.0.0.1:7720 with --replace"

    # The first peer's link reconnects, as its ClientService would, and stays quiet.
    for _ in range(3):
        pump = connect(first, directory, 40003)
        first.clock.advance(3600)
        pump.flush()
        assert directory.online["alice"].where == "127.0.0.1:7720"
        assert second.credentials == ("alice", "pw")
        assert first.credentials is None
    assert directory.stats.logins.total == 2


class StubEndpoint:
    """Connects at once over a StringTransport, noting every connection (the proxy ClientService built)."""

    def __init__(self) -> None:
        self.connections: list[tuple[Any, StringTransport]] = []

    def connect(self, factory: Any) -> defer.Deferred:
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 7700))
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.connections.append((protocol, transport))
        return defer.succeed(protocol)

    def answer_hello(self) -> None:
        protocol, transport = self.connections[-1]
        (hello,) = [json.loads(line) for line in transport.value().split(b"\n")[:-1]]
        transport.clear()
        protocol.dataReceived(json.dumps({"re": hello["id"], "ok": True, "version": 1}).encode() + b"\n")


def test_a_link_nobody_logged_in_on_rests_when_the_tracker_drops_it_for_the_login_deadline():
    endpoint = StubEndpoint()
    clock = Clock()
    link = TrackerLink(endpoint, EmptyRepository(), clock, lambda: 7710)
    link.service.startService()
    endpoint.answer_hello()
    protocol, _ = endpoint.connections[0]

    timeout = {"re": None, "ok": False, "code": "timeout", "message": "did not log in within 30 s of connecting"}
    protocol.dataReceived(json.dumps(timeout).encode() + b"\n")
    protocol.connectionLost(Failure(ConnectionDone()))
    clock.advance(3600)

    assert len(endpoint.connections) == 1  # no reconnect loop
    assert link.resting and "not logged in" == link.describe()

    asked = ensureDeferred(link.call("register", name="alice", password="pw"))
    clock.advance(0)
    assert len(endpoint.connections) == 2  # a command wakes it
    assert not link.resting
    endpoint.answer_hello()
    protocol, transport = endpoint.connections[1]
    (register,) = [json.loads(line) for line in transport.value().split(b"\n")[:-1]]
    assert register["op"] == "register"
    protocol.dataReceived(json.dumps({"re": register["id"], "ok": True}).encode() + b"\n")
    assert asked.result == {"re": register["id"], "ok": True}


def test_a_logged_in_link_keeps_reconnecting_whatever_the_tracker_says():
    endpoint = StubEndpoint()
    clock = Clock()
    link = TrackerLink(endpoint, EmptyRepository(), clock, lambda: 7710)
    link.credentials = ("alice", "pw")
    link.service.startService()
    protocol, _ = endpoint.connections[0]

    timeout = {"re": None, "ok": False, "code": "timeout", "message": "no hello"}
    protocol.dataReceived(json.dumps(timeout).encode() + b"\n")
    protocol.connectionLost(Failure(ConnectionDone()))
    clock.advance(5)

    assert not link.resting
    assert len(endpoint.connections) == 2
