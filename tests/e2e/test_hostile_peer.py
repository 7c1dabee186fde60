"""
Hostile clients against real peer processes: floods and slow-loris on the
upload port, piece-list requests pipelined and never read, a queue flood
from one address while another address fetches, fake sources (silent,
trickling, with an oversized piece list) that log in to the tracker as
peers, and garbage on the upload port and the console.  After each attack
an honest user registers, publishes and fetches, and gets the right bytes.

alice (the source) runs with 2 upload slots, 1 queued connection per
address, a 1 s send timeout, and at most 12 connections (4 per address, 12
before ``hello``); bob (the fetcher) gives a source 2 s per request and
waits at most 10 s in a source's queue.
"""

import os
import random
import secrets

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, DeferredList

from fileshare.peer.service import Options as PeerOptions
from fileshare.tls import generate

from . import hostile
from .hostile import (
    Cluster,
    FakeSource,
    Honest,
    Memory,
    MiB,
    Sustained,
    bounded,
    call,
    close_all,
    established,
    flood,
    line,
    logged_in,
    until,
    upload,
)
from .test_hostile_tracker import AFTER_SLACK, PEAK_SLACK, supported

pytestmark = pytest.mark.skipif(
    not os.path.exists(hostile.TWISTD), reason="twistd is not installed next to this Python"
)

SLOTS = 2
QUEUED_PER_ADDRESS = 1
PER_ADDRESS = 4
TOTAL = 12
REQUEST_TIMEOUT = 2.0
SOURCE_OPTIONS = {
    "max-uploads": SLOTS,
    "max-queued-per-address": QUEUED_PER_ADDRESS,
    "send-timeout": 1,
    "max-connections": TOTAL,
    "max-per-address": PER_ADDRESS,
    "max-pending": TOTAL,
}
#: Connections each console holds, a fixed cap (docs/protocol.rst, "Connections per port").
CONSOLE_CAP = 16
FETCHER_OPTIONS = {"request-timeout": REQUEST_TIMEOUT, "queue-timeout": 10}
BIG = 256 * MiB
#: Seconds an attack on memory is kept up after the honest round trip.
HOLD = 3.0


class World:
    def __init__(self, cluster: Cluster, honest: Honest) -> None:
        self.cluster = cluster
        self.honest = honest
        self.alice = honest.alice_node
        self.bob = honest.bob_node
        self.mallory_identity = generate("mallory")

    @property
    def uploads(self) -> int:
        return self.alice.found["peer uploads"]

    async def ticket_for_big(self) -> bytes:
        """A hello with a fresh ticket the tracker gave mallory for alice's big.bin."""
        if not getattr(self, "mallory", None) or not self.mallory.is_open:
            self.mallory = await logged_in(
                self.cluster.tracker_port, "mallory", identity=self.mallory_identity, source="127.0.0.2"
            )
        (item,) = (await call(self.mallory, "sources", fname="big.bin"))["items"]
        self.big_root = item["root"]
        return line({"op": "hello", "versions": [1], "ticket": item["ticket"]})


@pytest_twisted.async_yield_fixture(scope="module")
async def world(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("hostile-peer"))
    try:
        await cluster.start_tracker()
        peers = await DeferredList(
            [
                Deferred.fromCoroutine(cluster.start_peer("alice", *supported(PeerOptions, SOURCE_OPTIONS))),
                Deferred.fromCoroutine(cluster.start_peer("bob", *supported(PeerOptions, FETCHER_OPTIONS))),
            ],
            fireOnOneErrback=True,
        )
        honest = Honest(cluster, peers[0][1], peers[1][1])
        await honest.log_in()
        big = cluster.directory / "big.bin"
        with open(big, "wb") as f:
            f.truncate(BIG)
        assert (await bounded(honest.alice.command(f"publish {big} big.bin"), 30, "publishing big.bin")).ok
        world = World(cluster, honest)
        # Memory is measured from warm processes: one honest round trip has run.
        await honest.roundtrip("warm-up")
        yield world
        honest.close()
    finally:
        await cluster.stop()


