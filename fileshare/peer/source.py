"""
The fetcher's side of the transfer protocol: one connection to one source.

Requests are pipelined and answered in order.  A ``get`` reply header is
followed by exactly ``length`` raw bytes, which go to the request's sink
(``LineReceiver`` raw mode) and never through the line parser.

Every request has a timeout: once greeted, a connection that owes a reply
(or body bytes) and sends nothing for ``request_timeout`` seconds while we
read is aborted, and what it owed fails with an :class:`Unavailable` naming
the source and what it did not send.  Silence while reading is paused (rate,
disk) is ours, so it does not count.
"""

from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import BadRequest, Unavailable
from ..logfilter import address_text
from ..ratelog import RateLimitedLog
from ..wire.framing import is_integer
from ..wire.lines import MessageReceiver
from ..wire.messages import hello_fields, reply_error
from .interfaces import ISourceConnection
from .ratelimit import TokenBucket

log = Logger()

RECV_SIZE = 1 << 20

#: Seconds a greeted source may owe a reply or body bytes and send nothing (``--request-timeout``).
REQUEST_TIMEOUT = 30.0


def where(address: Any) -> str:
    """HOST:PORT of a source address (a PinnedAddress or PlainAddress), for messages."""
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    return f"{host}:{port}" if host is not None and port is not None else str(address)


#: What a source did not send in time, by the kind of request it owed.
_MISSING = {
    "pieces": "sent no piece list within {timeout:g} s",
    "ticket": "did not answer our ticket within {timeout:g} s",
    "get": "sent no data for {timeout:g} s",
}


class Sink(Protocol):
    def write(self, data: memoryview) -> None: ...


#: The message of an error reply that does not say what went wrong.
REFUSED = "source refused the request"


