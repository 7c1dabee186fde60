"""The lines a fetch leaves in the log: one when it starts, one when it ends (how, how fast, from whom)."""

import pytest
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, capturedLogs, formatEvent

from fileshare.errors import Unavailable
from fileshare.peer.repository import Entry

from .fakes import FakeConnection
from .test_node import DATA, ROOT, build, endpoint, entry, error_of, fetch, item, outcome


def lines(events: list[dict], level: LogLevel | None = None) -> list[str]:
    """The node's own lines, as the log file shows them."""
    return [
        formatEvent(e)
        for e in events
        if e.get("log_namespace") == "fileshare.peer.node" and (level is None or e["log_level"] == level)
    ]


def test_a_fetch_logs_its_start_with_the_sources_offered_and_its_end_with_those_that_delivered(tmp_path):
    t = build(tmp_path, [item("alice"), item("carol")], alice={"auto": False}, carol={"auto": False})

    with capturedLogs() as events:
        d = fetch(t)
        t.threads.run()
        t.reactor.advance(2.0)
        while not d.called:
            for connection in [c for host in ("alice", "carol") for c in t.pool.made[endpoint(host)]]:
                connection.serve()
            t.threads.run()
        outcome(d)

    assert lines(events) == [
        f"fetching 'data.bin' ({len(DATA)} bytes) from 2 sources: alice, carol",
        # alice's pipeline took all three pieces before carol was asked for any.
        f"fetched 'data.bin' ({len(DATA)} bytes) in 2.00 s at 1.0 MiB/s from alice",
    ]
    (started, finished) = [e for e in events if e.get("log_namespace") == "fileshare.peer.node"]
    assert (started["root"], finished["root"], finished["downloaded"]) == (ROOT, ROOT, len(DATA))
    assert all(e["log_level"] == LogLevel.info for e in (started, finished))


def test_a_fetch_from_one_source_says_source_not_sources(tmp_path):
    t = build(tmp_path, [item("alice")], alice={})

    with capturedLogs() as events:
        d = fetch(t)
        t.threads.run()
        outcome(d)

    assert lines(events)[0] == f"fetching 'data.bin' ({len(DATA)} bytes) from 1 source: alice"
    assert lines(events)[1].endswith(" s at - from alice")  # no time passed on the test clock


def test_a_fetch_that_fails_logs_a_warning_with_the_reason_the_console_gets(tmp_path):
    t = build(tmp_path, [item("alice")])
    t.pool.add(
        endpoint("alice"), lambda: FakeConnection(t.reactor, DATA, endpoint("alice"), pieces_reply=Unavailable("x"))
    )

    with capturedLogs() as events:
        d = fetch(t)
        error = error_of(d, Unavailable)

    assert lines(events, LogLevel.warn) == [f"fetch of 'data.bin' failed after 0.0 s: {error.message}"]
    assert error.message == "no source gave a valid piece list (alice: x)"


def test_a_cancelled_fetch_logs_one_info_line(tmp_path):
    t = build(tmp_path, [item("alice")], alice={"auto": False})

    with capturedLogs() as events:
        d = fetch(t)
        t.threads.run()
        t.reactor.advance(1.5)
        Deferred.fromCoroutine(t.peer.cancel("data.bin"))
        t.threads.run()
        outcome(d)

    assert lines(events)[1:] == ["fetch of 'data.bin' cancelled after 1.5 s"]
    assert lines(events, LogLevel.warn) == []


@pytest.mark.parametrize("told, note", [(True, ""), (False, " (the tracker is told at the next login)")])
def test_publish_logs_the_name_size_and_path(tmp_path, told, note):
    t = build(tmp_path)

    async def publish(local_path: str, fname: str) -> Entry:
        return entry(fname)

    async def tell(e: Entry) -> bool:
        if not told:
            raise Unavailable("not connected to the tracker")
        return True

    t.repo.publish, t.tracker.publish = publish, tell

    with capturedLogs() as events:
        outcome(Deferred.fromCoroutine(t.peer.publish("/home/me/lecture 1.pdf", "lecture 1.pdf")))

    assert lines(events) == [f"published 'lecture 1.pdf' ({len(DATA)} bytes) from /home/me/lecture 1.pdf{note}"]
