"""
Missed file notices in a group of trackers on PostgreSQL are healed at the
next heartbeat: every change of a host's files bumps its version in the
database, notices carry it, and each heartbeat compares the versions in the
database with those the index holds, re-reading only the hosts behind.
"""

from typing import Any

import psycopg
import pytest_twisted
from twisted.internet import defer
from twisted.internet.task import Clock

from fileshare.tracker.directory import Directory
from fileshare.tracker.index_coherence import MAX_MISS_CHECKS
from fileshare.tracker.store import FileRecord

from . import _pg_group
from ._pg_fixture import pg_database  # noqa: F401
from .test_cluster_pg import HEARTBEAT, ROOT, Channel, fast_hashing, until  # noqa: F401

group = _pg_group.group


async def login(directory: Directory, name: str) -> Any:
    return await directory.login(name, f"{name}-pw", Channel(), "tcp:host=127.0.0.1:port=7710", where="127.0.0.1:7710")


def beat_on_a_clock(directory: Directory) -> Clock:
    """The tracker's heartbeats from now on come when the test advances the clock answered."""
    clock = Clock()
    heartbeat = directory.cluster._heartbeat
    heartbeat.stop()
    heartbeat.clock = clock
    heartbeat.start(HEARTBEAT, now=False)
    return clock


