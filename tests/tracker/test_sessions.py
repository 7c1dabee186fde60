"""Session tokens: a reconnecting peer logs in without a password check, for a bounded time."""

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import Clock

from fileshare.errors import AuthError, Banned, Throttled, Unavailable
from fileshare.tracker import passwords
from fileshare.tracker.database import open_pg_database
from fileshare.tracker.directory import Directory
from fileshare.tracker.passwords import HashingQueue
from fileshare.tracker.pg_store import PostgresTrackerStore
from fileshare.tracker.sessions import SESSION_LIFETIME, MemorySessionStore, SessionRecord, token_hash
from fileshare.tracker.store import FileRecord, SQLiteTrackerStore

from .pg_cluster import pg_cluster, pg_url  # noqa: F401  (fixtures: the PostgreSQL stores)
from .test_directory import Channel, build_directory, login, run, started, threads  # noqa: F401

ROOT = "a" * 64


def hashes(threads) -> int:  # noqa: F811
    """Password checks made so far."""
    return sum(1 for _, f, _ in threads.calls if f is passwords.verify_password)


def dropped(directory: Directory, name: str, channel: Channel) -> None:
    """The host's connection is lost (what the protocol's connectionLost does)."""
    directory.logout(name, channel, dropped=True)


# -- the directory's rules


def test_a_reconnect_with_its_session_token_logs_in_without_a_password_check(threads):  # noqa: F811
    directory = build_directory("alice")
    host, channel = login(directory, "alice")
    assert hashes(threads) == 1
    dropped(directory, "alice", channel)

    again, _ = login(directory, "alice", session=host.session)

    assert hashes(threads) == 1
    assert directory.online["alice"] is again
    assert again.session != host.session  # each login gets a fresh token


def test_a_token_stands_in_for_a_missing_password(threads):  # noqa: F811
    directory = build_directory("alice")
    host, channel = login(directory, "alice")
    dropped(directory, "alice", channel)
    again = run(directory.login("alice", None, Channel(), "e", session=host.session))
    assert again.name == "alice" and hashes(threads) == 1


def test_a_token_is_used_once_a_new_login_replaced_it(threads):  # noqa: F811
    directory = build_directory("alice")
    first, channel = login(directory, "alice")
    dropped(directory, "alice", channel)
    second, channel = login(directory, "alice", session=first.session)
    dropped(directory, "alice", channel)
    with pytest.raises(AuthError, match="^unknown account or expired session; log in with the password$"):
        run(directory.login("alice", None, Channel(), "e", session=first.session))


def test_a_token_expires_the_session_lifetime_after_its_connection_dropped(threads):  # noqa: F811
    directory = build_directory("alice")
    host, channel = login(directory, "alice")
    directory.clock.advance(3600)  # online for an hour: the token holds
    dropped(directory, "alice", channel)
    directory.clock.advance(SESSION_LIFETIME - 1)
    assert run(directory.tokens.valid("alice", host.session)) is True
    directory.clock.advance(1)
    assert run(directory.tokens.valid("alice", host.session)) is False

    login(directory, "alice", session=host.session)
    assert hashes(threads) == 2  # the password was checked again


def test_a_wrong_token_falls_back_to_the_password_check(threads):  # noqa: F811
    directory = build_directory("alice")
    _, channel = login(directory, "alice")
    dropped(directory, "alice", channel)
    login(directory, "alice", session="0" * 32)
    assert hashes(threads) == 2


def test_a_wrong_token_without_a_password_counts_as_a_failed_login(threads):  # noqa: F811
    directory = build_directory("alice")
    for _ in range(4):
        with pytest.raises(AuthError):
            run(directory.login("alice", None, Channel(), "e", session="0" * 32))
    with pytest.raises(Throttled):
        run(directory.login("alice", None, Channel(), "e", session="0" * 32))
    assert hashes(threads) == 0


