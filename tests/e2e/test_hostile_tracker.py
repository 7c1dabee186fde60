"""
Hostile clients against a real tracker process (its peer port and admin
console): floods of idle connections, slow-loris, requests pipelined and
never read, endless replies, garbage.  After each attack an honest user
registers, publishes and fetches, and gets the right bytes.

The tracker runs with small caps and timeouts so every case ends in a
second or two: at most 8 connections per address, 16 not yet logged in,
40 in all, 1 s to log in, a ``ping`` after 1 s of silence from a logged-in
connection, 2000 records per host.  The caps and timeouts are those of
docs/protocol.rst ("Connections per port", "Tracker port timeouts").
"""

import os
import random

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList

from fileshare.peer.service import Options as PeerOptions
from fileshare.tls import generate
from fileshare.tracker.service import Options as TrackerOptions

from . import hostile
from .hostile import Cluster, Honest, Memory, MiB, bounded, call, close_all, flood, logged_in, until

pytestmark = pytest.mark.skipif(
    not os.path.exists(hostile.TWISTD), reason="twistd is not installed next to this Python"
)

PER_ADDRESS = 8
PENDING = 16
TOTAL = 40
LOGIN_TIMEOUT = 1.0
IDLE_TIMEOUT = 1.0
MAX_RECORDS = 2000
TRACKER_OPTIONS = {
    "max-connections": TOTAL,
    "max-per-address": PER_ADDRESS,
    "max-pending": PENDING,
    "login-timeout": LOGIN_TIMEOUT,
    "idle-timeout": IDLE_TIMEOUT,
    "max-records": MAX_RECORDS,
}
#: A refused connection is closed at once; a timed-out one at the deadline, or
#: 5 s later if it does not drain (a client that never did its TLS handshake).
CLOSE_SLACK = 6.0
#: How much a burst may grow a process, and how close to its start it must come back.
PEAK_SLACK = 60 * MiB
AFTER_SLACK = 40 * MiB
#: Seconds an attack on memory is kept up after the honest round trip.
HOLD = 3.0


def supported(options_class, wanted: dict) -> list[str]:
    """The *wanted* options this branch's plugin knows, as arguments (see the first test for the rest)."""
    known = {p[0] for p in options_class.optParameters}
    return [arg for name, value in wanted.items() if name in known for arg in (f"--{name}", str(value))]


def test_every_cap_and_timeout_the_suite_uses_is_an_option_of_the_plugins():
    """The suite passes only options the plugins know; this says which are missing, so none is dropped silently."""
    from .test_hostile_peer import FETCHER_OPTIONS, SOURCE_OPTIONS

    tracker = {p[0] for p in TrackerOptions.optParameters}
    peer = {p[0] for p in PeerOptions.optParameters}
    missing = sorted(f"tracker --{n}" for n in TRACKER_OPTIONS if n not in tracker) + sorted(
        f"peer --{n}" for n in {**SOURCE_OPTIONS, **FETCHER_OPTIONS} if n not in peer
    )
    assert missing == []


@pytest_twisted.async_yield_fixture(scope="module")
async def world(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("hostile-tracker"))
    try:
        await cluster.start_tracker(*supported(TrackerOptions, TRACKER_OPTIONS))
        alice, bob = await DeferredList(
            [Deferred.fromCoroutine(cluster.start_peer(name)) for name in ("alice", "bob")], fireOnOneErrback=True
        )
        honest = Honest(cluster, alice[1], bob[1])
        await honest.log_in()
        # Memory is measured from warm processes: one honest round trip has run.
        await honest.roundtrip("warm-up")
        yield cluster, honest
        honest.close()
    finally:
        await cluster.stop()


def port(cluster: Cluster) -> int:
    return cluster.tracker.found["tracker"]


def timed_out(held: hostile.Held) -> bool:
    """Whether the tracker told this connection it missed its login deadline."""
    return b'"code":"timeout"' in held.received


@pytest_twisted.ensureDeferred
async def test_an_idle_flood_from_one_address_keeps_only_max_per_address_connections(world, request):
    cluster, honest = world
    memory = Memory(cluster.tracker)

    held = await flood(port(cluster), 40, "127.0.0.2", generate("flood"))
    await honest.roundtrip(request.node.name)
    await until(lambda: not any(h.open for h in held), LOGIN_TIMEOUT + CLOSE_SLACK, "the flood closed")
    await memory.settle(AFTER_SLACK)
    memory.record(request.node.name)

    # Refused connections are closed at once without a word; admitted ones
    # meet the login deadline, which says so.
    assert sorted(timed_out(h) for h in held) == [False] * (40 - PER_ADDRESS) + [True] * PER_ADDRESS
    assert memory.peak - memory.before < PEAK_SLACK


