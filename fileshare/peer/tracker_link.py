"""
The peer's connection to the tracker.

A ``ClientService`` keeps it up with backoff.  Each new connection says
``hello`` and, if the user had logged in, logs in again and re-announces the
repository, so a tracker restart or a network blip needs nothing from the
user.  The tracker may also send requests here: ``ping`` and ``list``.
"""

from collections.abc import Callable
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import FileshareError, NotLoggedIn, Unavailable
from ..wire import framing
from ..wire.messages import hello_fields
from ..wire.rpc import RPCProtocol
from .repository import Entry, Repository

log = Logger()

#: How long a console command waits for a (re)connection to the tracker.
CONNECT_TIMEOUT = 10.0
#: How long any request to the tracker may take.
CALL_TIMEOUT = 30.0
#: Files per ``announce`` request.
ANNOUNCE_BATCH = 200


def file_fields(entry: Entry) -> dict[str, Any]:
    return {"fname": entry.fname, "size": entry.size, "root": entry.root}


class TrackerClientProtocol(RPCProtocol):
    def __init__(self, link: "TrackerLink") -> None:
        super().__init__(link.clock)
        self.link = link
        self.ready: Deferred = Deferred()
        self.handlers.update(ping=lambda message: {}, list=self.list_files)

    def list_files(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"items": [file_fields(e) for e in self.link.repository.entries()]}

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


class TrackerLink:
    def __init__(
        self,
        endpoint: Any,
        repository: Repository,
        clock: Any,
        listen_port: Callable[[], int],
    ) -> None:
        self.repository = repository
        self.clock = clock
        self._listen_port = listen_port
        self.credentials: tuple[str, str] | None = None
        self.host: str | None = None
        self.protocol: TrackerClientProtocol | None = None
        factory = Factory.forProtocol(lambda: TrackerClientProtocol(self))
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
        self.protocol = protocol
        if self.credentials is not None:
            name, password = self.credentials
            try:
                await self._login(protocol, name, password)
            except FileshareError as e:
                log.warn("logging in again as {name} failed: {why}", name=name, why=e.message)
                self.credentials = None
                self.host = None
            else:
                log.info("logged in again as {name} after reconnecting", name=name)

    def lost(self, protocol: TrackerClientProtocol) -> None:
        if self.protocol is protocol:
            self.protocol = None

    async def channel(self) -> TrackerClientProtocol:
        """A connected, greeted tracker connection, or Unavailable."""
        if self.connected:
            return self.protocol
        d = self.service.whenConnected(failAfterFailures=1)
        timer = self.clock.callLater(CONNECT_TIMEOUT, d.cancel)
        try:
            protocol = await d
        except Exception:
            raise Unavailable("cannot reach the tracker; is it running?") from None
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
            raise Unavailable("the tracker did not accept this peer's hello")
        return ready

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        protocol = await self.channel()
        return await protocol.call(op, timeout=CALL_TIMEOUT, **fields)

    async def authed_call(self, op: str, **fields: Any) -> dict[str, Any]:
        if self.credentials is None:
            raise NotLoggedIn("not logged in; use 'login NAME PASSWORD' first")
        return await self.call(op, **fields)

    async def _login(self, protocol: TrackerClientProtocol, name: str, password: str) -> None:
        reply = await protocol.call(
            "login", timeout=CALL_TIMEOUT, name=name, password=password, port=self._listen_port()
        )
        self.credentials = (name, password)
        self.host = reply.get("host", name)
        await self.announce_all(protocol)

    async def login(self, name: str, password: str) -> int:
        protocol = await self.channel()
        await self._login(protocol, name, password)
        return len(self.repository.by_name)

    async def logout(self) -> None:
        if self.credentials is None:
            raise NotLoggedIn("not logged in")
        try:
            await self.call("logout")
        finally:
            self.credentials = None
            self.host = None

    async def announce_all(self, protocol: TrackerClientProtocol) -> None:
        entries = [file_fields(e) for e in self.repository.entries()]
        for i, batch in enumerate(framing.chunks(entries, ANNOUNCE_BATCH)):
            await protocol.call("announce", timeout=CALL_TIMEOUT, files=batch, reset=(i == 0))

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
