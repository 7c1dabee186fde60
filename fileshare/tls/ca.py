"""
The operator's own CA instead of pins: ``--tls-cert``/``--tls-key`` on the
tracker, ``--tracker-ca`` on the peer.

The tracker loads the certificate its operator was issued (leaf first, then
any intermediates, in one PEM file) with :func:`load_identity`; nothing is
ever created here.  Its fingerprint is still printed, so peers may pin it
instead.  A peer given ``--tracker-ca`` connects with :func:`ca_endpoint`,
which checks the chain against those CA certificates and the host name (or
IP address) it dialled with ``service_identity``, as Twisted's
``optionsForClientTLS`` does, and still presents the peer's own identity.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from OpenSSL import crypto
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from twisted.internet.ssl import Certificate, optionsForClientTLS, trustRootFromCertificates

from .connect import CONNECT_TIMEOUT, MINIMUM_TLS, check_host_and_port
from .handshake import HANDSHAKE_TIMEOUT, HandshakeEndpoint
from .identity import Identity, IdentityError

_TLS_KEY_TYPES = (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)


def load_identity(path_cert: str | os.PathLike, path_key: str | os.PathLike) -> Identity:
    """
    An operator-issued certificate chain and its key (blocking, at start-up).

    Raises :class:`IdentityError` naming the file when either is missing,
    unreadable or damaged, or when the key is not the certificate's.
    """
    cert_path, key_path = Path(path_cert), Path(path_key)
    chain = load_certificates(cert_path)
    data = _read(key_path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise IdentityError(f"the private key in {key_path} is encrypted; give an unencrypted key file") from None
    except ValueError:
        raise IdentityError(f"cannot read the private key in {key_path}: damaged or not PEM") from None
    if not isinstance(key, _TLS_KEY_TYPES):
        raise IdentityError(f"the private key in {key_path} is of a kind TLS cannot use")
    try:
        return Identity.from_pair(chain[0], key, tuple(chain[1:]))
    except ValueError:
        raise IdentityError(f"the certificate {cert_path} does not belong to the private key {key_path}") from None


def load_certificates(path: str | os.PathLike) -> list[x509.Certificate]:
    """Every certificate in a PEM file, in order; at least one, or an error naming the file."""
    path = Path(path)
    data = _read(path)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise IdentityError(f"cannot read certificates in {path}: damaged or not PEM") from None
    return certificates


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise IdentityError(f"cannot read {path}: {e.strerror}") from None


def ca_creator(
    identity: Identity, hostname: str, ca_certificates: list[x509.Certificate]
) -> IOpenSSLClientConnectionCreator:
    """Client TLS that trusts only ``ca_certificates`` and checks ``hostname``, presenting ``identity``."""
    if not ca_certificates:
        raise ValueError("at least one CA certificate is needed")
    roots = trustRootFromCertificates([Certificate(crypto.X509.from_cryptography(c)) for c in ca_certificates])
    return optionsForClientTLS(
        hostname,
        trustRoot=roots,
        extraCertificateOptions={
            "privateKey": identity.private_key,
            "certificate": identity.certificate,
            "raiseMinimumTo": MINIMUM_TLS,
        },
    )


def ca_endpoint(
    reactor: Any,
    host: str,
    port: int,
    ca_certificates: list[x509.Certificate],
    identity: Identity,
    timeout: float = CONNECT_TIMEOUT,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    clock: Any = None,
) -> IStreamClientEndpoint:
    """
    A TLS client endpoint to ``host:port`` whose certificate a CA of the
    operator's vouches for; ``connect`` fires after the handshake, as with
    :func:`~.connect.pinned_endpoint`.
    """
    check_host_and_port(host, port)
    tcp = HostnameEndpoint(reactor, host, port, timeout=timeout)
    tls = wrapClientTLS(ca_creator(identity, host, ca_certificates), tcp)
    return HandshakeEndpoint(tls, clock or reactor, handshake_timeout)
