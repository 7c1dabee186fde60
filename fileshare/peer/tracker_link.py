"""
The peer's connection to the tracker.

A ``ClientService`` keeps it up with backoff.  Each new connection says
``hello`` and, if the user had logged in, logs in again and re-announces the
repository, so a tracker restart or a network blip needs nothing from the
user.  A re-login that fails for a timeout, a lost connection or throttling
is tried again with backoff; only a rejected password (``auth``) makes the
peer forget the credentials, and a ban or another live session of the
account stops the retries.  The tracker may also send requests here:
``ping``, ``list``, and ``ended`` when it ends this session (replaced by a
login elsewhere, kicked or banned); then the peer remembers why, shows it in
``status`` and does not log in again by itself, so two peers sharing an
account do not fight over it.
"""

from collections.abc import Callable
from typing import Any

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import FileshareError, NotLoggedIn, Unavailable
from ..ratelog import RateLimitedLog
from ..tickets import TicketKey
from ..wire import framing
from ..wire.framing import field
from ..wire.messages import hello_fields
from ..wire.rpc import RPCProtocol
from .interfaces import ITrackerLink
from .repository import Entry, Repository

log = Logger()

#: How long a console command waits for a (re)connection to the tracker.
CONNECT_TIMEOUT = 10.0
#: How long any request to the tracker may take.
CALL_TIMEOUT = 30.0
#: Files per ``announce`` request.
ANNOUNCE_BATCH = 200
#: Backoff between re-login attempts on one connection: 1 s doubling to 60 s.
RELOGIN_INITIAL_DELAY = 1.0
RELOGIN_MAX_DELAY = 60.0
#: The tracker's refusal of an announce past its ``--max-records`` limit.
TOO_MANY_FILES = "too-many-files"
#: Re-login refusals that retrying cannot fix: stop and tell the user.
FINAL_REFUSALS = frozenset({"banned", "online-elsewhere"})


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


def _ticket_key(host: Any, text: Any, tracker_time: Any, now: float) -> TicketKey | None:
    """The login reply's ticket key, or None (every ticket then refused) if it is missing or malformed.

    Tickets expire on the tracker's clock; *tracker_time*, if given, is what
    it read at login, so the key carries the difference from ours.
    """
    try:
        key = bytes.fromhex(text) if isinstance(text, str) else b""
    except ValueError:
        key = b""
    if len(key) < 16 or not isinstance(host, str):
        log.warn("the tracker sent no usable ticket key at login; uploads will refuse every fetcher")
        return None
    known = isinstance(tracker_time, int | float) and not isinstance(tracker_time, bool)
    return TicketKey(host, key, float(tracker_time) - now if known else 0.0)


