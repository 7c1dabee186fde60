"""
A symmetric request/reply channel over JSON lines.

Both ends may send requests on one connection (the peer asks the tracker for
sources while the tracker asks the peer for a ping), so requests carry an
``id`` chosen by their sender and replies carry ``re`` naming that id.  A reply
listing many items may arrive as several frames, all but the last marked
``"more": true``.  ``connectionLost`` fails every request still waiting.

Memory per connection is bounded on both sides (``docs/protocol.rst``,
"Flow control and limits (RPC)"):

- *Answering*: at most :data:`MAX_IN_FLIGHT` requests are being handled or
  have replies not yet handed to the transport; at the cap, reading stops
  until one reply is written.  Replies are handed over one frame at a time,
  and only while the transport's write buffer is below its bound: the
  protocol registers itself as a push producer while it writes, the
  transport pauses it when its buffer fills (64 KiB on TCP), and reading
  stops until the buffer drains.  A client that pipelines requests and never
  reads thus costs its transport buffer, one frame and the replies of
  :data:`MAX_IN_FLIGHT` requests, however many it sends.
- *Asking*: the frames of one reply may add up to :data:`MAX_REPLY_ITEMS`
  items and :data:`MAX_REPLY_BYTES` bytes; past either the call fails with
  "reply too long" and the connection is closed.
"""

import inspect
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import BadRequest, FileshareError, Unavailable
from ..logfilter import address_text
from ..ratelog import RateLimitedLog
from . import framing
from .framing import is_integer
from .lines import MessageReceiver
from .messages import error_reply, reply_error

log = Logger()

Handler = Callable[[dict[str, Any]], Any]

#: Requests per connection being handled or with replies not yet written;
#: at this many, reading stops until one reply is written.
MAX_IN_FLIGHT = 16
#: Items the frames of one reply to a call may add up to.
MAX_REPLY_ITEMS = 100_000
#: Bytes (lines, delimiters excluded) the frames of one reply to a call may add up to.
MAX_REPLY_BYTES = 32 * 1024 * 1024

_limit_logs: "weakref.WeakKeyDictionary[Any, RateLimitedLog]" = weakref.WeakKeyDictionary()


def limit_log(clock: IReactorTime) -> RateLimitedLog:
    """The rate-limited log of this module's limits, one per clock (so per process, or per test)."""
    ratelog = _limit_logs.get(clock)
    if ratelog is None:
        ratelog = _limit_logs[clock] = RateLimitedLog(log, clock)
    return ratelog


class _Call:
    """A request this end sent, waiting for its reply frames."""

    __slots__ = ("d", "items", "size", "timer")

    def __init__(self, d: Deferred, timer: Any) -> None:
        self.d = d
        self.timer = timer
        self.items: list[Any] = []
        self.size = 0


