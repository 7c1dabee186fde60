"""Accounts end to end through the consoles: one session per account, kick, ban, passwd, stats."""

import re

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred


def when_lost(protocol) -> Deferred:
    """Fires once *protocol*'s connection is lost and the ClientService holding it has seen that too."""
    lost: Deferred = Deferred()
    original = protocol.connectionLost

    def connectionLost(reason):
        original(reason)
        reactor.callLater(0, lost.callback, None)

    protocol.connectionLost = connectionLost
    return lost


async def ended_and_reconnected(peer, action):
    """Run *action* (which ends *peer*'s session); wait until the peer was told and has a new connection."""
    told = peer.tracker.when_ended()
    lost = when_lost(peer.tracker.protocol)
    result = await action()
    reason = await told
    await lost
    await peer.tracker.channel()
    return result, reason


async def status_line(console) -> str:
    reply = await console.command("status")
    assert reply.ok, reply
    return reply.data[0]


@pytest_twisted.ensureDeferred
async def test_a_second_login_elsewhere_is_refused_naming_where_the_account_is(net):
    tracker = await net.start_tracker()
    first_peer, first = await net.user("alice")
    second_peer = await net.start_peer("alice-laptop")
    second = await net.console(second_peer)

    refused = await second.command("login alice secret")

    port = first_peer.listener.port_number
    assert refused.status == f"ERR alice is already logged in from 127.0.0.1:{port}; use login --replace to take over"
    assert tracker.directory.online["alice"].where == f"127.0.0.1:{port}"
    assert await status_line(first) == "tracker connected, logged in as alice"
    assert await status_line(second) == "tracker connected, not logged in"
    for bad in ("login --replace alice", "login alice secret --force", "login --replace --replace alice secret"):
        assert (await second.command(bad)).status == "ERR usage: login [--replace] NAME PASSWORD"


@pytest_twisted.ensureDeferred
async def test_login_replace_takes_over_and_the_replaced_peer_stays_logged_out(net):
    tracker = await net.start_tracker()
    first_peer, first = await net.user("alice")
    second_peer = await net.start_peer("alice-laptop")
    second = await net.console(second_peer)

    took, reason = await ended_and_reconnected(first_peer, lambda: second.command("login --replace alice secret"))

    assert took.status == "OK logged in as alice (took over its other session); announced 0 files"
    port = second_peer.listener.port_number
    assert reason == f"alice logged in from 127.0.0.1:{port} with --replace"
    assert await status_line(first) == (
        f"tracker connected, not logged in: the tracker ended the session: alice logged in from 127.0.0.1:{port} "
        "with --replace"
    )
    # Reconnected and greeted, yet not logged in: the second peer keeps the account.
    assert first_peer.tracker.credentials is None
    assert tracker.directory.online["alice"].where == f"127.0.0.1:{port}"
    assert (await second.command("search")).ok
    assert (await first.command("search")).status == "ERR not logged in; use 'login NAME PASSWORD' first"


@pytest_twisted.ensureDeferred
async def test_kick_ends_the_session_and_the_peer_says_why(net):
    tracker = await net.start_tracker()
    peer, user = await net.user("alice")
    admin = await net.console(tracker)

    kicked, _ = await ended_and_reconnected(peer, lambda: admin.command("kick alice"))

    assert kicked.status == "OK alice kicked; it was told why and may log in again"
    assert await status_line(user) == (
        "tracker connected, not logged in: the tracker ended the session: kicked by the tracker's operator"
    )
    assert tracker.directory.online == {}
    assert (await user.command("login alice secret")).ok
    assert (await admin.command("kick bob")).status == "ERR no host named 'bob'"


@pytest_twisted.ensureDeferred
async def test_ban_ends_the_session_refuses_logins_with_the_reason_until_unban(net):
    tracker = await net.start_tracker()
    peer, user = await net.user("alice")
    admin = await net.console(tracker)

    banned, reason = await ended_and_reconnected(peer, lambda: admin.command("ban alice sharing malware"))

    assert banned.status == "OK alice banned: sharing malware; its session was ended"
    assert reason == "alice is banned: sharing malware"
    assert (await user.command("login alice secret")).status == "ERR alice is banned: sharing malware"
    listed = await admin.command("bans")
    assert listed.status == "OK 1 ban"
    assert listed.data[0].startswith("alice since=") and listed.data[0].endswith(" reason='sharing malware'")
    assert (await admin.command("unban alice")).status == "OK alice may log in again"
    assert (await admin.command("bans")).status == "OK 0 bans"
    assert (await user.command("login alice secret")).ok
    assert (await admin.command("unban alice")).status == "ERR alice is not banned"


@pytest_twisted.ensureDeferred
async def test_passwd_then_login_with_the_new_password(net):
    await net.start_tracker()
    _, user = await net.user("alice")

    assert (await user.command("passwd wrong n3w")).status == "ERR wrong password"
    assert (await user.command("passwd secret n3w")).status == "OK password changed; use the new one from now on"
    assert (await user.command("logout")).ok
    assert (await user.command("login alice secret")).status == "ERR unknown account or wrong password"
    assert (await user.command("login alice n3w")).ok


@pytest_twisted.ensureDeferred
async def test_repeated_wrong_passwords_are_throttled_with_the_wait(net):
    await net.start_tracker()
    peer = await net.start_peer("mallory")
    user = await net.console(peer)
    assert (await user.command("register alice secret")).ok
    for _ in range(4):
        assert (await user.command("login alice guess")).status == "ERR unknown account or wrong password"
    assert (await user.command("login alice secret")).status.startswith(
        "ERR too many failed logins for alice; try again in "
    )


@pytest_twisted.ensureDeferred
async def test_stats_on_the_admin_console(net, tmp_path):
    tracker = await net.start_tracker()
    _, user = await net.user("alice")
    (tmp_path / "notes.txt").write_text("notes")
    assert (await user.command(f"publish {tmp_path / 'notes.txt'} notes.txt")).ok
    await user.command("login alice wrong")
    admin = await net.console(tracker)

    stats = await admin.command("stats")

    assert stats.status == "OK stats listed"
    assert stats.data[:-1] == [
        "hosts-online 1",
        "files indexed=1 on-online-hosts=1",
        "logins last-minute=1 since-start=1",
        "failed-logins last-minute=1 since-start=1",
        "tickets-issued last-minute=0 since-start=0",
        "fetches-started last-minute=0 since-start=0",
        "fetches-finished last-minute=0 since-start=0",
    ]
    assert re.fullmatch(r"uptime \d+ s", stats.data[-1]), stats.data[-1]
