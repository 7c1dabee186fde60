"""
How long a connection to the tracker port may take to say ``hello`` and to
log in, and how an idle logged-in connection is checked.

Both deadlines count from the connection (TCP accepted; the TLS handshake
counts against them), and bytes do not push them back: a client trickling a
never-ending line meets them as surely as a silent one.  A logged-in
connection that sends nothing for ``idle`` seconds gets a ``ping``; if the
answer does not come within ``ping`` seconds the connection is closed and
the host goes offline.  A connection closed for a deadline gets one
``timeout`` error line first, and is aborted if it has not gone
``CLOSE_GRACE`` seconds later (a client that does not read).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from ..errors import FileshareError
from ..ratelog import RateLimitedLog

log = Logger()

#: Seconds from the connection to ``hello``.
HELLO_TIMEOUT = 10.0
#: Seconds from the connection to a successful ``login`` (--login-timeout).
LOGIN_TIMEOUT = 30.0
#: Seconds a logged-in connection may send nothing before it is pinged (--idle-timeout).
IDLE_TIMEOUT = 120.0
#: Seconds the ping's answer may take.
PING_TIMEOUT = 30.0
#: Seconds a closing connection may take to drain before it is aborted.
CLOSE_GRACE = 5.0


class Timeout(FileshareError):
    code = "timeout"


@attrs.frozen
class Timeouts:
    hello: float = HELLO_TIMEOUT
    login: float = LOGIN_TIMEOUT
    idle: float = IDLE_TIMEOUT
    ping: float = PING_TIMEOUT


class Deadlines:
    """
    The timers of one tracker connection.  The protocol calls
    :meth:`connected`, :meth:`greeted`, :meth:`logged_in`, :meth:`received`
    and :meth:`lost` as those happen; *channel* is the protocol (``call``,
    ``sendError``, ``transport``).
    """

    def __init__(self, channel: Any, timeouts: Timeouts, clock: IReactorTime, warnings: RateLimitedLog) -> None:
        self.channel = channel
        self.timeouts = timeouts
        self.clock = clock
        self.warnings = warnings
        self._hello: Any = None
        self._login: Any = None
        self._idle: Any = None
        self._grace: Any = None

    def connected(self) -> None:
        self._hello = self.clock.callLater(self.timeouts.hello, self._expired, "hello", "say hello")
        self._login = self.clock.callLater(self.timeouts.login, self._expired, "login", "log in")

    def greeted(self) -> None:
        self._hello = _cancel(self._hello)

    def logged_in(self) -> None:
        self._hello = _cancel(self._hello)
        self._login = _cancel(self._login)
        if self._idle is None:
            self._idle = self.clock.callLater(self.timeouts.idle, self._ping)

    def received(self) -> None:
        """Bytes arrived: the idle timer (not the hello and login deadlines) starts again."""
        if self._idle is not None and self._idle.active():
            self._idle.reset(self.timeouts.idle)

    def lost(self) -> None:
        self._hello = _cancel(self._hello)
        self._login = _cancel(self._login)
        self._idle = _cancel(self._idle)
        self._grace = _cancel(self._grace)

    def _expired(self, which: str, what: str) -> None:
        if which == "hello":
            self._hello = None
        else:
            self._login = None
        seconds = getattr(self.timeouts, which)
        option = " (--login-timeout)" if which == "login" else ""
        self._close(
            f"{which}-timeout",
            Timeout(f"did not {what} within {seconds:g} s of connecting; closing"),
            "closed the connection from {address}: it did not {what} within {seconds:g} s of connecting{option}",
            what=what,
            seconds=seconds,
            option=option,
        )

    def _ping(self) -> None:
        self._idle = None
        d = self.channel.call("ping", timeout=self.timeouts.ping)
        d.addCallbacks(self._answered, self._unanswered, callbackArgs=(self.clock.seconds(),))

    def _answered(self, _: object, sent: float) -> None:
        pinged = getattr(self.channel, "pinged", None)
        if pinged is not None:
            pinged(self.clock.seconds() - sent)
        if self.channel.connected and self._idle is None:
            self._idle = self.clock.callLater(self.timeouts.idle, self._ping)

    def _unanswered(self, _: object) -> None:
        if not self.channel.connected:
            return
        self._close(
            "idle-timeout",
            Timeout(f"no answer to ping within {self.timeouts.ping:g} s; closing"),
            "closed the connection from {address}: idle for {idle:g} s (--idle-timeout) and "
            "no answer to ping within {ping:g} s",
            idle=self.timeouts.idle,
            ping=self.timeouts.ping,
        )

    def _close(self, key: str, error: Timeout, format: str, **fields: Any) -> None:
        self.lost()  # one deadline closes, once
        transport = self.channel.transport
        self.warnings.warn(key, format, address=_host(transport.getPeer()), **fields)
        self.channel.sendError(error, re=None)
        transport.loseConnection()
        self._grace = self.clock.callLater(CLOSE_GRACE, transport.abortConnection)


def _cancel(call: Any) -> None:
    if call is not None and call.active():
        call.cancel()


def _host(address: Any) -> str:
    return str(getattr(address, "host", address))