@implementer(IPushProducer)
class RPCProtocol(MessageReceiver):
    """One end of a request/reply connection.

    Subclasses register handlers in ``self.handlers`` (op name to a function
    taking the request and returning a reply dict, a Deferred or a coroutine;
    a reply may also be a :class:`~.framing.EncodedItems`, its items JSON already).
    A factory with a ``max_in_flight`` attribute sets that limit for the
    connections it builds.
    """

    #: Bad lines tolerated before the connection is dropped.
    MAX_BAD_MESSAGES = 10

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.handlers: dict[str, Handler] = {}
        self._next_id = 1
        self._pending: dict[int, _Call] = {}
        self._bad = 0
        self._line_size = 0
        self.max_in_flight = MAX_IN_FLIGHT
        self.max_reply_items = MAX_REPLY_ITEMS
        self.max_reply_bytes = MAX_REPLY_BYTES
        #: Requests being handled or whose reply frames are not all written.
        self.in_flight = 0
        #: Replies waiting for the transport, each an iterator of frames (messages, or lines already encoded).
        self._outbox: deque[Iterator[dict[str, Any] | bytes]] = deque()
        self._producing = False  # registered on the transport as its producer
        self._write_paused = False  # by the transport: its buffer is full
        self._flushing = False

    def makeConnection(self, transport: Any) -> None:
        limit = getattr(self.factory, "max_in_flight", None) if self.factory is not None else None
        if limit is not None:
            self.max_in_flight = limit
        super().makeConnection(transport)

    # -- sending requests

    def call(self, op: str, timeout: float | None = None, **fields: Any) -> Deferred:
        """Send a request; the Deferred fires with the reply message (items merged)."""
        if not self.connected:
            return Deferred.fromCoroutine(_raise(Unavailable("not connected")))
        request_id = self._next_id
        self._next_id += 1
        d = Deferred(lambda _: self._pending.pop(request_id, None))
        timer = None
        if timeout is not None:
            timer = self.clock.callLater(timeout, d.cancel)

            def stop_timer(result: Any) -> Any:
                if timer.active():
                    timer.cancel()
                return result

            d.addBoth(stop_timer)
            d.addErrback(_cancel_to_timeout, timeout)
        self._pending[request_id] = _Call(d, timer)
        self.sendMessage({"id": request_id, "op": op, **fields})
        return d

    # -- receiving

    def lineReceived(self, line: bytes) -> None:
        self._line_size = len(line)
        super().lineReceived(line)

    def badMessage(self, error: BadRequest) -> None:
        self.refuse(error)

    def messageReceived(self, message: dict[str, Any]) -> None:
        if "re" in message:
            self._reply_received(message)
        elif "id" in message and "op" in message:
            self._request_received(message)
        else:
            self.refuse(BadRequest("message is neither a request nor a reply"))

    def lineLengthExceeded(self, line: bytes) -> None:
        self.sendError(BadRequest(f"line longer than {self.MAX_LENGTH} bytes"), re=None)
        self.transport.loseConnection()

    def refuse(self, error: BadRequest, request_id: Any = None) -> None:
        """Answer a message that breaks the protocol; the MAX_BAD_MESSAGES-th closes the connection."""
        self._bad += 1
        log.warn("bad message from {peer}: {reason}", peer=address_text(self.transport.getPeer()), reason=error.message)
        self.sendError(error, re=request_id)
        if self._bad >= self.MAX_BAD_MESSAGES:
            self.transport.loseConnection()

    def errorReceived(self, message: dict[str, Any]) -> None:
        """An error that answers no request of ours (``"re": null``): the other side's complaint or notice."""
        log.warn("the other side rejected a message: {message}", message=message.get("message"))

    def _reply_received(self, message: dict[str, Any]) -> None:
        request_id = message.get("re")
        call = self._pending.get(request_id) if is_integer(request_id) else None
        if call is None:
            if request_id is None and message.get("ok") is False:
                self.errorReceived(message)
            return
        call.size += self._line_size
        if isinstance(message.get("items"), list):
            call.items.extend(message["items"])
        if len(call.items) > self.max_reply_items or call.size > self.max_reply_bytes:
            self._reply_too_long(request_id, call)
            return
        if message.get("more") is True:
            return
        del self._pending[request_id]
        if message.get("ok") is True:
            if call.items or "items" in message:
                message["items"] = call.items
            call.d.callback(message)
        else:
            call.d.errback(reply_error(message))

    def _reply_too_long(self, request_id: int, call: _Call) -> None:
        """Fail a call whose reply outgrew the limits and drop the connection that sent it."""
        del self._pending[request_id]
        limits = f"{self.max_reply_items} items or {self.max_reply_bytes} bytes"
        peer = self.transport.getPeer()
        limit_log(self.clock).warn(
            ("rpc-reply-too-long", _host(peer)),
            "reply from {peer} too long (over {limits}); closing the connection",
            peer=peer,
            limits=limits,
        )
        call.items = []
        call.d.errback(Unavailable(f"reply too long (over {limits})"))
        self.transport.loseConnection()

    def _request_received(self, message: dict[str, Any]) -> None:
        request_id, op = message["id"], message["op"]
        if not is_integer(request_id) or not isinstance(op, str):
            self.refuse(BadRequest("bad 'id' or 'op'"), request_id if is_integer(request_id) else None)
            return
        handler = self.handlers.get(op)
        if handler is None:
            handler = self.unknownRequest
        self.in_flight += 1
        d = maybeDeferred(_run, handler, message)
        d.addCallbacks(self._send_reply, self._send_error, (request_id,), errbackArgs=(request_id, op))
        if self.in_flight >= self.max_in_flight and self.connected:
            peer = self.transport.getPeer()
            limit_log(self.clock).warn(
                ("rpc-in-flight", _host(peer)),
                "{peer} has {limit} requests in flight; reading its requests pauses until one is answered",
                peer=peer,
                limit=self.max_in_flight,
            )
        self._update_reading()

    def unknownRequest(self, message: dict[str, Any]) -> Any:
        raise BadRequest(f"unknown op {message['op']!r}", "unknown-op")

    # -- answering, with flow control

    def _send_reply(self, reply: dict[str, Any] | framing.EncodedItems | None, request_id: int) -> None:
        if isinstance(reply, framing.EncodedItems):
            self._queue_reply(framing.encoded_frames(request_id, reply))
        else:
            self._queue_reply(_reply_frames(request_id, dict(reply or {})))

    def _send_error(self, failure: Failure, request_id: int, op: str) -> None:
        if failure.check(FileshareError):
            error = failure.value
        else:
            log.failure("handling {op!r} failed", failure, op=op)
            error = FileshareError("internal error", "internal")
        self._queue_reply(iter([{"re": request_id, **error_reply(error)}]))

    def _queue_reply(self, frames: Iterator[dict[str, Any] | bytes]) -> None:
        if not self.connected:
            self.in_flight -= 1
            return
        self._outbox.append(frames)
        self._flush()

    def _flush(self) -> None:
        """Write reply frames while the transport takes them, then update reading.

        The protocol is the transport's producer only while it writes or the
        transport's buffer is full (so reading resumes when it drains): a TLS
        transport does not close while a producer is registered.
        """
        if self._flushing:
            return
        self._flushing = True
        try:
            closing = getattr(self.transport, "disconnecting", False)
            if self._outbox and not self._producing and self.connected and not closing:
                # Not once closing: TLS would then take writes it otherwise drops.
                self._producing = True
                self.transport.registerProducer(self, True)
            while self._outbox and not self._write_paused and self.connected:
                frame = next(self._outbox[0], None)
                if frame is None:
                    self._outbox.popleft()
                    self.in_flight -= 1
                elif type(frame) is bytes:
                    self.transport.write(frame)
                else:
                    self.sendMessage(frame)
            if not self.connected:
                self.in_flight -= len(self._outbox)
                self._outbox.clear()
            if self._producing and (not self._write_paused or not self.connected):
                self._producing = False
                self.transport.unregisterProducer()
        finally:
            self._flushing = False
        self._update_reading()

    def _update_reading(self) -> None:
        """Read requests unless the transport's buffer is full or MAX_IN_FLIGHT requests are in flight."""
        if not self.connected or self._flushing:
            return
        hold = self._write_paused or bool(self._outbox) or self.in_flight >= self.max_in_flight
        if hold and not self.paused:
            self.paused = True
            self.transport.pauseProducing()
        elif not hold and self.paused:
            self.paused = False
            self.transport.resumeProducing()
            self.dataReceived(b"")  # the lines read before the pause

    # IPushProducer, called by the transport about its write buffer.
    def pauseProducing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resumeProducing(self) -> None:
        self._write_paused = False
        if getattr(self.transport, "disconnecting", False):
            # Closed while replies waited: they are dropped and the transport
            # let go of, so that it closes once its buffer is sent; it reads
            # again, for TLS's closing handshake.
            self.in_flight -= len(self._outbox)
            self._outbox.clear()
            self._producing = False
            self.transport.unregisterProducer()
            if self.paused:
                self.paused = False
                self.transport.resumeProducing()
            return
        self._flush()

    def stopProducing(self) -> None:
        self._write_paused = True
        self._producing = False

    def connectionLost(self, reason: Failure) -> None:
        self.connected = False
        self._outbox.clear()
        pending, self._pending = self._pending, {}
        for call in pending.values():
            if call.timer is not None and call.timer.active():
                call.timer.cancel()
            call.d.errback(Unavailable("connection lost"))


def _reply_frames(request_id: int, reply: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The frames of one reply, each encoded only when the transport can take it."""
    items = reply.pop("items", None)
    if items is None:
        yield {"re": request_id, "ok": True, **reply}
        return
    frames = framing.chunks(items)
    for frame in frames[:-1]:
        yield {"re": request_id, "ok": True, "more": True, "items": frame}
    yield {"re": request_id, "ok": True, **reply, "items": frames[-1]}


def _host(address: Any) -> str:
    """The key of a limit's log line: the address without its port, so one line a minute per address."""
    return str(getattr(address, "host", address))


def _run(handler: Handler, message: dict[str, Any]) -> Any:
    result = handler(message)
    if inspect.iscoroutine(result):
        return ensureDeferred(result)
    return result


async def _raise(error: Exception) -> None:
    raise error


def _cancel_to_timeout(failure: Failure, timeout: float) -> Failure:
    if failure.check(CancelledError):
        raise Unavailable(f"no answer within {timeout:g} s")
    return failure
