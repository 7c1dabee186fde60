"""
Serving files to other peers: the source side of the transfer protocol.

A fetcher connects to ``--listen``, says ``hello``, waits for an upload slot,
then asks for piece lists and byte ranges of content it names by root.  Only
published content is served; a name or path never comes from the wire.  Each
range is streamed by a push producer from the file, so memory does not grow
with the file, and paced by the peer-wide upload :class:`TokenBucket`.
"""

import os
from collections import Counter, deque
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer, IPushProducer, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import BadRequest, FileshareError, NotFound
from ..wire import framing
from ..wire.framing import count, field
from .ratelimit import TokenBucket
from .repository import Entry, Repository, Stamp

log = Logger()

#: Bytes read from disk and written to the transport at once.
CHUNK = 1 << 20
#: Bytes handed to one sendfile() call at most.
SENDFILE_CHUNK = 4 << 20
#: While others wait for a slot, a connection idle this long loses its slot.
SLOT_IDLE_GRACE = 2.0
#: Requests queued on one connection before it is read no further.
MAX_QUEUED_REQUESTS = 16
#: A connection that sends nothing for this long while idle is closed.
IDLE_TIMEOUT = 60.0


def _host_of(protocol: "UploadProtocol") -> str:
    return getattr(protocol.transport.getPeer(), "host", "?")


class UploadSlots:
    """At most *limit* connections are served at once; the rest wait.

    A freed slot goes to the waiting connection whose host holds the fewest
    slots, oldest first, so one greedy host cannot keep every slot while
    others wait.  A fetcher keeps its connection open for a moment after a
    fetch, to reuse it; while others wait, a connection idle for
    SLOT_IDLE_GRACE is closed to free its slot.  Fetchers keep idle
    connections for less than that, so they never reuse one being closed.
    """

    def __init__(self, limit: int | None, clock: IReactorTime) -> None:
        self.limit = limit
        self.clock = clock
        self.active: set[UploadProtocol] = set()
        self.waiting: deque[UploadProtocol] = deque()
        self._reclaim_call: Any = None

    def request(self, protocol: "UploadProtocol") -> None:
        if self.limit is None or len(self.active) < self.limit:
            self.active.add(protocol)
            protocol.slotGranted()
        else:
            self.waiting.append(protocol)
            protocol.queued(len(self.waiting))
            self.reclaim()

    def reclaim(self) -> None:
        """Close slot holders idle for long enough while others wait; check again later for the rest."""
        if self._reclaim_call is not None and self._reclaim_call.active():
            self._reclaim_call.cancel()
        self._reclaim_call = None
        if not self.waiting:
            return
        now = self.clock.seconds()
        soonest = None
        for p in list(self.active):
            if p.idle_since is None:
                continue
            left = p.idle_since + SLOT_IDLE_GRACE - now
            if left <= 0:
                p.transport.loseConnection()
            else:
                soonest = left if soonest is None else min(soonest, left)
        if soonest is not None:
            self._reclaim_call = self.clock.callLater(soonest, self.reclaim)

    def release(self, protocol: "UploadProtocol") -> None:
        if protocol in self.active:
            self.active.discard(protocol)
        elif protocol in self.waiting:
            self.waiting.remove(protocol)
        while self.waiting and (self.limit is None or len(self.active) < self.limit):
            held = Counter(_host_of(p) for p in self.active)
            nxt = min(self.waiting, key=lambda p: held[_host_of(p)])  # min() keeps the oldest of equals
            self.waiting.remove(nxt)
            self.active.add(nxt)
            nxt.slotGranted()
        for position, p in enumerate(self.waiting, 1):
            if p.position != position:
                p.queued(position)


class _Sender:
    """What both ways of streaming a range share: where they are and when they are done."""

    def __init__(
        self, transport: Any, fd: int, offset: int, length: int, clock: IReactorTime, bucket: TokenBucket
    ) -> None:
        self.transport = transport
        self.fd = fd
        self.offset = offset
        self.remaining = length
        self.clock = clock
        self.bucket = bucket
        self.done: Deferred = Deferred()
        self._stopped = False
        self._booked = 0


@implementer(IPushProducer)
class RangeSender(_Sender):
    """Stream ``length`` bytes of an open file from ``offset`` to a transport."""

    _paused = False
    _call: Any = None

    def start(self) -> Deferred:
        self.transport.registerProducer(self, True)
        self._schedule(0)
        return self.done

    def _schedule(self, delay: float) -> None:
        if self._call is None or not self._call.active():
            self._call = self.clock.callLater(delay, self._send)

    def pauseProducing(self) -> None:
        self._paused = True
        if self._call is not None and self._call.active():
            self._call.cancel()

    def resumeProducing(self) -> None:
        self._paused = False
        if not self._stopped:
            self._schedule(0)

    def stopProducing(self) -> None:
        self._stopped = True
        self.pauseProducing()
        if not self.done.called:
            self.done.errback(Failure(ConnectionError("upload stopped")))

    def _send(self) -> None:
        self._call = None
        while not self._paused and not self._stopped and self.remaining:
            n = min(CHUNK, self.remaining)
            if self._booked < n:
                delay = self.bucket.delay_for(n)
                self._booked = n
                if delay > 0:
                    self._schedule(delay)
                    return
            data = os.pread(self.fd, n, self.offset)
            self._booked = 0
            if len(data) != n:
                self._stopped = True
                self.transport.unregisterProducer()
                self.done.errback(Failure(OSError("file shrank while being served")))
                return
            self.offset += n
            self.remaining -= n
            self.transport.write(data)
        if not self.remaining and not self._stopped:
            self._stopped = True
            self.transport.unregisterProducer()
            self.done.callback(None)