@implementer(ISourceConnection)
class SourceProtocol(MessageReceiver):
    def __init__(
        self,
        clock: IReactorTime,
        bucket: TokenBucket | None = None,
        ticket: str | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        warnings: RateLimitedLog | None = None,
    ) -> None:
        self.clock = clock
        self.request_timeout = request_timeout
        self.warnings = warnings or RateLimitedLog(log, clock)
        self._deadline: Any = None
        #: The ticket sent in ``hello``; every ticket sent so far.
        self.ticket = ticket
        self.presented: set[str] = {ticket} if ticket is not None else set()
        #: What the source refused (a ticket), reported to requests cut off by the close that follows.
        self._refusal: Exception | None = None
        self.bucket = bucket
        self.greeted: Deferred = Deferred()
        self.on_queued: Callable[[int], None] | None = None
        self.on_first_line: Callable[[], Any] | None = None
        self.queue_position: int | None = None
        self._expect: deque[tuple[str, Deferred, Any]] = deque()
        self._sink: Sink | None = None
        self._remaining = 0
        self._current: Deferred | None = None
        self._length = 0
        self._pauses: set[str] = set()
        #: The timer that lifts each timed pause: one per reason, so an earlier one cannot end a later pause.
        self._timers: dict[str, Any] = {}
        self.received_bytes = 0
        self.last_progress = clock.seconds()
        self.endpoint_name = ""

    def connectionMade(self) -> None:
        # Read up to 1 MiB per recv() instead of Twisted's 64 KiB: a quarter
        # of the Python calls per byte on the hot path.
        if hasattr(self.transport, "bufferSize"):
            # Under a rate cap, a read is at most the bucket's grain, so one read overshoots by little.
            self.transport.bufferSize = min(RECV_SIZE, self.bucket.grain) if self.bucket else RECV_SIZE
        hello: dict[str, Any] = {"op": "hello", **hello_fields()}
        if self.ticket is not None:
            hello["ticket"] = self.ticket
        self.sendMessage(hello)

    # -- requests

    def pieces(self, root: str) -> Deferred:
        return self._request({"op": "pieces", "root": root}, "pieces", None)

    def get(self, root: str, offset: int, length: int, sink: Sink) -> Deferred:
        return self._request({"op": "get", "root": root, "offset": offset, "length": length}, "get", (sink, length))

    def present(self, ticket: str | None) -> None:
        """Send *ticket* for the next file on this connection, unless it was sent already.

        Pipelined like any request: the ones after it are answered only if
        the source accepts it (it closes the connection otherwise).
        """
        if ticket is None or ticket in self.presented:
            return
        self.presented.add(ticket)
        self._request({"op": "ticket", "ticket": ticket}, "ticket", None).addErrback(self._ticket_refused)

    def _ticket_refused(self, failure: Failure) -> None:
        self._refusal = failure.value
        log.info(
            "source {source} refused our ticket: {why}",
            source=address_text(self.endpoint_name),
            why=failure.getErrorMessage(),
        )

    def _request(self, message: dict[str, Any], kind: str, sink: Any) -> Deferred:
        d: Deferred = Deferred()
        if not self.connected:
            d.errback(Unavailable("connection to source is closed"))
            return d
        if not self.busy:
            self.last_progress = self.clock.seconds()  # its time starts now, not at the last reply
        self._expect.append((kind, d, sink))
        self.sendMessage(message)
        self._watch()
        return d

    # -- the request timeout

    def _watch(self) -> None:
        """Keep a timer running while a greeted connection owes something and we read."""
        if self._deadline is not None and self._deadline.active():
            return
        self._deadline = None
        if self.greeted.called and self.busy and not self._pauses and self.connected:
            left = self.last_progress + self.request_timeout - self.clock.seconds()
            self._deadline = self.clock.callLater(max(0.0, left), self._deadline_passed)

    def _deadline_passed(self) -> None:
        """Bytes kept coming (the timer is not moved on each chunk): look again later, or give up."""
        self._deadline = None
        if not (self.busy and self.connected) or self._pauses:
            return
        if self.clock.seconds() - self.last_progress < self.request_timeout:
            self._watch()
            return
        kind = "get" if self._sink is not None else self._expect[0][0]
        self.drop(f"source {where(self.endpoint_name)} " + _MISSING[kind].format(timeout=self.request_timeout))

    def drop(self, why: str) -> None:
        """Give up on this source: abort the connection; what it owed (its greeting too) fails with *why*."""
        if self._refusal is None:
            self._refusal = Unavailable(why)
        self.warnings.warn(("source-timeout", where(self.endpoint_name)), "dropping source: {why}", why=why)
        if self.connected:
            self.transport.abortConnection()

    @property
    def busy(self) -> bool:
        return bool(self._expect) or self._sink is not None

    @property
    def paused(self) -> bool:
        """Reading is held for some reason (disk, rate): silence now is not a stall."""
        return bool(self._pauses)

    # -- replies

    def lineReceived(self, line: bytes) -> None:
        self.last_progress = self.clock.seconds()
        super().lineReceived(line)
        self._settled()

    def _settled(self) -> None:
        """Nothing is owed any more: no timer runs until the next request."""
        if not self.busy and self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def badMessage(self, error: BadRequest) -> None:
        self._protocol_error(f"source sent a bad message: {error.message}")

    def messageReceived(self, message: dict[str, Any]) -> None:
        if self.on_first_line is not None:
            first, self.on_first_line = self.on_first_line, None
            first()
        if not self.greeted.called:
            if "queued" in message and "ok" not in message:
                self.queue_position = message["queued"] if is_integer(message["queued"]) else None
                if self.on_queued is not None and self.queue_position is not None:
                    self.on_queued(self.queue_position)
                return
            self.queue_position = None
            if message.get("ok") is True:
                self.greeted.callback(self)
                self._watch()
            else:
                self.greeted.errback(reply_error(message, REFUSED))
                self.transport.loseConnection()
            return
        if not self._expect:
            self._protocol_error("source sent a reply nobody asked for")
            return
        kind, d, sink = self._expect.popleft()
        if kind == "get":
            sink, wanted = sink
        if message.get("ok") is not True:
            d.errback(reply_error(message, REFUSED))
            return
        if kind in ("pieces", "ticket"):
            d.callback(message)
            return
        length = message.get("length")
        if not is_integer(length) or length != wanted:
            d.errback(BadRequest("source sent a bad length"))
            self.transport.loseConnection()
            return
        if length == 0:
            d.callback(0)
            return
        self._sink, self._remaining, self._current, self._length = sink, length, d, length
        self.setRawMode()

    def rawDataReceived(self, data: bytes) -> None:
        self.last_progress = self.clock.seconds()
        n = len(data)
        take = min(n, self._remaining)
        view = memoryview(data)
        self._remaining -= take
        self.received_bytes += take
        sink, d = self._sink, self._current
        if self.bucket is not None:
            delay = self.bucket.delay_for(take)
            if delay > 0:
                self.pause("rate", delay)
        if self._remaining == 0:
            self._sink = self._current = None
            self.setLineMode()
            sink.write(view[:take])
            d.callback(self._length)
            self._settled()
            if take < n and self.connected:
                self.dataReceived(data[take:])
        else:
            sink.write(view)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._protocol_error("source sent an over-long line")

    def _protocol_error(self, why: str) -> None:
        where_ = where(self.endpoint_name)
        self.warnings.warn(("bad-source", where_), "dropping source {source}: {why}", source=where_, why=why)
        self.transport.abortConnection()

    # -- flow control: several reasons may hold the connection paused at once

    def pause(self, reason: str, for_seconds: float | None = None) -> None:
        if not self._pauses and self.connected:
            self.transport.pauseProducing()
        self._pauses.add(reason)
        if for_seconds is not None:
            timer = self._timers.get(reason)
            if timer is None or not timer.active():
                self._timers[reason] = self.clock.callLater(for_seconds, self.resume, reason)
            elif timer.getTime() < self.clock.seconds() + for_seconds:
                timer.reset(for_seconds)

    def resume(self, reason: str) -> None:
        if reason in self._pauses:
            self._pauses.discard(reason)
            if not self._pauses and self.connected:
                self.transport.resumeProducing()
                self.last_progress = self.clock.seconds()  # the silence while paused was ours
                self._watch()
                if self._buffer:
                    # LineReceiver stops delivering while our ``paused`` is true: hand on what it held,
                    # or the last bytes of a stream (a TLS read comes in several pieces) wait forever.
                    self.dataReceived(b"")

    def connectionLost(self, reason: Failure) -> None:
        self.connected = False
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        why = self._refusal or Unavailable(f"connection to source lost: {reason.getErrorMessage()}")
        if not self.greeted.called:
            self.greeted.errback(why)
        if self._current is not None:
            d, self._current = self._current, None
            d.errback(why)
        expect, self._expect = self._expect, deque()
        for _, d, _ in expect:
            d.errback(why)
