"""
The TLS handshake has a deadline, and a client connection is only handed
over once the handshake (and its pin check) succeeded.

The deadline runs on a ``task.Clock``; the bytes go over real loopback
sockets.  Each test advances the clock only once the other end has shown
that the connection is up, so nothing depends on timing.
"""

import pytest
import pytest_twisted
from twisted.internet import protocol
from twisted.internet.defer import CancelledError
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.task import Clock

from fileshare.tls import PinnedAddress, generate, pinned_endpoint
from fileshare.tls.handshake import HandshakeTimeout

from .tls_loopback import Recorder, RecordingFactory, bounded, start_server, stop_server

TIMEOUT = 30


@pytest.fixture(scope="module")
def client_identity():
    return generate("peer")


@pytest_twisted.ensureDeferred
async def test_a_client_that_stalls_the_handshake_is_closed_at_the_deadline():
    from twisted.internet import reactor

    clock = Clock()
    server = await start_server(generate("tracker"), clock=clock)
    try:
        stalled = Recorder()
        await bounded(
            TCP4ClientEndpoint(reactor, "127.0.0.1", server.number).connect(
                protocol.Factory.forProtocol(lambda: stalled)
            )
        )
        stalled.transport.write(b"\x16\x03")  # the start of a record, and no more
        accepted = await bounded(server.factory.arrived)
        await bounded(accepted.made)

        clock.advance(TIMEOUT - 1)
        assert not accepted.lost.called
        clock.advance(1)

        await bounded(stalled.lost)
        await bounded(accepted.lost)
    finally:
        await stop_server(server)

    assert accepted.reason.check(HandshakeTimeout)
    assert str(accepted.reason.value) == "the TLS handshake took over 30 s"
    assert accepted.received == b""


@pytest_twisted.ensureDeferred
async def test_a_completed_handshake_is_not_closed_at_the_deadline(client_identity):
    from twisted.internet import reactor

    clock = Clock()
    server = await start_server(generate("tracker"), clock=clock)
    try:
        client = await bounded(
            pinned_endpoint(reactor, server.address(), client_identity, clock=clock).connect(
                protocol.Factory.forProtocol(Recorder)
            )
        )
        [accepted] = server.accepted
        await bounded(accepted.handshake)

        clock.advance(TIMEOUT * 10)

        client.transport.write(b"still here")
        assert await bounded(accepted.first_data) == b"still here"
        client.transport.loseConnection()
        await bounded(client.lost)
    finally:
        await stop_server(server)
    assert clock.getDelayedCalls() == []


@pytest.fixture
def silent_server():
    """A plain TCP server that reads and never answers: a stalled TLS server."""
    from twisted.internet import reactor

    factory = RecordingFactory()
    d = serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(factory)
    return d, factory


async def refusal_of(d):
    try:
        await bounded(d)
    except Exception as e:
        return e
    raise AssertionError("connected where a refusal was expected")


@pytest_twisted.ensureDeferred
async def test_a_server_that_never_answers_fails_the_connect_at_the_deadline(silent_server, client_identity):
    from twisted.internet import reactor

    listening, factory = silent_server
    port = await listening
    clock = Clock()
    try:
        address = PinnedAddress("127.0.0.1", port.getHost().port, generate("x").fingerprint)
        connecting = pinned_endpoint(reactor, address, client_identity, clock=clock).connect(
            protocol.Factory.forProtocol(Recorder)
        )
        accepted = await bounded(factory.arrived)
        await bounded(accepted.first_data)  # the ClientHello: the client's timer is running

        clock.advance(TIMEOUT)

        error = await refusal_of(connecting)
        await bounded(accepted.lost)
    finally:
        await port.stopListening()
    assert isinstance(error, HandshakeTimeout)


@pytest_twisted.ensureDeferred
async def test_cancelling_a_connect_during_the_handshake_closes_the_connection(silent_server, client_identity):
    from twisted.internet import reactor

    listening, factory = silent_server
    port = await listening
    try:
        address = PinnedAddress("127.0.0.1", port.getHost().port, generate("x").fingerprint)
        connecting = pinned_endpoint(reactor, address, client_identity, clock=Clock()).connect(
            protocol.Factory.forProtocol(Recorder)
        )
        accepted = await bounded(factory.arrived)
        await bounded(accepted.first_data)

        connecting.cancel()

        error = await refusal_of(connecting)
        await bounded(accepted.lost)
    finally:
        await port.stopListening()
    assert isinstance(error, CancelledError)
