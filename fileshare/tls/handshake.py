"""
A deadline for the TLS handshake, and client connections that are only
handed over once it succeeded.

Between the TLS layer and the application sits :class:`HandshakeWatch`.  It
gives the handshake ``timeout`` seconds on an injected clock: a client that
opens the tracker's port and sends a few bytes, or none, would otherwise
hold a socket for good, since the application's own idle timers see no data
before the handshake ends.  On expiry the connection is aborted and the
application's ``connectionLost`` receives :class:`HandshakeTimeout`.

On the client side :class:`HandshakeEndpoint` makes ``connect`` fire with
the application's protocol only *after* the handshake and the pin check,
and fail with their error (:class:`~.connect.FingerprintMismatch`,
:class:`HandshakeTimeout`, an OpenSSL error) otherwise -- so a
``ClientService`` treats a refused server as a failed attempt and backs off,
instead of seeing a connection that then drops.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHandshakeListener, IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import FileshareError
from ..logfilter import address_text

log = Logger()

#: Seconds a TLS handshake may take; generous for a loaded lab machine.
HANDSHAKE_TIMEOUT = 30.0


class HandshakeTimeout(FileshareError):
    code = "timeout"


@implementer(IHandshakeListener)
class HandshakeWatch(ProtocolWrapper):
    """Wraps the application protocol, inside TLS (see the module docstring)."""

    factory: HandshakeWatchFactory

    def __init__(self, factory: HandshakeWatchFactory, wrappedProtocol: Any) -> None:
        super().__init__(factory, wrappedProtocol)
        self._timer: Any = None
        #: Fires with the application protocol when the handshake succeeds,
        #: fails with the reason the connection was lost before that.
        self.done: Deferred = Deferred(lambda _: self.transport.abortConnection())

    def makeConnection(self, transport: Any) -> None:
        self._timer = self.factory.clock.callLater(self.factory.timeout, self._expire)
        super().makeConnection(transport)

    def handshakeCompleted(self) -> None:
        self._cancel()
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()
        if not self.done.called:
            self.done.callback(self.wrappedProtocol)

    def connectionLost(self, reason: Failure) -> None:
        self._cancel()
        if not self.done.called:
            self.done.errback(reason)
        super().connectionLost(reason)

    def _expire(self) -> None:
        self._timer = None
        log.info(
            "TLS handshake with {peer} took over {timeout} s; closing",
            peer=address_text(self.transport.getPeer()),
            timeout=self.factory.timeout,
        )
        error = HandshakeTimeout(f"the TLS handshake took over {self.factory.timeout:g} s")
        # failVerification is TLSMemoryBIOProtocol's way to abort during
        # set-up with a reason the application will see.
        self.transport.failVerification(Failure(error))

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class HandshakeWatchFactory(WrappingFactory):
    noisy = False  # no "Starting factory" line per connection (fileshare.logfilter)

    protocol = HandshakeWatch

    def __init__(
        self, wrappedFactory: IProtocolFactory, clock: Any, timeout: float = HANDSHAKE_TIMEOUT, report: bool = False
    ) -> None:
        super().__init__(wrappedFactory)
        self.clock = clock
        self.timeout = timeout
        self.report = report

    def buildProtocol(self, addr: Any) -> HandshakeWatch | None:
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        watch = self.protocol(self, wrapped)
        if not self.report:
            # Nobody waits on a server's ``done``: its failures are the
            # application's connectionLost, not an unhandled error.
            watch.done.addErrback(lambda _: None)
        return watch


@implementer(IStreamClientEndpoint)
class HandshakeEndpoint:
    """
    A TLS client endpoint (from ``wrapClientTLS``) whose ``connect`` waits for
    the handshake; see the module docstring.
    """

    def __init__(self, tls_endpoint: IStreamClientEndpoint, clock: Any, timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self._endpoint = tls_endpoint
        self._clock = clock
        self._timeout = timeout

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred:
        d = self._endpoint.connect(HandshakeWatchFactory(protocolFactory, self._clock, self._timeout, report=True))
        d.addCallback(lambda watch: watch.done)
        return d
