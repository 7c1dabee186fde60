"""
TLS connections between nodes that know each other by fingerprint, not by CA.

Server side: :func:`server_creator` (or :func:`wrap_server_factory` around a
protocol factory) presents the node's certificate, speaks TLS 1.2 or later
(1.3 where both ends can), and *requires* the client's certificate without
checking it against any CA -- clients are self-signed too.  What the server
learns is the client's key: after the handshake the protocol reads it with
:func:`peer_fingerprint` (the wrapped protocol may implement
``IHandshakeListener.handshakeCompleted`` to learn the moment; any data it
receives already comes after the handshake).  Note that the protocol's
``connectionMade`` runs at the TCP accept, *before* the handshake -- also for
a plain-text client that will be closed -- so a service should count a
connection as a node only from ``handshakeCompleted`` or its first data.

Client side: :func:`pinned_creator` presents the node's own certificate and
accepts the server only when the server's key has the expected fingerprint.
The check runs in OpenSSL's verify callback, *inside* the handshake, so not
one byte the application wrote (a password, a ticket) leaves before the
server has proved it holds the pinned key.  On a mismatch the connection is
aborted and the protocol's ``connectionLost`` receives a
:class:`FingerprintMismatch` carrying both fingerprints.

:func:`pinned_endpoint` builds the whole client endpoint from a host, a port
and a fingerprint that were checked first, so a fetcher never hands an
endpoint string chosen by someone else to ``clientFromString``.
"""

from __future__ import annotations

import re
from typing import Any

import attrs
from OpenSSL import SSL
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IStreamClientEndpoint,
)
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import BadRequest, FileshareError
from .fingerprints import Fingerprint, fingerprint, parse_fingerprint
from .handshake import HANDSHAKE_TIMEOUT, HandshakeEndpoint, HandshakeWatchFactory
from .identity import Identity

#: TLS 1.2 is the floor; OpenSSL negotiates 1.3 whenever the other end has it.
MINIMUM_TLS = TLSVersion.TLSv1_2

#: How long a pinned endpoint waits for the TCP connection itself.
CONNECT_TIMEOUT = 10.0


class FingerprintMismatch(FileshareError):
    """The other end's key is not the one we were told to expect."""

    code = "fingerprint-mismatch"

    def __init__(self, expected: Fingerprint, seen: Fingerprint, message: str | None = None) -> None:
        super().__init__(
            message or f"the other end's certificate has fingerprint {seen}, expected {expected}; refusing it"
        )
        self.expected = expected
        self.seen = seen


def _options(identity: Identity) -> CertificateOptions:
    # CertificateOptions gives Twisted's cipher list, curve choice and
    # OpenSSL flags; pyOpenSSL takes cryptography objects directly.
    return CertificateOptions(
        privateKey=identity.private_key,
        certificate=identity.certificate,
        extraCertChain=list(identity.chain) or None,
        raiseMinimumTo=MINIMUM_TLS,
    )


def _accept_any(connection: SSL.Connection, certificate: Any, errno: int, depth: int, ok: int) -> bool:
    """Accept any chain: the key, not a CA, is what is checked (see the module docstring)."""
    return True


@implementer(IOpenSSLServerConnectionCreator)
class _ServerCreator:
    def __init__(self, identity: Identity, require_client_certificate: bool) -> None:
        self._context = _options(identity).getContext()
        flags = SSL.VERIFY_PEER
        if require_client_certificate:
            flags |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        self._context.set_verify(flags, _accept_any)

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        return connection


def server_creator(identity: Identity, require_client_certificate: bool = True) -> IOpenSSLServerConnectionCreator:
    """
    The server half of a node's TLS: its certificate, any client certificate.

    With ``require_client_certificate`` (the default) a client that presents
    no certificate fails the handshake: every node has an identity, and a
    peer's uploads bind tickets to the fetcher's key.
    """
    return _ServerCreator(identity, require_client_certificate)


def wrap_server_factory(
    identity: Identity,
    factory: IProtocolFactory,
    clock: Any,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    require_client_certificate: bool = True,
) -> TLSMemoryBIOFactory:
    """
    ``factory`` behind TLS; listen with the result on any stream server endpoint.

    A handshake not done within ``handshake_timeout`` seconds of ``clock``
    is aborted (see :mod:`.handshake`).
    """
    watched = HandshakeWatchFactory(factory, clock, handshake_timeout)
    return TLSMemoryBIOFactory(server_creator(identity, require_client_certificate), False, watched)


def peer_fingerprint(transport: Any) -> Fingerprint | None:
    """
    The fingerprint of the other end's certificate, or ``None`` before the
    handshake or when it sent none.  ``transport`` is the wrapped protocol's
    ``self.transport``.
    """
    get = getattr(transport, "getPeerCertificate", None)
    certificate = get() if get is not None else None
    return None if certificate is None else fingerprint(certificate)


