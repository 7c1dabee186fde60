"""
Two directories in one process, each with its own PostgresCluster on one
throwaway PostgreSQL database (tests/tracker/_pg_fixture.py), sharing an
in-memory store for accounts and the index: the group's rules, checked by
what each tracker sees.  Waits are on the clusters' change events, bounded.
"""

import time
from typing import Any

import psycopg
import pytest
import pytest_twisted
from twisted.internet import defer, reactor

from fileshare import tickets
from fileshare.errors import OnlineElsewhere, Unavailable
from fileshare.tracker import directory as directory_module
from fileshare.tracker import passwords
from fileshare.tracker.directory import Directory
from fileshare.tracker.memory_store import MemoryTrackerStore
from fileshare.tracker.pg_cluster import RELOAD_EVERY, SESSIONS_CHANNEL, PostgresCluster
from fileshare.tracker.store import FileRecord

from ._pg_fixture import pg_conninfo, pg_database  # noqa: F401

ROOT = "b" * 64
HEARTBEAT = 0.2
DEAD_AFTER = 1.0


class Channel:
    """A host connection on one tracker: records what was done to it and answers ``call``."""

    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.answers = {"ping": {}} if answers is None else answers
        self.ended: list[tuple[str, str]] = []
        self.disconnected = False
        self.calls: list[str] = []

    def call(self, op: str, timeout: float | None = None, **fields: Any) -> defer.Deferred:
        self.calls.append(op)
        if op not in self.answers:
            return defer.Deferred()  # a host that never answers
        return defer.succeed(self.answers[op])

    def disconnect(self) -> None:
        self.disconnected = True

    def end_session(self, code: str, reason: str) -> None:
        self.ended.append((code, reason))
        self.disconnected = True


async def until(directory: Directory, predicate: Any, timeout: float = 5.0) -> None:
    """Wait for the cluster of *directory* to see *predicate* become true (its change events), at most *timeout*."""
    if predicate():
        return
    d: defer.Deferred = defer.Deferred()

    def check() -> None:
        if not d.called and predicate():
            d.callback(None)

    directory.cluster.watchers.append(check)
    d.addTimeout(timeout, reactor)
    try:
        await d
    finally:
        directory.cluster.watchers.remove(check)


@pytest.fixture
def fast_hashing(monkeypatch):
    monkeypatch.setattr(directory_module, "deferToThreadPool", lambda r, p, f, *a: defer.maybeDeferred(f, *a))
    original = passwords.hash_password
    monkeypatch.setattr(passwords, "hash_password", lambda password: original(password, n=16, r=1, p=1))


@pytest_twisted.async_yield_fixture
async def group(pg_database, fast_hashing):  # noqa: F811
    store = MemoryTrackerStore()
    trackers = []
    for name in ("A", "B"):
        cluster = PostgresCluster(
            pg_database, reactor, name=f"tracker-{name}", heartbeat=HEARTBEAT, dead_after=DEAD_AFTER
        )
        await cluster.start()
        trackers.append(Directory(store, reactor, reactor, None, cluster=cluster))
    for name in ("alice", "bob"):
        await trackers[0].register(name, f"{name}-pw")
    try:
        yield trackers
    finally:
        for d in trackers:
            if not d.cluster._stopping:
                await d.cluster.stop()


async def login(directory: Directory, name: str, channel: Channel | None = None, **kwargs: Any) -> Any:
    channel = channel or Channel()
    port = 7710 if name == "alice" else 7720
    return await directory.login(
        name,
        f"{name}-pw",
        channel,
        f"tcp:host=127.0.0.1:port={port}",
        where=f"127.0.0.1:{port}",
        transfer_address={"host": "127.0.0.1", "port": port},
        **kwargs,
    )


@pytest_twisted.ensureDeferred
async def test_a_host_online_on_a_is_online_on_b_with_its_address_ticket_key_and_tracker(group):
    a, b = group
    alice = await login(a, "alice")
    await until(b, lambda: "alice" in b.cluster.remote)
    seen = b.cluster.remote["alice"]
    assert (seen.transfer_address, seen.ticket_key, seen.where, seen.tracker) == (
        {"host": "127.0.0.1", "port": 7710},
        alice.ticket_key,
        "127.0.0.1:7710",
        "tracker-A",
    )
    assert "alice" not in a.cluster.remote