async def quiet(world: World) -> None:
    """Wait (bounded) until bob keeps no idle connection to alice's upload port."""
    await until(lambda: "127.0.0.1" not in established(world.uploads), 5, "bob's connections to alice closed")


@pytest_twisted.ensureDeferred
async def test_an_idle_flood_of_the_upload_port_from_one_address_keeps_only_max_per_address(world, request):
    memory = Memory(world.alice)

    held = await flood(world.uploads, 20, "127.0.0.2")
    await until(lambda: sum(not h.open for h in held) >= 20 - PER_ADDRESS, 5, "connections past the cap refused")
    await world.honest.roundtrip(request.node.name)
    still_open = sum(h.open for h in held)
    close_all(held)
    await memory.settle(AFTER_SLACK)
    memory.record(request.node.name)

    assert still_open == PER_ADDRESS


@pytest_twisted.ensureDeferred
async def test_a_slow_loris_flood_from_many_addresses_keeps_only_max_connections(world, request):
    await quiet(world)
    held = []
    for i in range(TOTAL):
        held += await flood(world.uploads, 2, f"127.0.0.{20 + i}", trickle=b"\x16\x03\x01\x02\x00\x01")

    await until(lambda: sum(not h.open for h in held) >= TOTAL, 5, "connections past the cap refused")
    still_open = sum(h.open for h in held)
    close_all(held)
    await world.honest.roundtrip(request.node.name)

    assert still_open == TOTAL


@pytest_twisted.ensureDeferred
async def test_a_queue_flood_from_one_address_does_not_stop_another_address_fetching(world, request):
    hello = await world.ticket_for_big()
    whole_file = hello + line({"op": "get", "root": world.big_root, "offset": 0, "length": BIG})
    await quiet(world)

    firsts = []
    for _ in range(SLOTS + QUEUED_PER_ADDRESS + 1):
        client = await upload(world.uploads, whole_file, world.mallory_identity, "127.0.0.3", read=False)
        firsts.append(client)
    lines = [c.first for c in firsts]
    # Then the flood keeps every connection it may have, reconnecting as they are taken back.
    attack = Sustained(world.uploads, whole_file, world.mallory_identity, "127.0.0.3", PER_ADDRESS)
    try:
        latency = await world.honest.roundtrip(request.node.name)
    finally:
        attack.stop()
        close_all(firsts)

    assert lines[:SLOTS] == [{"ok": True, "version": 1}] * SLOTS
    assert lines[SLOTS] == {"queued": 1}
    assert lines[SLOTS + 1] is None or lines[SLOTS + 1]["ok"] is False
    assert latency < 10


@pytest_twisted.ensureDeferred
async def test_piece_list_requests_pipelined_and_never_read_keep_the_source_memory_bounded(world, request):
    hello = await world.ticket_for_big()
    memory = Memory(world.alice)

    # Four addresses, each pipelining 20,000 requests for a 16 KiB piece list (320 MB of replies).
    clients = [
        await upload(
            world.uploads,
            hello + line({"op": "pieces", "root": world.big_root}) * 20000,
            world.mallory_identity,
            f"127.0.0.{4 + i}",
            read=False,
        )
        for i in range(4)
    ]
    latency = await world.honest.roundtrip(request.node.name)
    await memory.hold(HOLD, PEAK_SLACK)
    close_all(clients)
    await memory.settle(AFTER_SLACK)
    memory.record(request.node.name)

    assert memory.peak - memory.before < PEAK_SLACK
    assert memory.after - memory.before < AFTER_SLACK
    assert latency < 5


