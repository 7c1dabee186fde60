"""The tracker link over several trackers: it moves to the next one and logs in again there."""

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent

from fileshare.errors import Unavailable
from fileshare.peer.tracker_endpoint import TrackerEndpoints
from fileshare.peer.tracker_link import CALL_TIMEOUT, TrackerLink

from .test_tracker_link_basics import HELLO, LISTEN_PORT, Connection, FakeRepository, outcome


class FakeTracker:
    """One tracker of the group: connects at once to a StringTransport, or refuses while ``refusing``."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.problem: str | None = None
        self.refusing = False
        self.connections: list[Connection] = []

    def connect(self, factory: Any) -> Deferred:
        if self.refusing:
            return fail(ConnectionRefusedError())
        proxy = factory.buildProtocol(None)
        transport = StringTransport()
        proxy.makeConnection(transport)
        self.connections.append(Connection(proxy, transport))
        return succeed(proxy)

    def report(self, problem: str | None) -> None:
        self.problem = problem

    @property
    def last(self) -> Connection:
        return self.connections[-1]


def greet(connection: Connection) -> None:
    assert connection.sent() == [HELLO]
    connection.reply(1, version=1, software="fileshare/0.1.0")


def log_in(link: TrackerLink, connection: Connection, session: str) -> None:
    d = Deferred.fromCoroutine(link.login("alice", "s3cret"))
    (login,) = connection.sent()
    connection.reply(login["id"], host="alice", session=session, ticket_key="00" * 32)
    (announce,) = connection.sent()
    connection.reply(announce["id"], count=0)
    assert d.called


def build(count: int = 2) -> tuple[TrackerLink, list[FakeTracker], Clock]:
    clock = Clock()
    trackers = [FakeTracker(f"127.0.0.1:{7700 + i}") for i in range(count)]
    link = TrackerLink(TrackerEndpoints(trackers, clock), FakeRepository([]), clock, lambda: LISTEN_PORT)
    link.service.startService()
    greet(trackers[0].last)
    log_in(link, trackers[0].last, "s1")
    return link, trackers, clock


def test_after_its_tracker_goes_away_the_link_logs_in_again_on_the_next_one_with_the_session_secret():
    link, (first, second), clock = build()
    first.refusing = True
    first.last.lose()
    clock.advance(60)  # ClientService's backoff before reconnecting

    greet(second.last)
    (login,) = second.last.sent()
    second.last.reply(login["id"], host="alice", session="s2", ticket_key="11" * 32)
    (announce,) = second.last.sent()

    assert (login["op"], login["name"], login["password"], login["session"]) == ("login", "alice", "s3cret", "s1")
    assert (announce["op"], announce["reset"]) == ("announce", True)
    second.last.reply(announce["id"], count=0)
    assert link.describe() == "logged in as alice"
    assert link.where() == "tracker at 127.0.0.1:7701 (2 of 2 in --tracker)"
    assert link.session == "s2" and link.ticket_key.key == bytes.fromhex("11" * 32)


def test_a_tracker_that_leaves_a_request_unanswered_is_left_for_the_next_one():
    link, (first, second), clock = build()
    d = Deferred.fromCoroutine(link.call("search", pattern="*"))
    first.last.sent()

    with capturedLogs() as events:
        clock.advance(CALL_TIMEOUT)

    assert outcome(d).check(Unavailable)
    assert first.last.transport.disconnecting
    assert [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn] == [
        "the tracker at 127.0.0.1:7700 (1 of 2 in --tracker) did not answer search within 30 s; "
        "leaving it for the next tracker"
    ]


def test_a_lone_tracker_that_leaves_a_request_unanswered_keeps_its_connection():
    link, (only,), clock = build(1)
    d = Deferred.fromCoroutine(link.call("search", pattern="*"))

    clock.advance(CALL_TIMEOUT)

    assert outcome(d).check(Unavailable)
    assert not only.last.transport.disconnecting
    assert link.connected


def test_unanswered_trackers_are_logged_at_most_once_a_minute():
    link, (first, second), clock = build()
    with capturedLogs() as events:
        for tracker in (first, second):
            d = Deferred.fromCoroutine(link.call("search", pattern="*"))
            clock.advance(CALL_TIMEOUT)
            outcome(d)
            tracker.last.lose()
            clock.advance(2)  # ClientService's first backoff (0.5 s plus up to 1 s of jitter), then the next tracker
            other = second if tracker is first else first
            greet(other.last)
            (login,) = other.last.sent()
            other.last.reply(login["id"], host="alice", session="s", ticket_key="00" * 32)
            (announce,) = other.last.sent()
            other.last.reply(announce["id"], count=0)

    assert [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn] == [
        "the tracker at 127.0.0.1:7700 (1 of 2 in --tracker) did not answer search within 30 s; "
        "leaving it for the next tracker"
    ]
    assert link.where() == "tracker at 127.0.0.1:7700 (1 of 2 in --tracker)"
