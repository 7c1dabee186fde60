"""
Serving files to other peers: the source side of the transfer protocol.

A fetcher connects to ``--listen``, says ``hello`` with a ticket from the
tracker (:mod:`fileshare.tickets`), waits for an upload slot
(:mod:`fileshare.peer.slots`), then asks for piece lists and byte ranges of
content it names by root: only roots its tickets name (:mod:`.ticket_gate`;
more come in ``ticket`` requests, so a pooled connection serves the next
file).  A bad ticket closes the connection; it never reaches the queue.
Only published content is served; a name or path never comes from the
wire.  Requests are answered strictly in order, one at
a time; each range is streamed by a producer (:mod:`fileshare.peer.senders`),
so memory does not grow with the file, and paced by the peer-wide upload
:class:`TokenBucket`.

Nothing here waits for the disk on the reactor thread: every ``stat`` and
``open`` runs in the upload service's thread pool, and so does every read
that could wait (a chunk the page cache holds is read in place with
``RWF_NOWAIT``, see :class:`~fileshare.peer.senders.RangeSender`).  One
connection's jobs run one after another (a :class:`DeferredLock`), so
requests are checked in order and a file is not closed under a read; a
request is checked at most one ahead of the reply being sent.

A client is held to bounds (:mod:`fileshare.peer.flow`): a reply is
written only once the transport has drained the one before, reading stops
while MAX_QUEUED_REQUESTS wait, and what happens when a client breaks a
limit is in :mod:`fileshare.peer.upload_limits`; what one answer is (the
checks, the reply line, the range streamed) in
:mod:`fileshare.peer.upload_replies`.

The protocol and its factory stay together: the factory is the protocol's
shared state (slots, bucket, thread pool, key).
"""

import os
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredLock, maybeDeferred
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ..errors import BadRequest, FileshareError
from ..limits import admitted
from ..ratelog import RateLimitedLog
from ..tickets import TicketKey
from ..wire.framing import field
from ..wire.lines import MessageReceiver
from ..wire.messages import check_hello, hello_required
from .flow import SEND_PROGRESS_FLOOR, SEND_PROGRESS_WINDOW, SEND_TIMEOUT, ReplyGate, SendWatch, unsent_bytes
from .interfaces import IUploadService
from .published import close_file
from .ratelimit import TokenBucket
from .repository import Entry, Repository
from .senders import CAN_READ_CACHED, CHUNK, RangeSender, SendfileSender
from .slots import MAX_QUEUED_PER_ADDRESS, SLOT_IDLE_GRACE, QueueFull, UploadSlots, host_of
from .ticket_gate import TicketGate, address_text
from .upload_limits import HELLO_TIMEOUT, IDLE_TIMEOUT, UploadLimits
from .upload_log import log_upload_ended
from .upload_replies import UploadReplies, _Answer

__all__ = [
    "CHUNK",
    "HELLO_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_QUEUED_REQUESTS",
    "SLOT_IDLE_GRACE",
    "UploadProtocol",
    "UploadService",
]

log = Logger()

#: Requests queued on one connection before it is read no further.
MAX_QUEUED_REQUESTS = 16


