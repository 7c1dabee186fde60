"""
Streaming one byte range of an open file to a transport, paced by the upload bucket.

:class:`RangeSender` works on any transport (TLS included): the reactor
thread writes each chunk, reading it itself only when the page cache holds
it, a thread reads the others, and at most one chunk is read ahead of the
transport, so memory does not grow with the file however slow the fetcher.
:class:`SendfileSender` is the shortcut for plain sockets.
"""

import os
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPullProducer, IPushProducer, IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from .ratelimit import TokenBucket

#: Bytes read from disk and written to the transport at once.
CHUNK = 1 << 20
#: Bytes handed to one sendfile() call at most.
SENDFILE_CHUNK = 4 << 20

#: ``read(fd, size, offset)``: a Deferred firing with the bytes, read off the reactor thread.
Reader = Callable[[int, int, int], Deferred]
#: ``read_cached(fd, size, offset, buffer)``: the bytes if the page cache holds them all, else None.
CachedReader = Callable[[int, int, int, bytearray], bytes | None]


def read_cached(fd: int, size: int, offset: int, buffer: bytearray) -> bytes | None:
    """The *size* bytes at *offset* if the page cache holds them all now, else None.

    Never waits for the disk (``RWF_NOWAIT``), so it may run on the reactor
    thread, like ``sendfile`` from the page cache; None sends the read to a
    thread, which also finds out whether the file has become shorter.  The
    bytes pass through *buffer* (at least *size* long, reused): one copy
    more than ``pread``, far less than handing a chunk across threads.
    """
    view = memoryview(buffer)[:size]
    try:
        n = os.preadv(fd, [view], offset, os.RWF_NOWAIT)
    except OSError:  # BlockingIOError: not cached; anything else the thread reports
        return None
    return bytes(view) if n == size else None


#: Whether this system can read without waiting for the disk (Linux 4.14 and later).
CAN_READ_CACHED = hasattr(os, "preadv") and hasattr(os, "RWF_NOWAIT")


def paced(bucket: TokenBucket, n: int) -> int:
    """At most one grain of a limited *bucket*: a slow upload sends a little often, not
    4 MiB once a minute, which a fetcher's request timeout would take for a dead source
    (and bookings of one grain keep the rate within the bucket's promise)."""
    return min(n, bucket.grain) if bucket.rate else n


class FileShrank(OSError):
    """The file ended before the range did: it was modified while being served."""

    def __init__(self) -> None:
        super().__init__("file shrank while being served")


class _Sender:
    """What both ways of streaming a range share: where they are and when they are done."""

    def __init__(
        self, transport: Any, fd: int, offset: int, length: int, clock: IReactorTime, bucket: TokenBucket
    ) -> None:
        self.transport = transport
        self.fd = fd
        self.offset = offset
        #: The range's length; the bytes handed on so far are ``length - remaining``.
        self.length = length
        self.remaining = length
        self.clock = clock
        self.bucket = bucket
        self.done: Deferred = Deferred()
        self._stopped = False


