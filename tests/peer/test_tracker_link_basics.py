"""TrackerLink basics: hello, login and announce, tracker requests, timeouts; on StringTransports, a fake endpoint and a Clock.

Sessions, re-login policy and takeovers are in test_tracker_link.py.
"""

import json
from typing import Any

import attrs
import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure

from fileshare import __version__
from fileshare.errors import NotLoggedIn, Unavailable
from fileshare.peer.tracker_link import ANNOUNCE_BATCH, CALL_TIMEOUT, CONNECT_TIMEOUT, TrackerLink
from fileshare.tickets import TicketKey

LISTEN_PORT = 7710
HELLO = {"id": 1, "op": "hello", "versions": [1], "software": f"fileshare/{__version__}"}
#: Longer than the first reconnection delay, jitter included (0.75 s + up to 1 s).
RECONNECT = 2.0


@attrs.frozen
class FakeEntry:
    fname: str
    size: int
    root: str


def entries(n: int) -> list[FakeEntry]:
    return [FakeEntry(f"file{i:04}.bin", i, f"{i:064x}") for i in range(n)]


class FakeRepository:
    """What TrackerLink reads of a Repository: entries() sorted by name, and by_name."""

    def __init__(self, files: list[FakeEntry]) -> None:
        self.by_name = {e.fname: e for e in files}

    def entries(self) -> list[FakeEntry]:
        return [self.by_name[name] for name in sorted(self.by_name)]


class Connection:
    """One connection the link made, seen from the tracker's end."""

    def __init__(self, proxy: Any, transport: StringTransport) -> None:
        self.proxy = proxy
        self.transport = transport

    def sent(self) -> list[dict[str, Any]]:
        """The messages the peer wrote since the last look."""
        lines = self.transport.value().split(b"\n")
        self.transport.clear()
        assert lines[-1] == b""
        return [json.loads(line) for line in lines[:-1]]

    def receive(self, **message: Any) -> None:
        self.proxy.dataReceived(json.dumps(message).encode() + b"\n")

    def reply(self, request_id: int, **fields: Any) -> None:
        self.receive(re=request_id, ok=True, **fields)

    def refuse(self, request_id: int, code: str, message: str) -> None:
        self.receive(re=request_id, ok=False, code=code, message=message)

    def lose(self) -> None:
        self.proxy.connectionLost(Failure(ConnectionDone()))


class FakeEndpoint:
    """Connects at once to a StringTransport, or refuses while ``refusing``."""

    def __init__(self) -> None:
        self.connections: list[Connection] = []
        self.refusing = False

    def connect(self, factory: Any) -> Deferred:
        if self.refusing:
            return fail(ConnectionRefusedError())
        proxy = factory.buildProtocol(None)
        transport = StringTransport()
        proxy.makeConnection(transport)
        self.connections.append(Connection(proxy, transport))
        return succeed(proxy)

    @property
    def last(self) -> Connection:
        return self.connections[-1]


def build_link(files: list[FakeEntry] | None = None) -> tuple[TrackerLink, FakeEndpoint, Clock]:
    clock = Clock()
    endpoint = FakeEndpoint()
    link = TrackerLink(endpoint, FakeRepository(files or []), clock, lambda: LISTEN_PORT)
    link.service.startService()
    return link, endpoint, clock


def build_greeted(files: list[FakeEntry] | None = None) -> tuple[TrackerLink, FakeEndpoint, Clock]:
    link, endpoint, clock = build_link(files)
    assert endpoint.last.sent() == [HELLO]
    endpoint.last.reply(1, version=1, software="fileshare/0.1.0")
    assert link.connected
    return link, endpoint, clock


def start(coroutine: Any) -> Deferred:
    return Deferred.fromCoroutine(coroutine)


def outcome(d: Deferred) -> Any:
    """What a Deferred fired with (a Failure for an error), or None if it has not fired."""
    box: list[Any] = []
    d.addBoth(box.append)
    return box[0] if box else None


def result_of(d: Deferred) -> Any:
    result = outcome(d)
    assert result is not None, "the Deferred has not fired"
    if isinstance(result, Failure):
        result.raiseException()
    return result


def logged_in(files: list[FakeEntry] | None = None) -> tuple[TrackerLink, FakeEndpoint, Clock]:
    """A greeted link logged in as alice, with a repository of at most one batch."""
    link, endpoint, clock = build_greeted(files)
    d = start(link.login("alice", "s3cret"))
    (login,) = endpoint.last.sent()
    endpoint.last.reply(login["id"], host="alice", endpoint="tcp:host=192.0.2.10:port=7710")
    (announce,) = endpoint.last.sent()
    endpoint.last.reply(announce["id"], count=len(announce["files"]))
    result_of(d)
    return link, endpoint, clock


