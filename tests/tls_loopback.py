"""
Loopback TLS test helpers: recording protocols and a listener on 127.0.0.1.

Every wait goes through :func:`bounded`, so a broken handshake fails the
test in seconds instead of hanging it; :func:`stop_server` closes whatever
the listener accepted before it stops listening.
"""

import attrs
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IHandshakeListener
from zope.interface import implementer

from fileshare.tls import PinnedAddress, peer_fingerprint, wrap_server_factory

TIMEOUT = 10


def bounded(d):
    from twisted.internet import reactor

    return d.addTimeout(TIMEOUT, reactor)


@implementer(IHandshakeListener)
class Recorder(protocol.Protocol):
    """Either end: records the other's fingerprint, what arrived and why it closed."""

    greeting = b""

    def __init__(self):
        self.made = Deferred()
        self.handshake = Deferred()
        self.first_data = Deferred()
        self.lost = Deferred()
        self.received = b""
        self.seen = None
        self.reason = None

    def connectionMade(self):
        self.made.callback(self)
        if self.greeting:
            self.transport.write(self.greeting)

    def handshakeCompleted(self):
        self.seen = peer_fingerprint(self.transport)
        self.handshake.callback(self.seen)

    def dataReceived(self, data):
        self.received += data
        if not self.first_data.called:
            self.first_data.callback(data)

    def connectionLost(self, reason):
        if not self.handshake.called:
            self.handshake.errback(reason)
            self.handshake.addErrback(lambda _: None)
        self.reason = reason
        self.lost.callback(None)


class Greeter(Recorder):
    greeting = b"a password that must not reach an impostor\n"


class RecordingFactory(protocol.Factory):
    protocol = Recorder

    def __init__(self):
        self.accepted = []
        self.arrived = Deferred()

    def buildProtocol(self, addr):
        p = super().buildProtocol(addr)
        self.accepted.append(p)
        if not self.arrived.called:
            self.arrived.callback(p)
        return p


@attrs.frozen
class Server:
    """A TLS listener on loopback and the protocols it accepted."""

    identity: object
    port: object
    factory: RecordingFactory

    @property
    def number(self):
        return self.port.getHost().port

    @property
    def accepted(self):
        return self.factory.accepted

    def address(self, fingerprint=None):
        return PinnedAddress("127.0.0.1", self.number, fingerprint or self.identity.fingerprint)


async def start_server(identity, clock=None):
    """Listen with TLS as ``identity`` on a port the OS picks on 127.0.0.1."""
    from twisted.internet import reactor

    factory = RecordingFactory()
    endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    port = await endpoint.listen(wrap_server_factory(identity, factory, clock or reactor))
    return Server(identity, port, factory)


async def stop_server(server):
    for p in server.accepted:
        if not p.lost.called:
            p.transport.abortConnection()
        await bounded(p.lost)
    await server.port.stopListening()


async def connect(endpoint, cls=Recorder):
    return await bounded(endpoint.connect(protocol.Factory.forProtocol(cls)))


async def close(client):
    client.transport.loseConnection()
    await bounded(client.lost)
    return client.reason


async def refusal(endpoint, cls=None):
    """The error ``endpoint.connect`` fails with; connecting is a test failure."""
    try:
        p = await bounded(endpoint.connect(protocol.Factory.forProtocol(cls or Greeter)))
    except Exception as e:
        return e
    p.transport.abortConnection()
    raise AssertionError(f"connected where a refusal was expected: {p!r}")
