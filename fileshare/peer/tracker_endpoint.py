"""
The peer's client endpoint to the tracker: pinned TLS, the operator's CA, or plain text.

Each ``connect`` chooses anew, so the pin recorded on first contact is
demanded from the next connection on.  When the tracker is refused (changed
fingerprint, certificate not from the CA, the other mode), ``problem`` holds
the one line that says why and what to do; the link puts it in ``login``'s
``ERR`` and in ``status``, and it is logged once each time it changes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..secure import AfterHandshakeFactory, PlainGuardFactory, speaks_plain_advice, speaks_tls_advice
from ..tls import (
    FingerprintMismatch,
    HandshakeTimeout,
    Identity,
    PinnedAddress,
    PinStore,
    first_use_endpoint,
    peer_fingerprint,
    pinned_endpoint,
    spoke_plain_text,
)
from ..tls.ca import ca_endpoint
from ..tls.fingerprints import Fingerprint
from ..tls.pins import address_key

log = Logger()


@implementer(IStreamClientEndpoint)
class TrackerEndpoint:
    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        identity: Identity | None,
        pins: PinStore | None = None,
        given: Fingerprint | None = None,
        ca: list[Any] | None = None,
    ) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.identity = identity
        self.pins = pins
        self.given = given
        self.ca = ca
        #: Why the tracker was last refused, until a connection succeeds.
        self.problem: str | None = None

    def report(self, problem: str | None) -> None:
        if problem is not None and problem != self.problem:
            log.error("tracker refused: {problem}", problem=problem)
        self.problem = problem

    def connect(self, factory: Any) -> Deferred:
        # Both wrappers below hand back themselves; the caller wants its own protocol.
        return self._connect(factory).addCallback(lambda wrapper: wrapper.wrappedProtocol)

    def _connect(self, factory: Any) -> Deferred:
        if self.identity is None:
            tcp = HostnameEndpoint(self.reactor, self.host, self.port, timeout=10)
            return tcp.connect(PlainGuardFactory(factory, speaks_tls_advice("tracker", "peer"), False, self.report))
        factory = AfterHandshakeFactory(factory)
        if self.ca is not None:
            d = ca_endpoint(self.reactor, self.host, self.port, self.ca, self.identity).connect(factory)
            return d.addCallbacks(self._connected, self._failed)
        expected = self.pins.expected(self.host, self.port, self.given)
        if expected is None:
            d = first_use_endpoint(self.reactor, self.host, self.port, self.identity).connect(factory)
        else:
            address = PinnedAddress(self.host, self.port, expected)
            d = pinned_endpoint(self.reactor, address, self.identity).connect(factory)
        d.addCallback(self._pin)
        return d.addCallbacks(self._connected, self._failed)

    async def _remember(self, protocol: Any) -> Any:
        seen = peer_fingerprint(protocol.transport)
        try:
            await self.pins.remember(self.reactor, self.host, self.port, seen, accepted=self.given is not None)
        except BaseException:
            protocol.transport.abortConnection()
            raise
        return protocol

    def _pin(self, protocol: Any) -> Deferred:
        return Deferred.fromCoroutine(self._remember(protocol))

    def _connected(self, protocol: Any) -> Any:
        self.problem = None
        return protocol

    def _failed(self, failure: Failure) -> Failure:
        if failure.check(FingerprintMismatch):
            error = failure.value
            if self.pins is not None:
                error = self.pins.refusal(self.host, self.port, error)
            if error is failure.value and self.given is not None:
                self.report(
                    f"the tracker at {address_key(self.host, self.port)} presented certificate fingerprint "
                    f"{error.seen}, not the {self.given} given with --tracker-fingerprint; refusing to connect"
                )
            else:
                self.report(error.message)
        elif spoke_plain_text(failure):
            self.report(speaks_plain_advice("tracker", "peer"))
        elif self.ca is not None and not failure.check(ConnectError, HandshakeTimeout):
            self.report(
                f"the tracker's certificate is not one the --tracker-ca vouches for: {failure.getErrorMessage()}"
            )
        return failure
