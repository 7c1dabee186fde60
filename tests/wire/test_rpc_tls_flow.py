"""
RPC flow control over real loopback TLS: the TLS layer pauses the protocol
when a client stops reading, every reply still arrives whole once it reads,
and a connection closed meanwhile still closes (a TLS transport waits for
its producer to go before it closes).
"""

import json
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone

from fileshare.tls import PinnedAddress, generate, pinned_endpoint, wrap_server_factory
from fileshare.wire.rpc import RPCProtocol

from ..tls_loopback import bounded

#: Per reply: 1000 items of 1 KB.  30 replies outgrow loopback's socket buffers.
ITEM = "z" * 997
REQUESTS = 30


class BlobServer(RPCProtocol):
    def __init__(self, clock: Any) -> None:
        super().__init__(clock)
        self.handlers["blob"] = self.blob
        self.handled = 0
        self.paused_once: Deferred = Deferred()
        self.lost: Deferred = Deferred()
        self.reason: Any = None

    def blob(self, message: dict[str, Any]) -> dict[str, Any]:
        self.handled += 1
        return {"items": [ITEM] * 1000}

    def pauseProducing(self) -> None:
        super().pauseProducing()
        if not self.paused_once.called:
            # Fired from the reactor, not from inside the transport's write.
            from twisted.internet import reactor

            reactor.callLater(0, self.paused_once.callback, self.handled)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.reason = reason
        self.lost.callback(None)


class Reader(protocol.Protocol):
    """Sends pipelined requests (:meth:`flood`), then reads nothing until told; counts items per reply."""

    def __init__(self) -> None:
        self.rest = b""
        self.items: dict[int, int] = {}
        self.replies = 0
        self.lost: Deferred = Deferred()
        self.wanted = 0
        self.reason: Any = None
        self.all_read: Deferred = Deferred()

    def flood(self) -> None:
        self.transport.pauseProducing()
        self.transport.write(b"".join(b'{"id":%d,"op":"blob"}\n' % i for i in range(1, REQUESTS + 1)))

    def dataReceived(self, data: bytes) -> None:
        *lines, self.rest = (self.rest + data).split(b"\n")
        for line in lines:
            frame = json.loads(line)
            self.items[frame["re"]] = self.items.get(frame["re"], 0) + len(frame["items"])
            self.replies += frame.get("more") is not True
        if self.replies == self.wanted and not self.all_read.called:
            self.all_read.callback(None)

    def connectionLost(self, reason: Any) -> None:
        self.reason = reason
        self.lost.callback(None)


@pytest.fixture(scope="module")
def identities():
    return generate("tracker"), generate("peer")


async def start(identities) -> tuple[Any, list[BlobServer], Reader]:
    from twisted.internet import reactor

    server_identity, client_identity = identities
    servers: list[BlobServer] = []

    def build() -> BlobServer:
        servers.append(BlobServer(reactor))
        return servers[-1]

    endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(wrap_server_factory(server_identity, protocol.Factory.forProtocol(build), reactor))
    address = PinnedAddress("127.0.0.1", port.getHost().port, server_identity.fingerprint)
    reader = await bounded(
        pinned_endpoint(reactor, address, client_identity).connect(protocol.Factory.forProtocol(Reader))
    )
    reader.flood()
    return port, servers, reader


@pytest_twisted.ensureDeferred
async def test_a_client_that_stops_reading_pauses_the_server_and_gets_every_reply_when_it_reads(identities):
    port, servers, reader = await start(identities)
    try:
        handled = await bounded(servers[0].paused_once)
        assert handled < REQUESTS
        reader.wanted = REQUESTS
        reader.transport.resumeProducing()
        await bounded(reader.all_read)
        assert reader.items == {i: 1000 for i in range(1, REQUESTS + 1)}
        assert servers[0].handled == REQUESTS
    finally:
        reader.transport.abortConnection()
        await bounded(reader.lost)
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_connection_closed_while_replies_wait_closes_cleanly_once_the_client_reads(identities):
    port, servers, reader = await start(identities)
    try:
        await bounded(servers[0].paused_once)
        servers[0].transport.loseConnection()
        reader.wanted = -1  # read until closed
        reader.transport.resumeProducing()
        await bounded(reader.lost)
        await bounded(servers[0].lost)
        assert reader.reason.check(ConnectionDone)  # a clean TLS close
        # Whole frames of 200 items (each one parsed); replies not yet written were dropped.
        assert reader.items and all(n % 200 == 0 for n in reader.items.values())
        assert sum(reader.items.values()) < REQUESTS * 1000
    finally:
        if not reader.lost.called:
            reader.transport.abortConnection()
        await port.stopListening()
