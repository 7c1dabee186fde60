"""A StringTransport with a write buffer bound, as TCP's: what flow-control tests run on."""

from typing import Any

from twisted.internet.testing import StringTransport

#: Twisted's TCP transports pause their producer past this many buffered bytes.
TCP_BUFFER = 65536


class BoundedTransport(StringTransport):
    """
    Pauses its streaming producer once more than ``buffer_size`` bytes wait
    unread (as :class:`twisted.internet.abstract.FileDescriptor` does), and
    resumes it when the other end reads them all (:meth:`drain`).
    ``producerState`` tells whether the protocol lets it read.
    """

    def __init__(self, buffer_size: int = TCP_BUFFER, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.buffer_size = buffer_size
        self.producer_paused = False
        #: The most bytes that ever waited unread.
        self.peak = 0
        #: registerProducer calls so far.
        self.registrations = 0

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.registrations += 1
        super().registerProducer(producer, streaming)

    def write(self, data: bytes) -> None:
        super().write(data)
        self.peak = max(self.peak, len(self.value()))
        if self.producer is not None and self.streaming and not self.producer_paused:
            if len(self.value()) > self.buffer_size:
                self.producer_paused = True
                self.producer.pauseProducing()

    def resumeProducing(self) -> None:
        # As TCP and TLS transports: reading may resume while closing (TLS reads the other end's close).
        if self.disconnecting:
            self.producerState = "producing"
            return
        super().resumeProducing()

    def unregisterProducer(self) -> None:
        super().unregisterProducer()
        self.producer_paused = False

    def drain(self) -> bytes:
        """The other end reads everything written so far."""
        data = self.value()
        self.clear()
        if self.producer is not None and self.producer_paused:
            self.producer_paused = False
            self.producer.resumeProducing()
        return data
