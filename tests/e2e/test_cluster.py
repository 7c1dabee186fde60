"""
Two trackers, one group: real trackers and peers on loopback, the group in a
throwaway PostgreSQL (tests/tracker/_pg_fixture.py), accounts and the index
in one shared SQLite file (until the PostgreSQL store joins them).
"""

import hashlib
import os
import time

import pytest_twisted

from tests.tracker._pg_fixture import pg_conninfo, pg_database  # noqa: F401
from tests.tracker.test_cluster_pg import until

HEARTBEAT = 0.2
DEAD_AFTER = 1.0


async def start_group_tracker(net, name: str, conninfo: str):
    tracker = await net.start_tracker(
        db="group.db", cluster=conninfo, tracker_name=name, heartbeat=HEARTBEAT, dead_after=DEAD_AFTER
    )
    await tracker.cluster_ready
    return tracker


@pytest_twisted.ensureDeferred
async def test_a_peer_on_b_fetches_from_a_peer_on_a_and_a_killed_a_takes_its_hosts_offline(
    pg_database,  # noqa: F811 (set up before net, so the trackers stop before their database goes)
    net,
    tmp_path,
):
    a = await start_group_tracker(net, "tracker-a", pg_database)
    b = await start_group_tracker(net, "tracker-b", pg_database)
    _, alice = await net.user("alice", tracker_port=a.listener.port_number)
    _, bob = await net.user("bob", tracker_port=b.listener.port_number)
    source = tmp_path / "notes.bin"
    source.write_bytes(os.urandom(300_000))
    assert (await alice.command(f"publish {source} notes.bin")).ok
    await until(b, lambda: "alice" in b.cluster.remote, timeout=5)

    fetched = await bob.command("fetch notes.bin")

    assert fetched.status.startswith("OK fetched notes.bin 300000 bytes in ") and " from alice" in fetched.status
    assert (
        hashlib.sha256((tmp_path / "bob" / "notes.bin").read_bytes()).digest()
        == hashlib.sha256(source.read_bytes()).digest()
    )
    admin = await net.console(b)
    peers = await admin.command("peers")
    assert [line.split(" ")[0] + " " + line.split(" ")[-1] for line in peers.data] == [
        "alice tracker=tracker-a",
        "bob tracker=tracker-b",
    ]
    assert peers.status == "OK 2 hosts online"
    assert (await admin.command("ping alice")).status.startswith("OK alice answered in ")
    discovered = await admin.command("discover alice")
    assert (len(discovered.data), discovered.status) == (1, "OK 1 file in alice's repository")
    assert discovered.data[0].startswith("notes.bin 300000 ")

    a.cluster.abandon()  # killed: no goodbye to the group, no more heartbeats
    await net.stop(a)
    start = time.monotonic()
    await until(b, lambda: "alice" not in b.cluster.remote, timeout=DEAD_AFTER + 5)
    assert time.monotonic() - start <= DEAD_AFTER + 2 * HEARTBEAT + 0.5
    peers = await admin.command("peers")
    assert (len(peers.data), peers.status) == (1, "OK 1 host online")
    assert (await bob.command("fetch notes.bin --from alice")).status.startswith("ERR ")


@pytest_twisted.ensureDeferred
async def test_what_a_peer_on_a_publishes_b_serves_from_its_index_and_forgets_when_unpublished(
    pg_database,  # noqa: F811
    net,
    tmp_path,
):
    a = await start_group_tracker(net, "tracker-a", pg_database)
    b = await start_group_tracker(net, "tracker-b", pg_database)
    _, alice = await net.user("alice", tracker_port=a.listener.port_number)
    _, bob = await net.user("bob", tracker_port=b.listener.port_number)
    await until(b, lambda: "alice" in b.cluster.remote, timeout=5)
    asked: list[str] = []
    store = b.directory.store
    store.search = lambda *args, **kwargs: asked.append("search")  # B must not look up in the database
    store.holdings = lambda *args, **kwargs: asked.append("holdings")
    source = tmp_path / "notes.bin"
    source.write_bytes(os.urandom(3000))

    assert (await alice.command(f"publish {source} notes.bin")).ok
    await until(b, lambda: b.directory.index.count("alice") == 1, timeout=5)
    found = await bob.command("search notes*")
    assert (found.status, [line.split()[0] for line in found.data]) == ("OK 1 file match 'notes*'", ["notes.bin"])
    fetched = await bob.command("fetch notes.bin")
    assert fetched.status.startswith("OK fetched notes.bin 3000 bytes in ") and " from alice" in fetched.status

    assert (await alice.command("unpublish notes.bin")).status == "OK unpublished notes.bin"
    await until(b, lambda: b.directory.index.count("alice") == 0, timeout=5)
    assert [h.host for h in b.directory.index.holdings("notes.bin")] == ["bob"]  # the copy bob fetched
    assert (await bob.command("search notes*")).data[0].endswith(" online=1 holders=1")
    assert (await bob.command("fetch notes.bin --from alice")).status.startswith("ERR ")
    assert asked == []
