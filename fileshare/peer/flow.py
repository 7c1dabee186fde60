"""
How much an upload connection holds unsent, and whether its client is taking it.

A client that asks and never reads must not make the peer buffer replies
for it (:class:`ReplyGate`), nor keep a slot or a connection it does not
use (:class:`SendWatch`).  Both rest on the transport's own signals: a push
producer is paused when the transport's buffer is full and resumed when it
is drained, and :func:`unsent_bytes` says how much the transport still holds.
"""

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import abstract
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import implementer

#: Seconds between two looks at a connection that owes bytes.
SEND_CHECK_INTERVAL = 1.0
#: No byte taken by the client for this long while it is owed some: the connection is closed.
SEND_TIMEOUT = 30.0
#: While others wait, a slot whose client took less than SEND_PROGRESS_FLOOR
#: bytes in the last SEND_PROGRESS_WINDOW seconds is taken back.
SEND_PROGRESS_WINDOW = 10.0
SEND_PROGRESS_FLOOR = 16 * 1024
#: Unsent bytes under which the next reply line may be written: the transport's own buffer size.
REPLY_BOUND = 64 * 1024
#: Seconds between two looks at a socket that holds more than REPLY_BOUND without saying so.
DRAIN_LOOK_INTERVAL = 0.05


def unsent_bytes(transport: Any) -> int:
    """Bytes written to *transport* that its socket has not taken yet (0 when it cannot tell).

    A TCP transport's write buffer; through TLS (or any protocol wrapper),
    the buffer of the transport underneath, which holds ciphertext: a few
    bytes per record more than was written, close enough to count progress.
    """
    for _ in range(4):  # a wrapper around a wrapper at most, in practice
        if isinstance(transport, abstract.FileDescriptor):
            return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        if not isinstance(transport, ProtocolWrapper):
            return 0
        transport = transport.transport
    return 0


@implementer(IPushProducer)
class ReplyGate:
    """Registered on the transport around one reply line: says whether the line filled the buffer.

    :meth:`after_write` is None when the transport's buffer is below its
    bound (the next reply may go), else a Deferred that fires once the
    transport has drained it, so a client that never reads holds at most
    one reply more than the transport's buffer.
    """

    def __init__(self, transport: Any, clock: IReactorTime) -> None:
        self.transport = transport
        self.clock = clock
        self.paused = False
        self.drained: Deferred | None = None
        self._look: Any = None
        transport.registerProducer(self, True)

    def after_write(self) -> Deferred | None:
        if not self.paused and unsent_bytes(self.transport) <= REPLY_BOUND:
            self.transport.unregisterProducer()
            return None
        self.drained = Deferred()
        if not self.paused:
            # Over the bound although the transport did not say so (a TLS layer
            # between may resume its producers while the socket is still full):
            # look again until the socket has taken it.
            self._look = self.clock.callLater(DRAIN_LOOK_INTERVAL, self._look_again)
        return self.drained

    def _look_again(self) -> None:
        self._look = None
        if self.drained is None:
            return
        if unsent_bytes(self.transport) <= REPLY_BOUND:
            self._release()
        else:
            self._look = self.clock.callLater(DRAIN_LOOK_INTERVAL, self._look_again)

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.drained is not None and unsent_bytes(self.transport) <= REPLY_BOUND:
            self._release()
        elif self.drained is not None and self._look is None:
            self._look = self.clock.callLater(DRAIN_LOOK_INTERVAL, self._look_again)

    def _release(self) -> None:
        if self._look is not None and self._look.active():
            self._look.cancel()
        self._look = None
        d, self.drained = self.drained, None
        self.transport.unregisterProducer()  # lets a pending loseConnection finish
        d.callback(None)

    def stopProducing(self) -> None:
        """The connection is going: nothing more is sent on it, so the reply in wait stays waiting."""
        self.drained = None
        if self._look is not None and self._look.active():
            self._look.cancel()
        self._look = None


class SendWatch:
    """Watches one connection while it owes its client bytes.

    Every SEND_CHECK_INTERVAL while ``owing()``, and ``blocked()`` (the
    transport holds bytes, or a sender waits for the socket), it compares
    ``accepted()`` (bytes the socket took so far) with before: no progress
    for *send_timeout* calls ``timed_out(seconds)``; less than *floor* bytes
    over the last *window* seconds, while ``others_wait()`` is not 0, calls
    ``too_slow(bytes, seconds, waiting)``.  Time spent not blocked on the
    client (waiting for the upload rate or the disk) counts as progress:
    only the client is judged.
    """

    def __init__(
        self,
        clock: IReactorTime,
        accepted: Callable[[], int],
        owing: Callable[[], bool],
        blocked: Callable[[], bool],
        others_wait: Callable[[], int],
        timed_out: Callable[[float], None],
        too_slow: Callable[[int, float, int], None],
        send_timeout: float = SEND_TIMEOUT,
        window: float = SEND_PROGRESS_WINDOW,
        floor: int = SEND_PROGRESS_FLOOR,
    ) -> None:
        self.clock = clock
        self.accepted = accepted
        self.owing = owing
        self.blocked = blocked
        self.others_wait = others_wait
        self.timed_out = timed_out
        self.too_slow = too_slow
        self.send_timeout = send_timeout
        self.window = window
        self.floor = floor
        self._call: Any = None
        #: (time, bytes accepted) while continuously blocked, oldest first.
        self._samples: deque[tuple[float, int]] = deque()
        self._last_progress = 0.0

    def kick(self) -> None:
        """A reply is on its way: watch, unless watching already."""
        if self._call is None:
            self._samples.clear()
            self._last_progress = self.clock.seconds()
            self._call = self.clock.callLater(SEND_CHECK_INTERVAL, self._check)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _check(self) -> None:
        self._call = None
        if not self.owing():
            return  # kicked again by the next reply
        now = self.clock.seconds()
        accepted = self.accepted()
        if not self.blocked():
            self._samples.clear()
            self._last_progress = now
        else:
            if self._samples and accepted > self._samples[-1][1]:
                self._last_progress = now
            self._samples.append((now, accepted))
            while len(self._samples) > 1 and self._samples[1][0] <= now - self.window:
                self._samples.popleft()
            if now - self._last_progress >= self.send_timeout:
                self.timed_out(now - self._last_progress)
                return
            oldest_time, oldest = self._samples[0]
            if now - oldest_time >= self.window and accepted - oldest < self.floor:
                waiting = self.others_wait()
                if waiting:
                    self.too_slow(accepted - oldest, now - oldest_time, waiting)
                    return
        self._call = self.clock.callLater(SEND_CHECK_INTERVAL, self._check)