@pytest_twisted.ensureDeferred
async def test_an_idle_flood_from_many_addresses_keeps_only_max_pending_connections(world, request):
    cluster, honest = world

    identity = generate("flood")
    held = []
    for i in range(10):
        held += await flood(port(cluster), 4, f"127.0.0.{10 + i}", identity)
    await honest.roundtrip(request.node.name)
    await until(lambda: not any(h.open for h in held), LOGIN_TIMEOUT + CLOSE_SLACK, "the flood closed")

    assert sorted(timed_out(h) for h in held) == [False] * (40 - PENDING) + [True] * PENDING


@pytest_twisted.ensureDeferred
async def test_connections_that_never_log_in_are_closed_after_the_login_timeout(world, request):
    cluster, honest = world
    identity = generate("loris")
    hello = b'{"id":1,"op":"hello","versions":[1]}\n'
    kinds = {
        "silent tcp": (await flood(port(cluster), 1, "127.0.0.3"))[0],
        "silent tls": (await flood(port(cluster), 1, "127.0.0.3", identity))[0],
        "slow-loris tcp": (await flood(port(cluster), 1, "127.0.0.3", trickle=b"\x16\x03\x01\x02\x00\x01"))[0],
        "slow-loris tls": (await flood(port(cluster), 1, "127.0.0.3", identity, trickle=hello[:-1]))[0],
    }
    greeted = (await flood(port(cluster), 1, "127.0.0.3", identity))[0]
    greeted.transport.write(hello)
    kinds["hello only"] = greeted
    registered = await hostile.rpc_client(port(cluster), identity, "127.0.0.3")
    assert (await call(registered, "hello", versions=[1]))["ok"]
    assert (await call(registered, "register", name="loris", password="pw"))["ok"]

    await until(
        lambda: not any(h.open for h in kinds.values()) and not registered.is_open,
        LOGIN_TIMEOUT + CLOSE_SLACK,
        "connections that never log in closed",
    )
    await honest.roundtrip(request.node.name)

    assert b'"ok":true' in greeted.received
    # Closed by the timeout, not at once and not much later.
    assert {
        k: 0.8 * LOGIN_TIMEOUT <= h.lifetime <= LOGIN_TIMEOUT + CLOSE_SLACK for k, h in kinds.items()
    } == dict.fromkeys(kinds, True)


@pytest_twisted.ensureDeferred
async def test_a_silent_logged_in_client_is_pinged_after_the_idle_timeout(world, request):
    cluster, honest = world
    sleeper = await logged_in(port(cluster), "sleeper", source="127.0.0.4", answer_pings=False)

    # Closing it takes the ping's own 30 s more: the unit tests prove that on a Clock.
    await until(lambda: sleeper.requests_seen, IDLE_TIMEOUT + 3, "a ping to a silent logged-in client")
    sleeper.transport.abortConnection()
    await honest.roundtrip(request.node.name)

    assert [m["op"] for m in sleeper.requests_seen] == ["ping"]


@pytest_twisted.ensureDeferred
async def test_records_per_host_are_capped_by_max_records(world):
    cluster, _ = world
    hoarder = await logged_in(port(cluster), "hoarder", source="127.0.0.5")

    too_many = await call(hoarder, "announce", files=hostile.junk_records(MAX_RECORDS + 1, "h"), reset=True)
    at_cap = await call(hoarder, "announce", files=hostile.junk_records(MAX_RECORDS, "h"), reset=True)
    one_more = await call(hoarder, "publish", fname="one-more.junk", size=1, root="a" * 64)
    hoarder.transport.loseConnection()

    assert too_many["ok"] is False, too_many
    assert at_cap == {"re": at_cap["re"], "ok": True, "count": MAX_RECORDS, "items": []}
    assert one_more["ok"] is False, one_more


