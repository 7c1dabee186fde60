"""Tickets bound to the fetcher's TLS key, over a real TLS connection on loopback."""

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.threadpool import ThreadPool

from fileshare.errors import TicketMisbound
from fileshare.peer.flow import unsent_bytes
from fileshare.peer.source import SourceProtocol
from fileshare.peer.upload import MAX_QUEUED_REQUESTS, UploadService
from fileshare.tickets import NO_BINDING, issue
from fileshare.tls import PinnedAddress, generate, pinned_endpoint, wrap_server_factory

from ..tls_loopback import bounded
from .test_upload import KEY, FakeRepository, content
from .test_upload_limits import publish_big


@pytest.fixture(scope="module")
def identities():
    return generate("source"), generate("alice"), generate("bob")


async def fetch_pieces(tmp_path, identities, bound_to) -> object:
    """alice fetches a piece list over TLS, presenting a ticket bound to *bound_to*'s key; the reply or the error."""
    source_identity, alice, _ = identities
    path = tmp_path / "shared.bin"
    path.write_bytes(content(5000))
    repository = FakeRepository()
    entry = repository.publish(path)
    threads = ThreadPool(minthreads=0, maxthreads=1, name="test-upload-tls")
    threads.start()
    service = UploadService(repository, reactor, None, None, threads)
    service.ticket_key = lambda: KEY
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        wrap_server_factory(source_identity, service, reactor)
    )
    source = None
    try:
        ticket = issue(KEY.key, "alice", str(bound_to.fingerprint), entry.root, KEY.host, reactor.seconds())
        address = PinnedAddress("127.0.0.1", port.getHost().port, source_identity.fingerprint)
        source = await bounded(
            connectProtocol(pinned_endpoint(reactor, address, alice), SourceProtocol(reactor, None, ticket))
        )
        try:
            await bounded(source.greeted)
        except Exception as e:
            return e
        return (await bounded(source.pieces(entry.root)))["size"]
    finally:
        if source is not None and source.connected:
            source.transport.loseConnection()
        await port.stopListening()
        threads.stop()


@pytest_twisted.ensureDeferred
async def test_a_ticket_bound_to_the_fetchers_own_key_is_honoured(tmp_path, identities):
    _, alice, _ = identities
    assert await fetch_pieces(tmp_path, identities, bound_to=alice) == 5000


@pytest_twisted.ensureDeferred
async def test_a_ticket_bound_to_another_key_is_misbound_over_tls(tmp_path, identities):
    _, _, bob = identities
    error = await fetch_pieces(tmp_path, identities, bound_to=bob)
    assert isinstance(error, TicketMisbound) and error.code == "ticket-misbound"


class Flooder(Protocol):
    """Sends *data* once the connection is up, then reads only until it sees the first line."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.first: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        if not self.first.called:
            self.transport.pauseProducing()  # never reads again
            self.first.callback(data)


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
@pytest_twisted.ensureDeferred
async def test_pipelined_requests_never_read_hold_the_source_to_its_bounds(tmp_path, identities, tls):
    source_identity, alice, _ = identities
    threads = ThreadPool(minthreads=0, maxthreads=1, name="test-upload-tls-flood")
    threads.start()
    service = UploadService(FakeRepository(), reactor, None, None, threads)
    service.ticket_key = lambda: KEY
    entry = publish_big(service, tmp_path)
    factory = wrap_server_factory(source_identity, service, reactor) if tls else service
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
    client = None
    try:
        binding = str(alice.fingerprint) if tls else NO_BINDING
        ticket = issue(KEY.key, "alice", binding, entry.root, KEY.host, reactor.seconds())
        hello = json.dumps({"op": "hello", "versions": [1], "ticket": ticket}).encode() + b"\n"
        pieces = json.dumps({"op": "pieces", "root": entry.root}).encode() + b"\n"
        address = PinnedAddress("127.0.0.1", port.getHost().port, source_identity.fingerprint)
        endpoint = (
            pinned_endpoint(reactor, address, alice) if tls else TCP4ClientEndpoint(reactor, address.host, address.port)
        )
        client = Flooder(hello + pieces * 20000)
        await bounded(connectProtocol(endpoint, client))
        await bounded(client.first)
        (server,) = service.connections
        # The kernel's buffers take a few MB of replies first; then the source waits for the client.
        waited = 0.0
        while not (server._gate is not None and server._reading_paused):
            assert waited < 10, "the source never stopped"
            await deferLater(reactor, 0.05, lambda: None)
            waited += 0.05
        held = unsent_bytes(server.transport)
        assert held <= 65536 + 2 * 140000  # the transport's buffer, one reply and a TLS record or so
        assert len(server._requests) <= MAX_QUEUED_REQUESTS + 1
        print(
            f"{'TLS' if tls else 'plain TCP'}, a client that never reads: source holds {held} bytes unsent,"
            f" {len(server._requests)} requests pending"
        )
    finally:
        if client is not None and client.transport is not None:
            client.transport.abortConnection()
        await port.stopListening()
        threads.stop()