@implementer(IOpenSSLClientConnectionCreator)
class _PinnedClientCreator:
    def __init__(self, identity: Identity, expected: Fingerprint | None) -> None:
        self._expected = expected
        self._context = _options(identity).getContext()
        self._context.set_verify(SSL.VERIFY_PEER, self._verify)

    def _verify(self, connection: SSL.Connection, certificate: Any, errno: int, depth: int, ok: int) -> bool:
        # Called once per certificate in the server's chain, the server's own
        # last (depth 0).  CA checks are OpenSSL's ``ok``; we ignore it.
        if depth != 0 or self._expected is None:
            return True
        seen = fingerprint(certificate)
        if seen == self._expected:
            return True
        # Give connectionLost a reason that says what happened, not just
        # "certificate verify failed"; returning False fails the handshake
        # before any application data is sent.
        connection.get_app_data().failVerification(Failure(FingerprintMismatch(self._expected, seen)))
        return False

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tlsProtocol)
        connection.set_connect_state()
        return connection


def pinned_creator(identity: Identity, expected: Fingerprint) -> IOpenSSLClientConnectionCreator:
    """Client TLS that presents ``identity`` and accepts only a server whose key is ``expected``."""
    if not isinstance(expected, Fingerprint):
        raise TypeError(f"expected must be a Fingerprint, not {type(expected).__name__}")
    return _PinnedClientCreator(identity, expected)


def first_use_creator(identity: Identity) -> IOpenSSLClientConnectionCreator:
    """
    Client TLS that accepts *any* server key: only for trust on first use.

    The caller must read :func:`peer_fingerprint` after the handshake and
    record it (see :mod:`.pins`) before it sends anything that matters.
    """
    return _PinnedClientCreator(identity, None)


_HOST = re.compile(r"[A-Za-z0-9._:\-]{1,253}")


def _check_host(instance: Any, attribute: Any, value: object) -> None:
    if not isinstance(value, str) or not _HOST.fullmatch(value) or value.startswith("-"):
        raise BadRequest(f"not a host name or address: {value!r}")


def _check_port(instance: Any, attribute: Any, value: object) -> None:
    if type(value) is not int or not 0 < value < 65536:
        raise BadRequest(f"not a TCP port: {value!r}")


def check_host_and_port(host: object, port: object) -> None:
    """Refuse (with :class:`BadRequest`) a host or port that is not plainly one."""
    _check_host(None, None, host)
    _check_port(None, None, port)


def _check_fingerprint(instance: Any, attribute: Any, value: object) -> None:
    if not isinstance(value, Fingerprint):
        raise BadRequest(f"not a fingerprint: {value!r}")


@attrs.frozen
class PinnedAddress:
    """
    Where a node listens and which key it must hold: all a fetcher needs.

    The validators run on every construction, so a record that came off the
    wire is checked before it can become a connection.
    """

    host: str = attrs.field(validator=_check_host)
    port: int = attrs.field(validator=_check_port)
    fingerprint: Fingerprint = attrs.field(validator=_check_fingerprint)

    def to_wire(self) -> dict[str, object]:
        return {"host": self.host, "port": self.port, "fingerprint": str(self.fingerprint)}

    @classmethod
    def from_wire(cls, record: object) -> PinnedAddress:
        """Build from a decoded JSON object, raising :class:`BadRequest` on anything off."""
        if not isinstance(record, dict):
            raise BadRequest(f"an address is an object with host, port and fingerprint, not {record!r}")
        return cls(record.get("host"), record.get("port"), parse_fingerprint(record.get("fingerprint")))


def pinned_endpoint(
    reactor: Any,
    address: PinnedAddress,
    identity: Identity,
    timeout: float = CONNECT_TIMEOUT,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    clock: Any = None,
) -> IStreamClientEndpoint:
    """
    A TLS client endpoint to ``address`` that accepts only its pinned key.

    ``connect`` fires once the handshake succeeded, or fails with
    :class:`FingerprintMismatch`, :class:`~.handshake.HandshakeTimeout` (on
    ``clock``, by default the reactor) or the connection error.
    """
    tcp = HostnameEndpoint(reactor, address.host, address.port, timeout=timeout)
    tls = wrapClientTLS(pinned_creator(identity, address.fingerprint), tcp)
    return HandshakeEndpoint(tls, clock or reactor, handshake_timeout)


def first_use_endpoint(
    reactor: Any,
    host: str,
    port: int,
    identity: Identity,
    timeout: float = CONNECT_TIMEOUT,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    clock: Any = None,
) -> IStreamClientEndpoint:
    """A TLS client endpoint that accepts any key (trust on first use; see :func:`first_use_creator`)."""
    check_host_and_port(host, port)
    tcp = HostnameEndpoint(reactor, host, port, timeout=timeout)
    return HandshakeEndpoint(wrapClientTLS(first_use_creator(identity), tcp), clock or reactor, handshake_timeout)
