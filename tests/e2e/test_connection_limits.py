"""Connection caps on real ports on loopback: a flood from one address does not lock out another."""

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from fileshare.limits import CONSOLE_CAPS, TRACKER_CAPS

from .harness import ConsoleClient

#: Seconds any wait in these tests may take.
WAIT = 30


class Idle(Protocol):
    """Connects and says nothing; counts itself in *lost* when the other end closes."""

    def __init__(self, lost: list["Idle"], enough: int, done: Deferred) -> None:
        self.lost, self.enough, self.done = lost, enough, done

    def connectionLost(self, reason) -> None:
        self.lost.append(self)
        if len(self.lost) == self.enough and not self.done.called:
            self.done.callback(None)


async def flood(port: int, source: str, count: int, expected_refusals: int) -> tuple[list[Idle], list[Idle]]:
    """*count* idle connections from *source*; returns (all, refused) once *expected_refusals* were closed."""
    lost: list[Idle] = []
    done: Deferred = Deferred()
    done.addTimeout(WAIT, reactor)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    clients = await gatherResults(
        [connectProtocol(endpoint, Idle(lost, expected_refusals, done)) for _ in range(count)]
    )
    await done
    return clients, lost


def close_all(clients: list[Idle]) -> None:
    for c in clients:
        if c.transport.connected:
            c.transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_idle_connections_past_max_per_address_are_refused_while_an_honest_peer_logs_in(net):
    tracker = await net.start_tracker()
    limits = tracker.listener.factory
    clients, refused = await flood(tracker.listener.port_number, "127.0.0.2", 100, 100 - TRACKER_CAPS.per_address)
    try:
        assert limits.refused == {"total": 0, "per_address": 36, "pending": 0}
        assert limits.per_address["127.0.0.2"] == TRACKER_CAPS.per_address == 64

        peer, console = await net.user("alice")  # from 127.0.0.1, over TLS: registers and logs in

        assert (await console.command("search *")).ok
        assert "alice" in tracker.directory.online
        assert limits.per_address["127.0.0.1"] == 1 and limits.pending <= TRACKER_CAPS.per_address
        assert len(refused) == 36
    finally:
        close_all(clients)


@pytest_twisted.ensureDeferred
async def test_the_admin_console_holds_sixteen_connections_and_closes_the_next_at_once(net):
    tracker = await net.start_tracker()
    consoles = [await net.console(tracker) for _ in range(CONSOLE_CAPS.total)]

    extra = ConsoleClient()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", tracker.admin.port_number), extra)
    extra.closed.addTimeout(WAIT, reactor)
    await extra.closed

    assert not extra.greeting.called
    assert tracker.admin.factory.refused["per_address"] == 1
    assert (await consoles[0].command("help")).ok


@pytest_twisted.ensureDeferred
async def test_idle_connections_to_a_peer_s_upload_port_fill_max_pending_and_no_more(net):
    await net.start_tracker()
    peer = await net.start_peer("alice", max_pending="4", max_per_address="100")
    clients, refused = await flood(peer.listener.port_number, "127.0.0.3", 10, 6)
    try:
        assert len(refused) == 6
        assert peer.listener.factory.refused == {"total": 0, "per_address": 0, "pending": 6}
        assert peer.listener.factory.pending == 4
    finally:
        close_all(clients)