@pytest.mark.parametrize("how", ["logout", "kick", "ban", "passwd"])
def test_a_token_is_revoked_by_logout_kick_ban_and_password_change(threads, how):  # noqa: F811
    directory = build_directory("alice")
    host, channel = login(directory, "alice")
    if how == "logout":
        directory.logout("alice", channel)
    elif how == "kick":
        run(directory.kick("alice"))
    elif how == "ban":
        run(directory.ban("alice", "spam"))
        run(directory.unban("alice"))
    else:
        run(directory.passwd("alice", "alice-pw", "new-pw"))
        dropped(directory, "alice", channel)
    assert run(directory.tokens.valid("alice", host.session)) is False


def test_a_banned_account_is_refused_even_with_a_valid_token(threads):  # noqa: F811
    directory = build_directory("alice")
    host, channel = login(directory, "alice")
    dropped(directory, "alice", channel)
    run(directory.store.add_ban("alice", "spam", 0.0))  # banned behind the tokens' back
    with pytest.raises(Banned):
        login(directory, "alice", session=host.session)


def test_a_token_outlives_a_tracker_restart_for_the_session_lifetime(threads):  # noqa: F811
    directory = build_directory("alice")
    host, _ = login(directory, "alice")  # online when the tracker stops: no drop recorded
    sessions = directory.tokens.store

    clock = Clock()
    clock.advance(10_000)
    restarted = Directory(directory.store, clock, reactor=None, threadpool=None)
    restarted.tokens.store = sessions  # the memory store keeps them; the SQLite one does on disk
    run(restarted.load())
    assert run(restarted.tokens.valid("alice", host.session)) is True
    clock.advance(SESSION_LIFETIME)
    assert run(restarted.tokens.valid("alice", host.session)) is False


# -- the stores


def store_kinds():
    return ["memory", "sqlite", "postgresql"]


def store_opener(kind: str, request, tmp_path):
    """What opens a *kind* store on one database each time it is called (PostgreSQL: skipped where it is missing)."""
    if kind == "sqlite":
        path = str(tmp_path / "tracker.db")
        return lambda: SQLiteTrackerStore(path, reactor)
    url = request.getfixturevalue("pg_url")
    open_pg_database(url)
    return lambda: PostgresTrackerStore(url, reactor)


@pytest.fixture
def session_store(request, tmp_path):
    if request.param == "memory":
        yield MemorySessionStore()
        return
    store = store_opener(request.param, request, tmp_path)()
    yield store
    store.close()


@pytest.fixture
def reopen(request, tmp_path):
    return store_opener(request.param, request, tmp_path)


@pytest.mark.parametrize("session_store", store_kinds(), indirect=True)
@pytest_twisted.ensureDeferred
async def test_a_store_keeps_one_token_per_account_with_its_expiry(session_store):
    if not isinstance(session_store, MemorySessionStore):
        for name in ("alice", "bob"):
            await session_store.create_account(name, "h")
    await session_store.save_session("alice", "h1")
    await session_store.save_session("bob", "b1")
    assert await session_store.session("alice") == SessionRecord("h1", None)
    await session_store.save_session("alice", "h2")
    await session_store.expire_session("alice", "h1", 5.0)  # an older token's drop: ignored
    assert await session_store.session("alice") == SessionRecord("h2", None)
    await session_store.expire_session("alice", "h2", 5.0)
    await session_store.expire_open_sessions(9.0)
    assert await session_store.session("alice") == SessionRecord("h2", 5.0)
    assert await session_store.session("bob") == SessionRecord("b1", 9.0)
    await session_store.save_session("alice", "h3")  # a new login's token is open again
    assert await session_store.session("alice") == SessionRecord("h3", None)
    await session_store.revoke_session("alice")
    assert await session_store.session("alice") is None
    assert await session_store.session("nobody") is None