class UploadProtocol(UploadReplies, UploadLimits, MessageReceiver, TimeoutMixin):
    MAX_LENGTH = 4096

    def __init__(self, service: "UploadService") -> None:
        self.service = service
        self.state = "hello"  # hello -> waiting -> serving
        self._requests: deque[dict[str, Any] | FileshareError] = deque()
        #: Requests checked or being checked, in order, whose replies are not sent yet.
        self._answers: deque[_Answer] = deque()
        self._checking = False
        self._delivering = False
        #: Descriptors of replaced files, closed once the range being sent is done.
        self._retired: list[int] = []
        self._looping = False
        self._aborted = False
        self._greeting: dict[str, Any] = {}
        self._files: dict[str, int] = {}
        self._sender: RangeSender | SendfileSender | None = None
        #: This connection's blocking jobs, one at a time.
        self._jobs = DeferredLock()
        self.sent_bytes = 0
        self.position: int | None = None
        #: When this connection, holding a slot, last ran out of requests.
        self.idle_since: float | None = None
        self._reading_paused = False
        self.tickets = TicketGate(service)
        #: The roots this connection presented valid tickets for.
        self.roots = self.tickets.roots
        #: Bytes of reply lines and of finished bodies handed to the transport.
        self._handed = 0
        #: A reply line waiting for the transport to drain before the next reply.
        self._gate: ReplyGate | None = None
        #: Whether this slot holder is over its address's fair share, and that share.
        self._yield = False
        self._share = 0
        self._watch = SendWatch(
            service.clock,
            self._accepted,
            self._owing,
            self._blocked,
            lambda: service.slots.others_wait(self),
            self._send_timed_out,
            self._too_slow,
            service.send_timeout,
            service.progress_window,
            service.progress_floor,
        )

    @property
    def clock(self) -> IReactorTime:
        return self.service.clock

    def callLater(self, delay: float, f: Any, *args: Any) -> Any:  # for TimeoutMixin
        return self.clock.callLater(delay, f, *args)

    def connectionMade(self) -> None:
        self.peer = self.transport.getPeer()
        self.opened_at = self.clock.seconds()
        self.setTimeout(HELLO_TIMEOUT)  # not reset by lines until hello: see lineReceived

    def blocking(self, f: Any, *args: Any) -> Deferred:
        """Run ``f(*args)`` in the upload threads, after this connection's earlier jobs."""
        return self._jobs.run(self.service.run_blocking, f, *args)

    # -- receiving

    def lineLengthExceeded(self, line: bytes) -> None:
        self.sendError(BadRequest(f"line longer than {self.MAX_LENGTH} bytes"))
        self.transport.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        if self.state != "hello":
            self.resetTimeout()
        super().lineReceived(line)

    def badMessage(self, error: BadRequest) -> None:
        self._refuse(error)

    def messageReceived(self, message: dict[str, Any]) -> None:
        try:
            op = field(message, "op", str)
            if self.state == "hello":
                if op != "hello":
                    raise hello_required()
                self.hello(message)
            else:
                self._requests.append(message)
                if len(self._requests) > MAX_QUEUED_REQUESTS and not self._reading_paused:
                    # A client that asks faster than it reads waits for us to catch up.
                    # Pausing the line receiver too stops the lines already
                    # received in the same read (or TLS record) at this one.
                    self._reading_paused = True
                    self.pauseProducing()
                self._next()
        except FileshareError as e:
            self._refuse(e)

    def _refuse(self, error: FileshareError) -> None:
        if self.state == "hello":
            self.sendError(error)
            self.transport.loseConnection()
        else:
            # Answered in turn, after any range still being streamed.
            self._requests.append(error)
            self._next()

    def hello(self, message: dict[str, Any]) -> None:
        self._greeting = check_hello(message, "this peer")
        self.tickets.admit(message.get("ticket"), self.transport)  # before the queue: no ticket, no slot
        admitted(self.transport)  # no longer counts against --max-pending
        self.state = "waiting"
        self.setTimeout(None)  # waiting for a slot is not idling
        try:
            self.service.slots.request(self)
        except QueueFull:
            self.service.ratelog.warn(
                ("queue-full", host_of(self)),
                "refused fetcher {address}: {waiting} of its connections already wait for an upload slot"
                " (--max-queued-per-address {limit})",
                address=address_text(self.peer),
                waiting=self.service.slots.queued_from(host_of(self)),
                limit=self.service.slots.per_address,
            )
            self.state = "hello"
            raise

    # -- the slot (called by UploadSlots)

    def queued(self, position: int) -> None:
        self.position = position
        self.sendMessage({"queued": position})

    def slotGranted(self) -> None:
        self.state = "serving"
        self.granted_at = self.clock.seconds()
        self.setTimeout(IDLE_TIMEOUT)
        self.sendMessage({"ok": True, **self._greeting})
        self._next()

    # -- answering, in order
    #
    # Each request is answered in two steps: it is checked (in the threads:
    # the file still published, the range valid, the file open), then its
    # reply is sent (and its range streamed).  The next request is checked
    # while the range ahead of it is still streaming, so no thread round trip
    # sits between two bodies; replies still go out strictly in order.

    def _next(self) -> None:
        """Check the next request ahead of time and send replies in order, one range at a time."""
        closing = not self.connected or getattr(self.transport, "disconnecting", False)
        if self._reading_paused and len(self._requests) <= MAX_QUEUED_REQUESTS // 4 and not closing:
            self._reading_paused = False
            self.resumeProducing()
        if self._yield and not self._delivering and self._can_answer():
            self._over_share()
            return
        if self._looping:
            return  # a step finished at once; the loop below goes on
        self._looping = True
        try:
            progress = True
            while progress and self._can_answer():
                progress = False
                if not self._delivering and self._answers and self._answers[0].checked:
                    answer = self._answers.popleft()
                    self._delivering = True
                    self._watch.kick()
                    d = maybeDeferred(answer.deliver)
                    d.addErrback(self._failed)
                    d.addBoth(self._delivered)
                    progress = True
                if not self._checking and self._requests and len(self._answers) + self._delivering < 2:
                    answer = _Answer()
                    self._answers.append(answer)
                    self._checking = True
                    d = maybeDeferred(self._check, self._requests.popleft())
                    d.addBoth(answer.settle)
                    d.addBoth(self._checked)
                    progress = True
        finally:
            self._looping = False
        if self.connected:
            self._update_idle()

    def _can_answer(self) -> bool:
        return self.state == "serving" and self.connected and not self._aborted

    @property
    def _busy(self) -> bool:
        return self._delivering or self._checking or bool(self._answers)

    def _checked(self, _: object) -> None:
        self._checking = False
        self._next()

    def _delivered(self, _: object) -> None:
        self._delivering = False
        self.replied_at = self.clock.seconds()
        retired, self._retired = self._retired, []
        for fd in retired:
            close_file(fd)
        self._next()

    def _read(self, fd: int, size: int, offset: int) -> Deferred:
        return self.blocking(os.pread, fd, size, offset)

    def _abort(self) -> None:
        self._aborted = True
        self.transport.abortConnection()

    def _update_idle(self) -> None:
        idle = self.state == "serving" and not self._busy and not self._requests
        if idle and self.idle_since is None:
            self.idle_since = self.clock.seconds()
            if self.service.slots.anyone_waits:
                self.service.slots.reclaim()
        elif not idle:
            self.idle_since = None

    def connectionLost(self, reason: Failure) -> None:
        self.connected = False
        self.setTimeout(None)
        log_upload_ended(self, reason)
        self._watch.stop()
        self.service.slots.release(self)
        self.service.connections.discard(self)
        if self._sender is not None:
            self._sender.stopProducing()  # a transport does this itself; be sure
        self._forget()

    def _forget(self) -> None:
        """Close this connection's files once no job of it is running (a read may still be)."""

        def close(lock: DeferredLock) -> None:
            try:
                files, self._files = self._files, {}
                retired, self._retired = self._retired, []
                for fd in [*files.values(), *retired]:
                    close_file(fd)
            finally:
                lock.release()

        self._jobs.acquire().addCallback(close)


