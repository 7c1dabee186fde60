"""
Caps on the connections a listening port holds: in total, per remote
address, and not yet authenticated ("pending").

:class:`LimitingFactory` is the outermost factory of a port, in front of TLS:
a connection over a cap is refused in ``buildProtocol``, so Twisted closes
the socket as soon as it is accepted -- no transport, no TLS handshake, not a
byte read or written -- and one line is logged (rate-limited, see
:mod:`fileshare.ratelog`)::

    refused a connection from 192.0.2.7 to the tracker port: 64 connections
    from that address (--max-per-address)

An accepted connection counts as pending until the application says it is
authenticated with :func:`admitted` (the tracker after a ``login``, a peer's
upload port after a hello with a valid ticket).  So a flood of connections
that never authenticate fills ``--max-pending`` and no more, while logged-in
peers keep their places and new honest peers still find room.

The factory does not wrap the transport: its protocol only stands between
the socket and the next protocol and passes calls through, so a plain-text
upload still writes straight to the socket (``sendfile``).
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from zope.interface import directlyProvides, providedBy

from .ratelog import RateLimitedLog

log = Logger()


@attrs.frozen
class Caps:
    """How many connections one listening port holds: in all, from one address, not yet authenticated."""

    total: int = attrs.field(validator=attrs.validators.ge(1))
    per_address: int = attrs.field(validator=attrs.validators.ge(1))
    pending: int = attrs.field(validator=attrs.validators.ge(1))

    @classmethod
    def from_options(cls, options: Any, defaults: Caps) -> Caps:
        """The caps a port's --max-connections, --max-per-address and --max-pending ask for, else *defaults*."""
        return cls(
            total=options.get("max-connections", defaults.total),
            per_address=options.get("max-per-address", defaults.per_address),
            pending=options.get("max-pending", defaults.pending),
        )


#: The tracker's --listen: --max-connections, --max-per-address, --max-pending.
TRACKER_CAPS = Caps(total=4096, per_address=64, pending=256)
#: A peer's upload port --listen: the same three options.
PEER_CAPS = Caps(total=1024, per_address=32, pending=128)
#: The admin console (tracker --admin) and the peer console (--control):
#: fixed, no options.  A console has no login, so every connection is pending.
CONSOLE_CAPS = Caps(total=16, per_address=16, pending=16)


def count_option(text: str) -> int:
    """A ``--max-*`` option: a whole number, at least 1."""
    try:
        n = int(text)
    except ValueError:
        raise UsageError(f"not a number: {text!r}") from None
    if n < 1:
        raise UsageError("must be at least 1")
    return n


def seconds_option(text: str) -> float:
    """A timeout option: seconds, more than 0."""
    try:
        seconds = float(text)
    except ValueError:
        raise UsageError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds < 1e9:
        raise UsageError("must be more than 0 seconds")
    return seconds


def address_of(address: Any) -> str:
    """The remote host of *address* as text: what "per address" counts."""
    if isinstance(address, IPv4Address | IPv6Address):
        return address.host
    return str(getattr(address, "name", None) or "local")


def admitted(transport: Any) -> None:
    """
    The connection under *transport* (an application protocol's
    ``self.transport``, TLS or not) is authenticated: it stops counting
    against the pending cap.  Harmless on a connection without limits.
    """
    bottom = transport
    while isinstance(bottom, ProtocolWrapper):  # TLS, the handshake deadline, the wrong-mode guards
        bottom = bottom.transport
    owner = getattr(bottom, "protocol", None)
    if isinstance(owner, LimitedConnection):
        owner.admit()


class LimitedConnection:
    """
    The socket's protocol on a limited port: counts the connection while it
    lives and passes everything else to ``wrappedProtocol``, which gets the
    socket itself as its transport.
    """

    def __init__(self, factory: LimitingFactory, wrapped: Any, host: str) -> None:
        self.factory = factory
        self.wrappedProtocol = wrapped
        self.host = host
        self.admitted = False
        self.transport: Any = None
        # The socket asks its protocol for optional interfaces (half-close).
        directlyProvides(self, providedBy(wrapped))

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self.wrappedProtocol.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.wrappedProtocol.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        self.factory.released(self)
        self.wrappedProtocol.connectionLost(reason)

    def admit(self) -> None:
        if not self.admitted:
            self.admitted = True
            self.factory.pending -= 1

    def logPrefix(self) -> str:
        prefix = getattr(self.wrappedProtocol, "logPrefix", None)
        return prefix() if prefix is not None else self.wrappedProtocol.__class__.__name__

    def __getattr__(self, name: str) -> Any:
        # readConnectionLost and the like, for the protocol behind.
        if name == "wrappedProtocol" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.wrappedProtocol, name)


class LimitingFactory(WrappingFactory):
    """
    Wrap the outermost factory of a port with *caps* (see the module docstring).

    *port* names the port in log lines ("the tracker port"), *pending* what
    a pending connection has not done yet ("not yet logged in"); *options*
    says whether the caps are the ``--max-*`` options (else they are fixed).
    """

    protocol = LimitedConnection  # type: ignore[assignment]

    def __init__(
        self,
        wrapped: Any,
        caps: Caps,
        clock: IReactorTime,
        port: str,
        pending: str = "not yet authenticated",
        options: bool = True,
        warnings: Any = None,
    ) -> None:
        super().__init__(wrapped)
        self.caps = caps
        self.port = port
        self.pending_what = pending
        self.options = options
        self.warnings = warnings if warnings is not None else RateLimitedLog(log, clock)
        self.total = 0
        self.pending = 0
        self.per_address: dict[str, int] = {}
        #: Connections refused since start, by cap ("total", "per_address", "pending").
        self.refused: dict[str, int] = {"total": 0, "per_address": 0, "pending": 0}

    def buildProtocol(self, addr: Any) -> LimitedConnection | None:
        host = address_of(addr)
        over = self._over(host)
        if over is not None:
            self._refuse(host, *over)
            return None
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        self.total += 1
        self.pending += 1
        self.per_address[host] = self.per_address.get(host, 0) + 1
        return self.protocol(self, wrapped, host)

    def released(self, connection: LimitedConnection) -> None:
        self.total -= 1
        if not connection.admitted:
            self.pending -= 1
        left = self.per_address[connection.host] - 1
        if left:
            self.per_address[connection.host] = left
        else:
            del self.per_address[connection.host]

    def _over(self, host: str) -> tuple[str, str, str] | None:
        caps = self.caps
        if self.per_address.get(host, 0) >= caps.per_address:
            return "per_address", f"{caps.per_address} connections from that address", "--max-per-address"
        if self.total >= caps.total:
            return "total", f"{caps.total} connections", "--max-connections"
        if self.pending >= caps.pending:
            return "pending", f"{caps.pending} connections {self.pending_what}", "--max-pending"
        return None

    def _refuse(self, host: str, cap: str, why: str, option: str) -> None:
        self.refused[cap] += 1
        self.warnings.warn(
            (self.port, cap),
            "refused a connection from {address} to the {port}: {why} ({option})",
            address=host,
            port=self.port,
            why=why,
            option=option if self.options else "fixed limit",
        )
