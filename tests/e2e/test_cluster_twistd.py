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
