"""
The peer's end of its connection to the tracker: the hello handshake, and the requests the tracker sends here.

The tracker may send ``ping``, ``list`` (this peer's files) and ``ended``
(it ends this session); what a session is and how it is kept is
:class:`~fileshare.peer.tracker_link.TrackerLink`'s.
"""

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..wire.framing import field
from ..wire.rpc import RPCProtocol
from .repository import Entry

if TYPE_CHECKING:
    from .tracker_link import TrackerLink

log = Logger()

#: How long a console command waits for a (re)connection to the tracker.
CONNECT_TIMEOUT = 10.0
#: How long any request to the tracker may take.
CALL_TIMEOUT = 30.0


def file_fields(entry: Entry) -> dict[str, Any]:
    return {"fname": entry.fname, "size": entry.size, "root": entry.root}


class TrackerClientProtocol(RPCProtocol):
    def __init__(self, link: "TrackerLink") -> None:
        super().__init__(link.clock)
        self.link = link
        self.ready: Deferred = Deferred()
        self.handlers.update(ping=lambda message: {}, list=self.list_files, ended=self.session_ended)

    def list_files(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"items": [file_fields(e) for e in self.link.repository.entries()]}

    def session_ended(self, message: dict[str, Any]) -> dict[str, Any]:
        reason = field(message, "reason", str, "the tracker ended this session")
        self.link.session_ended(self, field(message, "code", str, "ended"), reason)
        return {}

    def errorReceived(self, message: dict[str, Any]) -> None:
        if message.get("code") == "timeout" and self.link.credentials is None:
            # The tracker drops connections that do not log in (--login-timeout): expected while
            # nobody has logged in, so the link rests instead of reconnecting in a loop.
            self.link.rest_after(self)
            return
        super().errorReceived(message)

    def disconnect(self) -> None:
        self.transport.loseConnection()

    def connectionMade(self) -> None:
        d = Deferred.fromCoroutine(self.link.handshake(self))
        d.addBoth(self._handshake_done)

    def _handshake_done(self, result: Any) -> None:
        if isinstance(result, Failure):
            log.warn("tracker handshake failed: {why}", why=result.getErrorMessage())
            self.transport.loseConnection()
            self.ready.errback(result)
            self.ready.addErrback(lambda _: None)
        else:
            self.ready.callback(self)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        self.link.lost(self)