def reads_of(directory: Directory, monkeypatch: Any) -> list[str]:
    """The hosts whose files *directory* reads from its store, one entry per read ("*" for the whole index)."""
    reads: list[str] = []
    read = directory.store.versioned_host_files

    def recording(host: str) -> Any:
        reads.append(host)
        return read(host)

    holdings = directory.store.holdings

    def whole(*args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return holdings(*args, **kwargs)  # one name's holders: a lookup that found none online
        reads.append("*")
        return defer.fail(AssertionError("the whole index was read again"))

    monkeypatch.setattr(directory.store, "versioned_host_files", recording)
    monkeypatch.setattr(directory.store, "versioned_holdings", whole)
    monkeypatch.setattr(directory.store, "holdings", whole)
    return reads


async def found(directory: Directory, fname: str) -> tuple[list[str], list[tuple[str, int, int]]]:
    """Who *directory* gives as sources of *fname*, and what its search finds of it."""
    sources = [h.host for h, _ in await directory.sources(fname, "bob")]
    summaries = [(s.fname, s.online, s.holders) for s in (await directory.search(fname)).items]
    return sources, summaries


@pytest_twisted.ensureDeferred
async def test_a_change_written_without_a_notice_reaches_the_other_tracker_at_its_next_heartbeat(
    group,
    pg_database,  # noqa: F811
    monkeypatch,
):
    a = group.trackers[0]
    b = await group.start("tracker-B")
    await login(a, "alice")
    await until(b, lambda: "alice" in b.cluster.remote)
    clock = beat_on_a_clock(b)
    reads = reads_of(b, monkeypatch)
    with psycopg.connect(pg_database) as conn:  # a change and its version, as the store writes them, but no NOTIFY
        conn.execute("INSERT INTO files (host, fname, size, root) VALUES ('alice', 'quiet.txt', 5, %s)", (ROOT,))
        conn.execute("INSERT INTO file_versions (host, version) VALUES ('alice', 1)")
    clock.advance(HEARTBEAT - 0.01)
    assert ((await b.search("quiet.txt")).items, b.index.count("alice")) == ([], 0)
    clock.advance(0.01)
    await until(b, lambda: b.index.count("alice") == 1)
    assert await found(b, "quiet.txt") == (["alice"], [("quiet.txt", 1, 1)])
    assert (reads, b.versions["alice"]) == (["alice"], 1)


@pytest_twisted.ensureDeferred
async def test_a_files_notice_lost_on_its_way_is_healed_by_the_next_heartbeat(group, monkeypatch):
    a = group.trackers[0]
    b = await group.start("tracker-B")
    await login(a, "alice")
    await until(b, lambda: "alice" in b.cluster.remote)
    clock = beat_on_a_clock(b)
    reads = reads_of(b, monkeypatch)
    lost: list[tuple[str, int]] = []
    monkeypatch.setattr(
        a.cluster, "files_changed", lambda host, version=None: defer.succeed(lost.append((host, version)))
    )
    await a.publish("alice", FileRecord("notes.txt", 5, ROOT))
    await a.publish("alice", FileRecord("talk.iso", 7, ROOT))
    assert lost == [("alice", 1), ("alice", 2)]
    assert ((await b.search("*")).items, reads) == ([], [])
    clock.advance(HEARTBEAT)
    await until(b, lambda: b.index.count("alice") == 2)
    assert await found(b, "notes.txt") == (["alice"], [("notes.txt", 1, 1)])
    assert await found(b, "talk.iso") == (["alice"], [("talk.iso", 1, 1)])
    assert reads == ["alice"]


@pytest_twisted.ensureDeferred
async def test_a_notice_after_a_missed_one_reads_the_host_with_both_changes(
    group,
    pg_database,  # noqa: F811
    monkeypatch,
):
    a = group.trackers[0]
    b = await group.start("tracker-B")
    await login(a, "alice")
    await until(b, lambda: "alice" in b.cluster.remote)
    beat_on_a_clock(b)  # and never advanced: only the notice can bring the changes
    with psycopg.connect(pg_database) as conn:
        conn.execute("INSERT INTO files (host, fname, size, root) VALUES ('alice', 'quiet.txt', 5, %s)", (ROOT,))
        conn.execute("INSERT INTO file_versions (host, version) VALUES ('alice', 1)")
    await a.publish("alice", FileRecord("notes.txt", 5, ROOT))  # version 2: the notice of version 1 never came
    await until(b, lambda: b.index.count("alice") == 2)
    assert ([s.fname for s in (await b.search("*")).items], b.versions["alice"]) == (["notes.txt", "quiet.txt"], 2)


@pytest_twisted.ensureDeferred
async def test_the_writer_and_a_tracker_that_had_the_notice_read_nothing_at_the_heartbeat(group, monkeypatch):
    a = group.trackers[0]
    b = await group.start("tracker-B")
    await login(a, "alice")
    await a.publish("alice", FileRecord("notes.txt", 5, ROOT))
    await until(b, lambda: b.index.count("alice") == 1)
    assert (a.versions["alice"], b.versions["alice"]) == (1, 1)
    reads = reads_of(a, monkeypatch) + reads_of(b, monkeypatch)
    assert (await a.check_versions(), await b.check_versions()) == (0, 0)
    assert b.files_changed("alice", 1) is None  # a notice the index holds already: nothing to read
    assert reads == []


@pytest_twisted.ensureDeferred
async def test_a_reopened_listen_connection_reads_only_the_hosts_that_changed_meanwhile(group, monkeypatch):
    a = group.trackers[0]
    b = await group.start("tracker-B")
    await login(a, "alice")
    await login(a, "bob")
    await a.publish("bob", FileRecord("old.txt", 5, ROOT))
    await until(b, lambda: b.index.count("bob") == 1)
    clock = beat_on_a_clock(b)
    reads = reads_of(b, monkeypatch)
    lost = b.cluster._listener
    b.cluster._listener_lost("test: connection reset")  # b hears nothing until its next heartbeat reopens it
    lost.conn.close()
    await a.publish("alice", FileRecord("missed.txt", 5, ROOT))
    clock.advance(HEARTBEAT)
    await until(b, lambda: b.index.count("alice") == 1)
    assert b.cluster._listener is not None
    assert ([s.fname for s in (await b.search("*")).items], reads) == (["missed.txt", "old.txt"], ["alice"])


@pytest_twisted.ensureDeferred
async def test_a_change_whose_version_cannot_be_read_is_still_answered_and_told_without_its_version(group, monkeypatch):
    a = group.trackers[0]
    b = await group.start("tracker-B")
    await login(a, "alice")
    told: list[tuple[str, Any]] = []
    send = a.cluster.files_changed
    monkeypatch.setattr(a.store, "file_version", lambda host: defer.fail(psycopg.OperationalError("connection lost")))
    monkeypatch.setattr(a.cluster, "files_changed", lambda host, *v: told.append((host, v)) or send(host, *v))
    await a.publish("alice", FileRecord("notes.txt", 5, ROOT))
    await until(b, lambda: b.index.count("alice") == 1)
    assert (told, "alice" in a.versions, b.versions["alice"]) == ([("alice", ())], False, 1)


@pytest_twisted.ensureDeferred
async def test_a_sources_that_comes_before_the_notice_of_its_file_finds_the_holder_in_the_store(group, monkeypatch):
    a = group.trackers[0]
    b = await group.start("tracker-B")
    await login(a, "alice")
    await login(b, "bob")
    await until(b, lambda: "alice" in b.cluster.remote)
    beat_on_a_clock(b)  # never advanced: no heartbeat heals it first
    late: list[str] = []
    monkeypatch.setattr(a.cluster, "files_changed", lambda host, version=None: defer.succeed(late.append(host)))
    await a.publish("alice", FileRecord("notes.txt", 5, ROOT))  # its notice is still on its way to b
    assert [(h.host, h.fname) for h, _ in await b.sources("notes.txt", "bob")] == [("alice", "notes.txt")]
    assert (late, b.index.count("alice"), await b.sources("nothing.txt", "bob")) == (["alice"], 1, [])


@pytest_twisted.ensureDeferred
async def test_a_tracker_with_no_host_online_elsewhere_answers_a_miss_without_asking_the_store(group, monkeypatch):
    a = group.trackers[0]
    await login(a, "alice")
    monkeypatch.setattr(a.store, "holdings", lambda *args, **kwargs: defer.fail(AssertionError("asked the store")))
    assert await a.sources("nothing.txt", "alice") == []


@pytest_twisted.ensureDeferred
async def test_misses_past_the_bound_are_answered_without_queueing_more_store_checks(group, monkeypatch):
    a = group.trackers[0]
    b = await group.start("tracker-B")
    await login(a, "alice")
    await login(b, "bob")
    await until(b, lambda: "alice" in b.cluster.remote)
    asked: list[defer.Deferred] = []

    def holdings(*args: Any, **kwargs: Any) -> defer.Deferred:
        asked.append(defer.Deferred())
        return asked[-1]

    monkeypatch.setattr(b.store, "holdings", holdings)
    waiting = [defer.ensureDeferred(b.sources(f"nothing-{i}.txt", "bob")) for i in range(MAX_MISS_CHECKS)]
    assert (len(asked), [d.called for d in waiting]) == (MAX_MISS_CHECKS, [False] * MAX_MISS_CHECKS)
    assert await b.sources("one-more.txt", "bob") == []  # answered at once, the store not asked
    assert len(asked) == MAX_MISS_CHECKS
    for d in asked:
        d.callback([])
    assert [await d for d in waiting] == [[]] * MAX_MISS_CHECKS
    asked.clear()
    after = defer.ensureDeferred(b.sources("after.txt", "bob"))
    assert len(asked) == 1  # the bound is given back: the store is asked again
    asked[0].callback([])
    assert await after == []
