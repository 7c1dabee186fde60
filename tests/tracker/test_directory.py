"""Directory's account rules on the in-memory store, a Clock and recording fakes: no sockets, no threads."""

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure

from fileshare.errors import AuthError, Banned, NotFound, OnlineElsewhere, Throttled, Unavailable
from fileshare.tracker import directory as directory_module
from fileshare.tracker import passwords
from fileshare.tracker.directory import Directory
from fileshare.tracker.memory_store import MemoryTrackerStore
from fileshare.tracker.store import Ban, FileRecord, Holding

ROOT = "a" * 64


class Threads:
    """deferToThreadPool that records each call and finishes it when the test says so."""

    def __init__(self) -> None:
        self.calls: list[tuple[defer.Deferred, Any, tuple]] = []
        self.immediate = True

    def __call__(self, reactor: Any, threadpool: Any, f: Any, *args: Any) -> defer.Deferred:
        if self.immediate:
            self.calls.append((None, f, args))
            return defer.maybeDeferred(f, *args)
        d: defer.Deferred = defer.Deferred()
        self.calls.append((d, f, args))
        return d

    def finish_all(self) -> None:
        for d, f, args in list(self.calls):
            if d is not None and not d.called:
                d.callback(f(*args))


class Channel:
    """A host connection that records what the directory did to it."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, str]] = []
        self.disconnected = False

    def call(self, op: str, timeout: float | None = None, **fields: Any) -> defer.Deferred:
        return defer.succeed({})

    def disconnect(self) -> None:
        self.disconnected = True

    def end_session(self, code: str, reason: str) -> None:
        self.ended.append((code, reason))
        self.disconnected = True


@pytest.fixture
def threads(monkeypatch):
    recorder = Threads()
    monkeypatch.setattr(directory_module, "deferToThreadPool", recorder)
    original = passwords.hash_password
    monkeypatch.setattr(passwords, "hash_password", lambda password: original(password, n=16, r=1, p=1))
    return recorder


def run(awaitable: Any) -> Any:
    """The result of a coroutine that has nothing left to wait for."""
    results: list[Any] = []
    defer.ensureDeferred(awaitable).addBoth(results.append)
    (result,) = results
    if isinstance(result, Failure):
        result.raiseException()
    return result


def started(awaitable: Any) -> defer.Deferred:
    d = defer.ensureDeferred(awaitable)
    d.addErrback(lambda f: f)  # tests inspect the failure themselves
    return d


def build_directory(*accounts: str) -> Directory:
    directory = Directory(MemoryTrackerStore(), Clock(), reactor=None, threadpool=None)
    for name in accounts:
        run(directory.register(name, f"{name}-pw"))
    return directory


def login(directory: Directory, name: str, password: str | None = None, **kwargs: Any) -> tuple[Any, Channel]:
    channel = Channel()
    kwargs.setdefault("address", "192.0.2.7")
    kwargs.setdefault("where", "192.0.2.7:7710")
    host = run(directory.login(name, password or f"{name}-pw", channel, "tcp:host=192.0.2.7:port=7710", **kwargs))
    return host, channel


# -- the cost of a wrong name


def test_an_unknown_account_is_checked_against_the_dummy_hash(threads):
    directory = build_directory()
    threads.calls.clear()
    with pytest.raises(AuthError, match="^unknown account or wrong password$"):
        login(directory, "nobody", "guess")
    assert [(f, args) for _, f, args in threads.calls] == [(passwords.verify_password, ("guess", passwords.DUMMY_HASH))]


def test_the_dummy_hash_costs_what_a_real_one_costs_and_matches_nothing():
    scheme, n, r, p, _salt, _digest = passwords.DUMMY_HASH.split("$")
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", passwords.N, passwords.R, passwords.P)
    assert passwords.verify_password("", passwords.DUMMY_HASH) is False


def test_failures_on_an_unknown_account_are_throttled_like_a_real_one(threads):
    directory = build_directory()
    for _ in range(4):
        with pytest.raises(AuthError):
            login(directory, "nobody", "guess")
    with pytest.raises(Throttled, match=r"^too many failed logins for nobody; try again in 1 s$"):
        login(directory, "nobody", "guess")


def test_a_throttled_attempt_does_not_check_the_password(threads):
    directory = build_directory("alice")
    for _ in range(4):
        with pytest.raises(AuthError):
            login(directory, "alice", "guess")
    threads.calls.clear()
    with pytest.raises(Throttled):
        login(directory, "alice")
    assert threads.calls == []


def test_the_lockout_after_ten_failures_names_the_wait(threads):
    directory = build_directory("alice")
    for _ in range(10):
        directory.clock.advance(60)
        with pytest.raises(AuthError):
            login(directory, "alice", "guess")
    with pytest.raises(Throttled, match=r"^too many failed logins for alice; try again in 900 s$"):
        login(directory, "alice")
    directory.clock.advance(900)
    login(directory, "alice")


def test_an_address_guessing_many_accounts_is_throttled(threads):
    directory = build_directory()
    for i in range(11):
        with pytest.raises(AuthError):
            login(directory, f"name{i}", "guess", address="203.0.113.9")
    with pytest.raises(Throttled, match=r"^too many failed logins from 203.0.113.9; try again in 1 s$"):
        login(directory, "someone-else", "guess", address="203.0.113.9")


def test_a_successful_login_resets_the_accounts_count(threads):
    directory = build_directory("alice")
    for _ in range(3):
        with pytest.raises(AuthError):
            login(directory, "alice", "guess")
    login(directory, "alice")
    assert directory.by_account.failures("alice") == 0


def test_failed_logins_are_logged_with_the_address(threads):
    directory = build_directory("alice")
    with capturedLogs() as events, pytest.raises(AuthError):
        login(directory, "alice", "guess", address="203.0.113.9")
    (event,) = [e for e in events if e["log_format"].startswith("failed login")]
    assert (event["log_level"], event["name"], event["address"], event["failures"]) == (
        LogLevel.warn,
        "alice",
        "203.0.113.9",
        1,
    )


# -- password checks in flight


def test_at_most_two_password_checks_run_per_address_and_more_are_refused_at_once(threads):
    directory = build_directory("alice", "bob")
    threads.immediate = False
    threads.calls.clear()
    flood = [started(directory.login("alice", "guess", Channel(), "e", address="203.0.113.9")) for _ in range(3)]
    assert len(threads.calls) == 2
    assert flood[2].called and flood[2].result.check(Throttled)
    assert flood[2].result.value.message == "too many password checks at once from 203.0.113.9; wait for their answers"
    honest = started(directory.login("bob", "bob-pw", Channel(), "e", address="198.51.100.2"))
    assert len(threads.calls) == 3
    threads.finish_all()
    assert honest.result.name == "bob"
    assert directory.gate.in_flight("203.0.113.9") == 0
    flood[2].result.trap(Throttled)
    for d in flood[:2]:
        d.result.trap(AuthError)


# -- one session per account


def test_a_second_login_is_refused_and_the_first_session_keeps_running(threads):
    directory = build_directory("alice")
    _, first = login(directory, "alice", where="127.0.0.1:7710")
    with pytest.raises(OnlineElsewhere, match=r"^alice is already logged in from 127.0.0.1:7710; use login --replace"):
        login(directory, "alice", where="127.0.0.1:7720")
    assert first.ended == [] and not first.disconnected
    assert directory.online["alice"].channel is first


def test_replace_ends_the_first_session_with_the_reason(threads):
    directory = build_directory("alice")
    _, first = login(directory, "alice")
    host, second = login(directory, "alice", where="127.0.0.1:7720", replace=True)
    assert first.ended == [("replaced", "alice logged in from 127.0.0.1:7720 with --replace")]
    assert directory.online["alice"] is host


def test_a_wrong_password_with_replace_ends_nothing(threads):
    directory = build_directory("alice")
    _, first = login(directory, "alice")
    with pytest.raises(AuthError):
        login(directory, "alice", "guess", replace=True)
    assert first.ended == []


def test_logging_out_an_ended_session_does_not_take_the_new_one_offline(threads):
    directory = build_directory("alice")
    _, first = login(directory, "alice")
    _, second = login(directory, "alice", replace=True)
    directory.logout("alice", first)
    assert directory.online["alice"].channel is second


# -- kick, ban, unban


def test_kick_ends_the_session_telling_it_why(threads):
    directory = build_directory("alice")
    _, channel = login(directory, "alice")
    run(directory.kick("alice"))
    assert channel.ended == [("kicked", "kicked by the tracker's operator")]
    assert directory.online == {}
    login(directory, "alice")


def test_kick_of_an_offline_or_unknown_host_is_an_error(threads):
    directory = build_directory("alice")
    with pytest.raises(Unavailable, match=r"^host 'alice' is offline$"):
        run(directory.kick("alice"))
    with pytest.raises(NotFound, match=r"^no host named 'nobody'$"):
        run(directory.kick("nobody"))


def test_ban_ends_the_session_refuses_logins_with_the_reason_and_keeps_the_files(threads):
    directory = build_directory("alice")
    _, channel = login(directory, "alice")
    run(directory.announce("alice", [FileRecord("a.txt", 1, ROOT)], reset=True))
    assert run(directory.ban("alice", "spamming")) is True
    assert channel.ended == [("banned", "alice is banned: spamming")]
    with pytest.raises(Banned, match=r"^alice is banned: spamming$"):
        login(directory, "alice")
    assert run(directory.store.holdings()) == [Holding("alice", "a.txt", 1, ROOT)]
    assert run(directory.store.bans()) == [Ban("alice", "spamming", 0.0)]


def test_a_ban_is_only_revealed_to_the_right_password(threads):
    directory = build_directory("alice")
    run(directory.ban("alice", "spamming"))
    with pytest.raises(AuthError):
        login(directory, "alice", "guess")


def test_unban_lets_the_account_log_in_again(threads):
    directory = build_directory("alice")
    run(directory.ban("alice", "spamming"))
    run(directory.unban("alice"))
    login(directory, "alice")
    with pytest.raises(NotFound, match=r"^alice is not banned$"):
        run(directory.unban("alice"))


def test_banning_an_unknown_account_is_not_found(threads):
    directory = build_directory()
    with pytest.raises(NotFound, match=r"^no account named 'nobody'$"):
        run(directory.ban("nobody", "why"))


# -- passwd and stats


def test_passwd_checks_the_old_password_and_is_throttled(threads):
    directory = build_directory("alice")
    for _ in range(4):
        with pytest.raises(AuthError, match="^wrong password$"):
            run(directory.passwd("alice", "guess", "new-pw"))
    with pytest.raises(Throttled):
        run(directory.passwd("alice", "alice-pw", "new-pw"))
    directory.clock.advance(1)
    run(directory.passwd("alice", "alice-pw", "new-pw"))
    login(directory, "alice", "new-pw")


def test_stats_count_logins_and_failures_in_the_last_minute_and_since_start(threads):
    directory = build_directory("alice")
    login(directory, "alice")
    with pytest.raises(AuthError):
        login(directory, "bob", "guess")
    directory.clock.advance(61)
    with pytest.raises(AuthError):
        login(directory, "bob", "guess")
    stats = directory.stats
    assert (stats.logins.recent(), stats.logins.total) == (0, 1)
    assert (stats.failed_logins.recent(), stats.failed_logins.total) == (1, 2)
    assert (stats.tickets.recent(), stats.tickets.total) == (0, 0)


def test_a_sources_that_finds_nothing_waits_for_a_publish_already_on_its_way_to_the_store(threads):
    """One SQLite thread used to serve a publish and a later lookup in turn; the index keeps that order."""

    class SlowStore(MemoryTrackerStore):
        held: defer.Deferred | None = None

        async def add_file(self, host, record, limit=None):
            self.held = defer.Deferred()
            await self.held
            return await super().add_file(host, record, limit)

    store = SlowStore()
    directory = Directory(store, Clock(), reactor=None, threadpool=None)
    for name in ("alice", "carol"):
        run(directory.register(name, f"{name}-pw"))
        login(directory, name)
    publishing = started(directory.publish("alice", FileRecord("notes.txt", 5, "a" * 64)))
    looking = started(directory.sources("notes.txt", "carol"))

    assert not looking.called  # the publish is still on its way to the store and the index
    store.held.callback(None)
    assert publishing.called
    assert [(h.host, online.name) for h, online in looking.result] == [("alice", "alice")]


def test_a_sources_that_finds_something_does_not_wait_for_writes(threads):
    class SlowStore(MemoryTrackerStore):
        held: defer.Deferred | None = None

        async def add_file(self, host, record, limit=None):
            if record.fname == "other.txt":
                self.held = defer.Deferred()
                await self.held
            return await super().add_file(host, record, limit)

    store = SlowStore()
    directory = Directory(store, Clock(), reactor=None, threadpool=None)
    for name in ("alice", "carol"):
        run(directory.register(name, f"{name}-pw"))
        login(directory, name)
    run(directory.publish("alice", FileRecord("notes.txt", 5, "a" * 64)))
    started(directory.publish("alice", FileRecord("other.txt", 5, "b" * 64)))

    looking = started(directory.sources("notes.txt", "carol"))

    assert [h.host for h, _ in looking.result] == ["alice"]