@implementer(ITrackerLink)
class TrackerLink:
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

    async def _relogin(self, protocol: TrackerClientProtocol) -> None:
        """Log in again with the remembered credentials; on failure forget, stop or retry (see the module)."""
        self._retry = None
        credentials = self.credentials
        if credentials is None or self.protocol is not protocol or not protocol.connected:
            return
        name, password = credentials
        try:
            await self._login(protocol, name, password, session=self.session)
        except FileshareError as e:
            if self.credentials != credentials:
                return  # the user logged in or out meanwhile
            if e.code == "auth":
                log.warn(
                    "logging in again as {name} was refused: {why}; forgetting the credentials",
                    name=name,
                    why=e.message,
                )
                self._forget()
            elif e.code in FINAL_REFUSALS:
                log.warn("logging in again as {name} was refused: {why}; not trying again", name=name, why=e.message)
                self._forget(ended=e.message)
            elif self.protocol is protocol and protocol.connected:
                delay = min(RELOGIN_MAX_DELAY, RELOGIN_INITIAL_DELAY * 2**self._relogin_failures)
                self._relogin_failures += 1
                self.relogin_error = e.message
                log.warn(
                    "logging in again as {name} failed: {why}; trying again in {delay} s",
                    name=name,
                    why=e.message,
                    delay=delay,
                )
                self._retry = self.clock.callLater(delay, self._retry_relogin, protocol)
            else:
                # The connection is gone: the next one logs in again when it is made.
                self.relogin_error = e.message
                log.warn("logging in again as {name} failed: {why}", name=name, why=e.message)
        else:
            log.info("logged in again as {name} after reconnecting", name=name)

    def _retry_relogin(self, protocol: TrackerClientProtocol) -> None:
        d = Deferred.fromCoroutine(self._relogin(protocol))
        d.addErrback(lambda f: log.failure("logging in again failed", f))

    def _cancel_retry(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def _forget(self, ended: str | None = None) -> None:
        self._cancel_retry()
        self.credentials = None
        self.host = None
        self.session = None
        self.ticket_key = None
        self.relogin_error = None
        self._relogin_failures = 0
        self.ended_reason = ended

    def session_ended(self, protocol: TrackerClientProtocol, code: str, reason: str) -> None:
        """The tracker ended this session: remember why, and do not log in again by ourselves."""
        if protocol is not self.protocol or self.credentials is None:
            return  # an old connection's news; the current session is another one
        log.warn(
            "the tracker ended the session of {name}: {reason}; not logging in again until told to",
            name=self.host,
            reason=reason,
            code=code,
        )
        self._forget(ended=reason)
        waiters, self._end_waiters = self._end_waiters, []
        for d in waiters:
            d.callback(reason)

    def when_ended(self) -> Deferred:
        """Fires with the reason when the tracker next ends this peer's session."""
        d: Deferred = Deferred()
        self._end_waiters.append(d)
        return d

    @property
    def problem(self) -> str | None:
        """Why the tracker was refused (TLS pin, CA, wrong mode), from the endpoint."""
        return getattr(self.endpoint, "problem", None)

    def where(self) -> str | None:
        """Which tracker the connection goes to (``tracker at HOST:PORT``), for ``status``; None while disconnected."""
        where = getattr(self.endpoint, "where", None)
        return where() if where is not None and self.connected else None

    def describe(self) -> str:
        """The login state for ``status``."""
        if self.problem is not None:
            return f"tracker refused: {self.problem}"
        if self.ended_reason is not None:
            return f"not logged in: the tracker ended the session: {self.ended_reason}"
        if self.credentials is None:
            return "not logged in"
        if self._retry is not None or (self.relogin_error is not None and not self.connected):
            return f"logging in again as {self.credentials[0]} (last try: {self.relogin_error})"
        return f"logged in as {self.host}"

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

    async def authed_call(self, op: str, **fields: Any) -> dict[str, Any]:
        if self.credentials is None:
            raise NotLoggedIn("not logged in; use 'login NAME PASSWORD' first")
        return await self.call(op, **fields)

    async def _login(
        self,
        protocol: TrackerClientProtocol,
        name: str,
        password: str,
        replace: bool = False,
        session: str | None = None,
    ) -> int:
        extra: dict[str, Any] = {}
        if replace:
            extra["replace"] = True
        if session is not None:
            extra["session"] = session
        reply = await protocol.call(
            "login", timeout=CALL_TIMEOUT, name=name, password=password, port=self._listen_port(), **extra
        )
        self.credentials = (name, password)
        self.host = reply.get("host", name)
        self.session = reply.get("session") if isinstance(reply.get("session"), str) else None
        self.ticket_key = _ticket_key(self.host, reply.get("ticket_key"), reply.get("time"), self.clock.seconds())
        self.ended_reason = None
        self.relogin_error = None
        self._relogin_failures = 0
        return await self.announce_all(protocol)

    async def login(self, name: str, password: str, replace: bool = False) -> int:
        """Log in and announce the repository; how many files the tracker took."""
        protocol = await self.channel()
        self._cancel_retry()
        count = await self._login(protocol, name, password, replace=replace)
        log.info("logged in to the tracker as {name}; announced {count} files", name=name, count=count)
        return count

    async def passwd(self, old: str, new: str) -> None:
        """Change the account's password; re-logins use the new one from now on."""
        if self.credentials is None:
            raise NotLoggedIn("not logged in; use 'login NAME PASSWORD' first")
        await self.call("passwd", old=old, new=new)
        if self.credentials is not None:
            self.credentials = (self.credentials[0], new)

    async def logout(self) -> None:
        if self.credentials is None:
            raise NotLoggedIn("not logged in")
        try:
            await self.call("logout")
        finally:
            self._forget()

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