@implementer(IPushProducer)
class RangeSender(_Sender):
    """Stream ``length`` bytes of an open file from ``offset``; the disk is read by *read*, in a thread.

    Writing a chunk usually fills the transport's buffer, which pauses this
    producer at once.  A chunk that came from the disk is followed by one
    read ahead meanwhile, written as soon as the transport resumes, so the
    disk and the network overlap; nothing more is read while paused, so one
    chunk in the transport and one in hand is all a connection holds.

    With *read_cached*, a chunk the page cache holds is read when it is
    about to be written, on the reactor thread (it cannot wait for the
    disk), and not ahead: copied to the socket straight after the read it is
    still in the CPU's cache.  Only the others go to *read*.
    """

    def __init__(
        self,
        transport: Any,
        fd: int,
        offset: int,
        length: int,
        clock: IReactorTime,
        bucket: TokenBucket,
        read: Reader,
        read_cached: CachedReader | None = None,
    ) -> None:
        super().__init__(transport, fd, offset, length, clock, bucket)
        self._read = read
        self._read_cached = read_cached
        self._buffer = bytearray(min(CHUNK, length)) if read_cached is not None else bytearray()
        #: Whether the last chunk had to come from the disk (then the next is read ahead).
        self._from_disk = read_cached is None
        #: Where the next read starts and how much is left to read.
        self._read_offset = offset
        self._unread = length
        self._reading = False
        #: A chunk read and not yet written, and whether its bytes are booked in the bucket.
        self._ready: bytes | None = None
        self._booked = False
        self._paused = False
        self._timer: Any = None
        self._pumping = False
        self._again = False

    @property
    def reading(self) -> bool:
        """Whether a read is in flight."""
        return self._reading

    @property
    def ready(self) -> int:
        """Bytes read ahead and waiting to be written."""
        return len(self._ready) if self._ready is not None else 0

    def start(self) -> Deferred:
        self.transport.registerProducer(self, True)
        self._pump()
        return self.done

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._pump()

    def stopProducing(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._ready = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if not self.done.called:
            self.done.errback(Failure(ConnectionError("upload stopped")))

    def _pump(self) -> None:
        # A read finishing or a write pausing us can call back in here; loop
        # instead of recursing, so a fast disk cannot grow the stack.
        if self._pumping:
            self._again = True
            return
        self._pumping = True
        try:
            self._again = True
            while self._again and not self._stopped:
                self._again = False
                self._step()
        finally:
            self._pumping = False

    def _step(self) -> None:
        """Write the chunk in hand if the transport and the bucket allow; keep one read in flight."""
        if self._ready is not None and not self._paused and self._timer is None:
            if not self._booked:
                self._booked = True
                delay = self.bucket.delay_for(len(self._ready))
                if delay > 0:
                    self._timer = self.clock.callLater(delay, self._wake)
            if self._timer is None:
                data, self._ready, self._booked = self._ready, None, False
                self.offset += len(data)
                self.remaining -= len(data)
                self.transport.write(data)  # may pause us at once
                if not self.remaining:
                    self._finish()
                    return
        if self._ready is None and not self._reading and self._unread:
            n = paced(self.bucket, min(CHUNK, self._unread))
            if self._paused and not self._from_disk:
                return  # read when resumed, from the page cache most likely
            if self._read_cached is not None:
                data = self._read_cached(self.fd, n, self._read_offset, self._buffer)
                if data is not None:
                    self._from_disk = False
                    self._accept(data)
                    return
            self._from_disk = True
            self._reading = True
            self._read(self.fd, n, self._read_offset).addCallbacks(self._got, self._fail, (n,))

    def _wake(self) -> None:
        self._timer = None
        self._pump()

    def _got(self, data: bytes, wanted: int) -> None:
        self._reading = False
        if self._stopped:
            return
        if len(data) != wanted:
            self._fail(Failure(FileShrank()))
            return
        self._accept(data)
        self._pump()

    def _accept(self, data: bytes) -> None:
        """Hold a chunk just read until it can be written; the pump loop writes it."""
        self._ready = data
        self._read_offset += len(data)
        self._unread -= len(data)
        self._again = True

    def _fail(self, failure: Failure) -> None:
        self._reading = False
        if self._stopped:
            return
        self._stopped = True
        self._ready = None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self.transport.unregisterProducer()
        self.done.errback(failure)

    def _finish(self) -> None:
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

    ``sendfile`` runs on the reactor thread, unlike every other file access
    of the upload path (open, stat and reads go to the upload threads).
    That is acceptable because the socket is non-blocking: a call moves at
    most what fits in the socket buffer and returns, and a shared file's
    pages are normally in the page cache (the kernel reads ahead of a
    sequential sender), so a call costs a copy inside the kernel, not a disk
    wait.  A cold page can still make one call wait for the disk; a thread
    round trip on every call would cost more than that on the common path.
    """

    _registered = False
    _timer: Any = None
    _booked = 0

    @property
    def waiting_for_socket(self) -> bool:
        """Whether the next bytes wait for the socket to take more (not for the upload rate)."""
        return not self._stopped and self._timer is None

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
        n = paced(self.bucket, min(SENDFILE_CHUNK, self.remaining))
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
            self._fail(FileShrank())
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


def plain_socket(transport: Any) -> bool:
    """Whether bytes may bypass the transport (a TCP or UNIX socket without TLS)."""
    return isinstance(transport, tcp.Connection) and not getattr(transport, "TLS", False)
