"""Tickets bound to the fetcher's TLS key, over a real TLS connection on loopback."""

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import connectProtocol, serverFromString
from twisted.python.threadpool import ThreadPool

from fileshare.errors import TicketMisbound
from fileshare.peer.source import SourceProtocol
from fileshare.peer.upload import UploadService
from fileshare.tickets import issue
from fileshare.tls import PinnedAddress, generate, pinned_endpoint, wrap_server_factory

from ..tls_loopback import bounded
from .test_upload import KEY, FakeRepository, content


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