async def fake(world: World, mode: str, fname: str, size: int, data: bytes | None = None) -> FakeSource:
    # A fresh account each time, so no test meets an earlier fake's session.
    source = FakeSource(mode, f"fake-{mode}-{secrets.token_hex(3)}", size, data)
    await source.start(world.cluster.tracker_port, fname)
    return source


async def fetch_then_cancel(world: World, fetcher, source: FakeSource, fname: str, op: str) -> tuple:
    """On *fetcher*, ``fetch fname``; once *source* was asked *op*, ``status`` and ``cancel`` on another console.

    Their replies, and the fetch's.
    """
    watcher = await hostile.open_console(world.bob.found["peer console"])
    try:
        fetch = fetcher.send_raw(f"fetch {fname}\n".encode())[0]
        await until(lambda: any(r.get("op") == op for r in source.requests), 10, f"the fetch asking the fake {op}")
        status = await watcher.command("status")
        cancelled = await watcher.command(f"cancel {fname}")
        return status, cancelled, await bounded(fetch, 5, "the cancelled fetch ending")
    finally:
        watcher.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_a_source_that_never_answers_is_dropped_and_its_fetch_is_shown_and_cancellable(world, request):
    data = os.urandom(3 * MiB)
    source = await fake(world, "silent", "silent.bin", len(data), data)
    fetcher = await hostile.open_console(world.bob.found["peer console"])
    try:
        status, cancelled, first = await fetch_then_cancel(world, fetcher, source, "silent.bin", "pieces")
        second = await bounded(fetcher.command("fetch silent.bin"), REQUEST_TIMEOUT + 8, "a fetch from a silent source")
    finally:
        await source.stop()
        fetcher.transport.loseConnection()
    await world.honest.roundtrip(request.node.name)

    assert any(d.startswith("fetching silent.bin ") for d in status.data), status
    assert cancelled.ok, cancelled
    assert first.status == "ERR fetch of 'silent.bin' cancelled", first
    assert second.status.startswith("ERR ") and "fake-silent" in second.status, second


@pytest_twisted.ensureDeferred
async def test_a_source_that_stalls_mid_piece_is_dropped_and_the_fetch_ends_naming_it(world, request):
    data = os.urandom(3 * MiB)
    source = await fake(world, "stall", "stall.bin", len(data), data)
    try:
        reply = await bounded(
            world.honest.bob.command("fetch stall.bin"), REQUEST_TIMEOUT + 8, "a fetch from a stalled source"
        )
    finally:
        await source.stop()
    await world.honest.roundtrip(request.node.name)

    assert reply.status.startswith("ERR ") and "fake-stall" in reply.status, reply
    assert "sent no data" in reply.status, reply


@pytest_twisted.ensureDeferred
async def test_a_fetch_from_a_trickling_source_is_shown_and_cancellable(world, request):
    data = os.urandom(3 * MiB)
    source = await fake(world, "trickle", "trickle.bin", len(data), data)
    fetcher = await hostile.open_console(world.bob.found["peer console"])
    try:
        status, cancelled, fetch = await fetch_then_cancel(world, fetcher, source, "trickle.bin", "get")
    finally:
        await source.stop()
        fetcher.transport.loseConnection()
    await world.honest.roundtrip(request.node.name)

    assert any(d.startswith("fetching trickle.bin ") for d in status.data), status
    assert cancelled.ok, cancelled
    assert fetch.status == "ERR fetch of 'trickle.bin' cancelled", fetch


@pytest_twisted.ensureDeferred
async def test_a_trickling_source_does_not_hold_up_a_fetch_an_honest_source_can_serve(world, request):
    data = os.urandom(4 * MiB)
    path = world.cluster.directory / "shared.bin"
    path.write_bytes(data)
    assert (await world.honest.alice.command(f"publish {path} shared.bin")).ok
    source = await fake(world, "trickle", "shared.bin", len(data), data)
    try:
        reply = await bounded(world.honest.bob.command("fetch shared.bin"), REQUEST_TIMEOUT + 30, "a shared fetch")
    finally:
        await source.stop()

    assert reply.ok, reply
    assert (world.cluster.directory / "bob" / "shared.bin").read_bytes() == data


