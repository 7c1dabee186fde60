"""
Peers with several ``--tracker`` endpoints move to the next tracker when
theirs goes away, log in again there by themselves, and a fetch in flight
does not notice: transfers go peer to peer.

Two independent trackers (each its own database, the accounts registered
on both) stand in for a group; a group on one PostgreSQL database behaves the
same from the peer's side.
"""

import hashlib
import os

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater

from .harness import TRACKER_ARGS, console
from .test_restarts import until
from .test_twistd import TWISTD, Processes

MiB = 1024 * 1024
#: A file the upload rate stretches over seconds, so the tracker moves while it is in flight.
SIZE = 3 * MiB
RATE = "768K"


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def endpoint(tracker) -> str:
    return f"tcp:host=127.0.0.1:port={tracker.listener.port_number}"


async def register_on(net, tracker, *names: str) -> None:
    """Create the accounts on *tracker* through a peer of its own (trackers with their own databases share none)."""
    port = tracker if isinstance(tracker, int) else tracker.listener.port_number
    registrar = await net.start_peer("registrar", tracker_port=port)
    c = await net.console(registrar)
    for name in names:
        assert (await c.command(f"register {name} secret")).ok
    await net.stop(registrar)


async def fetch_in_flight(tmp_path, source, fetcher_peer, fetcher):
    """
    alice publishes a rate-limited file; bob starts fetching it and, once
    bytes flow from alice, stops reading them: the fetch is then certainly
    in flight until :func:`go_on` (the connection itself stays as it is).
    Returns the file, the running fetch and its source connections.
    """
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(SIZE))
    assert (await source.command(f"publish {f} data.bin")).ok
    fetch = ensureDeferred(fetcher.command("fetch data.bin"))
    await until(lambda: any(d.crew.connections and d.received_bytes for d in fetcher_peer.peer.downloads.values()))
    (download,) = fetcher_peer.peer.downloads.values()
    held = list(download.crew.connections)
    for protocol in held:
        protocol.transport.pauseProducing()
    return f, fetch, held


def go_on(held) -> None:
    for protocol in held:
        protocol.transport.resumeProducing()


@pytest_twisted.ensureDeferred
async def test_peers_move_to_the_next_tracker_when_theirs_stops_and_a_fetch_in_flight_goes_on(net, tmp_path):
    first = await net.start_tracker(db="first.db")
    second = await net.start_tracker(db="second.db")
    first_port = first.listener.port_number
    await register_on(net, second, "alice", "bob")
    net.tracker = first
    alice_peer, alice = await net.user("alice", tracker=endpoint(second), upload_rate=RATE)
    bob_peer, bob = await net.user("bob", tracker=endpoint(second))
    f, fetch, held = await fetch_in_flight(tmp_path, alice, bob_peer, bob)
    watcher = await net.console(bob_peer)  # bob's own console is busy with the fetch
    before = await watcher.command("status")

    await net.stop(first)
    await until(lambda: {"alice", "bob"} <= set(second.directory.online) and second.directory.online["alice"].files)
    moved_while_fetching = not fetch.called
    go_on(held)
    reply = await fetch
    after = await watcher.command("status")
    g = tmp_path / "small.txt"
    g.write_text("published after the move")
    assert (await alice.command(f"publish {g} small.txt")).ok
    again = await bob.command("fetch small.txt")

    assert before.data[:2] == [
        "tracker connected, logged in as bob",
        f"tracker at 127.0.0.1:{first_port} (1 of 2 in --tracker)",
    ]
    assert moved_while_fetching, (reply, alice_peer.uploads.sent_bytes)
    assert reply.status.startswith(f"OK fetched data.bin {SIZE} bytes in "), reply
    assert digest(tmp_path / "bob" / "data.bin") == digest(f)
    assert alice_peer.uploads.sent_bytes == SIZE + len(g.read_text())
    assert after.data[:2] == [
        "tracker connected, logged in as bob",
        f"tracker at 127.0.0.1:{second.listener.port_number} (2 of 2 in --tracker)",
    ]
    assert again.ok and " from alice;" in again.status, again
    assert (tmp_path / "bob" / "small.txt").read_text() == "published after the move"
    pins = (tmp_path / "bob" / ".fileshare" / "tracker-pins").read_text()
    assert f"127.0.0.1:{first_port} {first.identity.fingerprint}\n" in pins
    assert f"127.0.0.1:{second.listener.port_number} {second.identity.fingerprint}\n" in pins


@pytest_twisted.ensureDeferred
async def test_a_peer_whose_first_tracker_is_down_logs_in_on_the_next_one(net, tmp_path):
    second = await net.start_tracker(db="second.db")
    await register_on(net, second, "alice")
    peer = await net.start_peer("alice", tracker_port=1, tracker=endpoint(second))
    c = await net.console(peer)

    login = await c.command("login alice secret")
    status = await c.command("status")

    assert login.ok, login
    assert status.data[:2] == [
        "tracker connected, logged in as alice",
        f"tracker at 127.0.0.1:{second.listener.port_number} (2 of 2 in --tracker)",
    ]


