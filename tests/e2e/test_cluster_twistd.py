"""
Two twistd trackers in one group on a throwaway PostgreSQL; one is killed
with SIGKILL under a live peer, and the other takes that peer offline.
"""

import os
import signal

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from tests.tracker._pg_fixture import pg_conninfo, pg_database  # noqa: F401

from .harness import console
from .test_tracker_failover import RATE, SIZE, admin_until, digest, fetch_in_flight, go_on
from .test_twistd import TWISTD, Twistd

pytestmark = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")


class Watched(Twistd):
    """A twistd process whose output a test can wait on: ``seen(text)`` fires when *text* has appeared."""

    def __init__(self, expected: set[str]) -> None:
        super().__init__(expected)
        self._watches: list[tuple[bytes, Deferred]] = []

    def outReceived(self, data: bytes) -> None:
        super().outReceived(data)
        for text, d in list(self._watches):
            if text in self.output and not d.called:
                self._watches.remove((text, d))
                d.callback(None)

    errReceived = outReceived

    def seen(self, text: str, timeout: float) -> Deferred:
        d: Deferred = Deferred()
        if text.encode() in self.output:
            d.callback(None)
            return d
        self._watches.append((text.encode(), d))
        d.addTimeout(timeout, reactor)
        return d


async def group_tracker(cwd, name: str, conninfo: str) -> tuple[Watched, dict[str, int]]:
    proto = Watched({"tracker", "admin console"})
    args = ["--listen", "tcp:0:interface=127.0.0.1", "--admin", "tcp:0:interface=127.0.0.1", "--db", "group.db"]
    args += ["--web", "none"]
    args += ["--cluster", conninfo, "--tracker-name", name, "--heartbeat", "0.2", "--dead-after", "1"]
    argv = [TWISTD, "-n", "--pidfile=", "--logfile=-", "fileshare-tracker", *args]
    reactor.spawnProcess(proto, TWISTD, argv, env=dict(os.environ), path=str(cwd))
    ports = await proto.ports
    await proto.seen(f"tracker {name} joined the group", timeout=30)
    return proto, ports


@pytest_twisted.ensureDeferred
async def test_a_tracker_killed_under_a_live_peer_has_it_taken_offline_by_the_other(
    pg_database,  # noqa: F811
    net,
    tmp_path,
):
    a, a_ports = await group_tracker(tmp_path, "a", pg_database)
    b, b_ports = await group_tracker(tmp_path, "b", pg_database)
    try:
        await net.user("alice", tracker_port=a_ports["tracker"])
        await net.user("bob", tracker_port=b_ports["tracker"])

        a.transport.signalProcess(signal.SIGKILL)
        await a.ended
        await b.seen("tracker a missed its heartbeats for 1.0 s: its hosts are offline (1)", timeout=10)

        admin = await console(b_ports["admin console"])
        peers = await admin.command("peers")
        admin.transport.loseConnection()
        assert [line.split(" ")[0] for line in peers.data] == ["bob"]
        assert peers.status == "OK 1 host online"
    finally:
        for proto in (a, b):
            if proto.status is None and not proto.ended.called:
                proto.transport.signalProcess(signal.SIGTERM)
                await proto.ended


async def group_tracker_on_db(cwd, name: str, url: str) -> tuple[Watched, dict[str, int]]:
    """A twistd tracker whose --db is the PostgreSQL database *url*: trackers on one database are one group."""
    proto = Watched({"tracker", "admin console"})
    args = ["--listen", "tcp:0:interface=127.0.0.1", "--admin", "tcp:0:interface=127.0.0.1", "--db", url]
    args += ["--web", "none"]
    args += ["--tracker-name", name, "--heartbeat", "0.2", "--dead-after", "1"]
    argv = [TWISTD, "-n", "--pidfile=", "--logfile=-", "fileshare-tracker", *args]
    reactor.spawnProcess(proto, TWISTD, argv, env=dict(os.environ), path=str(cwd / name))
    ports = await proto.ports
    await proto.seen(f"tracker {name} joined the group", timeout=30)
    return proto, ports


@pytest_twisted.ensureDeferred
async def test_two_trackers_on_one_postgresql_db_serve_one_group_and_a_killed_ones_peers_move_and_keep_fetching(
    pg_database,  # noqa: F811
    net,
    tmp_path,
):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, a_ports = await group_tracker_on_db(tmp_path, "a", pg_database)
    b, b_ports = await group_tracker_on_db(tmp_path, "b", pg_database)
    try:
        at_a = f"tcp:host=127.0.0.1:port={a_ports['tracker']}"
        at_b = f"tcp:host=127.0.0.1:port={b_ports['tracker']}"
        # alice starts on a, bob on b; each has the other tracker to move to.
        alice_peer = await net.start_peer("alice", tracker_port=a_ports["tracker"], tracker=at_b, upload_rate=RATE)
        bob_peer = await net.start_peer("bob", tracker_port=b_ports["tracker"], tracker=at_a)
        alice, bob = await net.console(alice_peer), await net.console(bob_peer)
        assert (await alice.command("register alice secret")).ok
        assert (await bob.command("register bob secret")).ok  # through b: one set of accounts
        assert (await alice.command("login alice secret")).ok
        assert (await bob.command("login bob secret")).ok
        admin = await console(b_ports["admin console"])
        net.consoles.append(admin)
        peers = await admin_until(admin, "peers", lambda r: r.status == "OK 2 hosts online")
        assert sorted(line.split(" ")[-1] for line in peers.data) == ["tracker=a", "tracker=b"]

        # bob, on b, fetches from alice, on a, and the fetch is in flight when a dies.
        f, fetch, held = await fetch_in_flight(tmp_path, alice, bob_peer, bob)
        a.transport.signalProcess(signal.SIGKILL)
        await a.ended
        await admin_until(
            admin, "peers", lambda r: r.status == "OK 2 hosts online" and all(x.endswith("tracker=b") for x in r.data)
        )
        moved_while_fetching = not fetch.called
        go_on(held)
        reply = await fetch
        files = await admin_until(admin, "files", lambda r: r.data and r.data[0].endswith(" holders=2 online=2"))
    finally:
        for proto in (a, b):
            if proto.status is None and not proto.ended.called:
                proto.transport.signalProcess(signal.SIGTERM)
                await proto.ended

    assert moved_while_fetching
    assert reply.status.startswith(f"OK fetched data.bin {SIZE} bytes in "), reply
    assert digest(tmp_path / "bob" / "data.bin") == digest(f)
    assert files.data == [f"data.bin {SIZE} {bob_peer.repository.by_name['data.bin'].root} holders=2 online=2"]
