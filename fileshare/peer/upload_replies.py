"""
Checking a request and writing its reply: the piece list, a byte range streamed from the file, or the error.

A mixin of :class:`~fileshare.peer.upload.UploadProtocol`, kept apart so the
protocol reads as the order requests are answered in, and this as what one
answer is: the checks run in the upload threads (the file still published,
the range valid, the file open), the reply line is written through a
:class:`~fileshare.peer.flow.ReplyGate`, and a range is streamed by a sender
(:mod:`fileshare.peer.senders`).
"""

from functools import partial
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import BadRequest, FileshareError, TicketError
from ..wire import framing
from ..wire.framing import field
from ..wire.messages import error_reply
from .flow import ReplyGate
from .published import PublishedFileChanged, check_published, close_file, open_range
from .repository import Entry
from .senders import RangeSender, SendfileSender, plain_socket, read_cached
from .upload_limits import IDLE_TIMEOUT

log = Logger()


class _Answer:
    """One request on its way: once checked, what sends its reply (or the Failure to report)."""

    checked = False
    deliver: Any = None

    def settle(self, result: Any) -> None:
        self.checked = True
        if isinstance(result, Failure):
            failure = result
            self.deliver = lambda: failure
        else:
            self.deliver = result


class UploadReplies:
    """What answers one request of an upload connection; the protocol provides the state it reads."""

    service: Any
    transport: Any
    peer: Any
    connected: bool
    clock: Any
    tickets: Any
    sent_bytes: int
    _handed: int
    _delivering: bool
    _files: dict[str, int]
    _retired: list[int]
    _sender: Any
    blocking: Any
    setTimeout: Any
    _read: Any
    _abort: Any
    _aborted: bool
    sendError: Any

    def _check(self, message: dict[str, Any] | FileshareError) -> Any:
        """Check a request; what sends its reply (a Failure if it is to be refused)."""
        if isinstance(message, FileshareError):
            raise message
        if message["op"] == "ticket":
            self.tickets.admit(field(message, "ticket", str), self.transport)
            return partial(self._reply, {"ok": True})
        if message["op"] == "pieces":
            entry = self._entry(message)
            d = self.blocking(check_published, entry).addErrback(self._if_changed, entry)
            return d.addCallback(lambda _: partial(self._send_pieces, entry))
        if message["op"] == "get":
            entry = self._entry(message)
            held = self._files.get(entry.path)
            d = self.blocking(open_range, entry, message, held).addErrback(self._if_changed, entry)
            return d.addCallback(self._opened, entry.path, held)
        raise BadRequest(f"unknown op {message['op']!r}", "unknown-op")

    def _if_changed(self, failure: Failure, entry: Entry) -> Failure:
        if failure.check(PublishedFileChanged):
            self.service.on_changed(entry)  # it leaves the index (PublishedWatch)
        return failure

    def _entry(self, message: dict[str, Any]) -> Entry:
        return self.service.repository.servable(self.tickets.authorised(field(message, "root", str), self.transport))

    def _send_pieces(self, entry: Entry) -> Deferred | None:
        d = entry.digest
        return self._reply({"ok": True, "size": d.size, "piece_size": d.piece_size, "pieces": d.pieces.hex()})

    def sendMessage(self, message: dict[str, Any]) -> None:
        if self.connected:
            line = framing.encode(message)
            self._handed += len(line)
            self.transport.write(line)

    def _reply(self, message: dict[str, Any]) -> Deferred | None:
        """Send a reply line; if it filled the transport's buffer, a Deferred that fires once it drained.

        Replies go out one at a time (see ``_next``), so a client that asks
        and never reads makes this peer hold one reply line more than the
        transport's buffer, and no more.
        """
        if not self.connected:
            return None
        gate = ReplyGate(self.transport, self.clock)
        self.sendMessage(message)
        drained = gate.after_write()
        if drained is not None:
            self._gate = gate
            drained.addCallback(lambda _: setattr(self, "_gate", None))
        return drained

    def _opened(self, opened: tuple[int, int, int], path: str, held: int | None) -> Any:
        fd, offset, length = opened
        if fd != held:
            self._keep(path, fd, held)
        return partial(self._send_range, fd, offset, length)

    def _send_range(self, fd: int, offset: int, length: int) -> Deferred | None:
        self.sendMessage({"ok": True, "length": length})
        if not length:
            return None
        self.setTimeout(None)
        if self.service.sendfile and plain_socket(self.transport):
            sender: Any = SendfileSender(self.transport, fd, offset, length, self.clock, self.service.bucket)
        else:
            cached = read_cached if self.service.cached_reads else None
            sender = RangeSender(
                self.transport, fd, offset, length, self.clock, self.service.bucket, self._read, cached
            )
        self._sender = sender
        return sender.start().addCallbacks(self._sent, self._send_failed, (length,))

    def _keep(self, path: str, fd: int, held: int | None) -> None:
        """Hold a newly opened *fd* for *path*; the one it replaces (the file was replaced) is retired."""
        if not self.connected:
            close_file(fd)  # _forget has closed the others already
            return
        if held is not None:
            if self._delivering:
                self._retired.append(held)  # the range being sent may read it still
            else:
                close_file(held)
        self._files[path] = fd

    def _sent(self, _: object, length: int) -> None:
        self._sender = None
        self._handed += length
        self.sent_bytes += length
        self.service.sent_bytes += length
        self.setTimeout(IDLE_TIMEOUT)

    def _send_failed(self, failure: Failure) -> None:
        self._sender = None
        log.info("upload to {peer} stopped: {why}", peer=self.peer, why=failure.getErrorMessage())
        self._abort()

    def _failed(self, failure: Failure) -> Deferred | None:
        if failure.check(TicketError):
            # Logged where it was found; nothing more is answered on this connection.
            self.sendError(failure.value)
            self._aborted = True
            self.transport.loseConnection()
        elif failure.check(FileshareError):
            return self._reply(error_reply(failure.value))
        else:
            log.failure("serving {peer} failed", failure, peer=self.peer)
            self._abort()
        return None
