"""One address flooding a peer's upload queue, and holding slots it never reads from, while another fetches."""

import hashlib
import os

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Protocol
from twisted.logger import capturedLogs

from fileshare.peer.slots import MAX_QUEUED_PER_ADDRESS
from fileshare.tls.connect import first_use_creator

from .harness import RAW_CLIENT
from .test_bad_input import hello_with_ticket

MiB = 1 << 20
HOSTILE = "127.0.0.2"


class Hog(Protocol):
    """Asks for a whole file, reads its first line, then never reads again."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.first: Deferred = Deferred()
        self.data = b""

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if b"\n" in self.data and not self.first.called:
            self.transport.pauseProducing()  # from now on the socket's buffers fill up
            self.first.callback(self.data.split(b"\n", 1)[0])

    def connectionLost(self, reason) -> None:
        if not self.first.called:
            self.first.callback(self.data)


@pytest_twisted.ensureDeferred
async def test_a_queue_flood_from_one_address_does_not_keep_another_from_fetching(net, tmp_path):
    await net.start_tracker()
    data = os.urandom(32 * MiB)
    f = tmp_path / "big.bin"
    f.write_bytes(data)
    alice_peer, alice = await net.user("alice")
    assert (await alice.command(f"publish {f} big.bin")).ok
    (entry,) = alice_peer.repository.entries()
    # A shorter window than the default 10 s, so the test is short: the rule is the same.
    alice_peer.uploads.progress_window = 2.0
    port = alice_peer.listener.port_number

    request = hello_with_ticket(net, "alice", entry.root) + b'{"op":"get","root":"%s","offset":0,"length":%d}\n' % (
        entry.root.encode(),
        len(data),
    )
    hogs = [Hog(request) for _ in range(100)]
    tcp = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(HOSTILE, 0))
    await DeferredList(
        [connectProtocol(wrapClientTLS(first_use_creator(RAW_CLIENT), tcp), hog) for hog in hogs],
        fireOnOneErrback=True,
    )
    guard = reactor.callLater(30, lambda: [h.transport.abortConnection() for h in hogs])
    try:
        firsts = [line for _, line in await DeferredList([h.first for h in hogs])]
        slots = alice_peer.uploads.slots
        assert sum(b'"version"' in line for line in firsts) == slots.limit == 4
        assert sum(b'"queued"' in line for line in firsts) == MAX_QUEUED_PER_ADDRESS
        # The rest are refused: by the queue (queue-full), or before TLS by --max-per-address (closed, no line).
        refused = [line for line in firsts if b'"queue-full"' in line or line == b""]
        assert len(refused) == 100 - 4 - MAX_QUEUED_PER_ADDRESS
        assert any(b'"queue-full"' in line for line in refused)

        _, bob = await net.user("bob")
        with capturedLogs() as events:
            reply = await bob.command("fetch big.bin")

        assert reply.ok, reply
        assert hashlib.sha256((tmp_path / "bob" / "big.bin").read_bytes()).digest() == hashlib.sha256(data).digest()
        taken_back = [e for e in events if "took back" in (e.get("log_format") or "")]
        assert taken_back and all(e["address"] == HOSTILE for e in taken_back)
        print(f"fetch during the flood: {reply.status}")
    finally:
        if guard.active():
            guard.cancel()
        for h in hogs:
            if h.transport is not None and h.transport.connected:
                h.transport.abortConnection()