# -- the handshake


def test_connecting_says_hello_with_the_versions_and_the_software():
    link, endpoint, _ = build_link()
    assert endpoint.last.sent() == [HELLO]
    assert not link.connected
    endpoint.last.reply(1, version=1, software="fileshare/0.1.0")
    assert link.connected
    assert link.protocol is endpoint.last.proxy._protocol


def test_refused_hello_drops_the_connection():
    link, endpoint, _ = build_link()
    endpoint.last.refuse(1, "version", "no common protocol version (tracker speaks 2)")
    assert endpoint.last.transport.disconnecting
    assert not link.connected


def test_unanswered_hello_drops_the_connection_after_the_connect_timeout():
    link, endpoint, clock = build_link()
    clock.advance(CONNECT_TIMEOUT - 0.1)
    assert not endpoint.last.transport.disconnecting
    clock.advance(0.1)
    assert endpoint.last.transport.disconnecting
    assert not link.connected


def test_a_request_made_during_the_hello_waits_for_it():
    link, endpoint, _ = build_link()
    endpoint.last.sent()
    d = start(link.call("search", pattern="*"))
    assert endpoint.last.sent() == []
    endpoint.last.reply(1, version=1)
    assert endpoint.last.sent() == [{"id": 2, "op": "search", "pattern": "*"}]
    endpoint.last.reply(2, items=[])
    assert result_of(d) == {"re": 2, "ok": True, "items": []}


# -- logging in and announcing


def test_login_sends_the_listen_port_then_announces_the_repository():
    files = entries(2)
    link, endpoint, _ = build_greeted(files)
    d = start(link.login("alice", "s3cret"))
    assert endpoint.last.sent() == [{"id": 2, "op": "login", "name": "alice", "password": "s3cret", "port": 7710}]
    endpoint.last.reply(2, host="alice", endpoint="tcp:host=192.0.2.10:port=7710")
    assert endpoint.last.sent() == [
        {
            "id": 3,
            "op": "announce",
            "files": [{"fname": e.fname, "size": e.size, "root": e.root} for e in files],
            "reset": True,
        }
    ]
    assert not d.called
    endpoint.last.reply(3, count=2)
    assert result_of(d) == 2
    assert (link.credentials, link.host) == (("alice", "s3cret"), "alice")


def test_announce_goes_in_batches_each_waiting_for_the_last_reply():
    files = entries(2 * ANNOUNCE_BATCH + 1)
    link, endpoint, _ = build_greeted(files)
    d = start(link.login("alice", "s3cret"))
    endpoint.last.sent()
    endpoint.last.reply(2, host="alice")
    batches = []
    for request_id in (3, 4, 5):
        (announce,) = endpoint.last.sent()
        assert announce["id"] == request_id
        batches.append((len(announce["files"]), announce["reset"]))
        endpoint.last.reply(request_id, count=0)
    assert batches == [(ANNOUNCE_BATCH, True), (ANNOUNCE_BATCH, False), (1, False)]
    assert endpoint.last.sent() == []
    assert result_of(d) == len(files)


def test_an_empty_repository_is_announced_as_one_empty_reset():
    link, endpoint, _ = build_greeted([])
    start(link.login("alice", "s3cret"))
    endpoint.last.sent()
    endpoint.last.reply(2, host="alice")
    assert endpoint.last.sent() == [{"id": 3, "op": "announce", "files": [], "reset": True}]


def test_failed_login_remembers_nothing():
    link, endpoint, _ = build_greeted()
    d = start(link.login("alice", "wrong"))
    endpoint.last.sent()
    endpoint.last.refuse(2, "auth", "unknown account or wrong password")
    assert outcome(d).value.message == "unknown account or wrong password"
    assert link.credentials is None
    assert endpoint.last.sent() == []


# -- reconnecting


def test_after_reconnecting_the_peer_logs_in_again_and_announces_everything():
    files = entries(3)
    link, endpoint, clock = logged_in(files)
    endpoint.last.lose()
    assert not link.connected
    clock.advance(RECONNECT)
    assert len(endpoint.connections) == 2
    again = endpoint.last
    assert again.sent() == [HELLO]
    again.reply(1, version=1)
    assert again.sent() == [{"id": 2, "op": "login", "name": "alice", "password": "s3cret", "port": 7710}]
    assert not link.connected  # ready only once logged in again
    again.reply(2, host="alice")
    (announce,) = again.sent()
    assert (announce["op"], len(announce["files"]), announce["reset"]) == ("announce", 3, True)
    again.reply(3, count=3)
    assert link.connected
    assert link.credentials == ("alice", "s3cret")