@pytest_twisted.ensureDeferred
async def test_a_login_on_b_of_an_account_online_on_a_is_refused(group):
    a, b = group
    channel = Channel()
    await login(a, "alice", channel)
    with pytest.raises(OnlineElsewhere, match="^alice is already logged in from 127.0.0.1:7710; use login --replace"):
        await login(b, "alice")
    assert ("alice" in a.online, "alice" in b.online, channel.ended) == (True, False, [])


@pytest_twisted.ensureDeferred
async def test_a_login_with_replace_on_b_ends_the_session_on_a_as_replaced(group):
    a, b = group
    channel = Channel()
    await login(a, "alice", channel)
    await login(b, "alice", replace=True)
    await until(a, lambda: "alice" in a.cluster.remote and channel.ended)
    assert channel.ended == [("replaced", "alice logged in from 127.0.0.1:7710 with --replace")]
    assert ("alice" in a.online, "alice" in b.online, a.cluster.remote["alice"].tracker) == (False, True, "tracker-B")


@pytest_twisted.ensureDeferred
async def test_a_reconnect_on_b_with_the_session_secret_drops_the_old_connection_on_a_quietly(group):
    a, b = group
    channel = Channel()
    old = await login(a, "alice", channel)
    await login(b, "alice", session=old.session)
    await until(a, lambda: "alice" in a.cluster.remote and channel.disconnected)
    assert (channel.ended, "alice" in a.online) == ([], False)


@pytest_twisted.ensureDeferred
async def test_b_gives_a_host_on_a_as_a_source_with_a_ticket_its_own_login_key_verifies(group):
    a, b = group
    alice = await login(a, "alice")
    await login(b, "bob")
    await a.publish("alice", FileRecord("notes.txt", 5, ROOT))
    await until(b, lambda: "alice" in b.cluster.remote and b.index.count("alice") == 1)
    [(holding, source)] = await b.sources("notes.txt", "bob")
    assert (holding.host, source.transfer_address) == ("alice", {"host": "127.0.0.1", "port": 7710})
    text = b.ticket("bob", tickets.NO_BINDING, ROOT, source)
    checked = tickets.verify(text, tickets.TicketKey("alice", alice.ticket_key), tickets.NO_BINDING, time.time())
    assert (checked.fetcher, checked.source, checked.root) == ("bob", "alice", ROOT)


@pytest_twisted.ensureDeferred
async def test_search_on_b_counts_a_holder_online_on_a(group):
    a, b = group
    await login(a, "alice")
    await a.publish("alice", FileRecord("notes.txt", 5, ROOT))
    await until(b, lambda: "alice" in b.cluster.remote and b.index.count("alice") == 1)
    [summary] = (await b.search("notes*")).items
    assert (summary.online, summary.holders) == (1, 1)


