"""
A symmetric request/reply channel over JSON lines.

Both ends may send requests on one connection (the peer asks the tracker for
sources while the tracker asks the peer for a ping), so requests carry an
``id`` chosen by their sender and replies carry ``re`` naming that id.  A reply
listing many items may arrive as several frames, all but the last marked
``"more": true``.  ``connectionLost`` fails every request still waiting.
"""

import inspect
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import BadRequest, FileshareError, Unavailable
from ..logfilter import address_text
from . import framing
from .framing import is_integer
from .lines import MessageReceiver
from .messages import reply_error

log = Logger()

Handler = Callable[[dict[str, Any]], Any]


class RPCProtocol(MessageReceiver):
    """One end of a request/reply connection.

    Subclasses register handlers in ``self.handlers`` (op name to a function
    taking the request and returning a reply dict, a Deferred or a coroutine).
    """

    #: Bad lines tolerated before the connection is dropped.
    MAX_BAD_MESSAGES = 10

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.handlers: dict[str, Handler] = {}
        self._next_id = 1
        self._pending: dict[int, tuple[Deferred, list[Any], Any]] = {}
        self._bad = 0

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
        self._pending[request_id] = (d, [], timer)
        self.sendMessage({"id": request_id, "op": op, **fields})
        return d

    # -- receiving

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

    def _reply_received(self, message: dict[str, Any]) -> None:
        request_id = message.get("re")
        entry = self._pending.get(request_id) if is_integer(request_id) else None
        if entry is None:
            if request_id is None and message.get("ok") is False:
                log.warn("the other side rejected a message: {message}", message=message.get("message"))
            return
        d, items, _ = entry
        if isinstance(message.get("items"), list):
            items.extend(message["items"])
        if message.get("more") is True:
            return
        del self._pending[request_id]
        if message.get("ok") is True:
            if items or "items" in message:
                message["items"] = items
            d.callback(message)
        else:
            d.errback(reply_error(message))

    def _request_received(self, message: dict[str, Any]) -> None:
        request_id, op = message["id"], message["op"]
        if not is_integer(request_id) or not isinstance(op, str):
            self.refuse(BadRequest("bad 'id' or 'op'"), request_id if is_integer(request_id) else None)
            return
        handler = self.handlers.get(op)
        if handler is None:
            handler = self.unknownRequest
        d = maybeDeferred(_run, handler, message)
        d.addCallbacks(self._send_reply, self._send_error, (request_id,), errbackArgs=(request_id, op))

    def unknownRequest(self, message: dict[str, Any]) -> Any:
        raise BadRequest(f"unknown op {message['op']!r}", "unknown-op")

    def _send_reply(self, reply: dict[str, Any] | None, request_id: int) -> None:
        reply = dict(reply or {})
        items = reply.pop("items", None)
        if items is None:
            self.sendMessage({"re": request_id, "ok": True, **reply})
            return
        frames = framing.chunks(items)
        for frame in frames[:-1]:
            self.sendMessage({"re": request_id, "ok": True, "more": True, "items": frame})
        self.sendMessage({"re": request_id, "ok": True, **reply, "items": frames[-1]})

    def _send_error(self, failure: Failure, request_id: int, op: str) -> None:
        if failure.check(FileshareError):
            error = failure.value
        else:
            log.failure("handling {op!r} failed", failure, op=op)
            error = FileshareError("internal error", "internal")
        self.sendError(error, re=request_id)

    def connectionLost(self, reason: Failure) -> None:
        self.connected = False
        pending, self._pending = self._pending, {}
        for d, _, timer in pending.values():
            if timer is not None and timer.active():
                timer.cancel()
            d.errback(Unavailable("connection lost"))


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