@pytest_twisted.ensureDeferred
async def test_an_oversized_piece_list_is_refused_before_any_piece_is_asked_for(world, request):
    memory = Memory(world.bob)
    source = await fake(world, "oversized", "huge.bin", 1 << 30)
    try:
        reply = await bounded(world.honest.bob.command("fetch huge.bin"), 15, "a fetch from a lying source")
    finally:
        await source.stop()
    await memory.settle(AFTER_SLACK)
    memory.record(request.node.name)
    await world.honest.roundtrip(request.node.name)

    assert reply.status.startswith("ERR ") and "fake-oversized" in reply.status, reply
    assert "piece size 1073741824 is not the 1048576 the file size calls for" in reply.status, reply
    assert [r["op"] for r in source.requests if r["op"] == "get"] == []
    assert memory.peak - memory.before < PEAK_SLACK


@pytest_twisted.ensureDeferred
async def test_an_idle_flood_of_the_consoles_keeps_only_their_fixed_cap(world, request):
    tracker_memory = Memory(world.cluster.tracker)
    bob_memory = Memory(world.bob)

    peer_console = await flood(world.bob.found["peer console"], 40, "127.0.0.1")
    admin_console = await flood(world.cluster.tracker.found["admin console"], 40, "127.0.0.1")
    await until(
        lambda: sum(h.open for h in peer_console + admin_console) <= 2 * CONSOLE_CAP - 1,
        5,
        "console connections refused",
    )
    await world.honest.roundtrip(request.node.name)
    still_open = (sum(h.open for h in peer_console), sum(h.open for h in admin_console))
    close_all(peer_console + admin_console)
    for memory in (tracker_memory, bob_memory):
        await memory.settle(AFTER_SLACK)
        memory.record(request.node.name)

    # bob's own console (the honest user's) is one of its 16.
    assert still_open == (CONSOLE_CAP - 1, CONSOLE_CAP)
    assert tracker_memory.peak - tracker_memory.before < PEAK_SLACK
    assert bob_memory.peak - bob_memory.before < PEAK_SLACK


@pytest_twisted.ensureDeferred
async def test_garbage_on_the_upload_port_and_the_peer_console_changes_nothing(world, request):
    rng = random.Random(9)
    noise = [bytes(rng.getrandbits(8) for _ in range(4096)) for _ in range(3)]
    tcp = await flood(world.uploads, 1, "127.0.0.5")
    tls = await flood(world.uploads, 1, "127.0.0.5", generate("noise"))
    hello = await world.ticket_for_big()
    greeted = await upload(world.uploads, hello, world.mallory_identity, "127.0.0.5")
    consoles = await flood(world.alice.found["peer console"], 2, "127.0.0.1")
    for held, data in zip([*tcp, *tls, greeted, *consoles], noise + noise[:2], strict=True):
        held.transport.write(data + b"\n" + data)

    await until(lambda: not any(h.open for h in tcp + tls), 5, "garbage connections closed")
    close_all([greeted, *consoles])
    await world.honest.roundtrip(request.node.name)

    assert world.alice.alive and world.bob.alive
    assert b"Traceback" not in world.alice.output


@pytest_twisted.ensureDeferred
async def test_console_commands_pipelined_and_never_read_keep_the_peer_memory_bounded(world, request):
    memory = Memory(world.bob)
    c = await hostile.open_console(world.bob.found["peer console"])

    c.transport.pauseProducing()
    c.transport.write(b"help\n" * 50000)
    await world.honest.roundtrip(request.node.name)
    await memory.hold(HOLD, PEAK_SLACK)
    c.transport.abortConnection()
    await memory.settle(AFTER_SLACK)
    memory.record(request.node.name)

    assert memory.peak - memory.before < PEAK_SLACK