def test_failed_login_after_reconnecting_forgets_the_credentials():
    link, endpoint, clock = logged_in()
    endpoint.last.lose()
    clock.advance(RECONNECT)
    again = endpoint.last
    again.sent()
    again.reply(1, version=1)
    again.sent()
    again.refuse(2, "auth", "unknown account or wrong password")
    assert link.connected
    assert (link.credentials, link.host) == (None, None)
    assert again.sent() == []


def test_without_a_login_reconnecting_only_says_hello():
    link, endpoint, clock = build_greeted(entries(2))
    endpoint.last.lose()
    clock.advance(RECONNECT)
    endpoint.last.sent()
    endpoint.last.reply(1, version=1)
    assert link.connected
    assert endpoint.last.sent() == []


# -- requests from the tracker


def test_ping_from_the_tracker_is_answered():
    _, endpoint, _ = build_greeted()
    endpoint.last.receive(id=1, op="ping")
    assert endpoint.last.sent() == [{"re": 1, "ok": True}]


def test_list_from_the_tracker_gives_every_published_file_in_frames():
    files = entries(250)
    _, endpoint, _ = build_greeted(files)
    endpoint.last.receive(id=7, op="list")
    frames = endpoint.last.sent()
    assert [(f["re"], f.get("more"), len(f["items"])) for f in frames] == [(7, True, 200), (7, None, 50)]
    assert [item for f in frames for item in f["items"]] == [
        {"fname": e.fname, "size": e.size, "root": e.root} for e in files
    ]


def test_unknown_request_from_the_tracker_is_refused():
    _, endpoint, _ = build_greeted()
    endpoint.last.receive(id=2, op="format-disk")
    assert endpoint.last.sent() == [{"re": 2, "ok": False, "code": "unknown-op", "message": "unknown op 'format-disk'"}]


# -- calls


def test_call_unanswered_within_the_call_timeout_is_unavailable():
    link, endpoint, clock = build_greeted()
    d = start(link.call("search", pattern="*"))
    clock.advance(CALL_TIMEOUT - 0.1)
    assert not d.called
    clock.advance(0.1)
    failure = outcome(d)
    assert failure.check(Unavailable) and failure.value.message == f"no answer within {CALL_TIMEOUT:g} s"


def test_call_while_the_tracker_cannot_be_reached_is_unavailable():
    link, endpoint, clock = build_greeted()
    endpoint.refusing = True
    endpoint.last.lose()
    d = start(link.call("search", pattern="*"))
    clock.advance(RECONNECT)
    failure = outcome(d)
    assert failure.check(Unavailable)
    assert failure.value.message == "cannot reach the tracker; is it running?"


def test_authed_call_before_login_is_refused_without_asking_the_tracker():
    link, endpoint, _ = build_greeted()
    failure = outcome(start(link.authed_call("search", pattern="*")))
    assert failure.check(NotLoggedIn)
    assert endpoint.last.sent() == []


@pytest.mark.parametrize("logged", [False, True])
def test_publish_is_sent_only_when_logged_in(logged):
    link, endpoint, _ = logged_in() if logged else build_greeted()
    d = start(link.publish_fields("new.txt", 3, "ab" * 32))
    if not logged:
        assert result_of(d) is False
        assert endpoint.last.sent() == []
        return
    (publish,) = endpoint.last.sent()
    assert publish == {"id": publish["id"], "op": "publish", "fname": "new.txt", "size": 3, "root": "ab" * 32}
    endpoint.last.reply(publish["id"])
    assert result_of(d) is True


def test_logout_forgets_the_credentials_even_if_the_tracker_does_not_answer():
    link, endpoint, clock = logged_in()
    d = start(link.logout())
    (logout,) = endpoint.last.sent()
    assert logout["op"] == "logout"
    clock.advance(CALL_TIMEOUT)
    assert outcome(d).check(Unavailable)
    assert (link.credentials, link.host) == (None, None)


# -- the ticket key


def logged_in_with_key(key: str) -> tuple[TrackerLink, FakeEndpoint, Clock]:
    link, endpoint, clock = build_greeted()
    d = start(link.login("alice", "s3cret"))
    (login,) = endpoint.last.sent()
    endpoint.last.reply(login["id"], host="alice", endpoint="tcp:host=192.0.2.10:port=7710", ticket_key=key)
    (announce,) = endpoint.last.sent()
    endpoint.last.reply(announce["id"], count=0)
    result_of(d)
    return link, endpoint, clock