# Not SQLite: its driver refuses a surrogate outright (the protocol checks names before any store sees them).
@pytest.mark.parametrize("session_store", ["memory", "postgresql"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_names_no_account_holds_have_no_token(session_store):
    assert await session_store.session("al\x00ice") is None
    assert await session_store.session("\ud800") is None
    await session_store.revoke_session("al\x00ice")  # nothing to forget, no error


@pytest.mark.parametrize("reopen", ["sqlite", "postgresql"], indirect=True)
@pytest_twisted.ensureDeferred
async def test_a_store_keeps_only_the_hash_and_keeps_it_across_a_restart(reopen):
    store = reopen()
    await store.create_account("alice", "h")
    directory = Directory(store, Clock(), reactor=None, threadpool=None)
    assert directory.tokens.store is store
    token = directory.tokens.new()
    await directory.tokens.save("alice", token)  # online when the tracker stops: no drop recorded
    store.close()

    store = reopen()
    try:
        record = await store.session("alice")
        assert record == SessionRecord(token_hash(token), None)
        assert token not in record.token_hash
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


# -- the hashing queue


def test_the_hashing_queue_runs_at_most_its_concurrency_at_once_and_the_rest_in_order():
    queue = HashingQueue(concurrency=2, waiting=10)
    started_: list[int] = []
    pending: list[defer.Deferred] = []

    def start(n: int):
        def go() -> defer.Deferred:
            started_.append(n)
            d: defer.Deferred = defer.Deferred()
            pending.append(d)
            return d

        return go

    results = [queue.run(start(n)) for n in range(4)]
    assert started_ == [0, 1] and queue.queued == 2
    pending[0].callback("done")
    assert started_ == [0, 1, 2]
    assert results[0].result == "done"


def test_a_full_hashing_queue_refuses_at_once():
    queue = HashingQueue(concurrency=1, waiting=1)
    queue.run(defer.Deferred)
    queue.run(defer.Deferred)
    with pytest.raises(Throttled, match="^the tracker is busy checking passwords; try again in 1 s$"):
        queue.run(defer.Deferred)


def test_a_check_whose_connection_is_gone_by_its_turn_is_skipped():
    queue = HashingQueue(concurrency=1, waiting=10)
    first: defer.Deferred = defer.Deferred()
    queue.run(lambda: first)
    called: list[str] = []
    failures: list = []
    queue.run(lambda: called.append("hashed") or defer.succeed(True), wanted=lambda: False).addErrback(failures.append)
    first.callback(True)
    assert called == [] and [f.type for f in failures] == [Unavailable]


def test_lookups_are_answered_while_logins_wait_for_their_password_checks(threads):  # noqa: F811
    directory = build_directory("alice", "bob")
    directory.hashing = HashingQueue(concurrency=1, waiting=10)
    _, bob = login(directory, "bob")
    run(directory.publish("bob", FileRecord("a.iso", 1, ROOT)))
    threads.immediate = False
    waiting = started(directory.login("alice", "alice-pw", Channel(), "e", address="192.0.2.9"))

    found = run(directory.sources("a.iso", None))

    assert [h.host for h, _ in found] == ["bob"] and not waiting.called
    threads.finish_all()
    assert waiting.result.name == "alice"


def test_a_long_line_of_checks_whose_connections_are_gone_is_skipped_without_deep_recursion():
    """A storm whose queued logins all timed out: 5,000 skipped in a row must not nest 5,000 calls."""
    from twisted.internet import defer

    queue = HashingQueue(concurrency=1, waiting=10_000)
    first: defer.Deferred = defer.Deferred()
    running = queue.run(lambda: first)
    skipped = [queue.run(lambda: defer.succeed("hash"), wanted=lambda: False) for _ in range(5000)]
    last = queue.run(lambda: defer.succeed("last hash"))
    for d in skipped:
        d.addErrback(lambda f: f.trap(Unavailable))

    first.callback("first hash")

    assert running.result == "first hash"
    assert all(d.called for d in skipped)
    assert last.result == "last hash" and queue.queued == 0


@pytest.mark.parametrize("session_store", store_kinds(), indirect=True)
@pytest_twisted.ensureDeferred
async def test_expiring_the_open_tokens_leaves_open_those_of_accounts_online_on_another_tracker(session_store):
    if not isinstance(session_store, MemorySessionStore):
        for name in ("alice", "bob", "carol"):
            await session_store.create_account(name, "h")
    for name in ("alice", "bob", "carol"):
        await session_store.save_session(name, f"{name}-h")
    await session_store.expire_open_sessions(9.0, keep={"bob", "nobody"})
    assert [await session_store.session(n) for n in ("alice", "bob", "carol")] == [
        SessionRecord("alice-h", 9.0),
        SessionRecord("bob-h", None),
        SessionRecord("carol-h", 9.0),
    ]
