"""
What an upload connection does when its client breaks a limit: the log line, and the slot or the connection taken back.

A mixin of :class:`~fileshare.peer.upload.UploadProtocol`, kept apart so the
protocol reads as the transfer protocol and this as the rules of
:mod:`fileshare.peer.slots` and :mod:`fileshare.peer.flow` applied to one
connection.  Every line goes through the service's
:class:`~fileshare.ratelog.RateLimitedLog`, so a flood writes one per
address and minute.
"""

from typing import Any

from twisted.logger import Logger

from .senders import SendfileSender
from .slots import host_of
from .ticket_gate import address_text

log = Logger()

#: A connection must have said ``hello`` this long after connecting (bytes
#: trickled meanwhile do not extend it), or it is closed.
HELLO_TIMEOUT = 10.0
#: A connection that sends nothing for this long while idle is closed.
IDLE_TIMEOUT = 60.0


class UploadLimits:
    """The limit rules of one upload connection; the protocol provides the state they read."""

    service: Any
    transport: Any
    peer: Any
    state: str
    connected: bool
    _delivering: bool
    _aborted: bool
    _yield: bool
    _share: int
    _handed: int
    _gate: Any
    _sender: Any
    _next: Any
    _abort: Any

    def must_yield(self, over_share: bool, share: int) -> None:
        """Whether to give the slot back at the next request boundary: its address holds more than *share*."""
        self._yield, self._share = over_share, share
        if over_share and not self._delivering:
            self._next()

    def give_back(self) -> None:
        """Give the slot to the next in line now and close, after what was sent already."""
        self._aborted = True
        self.service.slots.release(self)
        self.transport.loseConnection()  # the send watch aborts it if the client never takes the rest

    def timeoutConnection(self) -> None:
        if self.state == "hello":
            self.service.ratelog.warn(
                ("hello-timeout", host_of(self)),
                "closing upload connection from {address}: no hello within {timeout:g} s",
                address=address_text(self.peer),
                timeout=HELLO_TIMEOUT,
            )
            self.transport.abortConnection()
            return
        log.info("closing idle upload connection from {peer}", peer=self.peer)
        self.transport.loseConnection()

    # -- a client that does not take what it is sent (see fileshare.peer.flow)

    def _accepted(self) -> int:
        """Bytes the socket has taken from this connection so far."""
        sender = self._sender
        in_flight = sender.length - sender.remaining if sender is not None else 0
        return self._handed + in_flight - self.service.unsent(self.transport)

    def _owing(self) -> bool:
        return self.connected and (self._delivering or self.service.unsent(self.transport) > 0)

    def _blocked(self) -> bool:
        """Whether what holds the next bytes back is the client, not the upload rate or the disk."""
        if self._gate is not None or self.service.unsent(self.transport) > 0:
            return True
        sender = self._sender
        return isinstance(sender, SendfileSender) and sender.waiting_for_socket

    def _send_timed_out(self, seconds: float) -> None:
        self.service.ratelog.warn(
            ("send-timeout", host_of(self)),
            "closing upload connection of {address}: it took no bytes for {seconds:g} s (--send-timeout)",
            address=address_text(self.peer),
            seconds=seconds,
        )
        self.service.slots.release(self)
        self._abort()

    def _too_slow(self, sent: int, seconds: float, waiting: int) -> None:
        self.service.ratelog.warn(
            ("slot-taken-back", host_of(self)),
            "took back the upload slot of {address}: sent {sent} bytes in {seconds:g} s while {waiting} wait",
            address=host_of(self),
            sent=sent,
            seconds=seconds,
            waiting=waiting,
        )
        self.service.slots.release(self)
        self._abort()

    def _over_share(self) -> None:
        held = sum(1 for p in self.service.slots.granted if host_of(p) == host_of(self))
        self.service.ratelog.warn(
            ("over-share", host_of(self)),
            "took back an upload slot of {address}: it held {held} of {limit} while {waiting} wait (fair share {share})",
            address=host_of(self),
            held=held,
            limit=self.service.slots.limit,
            waiting=len(self.service.slots.waiting),
            share=self._share,
        )
        self.give_back()