def test_the_login_replys_ticket_key_is_kept_in_memory_with_the_host_name():
    link, _, _ = logged_in_with_key("ab" * 32)
    assert link.ticket_key == TicketKey("alice", bytes.fromhex("ab" * 32))


@pytest.mark.parametrize("key", ["", "zz" * 32, "ab" * 4])
def test_a_missing_or_malformed_ticket_key_leaves_the_peer_without_one(key):
    link, _, _ = logged_in_with_key(key)
    assert link.host == "alice" and link.ticket_key is None


def test_the_ticket_key_is_dropped_with_the_tracker_connection_and_replaced_at_the_next_login():
    link, endpoint, clock = logged_in_with_key("ab" * 32)
    endpoint.last.lose()
    assert link.ticket_key is None
    clock.advance(RECONNECT)
    again = endpoint.last
    again.sent()
    again.reply(1, version=1)
    again.sent()
    again.reply(2, host="alice", ticket_key="cd" * 32)
    assert link.ticket_key == TicketKey("alice", bytes.fromhex("cd" * 32))


def test_the_ticket_key_carries_the_trackers_clock_offset_from_the_login_reply():
    link, endpoint, clock = build_greeted()
    clock.advance(100)
    d = start(link.login("alice", "s3cret"))
    (login,) = endpoint.last.sent()
    endpoint.last.reply(login["id"], host="alice", ticket_key="ab" * 32, time=1000.5)
    (announce,) = endpoint.last.sent()
    endpoint.last.reply(announce["id"], count=0)
    result_of(d)
    assert link.ticket_key.offset == 900.5


def test_the_ticket_key_is_dropped_at_logout():
    link, endpoint, _ = logged_in_with_key("ab" * 32)
    d = start(link.logout())
    (logout,) = endpoint.last.sent()
    endpoint.last.reply(logout["id"])
    assert d.called
    assert link.ticket_key is None


TOO_MANY = (
    "host alice may hold at most 300 files in the index (--max-records); "
    "this request would make it 400, so nothing of it was stored"
)


def indexed_only(events: list[dict[str, Any]]) -> list[str]:
    """The warnings about a partial announcement (the fake tracker's login reply draws another one)."""
    return [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn and "indexed only" in e["log_format"]]


def test_an_announce_batch_refused_for_max_records_ends_the_announcement_with_a_warning_not_the_login():
    files = entries(3 * ANNOUNCE_BATCH)
    link, endpoint, _ = build_greeted(files)
    with capturedLogs() as events:
        d = start(link.login("alice", "s3cret"))
        endpoint.last.sent()
        endpoint.last.reply(2, host="alice")
        endpoint.last.sent()
        endpoint.last.reply(3, count=ANNOUNCE_BATCH)
        (second,) = endpoint.last.sent()
        endpoint.last.refuse(second["id"], "too-many-files", TOO_MANY)
    assert endpoint.last.sent() == []
    assert result_of(d) == ANNOUNCE_BATCH
    assert link.credentials == ("alice", "s3cret")
    assert indexed_only(events) == [f"the tracker indexed only 200 of this peer's 600 files: {TOO_MANY}"]


def test_a_first_announce_batch_refused_for_max_records_is_followed_by_an_empty_reset():
    link, endpoint, _ = build_greeted(entries(ANNOUNCE_BATCH))
    with capturedLogs() as events:
        d = start(link.login("alice", "s3cret"))
        endpoint.last.sent()
        endpoint.last.reply(2, host="alice")
        endpoint.last.sent()
        endpoint.last.refuse(3, "too-many-files", TOO_MANY)
        assert endpoint.last.sent() == [{"id": 4, "op": "announce", "files": [], "reset": True}]
        endpoint.last.reply(4, count=0)
    assert result_of(d) == 0
    assert indexed_only(events) == [f"the tracker indexed only 0 of this peer's 200 files: {TOO_MANY}"]


def test_another_announce_failure_still_fails_the_login():
    link, endpoint, _ = build_greeted(entries(2))
    d = start(link.login("alice", "s3cret"))
    endpoint.last.sent()
    endpoint.last.reply(2, host="alice")
    endpoint.last.sent()
    endpoint.last.refuse(3, "bad-request", "field 'root' must be 64 lowercase hex digits")
    assert outcome(d).value.message == "field 'root' must be 64 lowercase hex digits"
