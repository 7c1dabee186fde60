"""
Certificate fingerprints: the one name a node's TLS identity goes by.

A fingerprint is ``sha256:`` followed by the 64 lower-case hex digits of the
SHA-256 of the certificate's DER-encoded SubjectPublicKeyInfo.  It pins the
*public key*, not the certificate (as Tahoe-LAFS does), so a certificate
re-issued for the same key -- renewed, or re-made after its file was lost --
still matches every pin and every ticket bound to it.

Fingerprints cross the wire (the tracker hands a source's fingerprint to
fetchers) and come from people (``--tracker-fingerprint``): both go through
:func:`parse_fingerprint`, which accepts exactly what :func:`str` of a
:class:`Fingerprint` prints, give or take case and surrounding blanks.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import BadRequest

PREFIX = "sha256:"
_DIGEST_SIZE = hashlib.sha256().digest_size
_TEXT = re.compile(r"sha256:([0-9a-f]{64})")


class BadFingerprint(BadRequest, ValueError):
    """
    Text that is not a fingerprint.

    Also a :class:`ValueError`, so a ``usage.Options`` coercer that calls
    :func:`parse_fingerprint` reports the message as a usage error.
    """


def _check_digest(instance: Any, attribute: Any, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != _DIGEST_SIZE:
        raise BadFingerprint(f"a fingerprint digest is {_DIGEST_SIZE} bytes, not {value!r}")


@attrs.frozen
class Fingerprint:
    """The SHA-256 of a public key; compare with ``==``, print with ``str``."""

    digest: bytes = attrs.field(validator=_check_digest)

    def __str__(self) -> str:
        return PREFIX + self.digest.hex()

    def to_wire(self) -> str:
        return str(self)

    @classmethod
    def from_wire(cls, text: object) -> Fingerprint:
        return parse_fingerprint(text)


def fingerprint_of_key(public_key: Any) -> Fingerprint:
    """The fingerprint of a ``cryptography`` public key."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Fingerprint(hashlib.sha256(spki).digest())


def fingerprint(certificate: Any) -> Fingerprint:
    """
    The fingerprint of a certificate's public key.

    Takes a ``cryptography`` certificate or a pyOpenSSL ``X509`` (what
    ``transport.getPeerCertificate()`` returns), so callers need not convert.
    """
    if not isinstance(certificate, x509.Certificate):
        certificate = certificate.to_cryptography()
    return fingerprint_of_key(certificate.public_key())


def parse_fingerprint(text: object) -> Fingerprint:
    """
    Read a fingerprint someone gave us, or say clearly what is wrong with it.

    Upper-case hex and blanks around the text are forgiven (people copy it
    from a console); anything else -- another hash, a truncated paste, the
    colon-separated certificate hash ``openssl x509 -fingerprint`` prints --
    is refused rather than guessed at, since a wrong pin only fails later and
    less clearly.
    """
    if not isinstance(text, str):
        raise BadFingerprint(f"a fingerprint is text like {PREFIX}<64 hex digits>, not {type(text).__name__}")
    cleaned = text.strip().lower()
    match = _TEXT.fullmatch(cleaned)
    if match is None:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise BadFingerprint(f"not a fingerprint: {shown!r}; expected {PREFIX} followed by 64 hex digits")
    return Fingerprint(bytes.fromhex(match.group(1)))