@pytest_twisted.ensureDeferred
async def test_garbage_on_the_peer_port_and_the_admin_console_changes_nothing(world, request):
    cluster, honest = world
    rng = random.Random(9)
    noise = [bytes(rng.getrandbits(8) for _ in range(4096)) for _ in range(4)]
    tcp = await flood(port(cluster), 4, "127.0.0.8")
    tls = await flood(port(cluster), 4, "127.0.0.8", generate("noise"))
    admin = await flood(cluster.tracker.found["admin console"], 4, "127.0.0.1")
    for held, data in zip(tcp + tls + admin, noise * 3, strict=True):
        held.transport.write(data + b"\n" + data)

    await until(lambda: not any(h.open for h in tcp + tls), LOGIN_TIMEOUT + CLOSE_SLACK, "garbage connections closed")
    close_all(admin)
    await honest.roundtrip(request.node.name)

    assert cluster.tracker.alive
    assert b"Traceback" not in cluster.tracker.output


class _EndlessFrames:
    """A push producer writing ``list`` reply frames of 200 records as fast as the transport takes them."""

    def __init__(self, client, rid: int, limit: int) -> None:
        self.client, self.rid, self.limit = client, rid, limit
        self.frame = hostile.line({"re": rid, "ok": True, "more": True, "items": hostile.junk_records(200, "liar")})
        self.sent = 0
        self.paused = False
        client.transport.registerProducer(self, True)
        reactor.callLater(0, self._write)

    def _write(self) -> None:
        while not self.paused and self.client.is_open and self.sent < self.limit:
            self.client.transport.write(self.frame)
            self.sent += len(self.frame)
            if self.sent % (4 * MiB) < len(self.frame):
                reactor.callLater(0, self._write)
                return

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            reactor.callLater(0, self._write)

    def stopProducing(self) -> None:
        self.paused = True


@pytest_twisted.ensureDeferred
async def test_an_endless_discover_reply_keeps_the_tracker_memory_bounded(world, request):
    cluster, honest = world
    liar = await logged_in(port(cluster), "liar", source="127.0.0.7")
    streams = []

    def answer(client, message):
        if message.get("op") == "list":
            streams.append(_EndlessFrames(client, message["id"], 1 << 30))
        elif "id" in message:
            client.transport.write(hostile.line({"re": message["id"], "ok": True}))

    liar.on_request = answer
    admin = await hostile.open_console(cluster.tracker.found["admin console"])
    memory = Memory(cluster.tracker)

    discovered = await bounded(admin.command("discover liar"), 15, "discover of a host that never ends its reply")
    liar.transport.abortConnection()
    await memory.settle(AFTER_SLACK)
    memory.record(request.node.name)
    hostile.figure(request.node.name, "bytes sent by the liar", f"{streams[0].sent / MiB:.0f} MiB")
    await honest.roundtrip(request.node.name)
    admin.transport.loseConnection()

    assert discovered.status.startswith("ERR "), discovered
    assert memory.peak - memory.before < PEAK_SLACK


@pytest_twisted.ensureDeferred
async def test_pipelined_admin_commands_never_read_keep_the_tracker_memory_bounded(world, request):
    cluster, honest = world
    admin = await hostile.open_console(cluster.tracker.found["admin console"])
    memory = Memory(cluster.tracker)

    admin.transport.pauseProducing()
    admin.transport.write(b"help\n" * 50000)
    await honest.roundtrip(request.node.name)
    await memory.hold(HOLD, PEAK_SLACK)
    admin.transport.abortConnection()
    await memory.settle(AFTER_SLACK)
    memory.record(request.node.name)

    assert memory.peak - memory.before < PEAK_SLACK


@pytest_twisted.ensureDeferred
async def test_pipelined_searches_never_read_keep_the_tracker_memory_bounded(world, request):
    cluster, honest = world
    mallory = await logged_in(port(cluster), "mallory", source="127.0.0.6")
    for start in range(0, MAX_RECORDS, 200):
        records = hostile.junk_records(MAX_RECORDS, "m")[start : start + 200]
        assert (await call(mallory, "announce", files=records, reset=start == 0))["ok"]
    memory = Memory(cluster.tracker)

    mallory.stop_reading()
    mallory.transport.write(b"".join(mallory.send("search", pattern="*")[1] for _ in range(1000)))
    latency = await honest.roundtrip(request.node.name)
    await memory.hold(HOLD, PEAK_SLACK)
    mallory.transport.abortConnection()
    await memory.settle(AFTER_SLACK)
    memory.record(request.node.name)

    assert memory.peak - memory.before < PEAK_SLACK
    assert memory.after - memory.before < AFTER_SLACK
    assert latency < 5
