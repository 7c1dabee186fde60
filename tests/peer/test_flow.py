"""The reply gate: the next reply waits for the socket, whether or not the transport says it is full."""

from twisted.internet import abstract
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from fileshare.peer.flow import DRAIN_LOOK_INTERVAL, REPLY_BOUND, ReplyGate


class Socket(abstract.FileDescriptor):
    """A transport with a real write buffer that never pauses its producer (as a TLS layer above it may)."""

    def __init__(self) -> None:
        abstract.FileDescriptor.__init__(self, reactor=Clock())
        self.connected = True
        self.producer = None

    def registerProducer(self, producer, streaming) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def startWriting(self) -> None:
        pass

    def hold(self, n: int) -> None:
        self._tempDataBuffer.append(b"x" * n)
        self._tempDataLen += n

    def drain(self) -> None:
        self._tempDataBuffer, self._tempDataLen, self.dataBuffer, self.offset = [], 0, b"", 0


def test_a_reply_that_leaves_the_socket_over_its_bound_waits_although_no_one_paused_the_gate():
    clock, socket = Clock(), Socket()
    gate = ReplyGate(socket, clock)
    socket.hold(REPLY_BOUND + 1)

    drained = gate.after_write()

    assert drained is not None and not drained.called
    clock.advance(DRAIN_LOOK_INTERVAL * 10)
    assert not drained.called  # still full: the next reply is not written
    socket.drain()
    clock.advance(DRAIN_LOOK_INTERVAL)
    assert drained.called and socket.producer is None


def test_a_reply_under_the_bound_lets_the_next_go_at_once():
    clock, socket = Clock(), Socket()
    gate = ReplyGate(socket, clock)
    socket.hold(100)

    assert gate.after_write() is None
    assert socket.producer is None and clock.getDelayedCalls() == []


def test_a_resume_while_the_socket_is_still_full_does_not_let_the_next_reply_go():
    clock, socket = Clock(), Socket()
    gate = ReplyGate(socket, clock)
    socket.hold(REPLY_BOUND * 2)
    gate.pauseProducing()
    drained = gate.after_write()

    gate.resumeProducing()

    assert not drained.called
    socket.drain()
    clock.advance(DRAIN_LOOK_INTERVAL)
    assert drained.called


def test_a_plain_transport_that_cannot_tell_its_buffer_follows_the_producer_signals():
    clock, transport = Clock(), StringTransport()
    gate = ReplyGate(transport, clock)
    gate.pauseProducing()
    drained = gate.after_write()
    assert not drained.called
    gate.resumeProducing()
    assert drained.called
