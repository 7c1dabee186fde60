"""The end game, end to end: a source that trickles does not hold the tail of a fetch."""

import json
import os

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import LineReceiver

from fileshare.pieces import hash_file

MiB = 1024 * 1024


class TricklingSource(LineReceiver):
    """Serves a file as the transfer protocol says, but sends 2 KiB of body every
    half second: always some progress, so the request timeout (30 s) never fires."""

    delimiter = b"\n"
    STEP = 2048

    def __init__(self, path: str, asked: list) -> None:
        self.path = path
        self.digest = hash_file(path)
        self.asked = asked
        self.queue: list[tuple[int, int]] = []
        self.current: tuple[int, int] | None = None
        self.loop = LoopingCall(self._trickle)

    def send(self, message: dict) -> None:
        self.transport.write(json.dumps(message).encode() + b"\n")

    def lineReceived(self, line: bytes) -> None:
        message = json.loads(line)
        if message["op"] == "hello":
            self.send({"ok": True, "version": 1})
        elif message["op"] == "pieces":
            d = self.digest
            self.send({"ok": True, "size": d.size, "piece_size": d.piece_size, "pieces": d.pieces.hex()})
        elif message["op"] == "get":
            self.asked.append((message["offset"], message["length"]))
            self.queue.append((message["offset"], message["length"]))
            if not self.loop.running:
                self.loop.start(0.5)

    def _trickle(self) -> None:
        if self.current is None:
            if not self.queue:
                self.loop.stop()
                return
            self.current = self.queue.pop(0)
            self.send({"ok": True, "length": self.current[1]})
        offset, length = self.current
        with open(self.path, "rb") as f:
            f.seek(offset)
            chunk = f.read(min(self.STEP, length))
        self.transport.write(chunk)
        self.current = (offset + len(chunk), length - len(chunk)) if length > len(chunk) else None

    def connectionLost(self, reason) -> None:
        if self.loop.running:
            self.loop.stop()


@pytest_twisted.ensureDeferred
async def test_a_fetch_from_three_holders_with_one_trickling_finishes_from_the_other_two(net, tmp_path):
    await net.start_tracker()
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(24 * MiB))
    holders = {}
    for name in ("alice", "carol", "dave"):
        peer, console = await net.user(name)
        assert (await console.command(f"publish {f} data.bin")).ok
        holders[name] = peer
    asked: list[tuple[int, int]] = []
    # dave is online and listed as a holder, but what answers on his port trickles.
    holders["dave"].uploads.buildProtocol = lambda addr: TricklingSource(str(f), asked)
    _, bob = await net.user("bob")

    # Without the end game this never ends: dave keeps his pieces, and never stalls.
    fetch: Deferred = Deferred.fromCoroutine(bob.command("fetch data.bin"))
    reply = await fetch.addTimeout(10, reactor)

    assert reply.status.startswith("OK fetched data.bin 25165824 bytes in "), reply
    assert " from alice,carol;" in reply.status
    assert asked, "dave was never asked for anything"
    assert (tmp_path / "bob" / "data.bin").read_bytes() == f.read_bytes()