@implementer(IUploadService)
class UploadService(Factory):
    """Serves this peer's repository to other peers.

    *threads* is the pool every blocking file access of the uploads runs
    in; its owner starts and stops it (a ``ThreadPoolService``).  *reactor*
    is both the clock and the reactor the threads report back to.
    """

    noisy = False  # no "Starting factory" line per connection (fileshare.logfilter)

    #: Use sendfile() where the transport is a plain socket.
    sendfile = hasattr(os, "sendfile")
    #: Read a chunk the page cache holds on the reactor thread, without
    #: waiting for the disk; only the others go to the threads (see
    #: RangeSender).  Measured on loopback without sendfile: handing every
    #: chunk to a thread and reading ahead cost the serving process about a
    #: third more CPU per byte than reading on the reactor thread.
    cached_reads = CAN_READ_CACHED

    def __init__(
        self,
        repository: Repository,
        reactor: Any,
        max_uploads: int | None,
        upload_rate: int | None,
        threads: ThreadPool,
        max_queued_per_address: int = MAX_QUEUED_PER_ADDRESS,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        self.repository = repository
        self.reactor: IReactorThreads = reactor
        self.clock: IReactorTime = reactor
        self.threads = threads
        self.slots = UploadSlots(max_uploads, reactor, max_queued_per_address)
        self.send_timeout = send_timeout
        #: While others wait, a slot whose client took less than the floor
        #: in the window is taken back (see fileshare.peer.flow).
        self.progress_window = SEND_PROGRESS_WINDOW
        self.progress_floor = SEND_PROGRESS_FLOOR
        #: How many bytes a transport holds unsent (tests replace it).
        self.unsent: Callable[[Any], int] = unsent_bytes
        self.ratelog = RateLimitedLog(log, reactor)
        self.bucket = TokenBucket(upload_rate, reactor)
        self.connections: set[UploadProtocol] = set()
        self.sent_bytes = 0
        #: The key of this peer's tracker login, to check tickets with; the
        #: peer service points it at its TrackerLink.  None: not logged in,
        #: every ticket refused.
        self.ticket_key: Callable[[], TicketKey | None] = lambda: None
        #: Called with a published Entry whose file a request found changed on disk.
        self.on_changed: Callable[[Entry], Any] = lambda entry: None

    def run_blocking(self, f: Any, *args: Any) -> Deferred:
        """``f(*args)`` in the upload threads; the Deferred fires on the reactor thread."""
        return deferToThreadPool(self.reactor, self.threads, f, *args)

    def buildProtocol(self, addr: Any) -> UploadProtocol:
        p = UploadProtocol(self)
        p.factory = self
        self.connections.add(p)
        return p