class NoStoreLookups:
    """A store whose lookups fail the test: the directory must answer from its index."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name in ("search", "holdings"):
            raise AssertionError(f"store.{name} called for a lookup")
        return getattr(self._store, name)


@pytest_twisted.ensureDeferred
async def test_b_serves_what_a_host_on_a_publishes_and_unpublishes_from_its_index_without_store_lookups(group):
    a, b = group
    await login(a, "alice")
    await login(b, "bob")
    await b.load()
    b.store = NoStoreLookups(b.store)  # loaded before: from now on, a lookup in the store fails the test
    await until(b, lambda: "alice" in b.cluster.remote)

    await a.publish("alice", FileRecord("notes.txt", 5, ROOT))
    await a.announce("alice", [FileRecord("talk.iso", 7, "c" * 64)], reset=False)
    await until(b, lambda: b.index.count("alice") == 2)
    assert [(h.host, h.fname, h.size, h.root) for h, _ in await b.sources("notes.txt", "bob")] == [
        ("alice", "notes.txt", 5, ROOT)
    ]
    assert [(s.fname, s.online, s.holders) for s in (await b.search("*")).items] == [
        ("notes.txt", 1, 1),
        ("talk.iso", 1, 1),
    ]

    await a.unpublish("alice", "notes.txt")
    await until(b, lambda: b.index.count("alice") == 1)
    assert await b.sources("notes.txt", "bob") == []
    assert [s.fname for s in (await b.search("*")).items] == ["talk.iso"]

    await a.announce("alice", [], reset=True)
    await until(b, lambda: b.index.count("alice") == 0)
    assert (await b.search("*")).items == []


@pytest_twisted.ensureDeferred
async def test_a_host_that_goes_offline_on_a_counts_zero_online_in_search_on_b(group):
    a, b = group
    channel = Channel()
    await login(a, "alice", channel)
    await a.publish("alice", FileRecord("notes.txt", 5, ROOT))
    await until(b, lambda: "alice" in b.cluster.remote and b.index.count("alice") == 1)
    assert [(s.online, s.holders) for s in (await b.search("notes*")).items] == [(1, 1)]
    a.logout("alice", channel)
    await until(b, lambda: "alice" not in b.cluster.remote)
    assert [(s.online, s.holders) for s in (await b.search("notes*")).items] == [(0, 1)]
    assert await b.sources("notes.txt", "bob") == []


@pytest_twisted.ensureDeferred
async def test_files_stored_while_b_lost_its_listen_connection_are_indexed_when_it_reopens(group):
    a, b = group
    await login(a, "alice")
    await b.load()
    lost = b.cluster._listener
    b.cluster._listener_lost("test: connection reset")  # b hears nothing until its next heartbeat reopens it
    lost.conn.close()
    await a.publish("alice", FileRecord("missed.txt", 5, ROOT))
    await until(b, lambda: b.index.count("alice") == 1, timeout=HEARTBEAT * 4)
    assert [s.fname for s in (await b.search("*")).items] == ["missed.txt"]


@pytest_twisted.ensureDeferred
async def test_a_files_notice_that_could_not_be_sent_is_sent_at_the_next_heartbeat(group, monkeypatch):
    a, b = group
    await login(a, "alice")
    await b.load()
    real = a.cluster._pool.runInteraction
    failed = []

    def fail_the_first_files_notice(f: Any, *args: Any) -> Any:
        if not failed and args[:1] == (SESSIONS_CHANNEL,) and "files" in args[1]:
            failed.append(args[1])
            return defer.fail(psycopg.OperationalError("the connection was lost"))
        return real(f, *args)

    monkeypatch.setattr(a.cluster._pool, "runInteraction", fail_the_first_files_notice)
    await a.publish("alice", FileRecord("notes.txt", 5, ROOT))
    assert failed == [{"files": "alice", "tracker": a.cluster.id}]
    await until(b, lambda: b.index.count("alice") == 1, timeout=HEARTBEAT * 4)


@pytest_twisted.ensureDeferred
async def test_a_logout_on_a_takes_the_host_offline_on_b(group):
    a, b = group
    channel = Channel()
    await login(a, "alice", channel)
    await until(b, lambda: "alice" in b.cluster.remote)
    a.logout("alice", channel)
    await until(b, lambda: "alice" not in b.cluster.remote)
    assert await b.sources("notes.txt", "bob") == []


@pytest_twisted.ensureDeferred
async def test_ping_and_discover_of_a_host_on_a_are_relayed_from_b_even_a_long_list(group):
    a, b = group
    items = [{"fname": f"file-{i:04}.bin", "size": i, "root": ROOT} for i in range(300)]  # ~30 kB: over NOTIFY's 8 kB
    channel = Channel({"ping": {}, "list": {"items": items}})
    await login(a, "alice", channel)
    await until(b, lambda: "alice" in b.cluster.remote)
    rtt = await b.ping("alice")
    assert 0 <= rtt < directory_module.LIVE_TIMEOUT
    assert await b.discover("alice") == items
    assert channel.calls == ["ping", "list"]


@pytest_twisted.ensureDeferred
async def test_a_relayed_ping_of_a_silent_host_fails_within_the_live_timeout(group, monkeypatch):
    monkeypatch.setattr(directory_module, "LIVE_TIMEOUT", 0.5)
    a, b = group
    await login(a, "alice", Channel({}))
    await until(b, lambda: "alice" in b.cluster.remote)
    start = time.monotonic()
    with pytest.raises(
        Unavailable, match="^alice did not answer: no answer from alice through its tracker within 0.5 s$"
    ):
        await b.ping("alice")
    assert 0.5 <= time.monotonic() - start < 1.5


@pytest_twisted.ensureDeferred
async def test_a_kick_on_b_ends_the_session_on_a(group):
    a, b = group
    channel = Channel()
    await login(a, "alice", channel)
    await until(b, lambda: "alice" in b.cluster.remote)
    await b.kick("alice")
    await until(b, lambda: "alice" not in b.cluster.remote)
    assert (channel.ended, "alice" in a.online) == ([("kicked", "kicked by the tracker's operator")], False)


@pytest_twisted.ensureDeferred
async def test_a_tracker_that_stops_beating_has_its_hosts_taken_offline_by_the_others_within_the_bound(
    group,
    pg_database,  # noqa: F811
):
    a, b = group
    await login(a, "alice")
    await login(b, "bob")
    await until(b, lambda: "alice" in b.cluster.remote)
    a.cluster.abandon()  # as if killed: no goodbye, no more heartbeats
    start = time.monotonic()
    await until(b, lambda: "alice" not in b.cluster.remote, timeout=DEAD_AFTER + 5)
    assert time.monotonic() - start <= DEAD_AFTER + 2 * HEARTBEAT + 0.5
    with psycopg.connect(pg_database) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM cluster_sessions ORDER BY name")]
        trackers = [row[0] for row in conn.execute("SELECT name FROM cluster_trackers")]
    assert (names, trackers) == (["bob"], ["tracker-B"])
    # alice may now log in on B: the dead tracker's session no longer holds the account
    await login(b, "alice")


@pytest_twisted.ensureDeferred
async def test_a_tracker_that_leaves_cleanly_takes_its_hosts_offline_at_once(group):
    a, b = group
    await login(a, "alice")
    await until(b, lambda: "alice" in b.cluster.remote)
    await a.cluster.stop()
    await until(b, lambda: "alice" not in b.cluster.remote, timeout=HEARTBEAT * 3)


@pytest_twisted.ensureDeferred
async def test_a_tracker_taken_for_dead_puts_its_hosts_back_when_its_heartbeat_returns(group):
    a, b = group
    await login(a, "alice")
    await until(b, lambda: "alice" in b.cluster.remote)
    a.cluster._heartbeat.stop()  # a stall longer than the bound
    await until(b, lambda: "alice" not in b.cluster.remote, timeout=DEAD_AFTER + 5)
    a.cluster._heartbeat.start(HEARTBEAT)
    await until(b, lambda: "alice" in b.cluster.remote, timeout=5)
    assert b.cluster.remote["alice"].tracker == "tracker-A"


@pytest_twisted.ensureDeferred
async def test_a_session_whose_notification_was_missed_appears_at_the_periodic_reload(group, pg_database):  # noqa: F811
    a, b = group
    with psycopg.connect(pg_database) as conn:  # a row written without its 'up' notification
        conn.execute(
            "INSERT INTO cluster_sessions VALUES ('carol', %s, 's', 'tcp:host=192.0.2.3:port=7710', "
            '\'192.0.2.3:7710\', \'{"host": "192.0.2.3", "port": 7710}\', NULL, %s, 0)',
            (a.cluster.id, b"k" * 32),
        )
    assert "carol" not in b.cluster.remote
    await until(b, lambda: "carol" in b.cluster.remote, timeout=HEARTBEAT * (RELOAD_EVERY + 2))
    assert b.cluster.remote["carol"].transfer_address == {"host": "192.0.2.3", "port": 7710}


@pytest_twisted.ensureDeferred
async def test_a_relayed_reply_nobody_read_is_removed_after_a_minute(group, pg_database):  # noqa: F811
    a, _ = group
    with psycopg.connect(pg_database) as conn:
        conn.execute("INSERT INTO cluster_replies (id, body, made) VALUES ('old', '{}', now() - interval '61 s')")
        conn.execute("INSERT INTO cluster_replies (id, body, made) VALUES ('new', '{}', now() - interval '50 s')")
    await a.cluster._pool.runInteraction(a.cluster._beat_in_db, [])
    with psycopg.connect(pg_database) as conn:
        assert [row[0] for row in conn.execute("SELECT id FROM cluster_replies")] == ["new"]


@pytest_twisted.ensureDeferred
async def test_a_lost_listen_connection_is_reopened_at_the_next_heartbeat_and_the_mirror_reloaded(group):
    a, b = group
    lost = b.cluster._listener
    b.cluster._listener_lost("test: connection reset")
    lost.conn.close()
    await login(a, "alice")  # its 'up' notification is missed
    await until(b, lambda: "alice" in b.cluster.remote, timeout=HEARTBEAT * 4)
    assert b.cluster._listener is not None and b.cluster._listener is not lost
