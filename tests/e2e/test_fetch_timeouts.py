"""
A fetcher against sources that keep it waiting, end to end on loopback.

What answers on alice's upload port is a small fake source written here
(``alice.uploads.buildProtocol`` is replaced, so TLS and the tracker's
records stay real): one that greets and never answers, one that stops in
the middle of a body, one that keeps the fetcher queued for a slot, with
keepalives, for longer than the fetcher's request timeout.
"""

import json
import os

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import LineReceiver

from fileshare.pieces import hash_file

from .test_restarts import until

MiB = 1024 * 1024


class FakeSource(LineReceiver):
    """The transfer protocol's source side, with a misbehaviour chosen by *mode*:

    ``silent``: greets, then answers nothing; ``stall``: sends the piece list
    and half of the first body, then nothing; ``queue``: keeps the fetcher
    queued at place 1 (a ``queued`` line every 0.2 s) for *queue_for* seconds,
    then serves the file properly.
    """

    delimiter = b"\n"

    def __init__(self, path: str, mode: str, seen: list, queue_for: float = 0.0) -> None:
        self.path = path
        self.digest = hash_file(path)
        self.mode = mode
        self.seen = seen
        self.queue_for = queue_for
        self.keepalive = LoopingCall(self.send, {"queued": 1})
        self.greet_later = None

    def send(self, message: dict) -> None:
        self.transport.write(json.dumps(message).encode() + b"\n")

    def lineReceived(self, line: bytes) -> None:
        message = json.loads(line)
        op = message["op"]
        self.seen.append(op)
        if op == "hello":
            if self.mode == "queue":
                self.keepalive.start(0.2)
                self.greet_later = reactor.callLater(self.queue_for, self.greet)
            else:
                self.greet()
        elif self.mode == "silent":
            return
        elif op == "pieces":
            d = self.digest
            self.send({"ok": True, "size": d.size, "piece_size": d.piece_size, "pieces": d.pieces.hex()})
        elif op == "ticket":
            self.send({"ok": True})
        elif op == "get":
            offset, length = message["offset"], message["length"]
            self.send({"ok": True, "length": length})
            with open(self.path, "rb") as f:
                f.seek(offset)
                body = f.read(length)
            if self.mode == "stall":
                self.transport.write(body[: length // 2])
                self.mode = "silent"
            else:
                self.transport.write(body)

    def greet(self) -> None:
        if self.keepalive.running:
            self.keepalive.stop()
        self.send({"ok": True, "version": 1})

    def connectionLost(self, reason) -> None:
        if self.keepalive.running:
            self.keepalive.stop()
        if self.greet_later is not None and self.greet_later.active():
            self.greet_later.cancel()


async def fake_alice(net, tmp_path, mode: str, size: int = 3 * MiB, queue_for: float = 0.0):
    """alice publishes a random file of *size* bytes; a FakeSource in *mode* answers on her port."""
    await net.start_tracker()
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(size))
    alice_peer, alice = await net.user("alice")
    assert (await alice.command(f"publish {f} data.bin")).ok
    seen: list[str] = []
    alice_peer.uploads.buildProtocol = lambda addr: FakeSource(str(f), mode, seen, queue_for)
    return f, alice_peer, seen


async def within(d, seconds: float = 20.0):
    """The result of *d*, which must come within *seconds* (a hang fails the test, it does not stall it)."""
    if not isinstance(d, Deferred):
        d = Deferred.fromCoroutine(d)
    return await d.addTimeout(seconds, reactor)


@pytest_twisted.ensureDeferred
async def test_a_source_that_greets_and_never_sends_the_piece_list_is_dropped_after_the_request_timeout(net, tmp_path):
    f, alice_peer, seen = await fake_alice(net, tmp_path, "silent")
    _, bob = await net.user("bob", request_timeout="0.5")

    reply = await within(bob.command("fetch data.bin"))

    port = alice_peer.listener.port_number
    assert reply.status == (
        f"ERR no source gave a valid piece list (alice: source 127.0.0.1:{port} sent no piece list within 0.5 s)"
    )
    assert seen == ["hello", "pieces"]
    status = await bob.command("status")
    assert status.status == "OK 0 fetches in flight", status


@pytest_twisted.ensureDeferred
async def test_a_fetch_hanging_on_a_silent_source_is_in_status_refuses_a_second_fetch_and_can_be_cancelled(
    net, tmp_path
):
    f, alice_peer, seen = await fake_alice(net, tmp_path, "silent")
    bob_peer, bob = await net.user("bob")  # the default request timeout: 30 s
    other = await net.console(bob_peer)
    fetch = ensureDeferred(bob.command("fetch data.bin"))
    await until(lambda: seen == ["hello", "pieces"])

    status = await other.command("status")
    second = await other.command("fetch data.bin")
    cancelled = await other.command("cancel data.bin")
    reply = await within(fetch)
    after = await other.command("status")

    size = f.stat().st_size
    assert status.data[-1] == f"fetching data.bin 0.0% 0/{size} bytes 0 B/s eta ? sources=1 phase=piece-list"
    assert status.status == "OK 1 fetch in flight"
    assert second.status == "ERR 'data.bin' is already being fetched"
    assert cancelled.status == "OK fetch of data.bin cancelled and its partial data removed"
    assert reply.status == "ERR fetch of 'data.bin' cancelled"
    assert after.status == "OK 0 fetches in flight"
    assert await within(until(lambda: not alice_peer.uploads.connections)) is None  # the connection was closed


@pytest_twisted.ensureDeferred
async def test_a_source_whose_body_stops_coming_is_dropped_and_the_error_names_it(net, tmp_path):
    f, alice_peer, seen = await fake_alice(net, tmp_path, "stall")
    _, bob = await net.user("bob", request_timeout="0.5")

    reply = await within(bob.command("fetch data.bin"))

    port = alice_peer.listener.port_number
    assert reply.status == f"ERR every source failed (alice: source 127.0.0.1:{port} sent no data for 0.5 s)"
    assert seen[:3] == ["hello", "pieces", "get"]  # the connection of the piece list is reused


@pytest_twisted.ensureDeferred
async def test_a_fetch_queued_for_a_slot_longer_than_its_request_timeout_waits_shows_its_place_and_completes(
    net, tmp_path
):
    f, alice_peer, seen = await fake_alice(net, tmp_path, "queue", queue_for=2.5)
    bob_peer, bob = await net.user("bob", request_timeout="0.5")
    other = await net.console(bob_peer)
    fetch = ensureDeferred(bob.command("fetch data.bin"))
    await until(lambda: any(job.progress().queued == 1 for job in bob_peer.peer.fetches.values()))

    status = await other.command("status")
    reply = await within(fetch)

    assert status.data[-1].endswith(" sources=1 queued=1 phase=piece-list"), status
    assert reply.status.startswith("OK fetched data.bin 3145728 bytes in "), reply
    seconds = float(reply.status.split(" in ")[1].split()[0])
    assert seconds >= 2.5  # the wait in the queue counts in the time reported
    waiting = [line for line in reply.data if line.startswith("progress ")]
    assert waiting and waiting[0].endswith(" queued=1 phase=piece-list"), reply.data
    assert (tmp_path / "bob" / "data.bin").read_bytes() == f.read_bytes()


@pytest_twisted.ensureDeferred
async def test_a_fetch_of_a_file_over_1_mib_waiting_for_a_real_peers_only_slot_waits_and_completes(net, tmp_path):
    await net.start_tracker()
    big, small = tmp_path / "big.bin", tmp_path / "small.bin"
    big.write_bytes(os.urandom(4 * MiB))
    small.write_bytes(os.urandom(2 * MiB))  # over 1 MiB: the fetch needs the piece list first
    alice_peer, alice = await net.user("alice", max_uploads="1", upload_rate="1M")
    assert (await alice.command(f"publish {big} big.bin")).ok
    assert (await alice.command(f"publish {small} small.bin")).ok
    _, carol = await net.user("carol")
    # A request timeout shorter than the wait (alice's paced sending has gaps of 0.25 s, not 2 s).
    bob_peer, bob = await net.user("bob", request_timeout="2")
    holding = ensureDeferred(carol.command("fetch big.bin"))  # takes alice's only slot for about 4 s
    await until(lambda: alice_peer.uploads.sent_bytes > 0)

    reply = await within(bob.command("fetch small.bin"), 60)
    held = await within(holding, 60)

    assert held.ok, held
    assert reply.status.startswith("OK fetched small.bin 2097152 bytes in "), reply
    assert float(reply.status.split(" in ")[1].split()[0]) > 2  # it waited past its request timeout
    waiting = [line for line in reply.data if " queued=1 " in line + " "]
    assert waiting and waiting[0].startswith("progress small.bin 0.0% 0/2097152 bytes "), reply.data
    assert (tmp_path / "bob" / "small.bin").read_bytes() == small.read_bytes()
