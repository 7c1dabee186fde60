"""
Connections to sources, kept open for a while after a fetch.

Fetching many small files from the same holders then costs no TCP (or TLS)
handshake and no upload-slot wait per file.
"""

from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectingCancelledError
from twisted.logger import Logger
from zope.interface import implementer

from ..errors import Unavailable
from ..logfilter import address_text
from ..ratelog import RateLimitedLog
from ..secure import PlainAddress, plain_endpoint
from ..tls import FingerprintMismatch, Identity, PinnedAddress, pinned_endpoint
from .interfaces import ISourcePool
from .ratelimit import TokenBucket
from .source import REQUEST_TIMEOUT, SourceProtocol, where

# Declared here rather than in source.py, whose wire code is being rewritten
# on another branch; move it to an @implementer there when they meet.

log = Logger()

CONNECT_TIMEOUT = 10.0
#: A source must send its first line (the greeting or a ``queued``) this soon after we connect.
GREETING_TIMEOUT = 10.0
#: Seconds a fetcher waits in one source's upload queue before giving up on it (``--queue-timeout``).
#: Sources queue with no timeout of their own, so this is the only bound on a wait for a slot.
QUEUE_TIMEOUT = 600.0
#: Kept shorter than the uploader's SLOT_IDLE_GRACE (fileshare.peer.upload),
#: so a connection is never reused just as the source closes it.
IDLE_TIMEOUT = 1.0


def _give_up(protocol: SourceProtocol, why: str) -> None:
    if not protocol.greeted.called:
        protocol.drop(f"source {where(protocol.endpoint_name)} {why}")


@implementer(ISourcePool)
class SourcePool:
    def __init__(
        self,
        reactor: Any,
        bucket: TokenBucket | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        identity: Identity | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        queue_timeout: float | None = QUEUE_TIMEOUT,
    ) -> None:
        """*request_timeout* bounds every request on a greeted connection (see
        :mod:`.source`); *queue_timeout* (None: no bound) the wait for a slot."""
        self.reactor = reactor
        self.request_timeout = request_timeout
        self.queue_timeout = queue_timeout
        #: One rate-limited log for every source connection's timeouts.
        self.warnings = RateLimitedLog(log, reactor)
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
        that queues us is waited for, up to *queue_timeout* (default: the
        pool's) since we connected, or until it closes the connection.
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
        protocol = SourceProtocol(self.reactor, self.bucket, ticket, self.request_timeout, self.warnings)
        protocol.endpoint_name = endpoint
        if watch is not None:
            watch(protocol)
        d = connectProtocol(ep, protocol)
        timer = self.reactor.callLater(CONNECT_TIMEOUT, d.cancel)
        try:
            await d
        except (CancelledError, ConnectingCancelledError):
            if timer.called:
                raise Unavailable(f"cannot connect: no connection within {CONNECT_TIMEOUT:g} s") from None
            raise CancelledError() from None  # the fetch was cancelled: not a failure of this source
        except FingerprintMismatch as e:
            log.warn("refused source {source}: {why}", source=address_text(endpoint), why=e.message)
            raise Unavailable(f"refused: {e.message}") from None
        except Exception as e:
            raise Unavailable(f"cannot connect: {e.__class__.__name__}") from None
        finally:
            if timer.active():
                timer.cancel()
        greeting = self.reactor.callLater(
            GREETING_TIMEOUT, _give_up, protocol, f"sent no greeting within {GREETING_TIMEOUT:g} s"
        )
        protocol.on_first_line = lambda: greeting.cancel() if greeting.active() else None
        if queue_timeout is None:
            queue_timeout = self.queue_timeout
        queue_timer = None
        if queue_timeout is not None:
            queue_timer = self.reactor.callLater(
                queue_timeout, _give_up, protocol, f"kept us queued for {queue_timeout:g} s"
            )
        try:
            return await protocol.greeted
        except BaseException:
            # Cancelled (the fetch was), or refused: nothing may stay open.
            if protocol.connected:
                protocol.transport.abortConnection()
            raise
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
