"""
Connections to sources, kept open for a while after a fetch.

Fetching many small files from the same holders then costs no TCP (or TLS)
handshake and no upload-slot wait per file.
"""

from typing import Any

from twisted.internet.endpoints import connectProtocol
from twisted.logger import Logger
from zope.interface import implementer

from ..errors import Unavailable
from ..logfilter import address_text
from ..secure import PlainAddress, plain_endpoint
from ..tls import FingerprintMismatch, Identity, PinnedAddress, pinned_endpoint
from .interfaces import ISourcePool
from .ratelimit import TokenBucket
from .source import SourceProtocol

# Declared here rather than in source.py, whose wire code is being rewritten
# on another branch; move it to an @implementer there when they meet.

log = Logger()

CONNECT_TIMEOUT = 10.0
GREETING_TIMEOUT = 10.0
#: Kept shorter than the uploader's SLOT_IDLE_GRACE (fileshare.peer.upload),
#: so a connection is never reused just as the source closes it.
IDLE_TIMEOUT = 1.0


def _give_up(protocol: SourceProtocol, why: str) -> None:
    if not protocol.greeted.called:
        log.info("giving up on source {source}: it {why}", source=address_text(protocol.endpoint_name), why=why)
        protocol.transport.abortConnection()


@implementer(ISourcePool)
class SourcePool:
    def __init__(
        self,
        reactor: Any,
        bucket: TokenBucket | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        identity: Identity | None = None,
    ) -> None:
        self.reactor = reactor
        #: This peer's TLS identity; None with --no-tls.
        self.identity = identity
        self.bucket = bucket
        self.idle_timeout = idle_timeout
        self._idle: dict[Any, list[tuple[SourceProtocol, Any]]] = {}

    def _endpoint(self, address: PinnedAddress | PlainAddress) -> Any:
        """The endpoint for a checked address: pinned TLS, or plain TCP with --no-tls; never an endpoint string."""
        if self.identity is None:
            if not isinstance(address, PlainAddress | PinnedAddress):
                raise Unavailable(f"bad source address {address!r}")
            return plain_endpoint(self.reactor, PlainAddress(address.host, address.port), CONNECT_TIMEOUT)
        if not isinstance(address, PinnedAddress):
            raise Unavailable(f"bad source address {address!r}: no certificate fingerprint to check")
        return pinned_endpoint(self.reactor, address, self.identity, timeout=CONNECT_TIMEOUT)

    async def connect(
        self,
        endpoint: PinnedAddress | PlainAddress,
        watch: Any = None,
        queue_timeout: float | None = None,
        ticket: str | None = None,
    ) -> SourceProtocol:
        """A greeted connection to the source at *endpoint* (an address the tracker gave, checked).

        *watch*, if given, is called with the new protocol before the greeting,
        so a caller can show that the source has put us in its upload queue.
        A source that says nothing within GREETING_TIMEOUT is given up; one
        that queues us is waited for, up to *queue_timeout* if given.
        *ticket* is presented in the ``hello`` of a new connection, or in a
        ``ticket`` request on a reused one that has not presented it.
        """
        idle = self._idle.get(endpoint, [])
        while idle:
            protocol, timer = idle.pop()
            if timer.active():
                timer.cancel()
            if protocol.connected:
                protocol.last_progress = self.reactor.seconds()
                protocol.present(ticket)
                return protocol
        ep = self._endpoint(endpoint)
        protocol = SourceProtocol(self.reactor, self.bucket, ticket)
        protocol.endpoint_name = endpoint
        if watch is not None:
            watch(protocol)
        d = connectProtocol(ep, protocol)
        timer = self.reactor.callLater(CONNECT_TIMEOUT, d.cancel)
        try:
            await d
        except FingerprintMismatch as e:
            log.warn("refused source {source}: {why}", source=address_text(endpoint), why=e.message)
            raise Unavailable(f"refused: {e.message}") from None
        except Exception as e:
            raise Unavailable(f"cannot connect: {e.__class__.__name__}") from None
        finally:
            if timer.active():
                timer.cancel()
        greeting = self.reactor.callLater(GREETING_TIMEOUT, _give_up, protocol, "sent no greeting")
        protocol.on_first_line = lambda: greeting.cancel() if greeting.active() else None
        queue_timer = None
        if queue_timeout is not None:
            queue_timer = self.reactor.callLater(queue_timeout, _give_up, protocol, "kept us queued")
        try:
            return await protocol.greeted
        finally:
            for timer in (greeting, queue_timer):
                if timer is not None and timer.active():
                    timer.cancel()

    def release(self, protocol: SourceProtocol) -> None:
        """Keep a connection that finished cleanly for reuse."""
        if not protocol.connected or protocol.busy:
            self.discard(protocol)
            return
        timer = self.reactor.callLater(self.idle_timeout, self._expire, protocol)
        self._idle.setdefault(protocol.endpoint_name, []).append((protocol, timer))

    def _expire(self, protocol: SourceProtocol) -> None:
        entries = self._idle.get(protocol.endpoint_name, [])
        self._idle[protocol.endpoint_name] = [(p, t) for p, t in entries if p is not protocol]
        protocol.transport.loseConnection()

    def discard(self, protocol: SourceProtocol) -> None:
        if protocol.connected:
            protocol.transport.abortConnection()

    def close(self) -> None:
        for entries in self._idle.values():
            for protocol, timer in entries:
                if timer.active():
                    timer.cancel()
                if protocol.connected:
                    protocol.transport.loseConnection()
        self._idle.clear()
