"""
Session tokens in the PostgreSQL store: the same contract as the SQLite
store's (test_sessions.py), on the throwaway cluster, so a reconnecting peer
skips the password check after a tracker restart there too.
"""

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import Clock

from fileshare.tracker.database import open_pg_database
from fileshare.tracker.directory import Directory
from fileshare.tracker.pg_store import PostgresTrackerStore
from fileshare.tracker.sessions import SESSION_LIFETIME, SessionRecord, token_hash

from . import pg_cluster as cluster

pg_cluster = cluster.pg_cluster
pg_url = cluster.pg_url


@pytest.fixture
def pg_store(pg_url):
    open_pg_database(pg_url)
    store = PostgresTrackerStore(pg_url, reactor)
    yield store
    store.close()


@pytest_twisted.ensureDeferred
async def test_the_postgresql_store_keeps_one_token_per_account_with_its_expiry(pg_store):
    for name in ("alice", "bob"):
        await pg_store.create_account(name, "h")
    await pg_store.save_session("alice", "h1")
    await pg_store.save_session("bob", "b1")
    assert await pg_store.session("alice") == SessionRecord("h1", None)
    await pg_store.save_session("alice", "h2")
    await pg_store.expire_session("alice", "h1", 5.0)  # an older token's drop: ignored
    assert await pg_store.session("alice") == SessionRecord("h2", None)
    await pg_store.expire_session("alice", "h2", 5.0)
    await pg_store.expire_open_sessions(9.0)
    assert await pg_store.session("alice") == SessionRecord("h2", 5.0)
    assert await pg_store.session("bob") == SessionRecord("b1", 9.0)
    await pg_store.save_session("alice", "h3")  # a new login's token is open again
    assert await pg_store.session("alice") == SessionRecord("h3", None)
    await pg_store.revoke_session("alice")
    assert await pg_store.session("alice") is None
    assert await pg_store.session("nobody") is None


@pytest_twisted.ensureDeferred
async def test_names_no_account_holds_have_no_token(pg_store):
    assert await pg_store.session("al\x00ice") is None
    assert await pg_store.session("\ud800") is None
    await pg_store.revoke_session("al\x00ice")  # nothing to forget, no error


@pytest_twisted.ensureDeferred
async def test_the_postgresql_store_keeps_only_the_hash_and_keeps_it_across_a_restart(pg_url):
    open_pg_database(pg_url)
    store = PostgresTrackerStore(pg_url, reactor)
    await store.create_account("alice", "h")
    directory = Directory(store, Clock(), reactor=None, threadpool=None)
    assert directory.tokens.store is store
    token = directory.tokens.new()
    await directory.tokens.save("alice", token)  # online when the tracker stops: no drop recorded
    store.close()

    assert cluster.cluster_rows(pg_url, "SELECT name, token_hash, expires FROM sessions") == [
        ("alice", token_hash(token), None)
    ]
    store = PostgresTrackerStore(pg_url, reactor)
    try:
        clock = Clock()
        clock.advance(10_000)
        restarted = Directory(store, clock, reactor=None, threadpool=None)
        await restarted.load()
        assert await store.session("alice") == SessionRecord(token_hash(token), 10_000 + SESSION_LIFETIME)
        assert await restarted.tokens.valid("alice", token) is True
        clock.advance(SESSION_LIFETIME)
        assert await restarted.tokens.valid("alice", token) is False
    finally:
        store.close()


@pytest_twisted.ensureDeferred
async def test_the_postgresql_store_leaves_open_the_tokens_it_is_told_to_keep(pg_store):
    for name in ("alice", "bob"):
        await pg_store.create_account(name, "h")
        await pg_store.save_session(name, f"{name}-h")
    await pg_store.expire_open_sessions(9.0, keep=["bob", "al\x00ice"])
    assert await pg_store.session("alice") == SessionRecord("alice-h", 9.0)
    assert await pg_store.session("bob") == SessionRecord("bob-h", None)
