"""
The JSON-lines framing as a protocol base, shared by the tracker RPC and the transfer protocol.

:class:`MessageReceiver` turns each line into a message (see
:mod:`fileshare.wire.framing`) and each message into a line, so no protocol
parses or formats lines by hand.  What a protocol does with a bad line
differs (the RPC counts them, a source is dropped, an uploader answers in
turn), so that is left to :meth:`MessageReceiver.badMessage`.
"""

from typing import Any

from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from ..errors import BadRequest, FileshareError
from . import framing
from .messages import error_reply


class MessageReceiver(LineReceiver):
    """A line receiver whose lines are JSON objects."""

    delimiter = b"\n"
    MAX_LENGTH = framing.MAX_LINE

    def lineReceived(self, line: bytes) -> None:
        try:
            message = framing.decode(line)
        except BadRequest as e:
            self.badMessage(e)
        else:
            self.messageReceived(message)

    def messageReceived(self, message: dict[str, Any]) -> None:
        """One decoded message arrived."""
        raise NotImplementedError

    def badMessage(self, error: BadRequest) -> None:
        """A line that is not a UTF-8 JSON object arrived; *error* says why."""
        raise NotImplementedError

    def sendMessage(self, message: dict[str, Any]) -> None:
        """Send one message, unless the connection is gone."""
        if self.connected:
            self.transport.write(framing.encode(message))

    def sendError(self, error: FileshareError, **envelope: Any) -> None:
        """Send an error reply for *error*, after the *envelope* fields (an RPC's ``re``)."""
        self.sendMessage({**envelope, **error_reply(error)})

    def connectionLost(self, reason: Failure) -> None:
        # Twisted leaves ``connected`` set; sendMessage relies on it.
        self.connected = False
