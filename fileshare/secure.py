"""
How the services use :mod:`fileshare.tls`: listeners, addresses, wrong-mode advice.

Every node-to-node connection is TLS unless a node runs with ``--no-tls``.
A node that meets the other mode says so in one line, naming the option to
change, instead of retrying on "connection lost":

- a plain-text node reads the other end's first bytes and recognises TLS
  (:func:`~fileshare.tls.looks_like_tls`);
- a plain-text *server* then answers with one line of text before closing,
  so the TLS client's handshake fails in a way
  :func:`~fileshare.tls.spoke_plain_text` recognises;
- a TLS *server* whose client opens with anything but a TLS handshake record
  logs it and answers with a TLS alert before closing (OpenSSL alone would
  close silently), so the plain-text client recognises TLS.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from .errors import BadRequest
from .logfilter import address_text
from .tls import Identity, PinnedAddress, looks_like_tls, parse_fingerprint, wrap_server_factory
from .tls.connect import check_host_and_port

log = Logger()

#: Seconds a plain TCP connection to a source may take (as a pinned one).
CONNECT_TIMEOUT = 10.0


def speaks_tls_advice(role: str, program: str) -> str:
    """What a plain-text node says when the other end speaks TLS."""
    return f"the {role} speaks TLS; start this {program} without --no-tls"


def speaks_plain_advice(role: str, program: str) -> str:
    """What a TLS node says when the other end speaks plain text."""
    return f"the {role} speaks plain text (it runs with --no-tls); start this {program} with --no-tls"


class _PlainGuard(ProtocolWrapper):
    """A plain-text connection that recognises TLS in the other end's first bytes."""

    factory: PlainGuardFactory

    def __init__(self, factory: PlainGuardFactory, wrapped: Any) -> None:
        super().__init__(factory, wrapped)
        self._first = b""
        self._checked = False

    def dataReceived(self, data: bytes) -> None:
        if self._checked:
            super().dataReceived(data)
            return
        self._first += data
        if len(self._first) < 2:
            return
        self._checked = True
        first, self._first = self._first, b""
        if looks_like_tls(first):
            self.factory.tls_seen(self)
            return
        self._step_aside()
        self.wrappedProtocol.dataReceived(first)

    def _step_aside(self) -> None:
        """
        Plain text it is: connect the wrapped protocol to the socket itself.

        The upload service sends files with ``sendfile`` only on a bare TCP
        transport, so a ``--no-tls`` peer keeps that fast path.
        """
        transport = self.transport
        owner = getattr(transport, "protocol", None)
        if owner is self:
            transport.protocol = self.wrappedProtocol
        elif getattr(owner, "wrappedProtocol", None) is self:
            owner.wrappedProtocol = self.wrappedProtocol  # a fileshare.limits.LimitedConnection in front
        else:
            return
        self.factory.unregisterProtocol(self)
        self.wrappedProtocol.transport = transport


class PlainGuardFactory(WrappingFactory):
    """
    Wraps a plain-text factory; on TLS from the other end, logs ``advice``
    once per connection, calls ``on_tls`` and closes.  A server (``answer``)
    first writes the advice as a line, so a TLS client sees plain text.
    """

    noisy = False  # no "Starting factory" line per connection (fileshare.logfilter)

    protocol = _PlainGuard

    def __init__(self, wrapped: Any, advice: str, answer: bool, on_tls: Any = None) -> None:
        super().__init__(wrapped)
        self.advice = advice
        self.answer = answer
        self.on_tls = on_tls

    def tls_seen(self, guard: _PlainGuard) -> None:
        log.warn("{peer}: {advice}", peer=address_text(guard.transport.getPeer()), advice=self.advice)
        if self.on_tls is not None:
            self.on_tls(self.advice)
        if self.answer:
            guard.transport.write(f"ERR {self.advice}\n".encode())
            guard.transport.loseConnection()
        else:
            guard.transport.abortConnection()


#: A fatal TLS alert (protocol_version) in a TLS 1.2 record: what a TLS port
#: answers to plain text, so the plain-text node can tell what it met.
_ALERT = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46])
#: The record type of a TLS handshake message, the first byte of any ClientHello.
_HANDSHAKE = 0x16


class _TLSPortGuard(ProtocolWrapper):
    """Outside TLS on a server: answers a plain-text client with an alert and closes."""

    factory: _TLSPortGuardFactory

    def __init__(self, factory: Any, wrapped: Any) -> None:
        super().__init__(factory, wrapped)
        self._checked = False

    def dataReceived(self, data: bytes) -> None:
        if not self._checked and data:
            self._checked = True
            if data[0] != _HANDSHAKE:
                log.warn("{peer}: {advice}", peer=address_text(self.transport.getPeer()), advice=self.factory.advice)
                self.transport.write(_ALERT)
                self.transport.loseConnection()
                self.wrappedProtocol.dataReceived(data)  # fails the handshake, so the protocol sees why
                return
        super().dataReceived(data)


