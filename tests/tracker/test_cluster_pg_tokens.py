"""
Session tokens in a group of trackers on one PostgreSQL database: a starting
tracker starts the lifetime clock only on the tokens of sessions that ended
(its own last run's, or those no live tracker holds), and the sweep of a dead
tracker starts it on the tokens of that tracker's hosts, which then log in on
another tracker with their token, without a password check.
"""

from typing import Any

import pytest
import pytest_twisted

from fileshare.errors import AuthError
from fileshare.tracker import passwords
from fileshare.tracker.directory import Directory
from fileshare.tracker.sessions import SESSION_LIFETIME, SessionRecord, token_hash

from . import _pg_group
from ._pg_fixture import pg_database  # noqa: F401
from .test_cluster_pg import DEAD_AFTER, Channel, fast_hashing, until  # noqa: F401

group = _pg_group.group


async def login(directory: Directory, name: str, session: str | None = None) -> Any:
    """Log *name* in with its password, or with only the token *session* (no password) if given."""
    return await directory.login(
        name,
        None if session else f"{name}-pw",
        Channel(),
        "tcp:host=127.0.0.1:port=7710",
        where="127.0.0.1:7710",
        session=session,
    )


@pytest.fixture
def password_checks(monkeypatch):
    """The names whose password the trackers verify."""
    checked: list[str] = []
    verify = passwords.verify_password

    def recording(password: str, encoded: str) -> bool:
        checked.append(password.removesuffix("-pw"))
        return verify(password, encoded)

    monkeypatch.setattr(passwords, "verify_password", recording)
    return checked


@pytest_twisted.ensureDeferred
async def test_a_starting_tracker_leaves_open_the_tokens_of_sessions_live_on_another_tracker(group):
    a = group.trackers[0]
    alice = await login(a, "alice")
    await a.store.save_session("carol", token_hash("left-open"))  # her tracker stopped; no tracker holds her
    c = await group.start("tracker-C")
    assert await c.store.session("alice") == SessionRecord(token_hash(alice.session), None)
    assert await c.store.session("carol") == SessionRecord(token_hash("left-open"), SESSION_LIFETIME)


@pytest_twisted.ensureDeferred
async def test_a_restarted_tracker_starts_the_clock_on_the_tokens_of_its_own_last_run(group):
    a = group.trackers[0]
    b = await group.start("tracker-B")
    alice = await login(a, "alice")
    bob = await login(b, "bob")
    await until(b, lambda: "alice" in b.cluster.remote)
    a.cluster.abandon()  # killed; restarted under the same name before the group takes it for dead
    restarted = await group.start("tracker-A")
    assert "alice" in restarted.cluster.remote  # the old run's session is still in the table
    assert await restarted.store.session("alice") == SessionRecord(token_hash(alice.session), SESSION_LIFETIME)
    assert await restarted.store.session("bob") == SessionRecord(token_hash(bob.session), None)


@pytest_twisted.ensureDeferred
async def test_the_hosts_of_a_dead_tracker_log_in_on_another_with_their_token_until_lifetime_after_the_sweep(
    group, password_checks
):
    a = group.trackers[0]
    b = await group.start("tracker-B")
    alice = await login(a, "alice")
    bob = await login(a, "bob")
    await until(b, lambda: {"alice", "bob"} <= b.cluster.remote.keys())
    password_checks.clear()
    expired: list[str] = []
    dropped = b.tokens.dropped
    b.tokens.dropped = lambda name, token: dropped(name, token).addCallback(lambda _: expired.append(name))
    a.cluster.abandon()  # killed: its hosts' connections are gone, their tokens still open
    b.clock.advance(100)
    await until(b, lambda: not b.cluster.remote and len(expired) == 2, timeout=DEAD_AFTER + 5)
    assert await b.store.session("bob") == SessionRecord(token_hash(bob.session), 100 + SESSION_LIFETIME)

    b.clock.advance(SESSION_LIFETIME - 1)
    moved = await login(b, "alice", session=alice.session)
    assert ("alice" in b.online, moved.session != alice.session, password_checks) == (True, True, [])

    b.clock.advance(1)
    with pytest.raises(AuthError, match="^unknown account or expired session; log in with the password$"):
        await login(b, "bob", session=bob.session)
    assert password_checks == []


@pytest_twisted.ensureDeferred
async def test_a_tracker_wrongly_taken_for_dead_opens_again_the_tokens_of_its_hosts_when_it_rejoins(group):
    a = group.trackers[0]
    b = await group.start("tracker-B")
    alice = await login(a, "alice")
    await until(b, lambda: "alice" in b.cluster.remote)
    a.cluster._heartbeat.stop()  # a stalls; the group takes it for dead
    expired: list[str] = []
    dropped = b.tokens.dropped
    b.tokens.dropped = lambda name, token: dropped(name, token).addCallback(lambda _: expired.append(name))
    await b.cluster._pool.runOperation("DELETE FROM cluster_trackers WHERE id = %s", (a.cluster.id,))
    await until(b, lambda: not b.cluster.remote and expired == ["alice"], timeout=DEAD_AFTER + 5)
    assert await a.store.session("alice") == SessionRecord(token_hash(alice.session), SESSION_LIFETIME)

    await a.cluster._beat()  # a wakes up: it rejoins with alice, whose session never ended
    assert await a.store.session("alice") == SessionRecord(token_hash(alice.session), None)
    await until(b, lambda: "alice" in b.cluster.remote)
    a.cluster._heartbeat.start(a.cluster.heartbeat_interval, now=False)