@implementer(IPullProducer)
class SendfileSender(_Sender):
    """Stream a range with ``os.sendfile``: no copy through Python.

    Only for a plain socket transport (TCP or UNIX, no TLS).  As a pull
    producer it is called when the transport's own buffer is empty, so the
    reply header written before it always goes out first; after each
    ``sendfile`` it asks the transport to call again when the socket is
    writable.
    """

    _registered = False
    _timer: Any = None

    def start(self) -> Deferred:
        self.transport.registerProducer(self, False)
        return self.done

    def resumeProducing(self) -> None:
        if self._stopped:
            return
        if not self._registered:
            # Called from registerProducer itself: the header may still be
            # buffered, so let the transport flush it and call back.
            self._registered = True
            self.transport.startWriting()
            return
        n = min(SENDFILE_CHUNK, self.remaining)
        if self._booked < n:
            delay = self.bucket.delay_for(n - self._booked)  # book only what is not booked yet
            self._booked = n
            if delay > 0:
                self._timer = self.clock.callLater(delay, self._wake)
                return
        try:
            sent = os.sendfile(self.transport.fileno(), self.fd, self.offset, n)
        except BlockingIOError:
            sent = None
        except OSError as e:
            self._fail(e)
            return
        if sent == 0:
            self._fail(OSError("file shrank while being served"))
            return
        if sent:
            self._booked -= sent
            self.offset += sent
            self.remaining -= sent
        if not self.remaining:
            self._stopped = True
            self.transport.unregisterProducer()
            self.done.callback(None)
        else:
            self.transport.startWriting()

    def _wake(self) -> None:
        self._timer = None
        if not self._stopped:
            self.transport.startWriting()

    def _fail(self, error: Exception) -> None:
        self._stopped = True
        self.transport.unregisterProducer()
        self.done.errback(Failure(error))

    def stopProducing(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if not self._stopped:
            self._stopped = True
            self.done.errback(Failure(ConnectionError("upload stopped")))


def _plain_socket(transport: Any) -> bool:
    """Whether bytes may bypass the transport (a TCP or UNIX socket without TLS)."""
    return isinstance(transport, tcp.Connection) and not getattr(transport, "TLS", False)


class UploadProtocol(LineReceiver, TimeoutMixin):
    delimiter = b"\n"
    MAX_LENGTH = 4096

    def __init__(self, service: "UploadService") -> None:
        self.service = service
        self.state = "hello"  # hello -> waiting -> serving
        self._requests: deque[dict[str, Any] | FileshareError] = deque()
        self._sending = False
        self._files: dict[str, int] = {}
        self.sent_bytes = 0
        self.position: int | None = None
        #: When this connection, holding a slot, last ran out of requests.
        self.idle_since: float | None = None
        self._reading_paused = False

    @property
    def clock(self) -> IReactorTime:
        return self.service.clock

    def callLater(self, delay: float, f: Any, *args: Any) -> Any:  # for TimeoutMixin
        return self.clock.callLater(delay, f, *args)

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()
        self.setTimeout(IDLE_TIMEOUT)

    def send(self, message: dict[str, Any]) -> None:
        self.transport.write(framing.encode(message))

    def error(self, e: FileshareError) -> None:
        self.send({"ok": False, "code": e.code, "message": e.message})

    def lineLengthExceeded(self, line: bytes) -> None:
        self.error(BadRequest(f"line longer than {self.MAX_LENGTH} bytes"))
        self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        self.resetTimeout()
        try:
            message = framing.decode(line)
            op = field(message, "op", str)
            if self.state == "hello":
                if op != "hello":
                    raise BadRequest("send 'hello' first", "hello-required")
                self.hello(message)
            else:
                self._requests.append(message)
                if len(self._requests) > MAX_QUEUED_REQUESTS and not self._reading_paused:
                    # A client that asks faster than it reads waits for us to catch up.
                    self._reading_paused = True
                    self.transport.pauseProducing()
                self._next()
        except FileshareError as e:
            if self.state == "hello":
                self.error(e)
                self.transport.loseConnection()
            else:
                # Answered in turn, after any range still being streamed.
                self._requests.append(e)
                self._next()

    def hello(self, message: dict[str, Any]) -> None:
        versions = [v for v in field(message, "versions", list) if isinstance(v, int) and not isinstance(v, bool)]
        if framing.PROTOCOL_VERSION not in versions:
            raise BadRequest(f"no common protocol version (this peer speaks {framing.PROTOCOL_VERSION})", "version")
        self.state = "waiting"
        self.setTimeout(None)  # waiting for a slot is not idling
        self.service.slots.request(self)

    def queued(self, position: int) -> None:
        self.position = position
        self.send({"queued": position})

    def slotGranted(self) -> None:
        self.state = "serving"
        self.setTimeout(IDLE_TIMEOUT)
        self.send({"ok": True, "version": framing.PROTOCOL_VERSION})
        self._next()

    def _next(self) -> None:
        """Answer queued requests in order, one streamed range at a time."""
        if self._reading_paused and len(self._requests) <= MAX_QUEUED_REQUESTS // 4:
            self._reading_paused = False
            self.transport.resumeProducing()
        while self.state == "serving" and not self._sending and self._requests and self.connected:
            message = self._requests.popleft()
            try:
                if isinstance(message, FileshareError):
                    raise message
                if message["op"] == "pieces":
                    self._pieces(message)
                elif message["op"] == "get":
                    self._get(message)
                else:
                    raise BadRequest(f"unknown op {message['op']!r}", "unknown-op")
            except FileshareError as e:
                self.error(e)
        if self.connected:
            self._update_idle()

    def _entry(self, message: dict[str, Any]) -> Entry:
        root = field(message, "root", str)
        entry = self.service.repository.servable(root)
        try:
            st = os.stat(entry.path)
        except OSError:
            raise NotFound("the published file is gone from disk") from None
        if Stamp.of(st) != entry.stamp:
            raise NotFound("the published file has changed since it was published")
        return entry

    def _pieces(self, message: dict[str, Any]) -> None:
        entry = self._entry(message)
        d = entry.digest
        self.send({"ok": True, "size": d.size, "piece_size": d.piece_size, "pieces": d.pieces.hex()})

    def _get(self, message: dict[str, Any]) -> None:
        entry = self._entry(message)
        offset, length = count(message, "offset"), count(message, "length")
        if offset + length > entry.size:
            raise BadRequest("range is beyond the end of the file", "range")
        fd = self._files.get(entry.path)
        if fd is not None and Stamp.of(os.fstat(fd)) != entry.stamp:
            os.close(self._files.pop(entry.path))  # the file was replaced since it was opened
            fd = None
        if fd is None:
            try:
                fd = os.open(entry.path, os.O_RDONLY)
            except OSError as e:
                raise NotFound(f"the published file cannot be read: {e.strerror}") from None
            if Stamp.of(os.fstat(fd)) != entry.stamp:
                os.close(fd)
                raise NotFound("the published file has changed since it was published")
            self._files[entry.path] = fd
        self.send({"ok": True, "length": length})
        if not length:
            return
        self._sending = True
        self.setTimeout(None)
        kind = SendfileSender if self.service.sendfile and _plain_socket(self.transport) else RangeSender
        sender = kind(self.transport, fd, offset, length, self.clock, self.service.bucket)
        sender.start().addCallbacks(self._sent, self._send_failed, (length,))

    def _sent(self, _: object, length: int) -> None:
        self._sending = False
        self.sent_bytes += length
        self.service.sent_bytes += length
        self.setTimeout(IDLE_TIMEOUT)
        self._next()

    def _update_idle(self) -> None:
        idle = self.state == "serving" and not self._sending and not self._requests
        if idle and self.idle_since is None:
            self.idle_since = self.clock.seconds()
            if self.service.slots.waiting:
                self.service.slots.reclaim()
        elif not idle:
            self.idle_since = None

    def _send_failed(self, failure: Failure) -> None:
        self._sending = False
        log.info("upload to {peer} stopped: {why}", peer=self.peer, why=failure.getErrorMessage())
        self.transport.abortConnection()

    def timeoutConnection(self) -> None:
        log.info("closing idle upload connection from {peer}", peer=self.peer)
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        self.connected = False
        self.setTimeout(None)
        self.service.slots.release(self)
        self.service.connections.discard(self)
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()


class UploadService(Factory):
    """Serves this peer's repository to other peers."""

    #: Use sendfile() where the transport is a plain socket.
    sendfile = hasattr(os, "sendfile")

    def __init__(
        self, repository: Repository, clock: IReactorTime, max_uploads: int | None, upload_rate: int | None
    ) -> None:
        self.repository = repository
        self.clock = clock
        self.slots = UploadSlots(max_uploads, clock)
        self.bucket = TokenBucket(upload_rate, clock)
        self.connections: set[UploadProtocol] = set()
        self.sent_bytes = 0

    def buildProtocol(self, addr: Any) -> UploadProtocol:
        p = UploadProtocol(self)
        p.factory = self
        self.connections.add(p)
        return p
