"""
The peer's session with the tracker: logging in, out and in again, and why a session ended.

A mixin of :class:`~fileshare.peer.tracker_link.TrackerLink`, kept apart so
the link reads as keeping a connection and this as the login policy.  A
re-login that fails for a timeout, a lost connection or throttling is tried
again with backoff; only a rejected password (``auth``) makes the peer
forget the credentials, and a ban or another live session of the account
stops the retries.  When the tracker ends this session (replaced by a login
elsewhere, kicked or banned) the peer remembers why, shows it in ``status``
and does not log in again by itself, so two peers sharing an account do not
fight over it.
"""

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..errors import FileshareError, NotLoggedIn
from ..tickets import TicketKey
from .tracker_protocol import CALL_TIMEOUT, TrackerClientProtocol

log = Logger()

#: Backoff between re-login attempts on one connection: 1 s doubling to 60 s.
RELOGIN_INITIAL_DELAY = 1.0
RELOGIN_MAX_DELAY = 60.0
#: Re-login refusals that retrying cannot fix: stop and tell the user.
FINAL_REFUSALS = frozenset({"banned", "online-elsewhere"})


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


class TrackerSession:
    """The login state and policy of a :class:`~fileshare.peer.tracker_link.TrackerLink`, which provides the connection."""

    clock: Any
    endpoint: Any
    protocol: TrackerClientProtocol | None
    credentials: tuple[str, str] | None
    host: str | None
    session: str | None
    ticket_key: TicketKey | None
    ended_reason: str | None
    relogin_error: str | None
    _relogin_failures: int
    _retry: Any
    _end_waiters: list[Deferred]
    _listen_port: Callable[[], int]
    connected: bool
    problem: str | None
    channel: Any
    call: Any
    announce_all: Any

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
