"""
The peer's connection to the tracker.

A ``ClientService`` keeps it up with backoff.  Each new connection says
``hello`` and, if the user had logged in, logs in again and re-announces the
repository, so a tracker restart or a network blip needs nothing from the
user.  While nobody is logged in and the tracker closes connections that
do not log in, the link rests until a command needs the tracker.  The login
policy (re-login, forgetting, a session the tracker ended) is in
:mod:`fileshare.peer.tracker_session`; the connection's protocol in
:mod:`fileshare.peer.tracker_protocol`.
"""

from collections.abc import Callable
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

from ..errors import FileshareError, Unavailable
from ..ratelog import RateLimitedLog
from ..tickets import TicketKey
from ..wire import framing
from ..wire.messages import hello_fields
from .interfaces import ITrackerLink
from .repository import Entry, Repository
from .tracker_protocol import CALL_TIMEOUT, CONNECT_TIMEOUT, TrackerClientProtocol, file_fields
from .tracker_session import TrackerSession

log = Logger()

#: Files per ``announce`` request.
ANNOUNCE_BATCH = 200
#: The tracker's refusal of an announce past its ``--max-records`` limit.
TOO_MANY_FILES = "too-many-files"


@implementer(ITrackerLink)
class TrackerLink(TrackerSession):
    def __init__(
        self,
        endpoint: Any,
        repository: Repository,
        clock: Any,
        listen_port: Callable[[], int],
    ) -> None:
        self.endpoint = endpoint
        self.repository = repository
        self.clock = clock
        self._listen_port = listen_port
        self.credentials: tuple[str, str] | None = None
        self.host: str | None = None
        self.protocol: TrackerClientProtocol | None = None
        #: The tracker's secret for this session: lets a reconnect take back its own stale session.
        self.session: str | None = None
        #: This session's key for checking download tickets (memory only); None when not logged in.
        self.ticket_key: TicketKey | None = None
        #: Why the tracker ended the last session, until the user logs in again.
        self.ended_reason: str | None = None
        #: Why the last re-login failed while it is being retried.
        self.relogin_error: str | None = None
        self._relogin_failures = 0
        self._retry: Any = None
        self._end_waiters: list[Deferred] = []
        #: The connection the tracker is closing for not logging in, and whether the link now rests.
        self._rest_after: TrackerClientProtocol | None = None
        self.resting = False
        self._warnings = RateLimitedLog(log, clock)
        factory = Factory.forProtocol(lambda: TrackerClientProtocol(self))
        factory.noisy = False  # no "Starting factory" line per reconnection
        self.service = ClientService(
            endpoint,
            factory,
            retryPolicy=backoffPolicy(initialDelay=0.5, maxDelay=30.0),
            clock=clock,
        )

    @property
    def connected(self) -> bool:
        return self.protocol is not None and self.protocol.connected and self.protocol.ready.called

    async def handshake(self, protocol: TrackerClientProtocol) -> None:
        await protocol.call("hello", timeout=CONNECT_TIMEOUT, **hello_fields(software=True))
        report = getattr(self.endpoint, "report", None)
        if report is not None:
            report(None)  # the tracker answered: no mode problem now
        self.protocol = protocol
        if self.credentials is not None:
            await self._relogin(protocol)

    @property
    def problem(self) -> str | None:
        """Why the tracker was refused (TLS pin, CA, wrong mode), from the endpoint."""
        return getattr(self.endpoint, "problem", None)

    def where(self) -> str | None:
        """Which tracker the connection goes to (``tracker at HOST:PORT``), for ``status``; None while disconnected."""
        where = getattr(self.endpoint, "where", None)
        return where() if where is not None and self.connected else None

    def rest_after(self, protocol: TrackerClientProtocol) -> None:
        """Do not reconnect when *protocol* closes (nobody is logged in); the next command that needs the tracker does."""
        if self.credentials is None and not self.resting:
            log.info(
                "the tracker closes connections that do not log in within its limit; "
                "reconnecting when a command needs it"
            )
            self._rest_after = protocol

    def _rest(self) -> None:
        if self.credentials is None and self.service.running and not self.resting:
            self.resting = True
            self.service.stopService()

    def _wake(self) -> None:
        if self.resting:
            self.resting = False
            self.service.startService()

    def lost(self, protocol: TrackerClientProtocol) -> None:
        if self._rest_after is protocol:
            self._rest_after = None
            # After ClientService has seen the loss: stopping it then cancels its retry.
            self.clock.callLater(0, self._rest)
        if self.protocol is protocol:
            if self.credentials is not None and self.service.running:
                log.info(
                    "lost the connection to the tracker; reconnecting to log in again as {name}",
                    name=self.credentials[0],
                )
            self.protocol = None
            # The tracker takes the host offline and issues no more tickets
            # under this key; a re-login brings a new one.
            self.ticket_key = None
            self._cancel_retry()

    async def channel(self) -> TrackerClientProtocol:
        """A connected, greeted tracker connection, or Unavailable."""
        if self.connected:
            return self.protocol
        self._wake()
        d = self.service.whenConnected(failAfterFailures=1)
        timer = self.clock.callLater(CONNECT_TIMEOUT, d.cancel)
        try:
            protocol = await d
        except Exception:
            raise Unavailable(self.problem or "cannot reach the tracker; is it running?") from None
        finally:
            if timer.active():
                timer.cancel()
        timer = self.clock.callLater(CONNECT_TIMEOUT, protocol.transport.abortConnection)
        try:
            ready = await protocol.ready
        except Exception:
            ready = None
        finally:
            if timer.active():
                timer.cancel()
        if ready is None:
            raise Unavailable(self.problem or "the tracker did not accept this peer's hello")
        return ready

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        protocol = await self.channel()
        try:
            return await protocol.call(op, timeout=CALL_TIMEOUT, **fields)
        except Unavailable:
            if protocol.connected:  # still connected: the request timed out
                self._unanswered(protocol, op)
            raise

    def _unanswered(self, protocol: TrackerClientProtocol, op: str) -> None:
        """With other trackers to go to, one that leaves a request unanswered is taken for dead and left."""
        where = self.where()
        if len(getattr(self.endpoint, "endpoints", ())) > 1 and protocol is self.protocol:
            self._warnings.warn(
                "unanswered",
                "the {where} did not answer {op} within {timeout:g} s; leaving it for the next tracker",
                where=where,
                op=op,
                timeout=CALL_TIMEOUT,
            )
            protocol.transport.abortConnection()

    async def announce_all(self, protocol: TrackerClientProtocol) -> int:
        """Announce the whole repository in batches; how many files the tracker took.

        A batch the tracker refuses for its ``--max-records`` limit ends the
        announcement with a warning, not the login: the batches before it
        stay indexed (if the first is refused, an empty reset clears what an
        earlier session left), and the log says why the rest are not.
        """
        entries = [file_fields(e) for e in self.repository.entries()]
        for i, batch in enumerate(framing.chunks(entries, ANNOUNCE_BATCH)):
            try:
                await protocol.call("announce", timeout=CALL_TIMEOUT, files=batch, reset=(i == 0))
            except FileshareError as e:
                if e.code != TOO_MANY_FILES:
                    raise
                if i == 0:
                    # The refused reset left the last session's records; clear them, or they would be offered.
                    await protocol.call("announce", timeout=CALL_TIMEOUT, files=[], reset=True)
                log.warn(
                    "the tracker indexed only {announced} of this peer's {total} files: {why}",
                    announced=i * ANNOUNCE_BATCH,
                    total=len(entries),
                    why=e.message,
                )
                return i * ANNOUNCE_BATCH
        return len(entries)

    async def publish(self, entry: Entry) -> bool:
        """Tell the tracker about a new file; False if not logged in (it is sent at login)."""
        return await self.publish_fields(entry.fname, entry.size, entry.root)

    async def publish_fields(self, fname: str, size: int, root: str) -> bool:
        if self.credentials is None:
            return False
        await self.call("publish", fname=fname, size=size, root=root)
        return True

    async def unpublish(self, fname: str) -> bool:
        if self.credentials is None:
            return False
        await self.call("unpublish", fname=fname)
        return True