@pytest_twisted.ensureDeferred
async def test_each_tracker_is_held_to_its_own_fingerprint_and_one_that_fails_it_is_passed_over(net, tmp_path):
    first = await net.start_tracker(db="first.db")
    second = await net.start_tracker(db="second.db")
    await register_on(net, first, "alice")
    await register_on(net, second, "alice")
    wrong = second.identity.fingerprint  # what the first tracker does not present
    peer = await net.start_peer(
        "alice",
        tracker_port=first.listener.port_number,
        tracker=endpoint(second),
        tracker_fingerprint=f"{wrong},{second.identity.fingerprint}",
    )
    c = await net.console(peer)

    login = await c.command("login alice secret")
    status = await c.command("status")

    assert login.ok, login
    assert status.data[:2] == [
        "tracker connected, logged in as alice",
        f"tracker at 127.0.0.1:{second.listener.port_number} (2 of 2 in --tracker)",
    ]
    assert "alice" not in first.directory.online and "alice" in second.directory.online
    assert peer.tracker_endpoint.endpoints[0].problem == (
        f"the tracker at 127.0.0.1:{first.listener.port_number} presented certificate fingerprint "
        f"{first.identity.fingerprint}, not the {wrong} given with --tracker-fingerprint; refusing to connect"
    )


@pytest_twisted.ensureDeferred
async def test_a_tracker_restart_during_a_fetch_disturbs_nothing(net, tmp_path):
    tracker = await net.start_tracker()
    port = tracker.listener.port_number
    alice_peer, alice = await net.user("alice", upload_rate=RATE)
    bob_peer, bob = await net.user("bob")
    f, fetch, held = await fetch_in_flight(tmp_path, alice, bob_peer, bob)

    await net.stop(tracker)
    restarted = await net.start_tracker_on(port)
    await until(lambda: {"alice", "bob"} <= set(restarted.directory.online))
    restarted_while_fetching = not fetch.called
    go_on(held)
    reply = await fetch

    assert restarted_while_fetching
    assert reply.status.startswith(f"OK fetched data.bin {SIZE} bytes in "), reply
    assert digest(tmp_path / "bob" / "data.bin") == digest(f)
    assert alice_peer.uploads.sent_bytes == SIZE
    assert (await bob.command("status")).data[:2] == [
        "tracker connected, logged in as bob",
        f"tracker at 127.0.0.1:{port}",
    ]


async def admin_until(admin, command: str, predicate, timeout: float = 20.0):
    """Repeat *command* on a tracker process's admin console until *predicate* holds for its reply (bounded)."""
    waited = 0.0
    while not predicate(reply := await admin.command(command)):
        assert waited < timeout, f"{command!r} still answers {reply}"
        await deferLater(reactor, 0.1, lambda: None)
        waited += 0.1
    return reply


@pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")
@pytest_twisted.ensureDeferred
async def test_a_tracker_process_killed_under_live_peers_leaves_them_fetching_through_the_next_one(net, tmp_path):
    procs = Processes(tmp_path)
    try:
        trackers = []
        for db in ("first.db", "second.db"):
            proto, ports = await procs.start(
                "fileshare-tracker",
                ["--db", db, *TRACKER_ARGS],
                {"tracker", "admin console"},
            )
            trackers.append((proto, ports))
        (first, first_ports), (_, second_ports) = trackers
        second = f"tcp:host=127.0.0.1:port={second_ports['tracker']}"
        await register_on(net, second_ports["tracker"], "alice", "bob")
        alice_peer = await net.start_peer(
            "alice", tracker_port=first_ports["tracker"], tracker=second, upload_rate=RATE
        )
        bob_peer = await net.start_peer("bob", tracker_port=first_ports["tracker"], tracker=second)
        alice, bob = await net.console(alice_peer), await net.console(bob_peer)
        for name, c in (("alice", alice), ("bob", bob)):
            assert (await c.command(f"register {name} secret")).ok
            assert (await c.command(f"login {name} secret")).ok
        f, fetch, held = await fetch_in_flight(tmp_path, alice, bob_peer, bob)
        admin = await console(second_ports["admin console"])
        net.consoles.append(admin)

        first.transport.signalProcess("KILL")
        await first.ended
        await admin_until(admin, "peers", lambda r: r.status == "OK 2 hosts online")
        moved_while_fetching = not fetch.called
        go_on(held)
        reply = await fetch
        # bob announces what he fetched to the tracker he is on now: the second one.
        files = await admin_until(admin, "files", lambda r: r.data and r.data[0].endswith(" holders=2 online=2"))
    finally:
        await procs.stop_all()

    assert moved_while_fetching
    assert reply.status.startswith(f"OK fetched data.bin {SIZE} bytes in "), reply
    assert digest(tmp_path / "bob" / "data.bin") == digest(f)
    assert files.data == [f"data.bin {SIZE} {bob_peer.repository.by_name['data.bin'].root} holders=2 online=2"]