class _TLSPortGuardFactory(WrappingFactory):
    noisy = False  # no "Starting factory" line per connection (fileshare.logfilter)

    protocol = _TLSPortGuard

    def __init__(self, wrapped: Any, advice: str) -> None:
        super().__init__(wrapped)
        self.advice = advice


def server_factory(factory: Any, identity: Identity | None, clock: Any, client: str, program: str) -> Any:
    """
    ``factory`` as a node listens with it: behind TLS with ``identity``, or in
    plain text (``identity`` None) with the wrong-mode guard.  ``client`` and
    ``program`` name who connects ("peer", "fetcher") and what it is
    ("peer") in the advice logged here.
    """
    if identity is None:
        advice = f"a {client} spoke TLS to this --no-tls port; start that {program} with --no-tls"
        return PlainGuardFactory(factory, advice, answer=True)
    advice = f"a {client} spoke plain text to this TLS port and was closed; start that {program} without --no-tls"
    return _TLSPortGuardFactory(wrap_server_factory(identity, factory, clock), advice)


@attrs.frozen
class PlainAddress:
    """Where a ``--no-tls`` node listens, checked like a :class:`~fileshare.tls.PinnedAddress`."""

    host: str
    port: int

    def __attrs_post_init__(self) -> None:
        check_host_and_port(self.host, self.port)

    def to_wire(self) -> dict[str, object]:
        return {"host": self.host, "port": self.port}

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def address_from_wire(record: object, tls: bool) -> PinnedAddress | PlainAddress:
    """
    A source's address from a ``sources`` item, validated (:class:`BadRequest`).

    A TLS fetcher needs the fingerprint; a ``--no-tls`` fetcher ignores it.
    """
    if tls:
        return PinnedAddress.from_wire(record)
    if not isinstance(record, dict):
        raise BadRequest(f"an address is an object with host and port, not {record!r}")
    return PlainAddress(record.get("host"), record.get("port"))


def plain_endpoint(reactor: Any, address: PlainAddress, timeout: float = CONNECT_TIMEOUT) -> Any:
    """A plain TCP endpoint to a checked literal address (the tracker sends IP addresses)."""
    cls = TCP6ClientEndpoint if ":" in address.host else TCP4ClientEndpoint
    return cls(reactor, address.host, address.port, timeout=timeout)


_SPLIT = re.compile(r"(?<!\\):")


def tcp_host_and_port(description: str) -> tuple[str, int]:
    """
    Host and port of a ``tcp:`` client endpoint string (``tcp:HOST:PORT`` or
    ``tcp:host=HOST:port=PORT``), for connecting to it with TLS and pinning it.
    """
    parts = [p.replace("\\:", ":") for p in _SPLIT.split(description)]
    if not parts or parts[0] not in ("tcp", "tcp6"):
        raise BadRequest(
            f"the tracker must be a tcp: endpoint such as tcp:host=127.0.0.1:port=7700, not {description!r}"
        )
    named = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
    positional = [p for p in parts[1:] if "=" not in p]
    host = named.get("host") or (positional[0] if positional else None)
    port_text = named.get("port") or (positional[1] if len(positional) > 1 else None)
    try:
        port = int(port_text) if port_text is not None else None
    except ValueError:
        port = None
    if host is None or port is None:
        raise BadRequest(f"the tracker endpoint {description!r} needs a host and a port")
    check_host_and_port(host, port)
    return host, port


def fingerprint_option(text: str | None) -> Any:
    """``--tracker-fingerprint`` parsed, or None."""
    return None if text is None else parse_fingerprint(text)


@implementer(IHandshakeListener)
class _AfterHandshake(ProtocolWrapper):
    """Starts the wrapped protocol at the end of the TLS handshake, not at the TCP connection."""

    def __init__(self, factory: Any, wrapped: Any) -> None:
        super().__init__(factory, wrapped)
        self._started = False

    def makeConnection(self, transport: Any) -> None:
        # ProtocolWrapper.makeConnection would start the wrapped protocol now.
        self.connected = 1
        self.transport = transport
        self.factory.registerProtocol(self)

    def handshakeCompleted(self) -> None:
        if self._started:
            return
        self._started = True
        self.wrappedProtocol.makeConnection(self)
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()

    def dataReceived(self, data: bytes) -> None:
        if self._started:
            super().dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:
        self.factory.unregisterProtocol(self)
        if self._started:
            self.wrappedProtocol.connectionLost(reason)


class AfterHandshakeFactory(WrappingFactory):
    """
    For a client behind :class:`~fileshare.tls.handshake.HandshakeEndpoint`:
    the application protocol is connected only when the handshake succeeded,
    so a refused server never reaches it (``ClientService`` expects exactly
    that: no protocol connection before ``connect`` fires).
    """

    noisy = False  # no "Starting factory" line per connection (fileshare.logfilter)

    protocol = _AfterHandshake
