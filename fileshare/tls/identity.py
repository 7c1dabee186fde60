"""
A node's TLS identity: a key pair and a self-signed certificate, kept on disk.

:func:`load_or_create` runs once at start-up, before the reactor serves
anyone, so it uses plain blocking file I/O.  The first start makes an EC
P-256 key (every TLS stack speaks ECDSA P-256, so a second client in another
language can connect) and a self-signed certificate for it; later starts load
both.  Only the key matters for trust (see :mod:`.fingerprints`), so:

- a lost or unreadable *certificate* next to a good key is re-made from the
  key, and the node keeps its fingerprint;
- a lost *key* next to a certificate is an error, never a silent new
  identity: every pin on the old fingerprint would break.

The key is written with mode 0600 to a temporary name in the same
directory, flushed to disk, then renamed into place, so a crash leaves
either no key or a whole one under the real name.
"""

from __future__ import annotations

import datetime
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.logger import Logger

from ..errors import FileshareError
from .fingerprints import Fingerprint, fingerprint, fingerprint_of_key

log = Logger()

#: RFC 5280 4.1.2.5: "no well-defined expiration date".  Pins name keys, not
#: certificates, so an expiry would only ever break a working node.
NO_EXPIRY = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


class IdentityError(FileshareError):
    """The identity files exist but cannot be used; the message names the path."""

    code = "identity"


@attrs.frozen
class Identity:
    """
    A node's certificate, its private key and the fingerprint of that key.

    ``chain`` holds the intermediate certificates an operator's CA issued
    with the certificate (empty for a self-signed one); a server sends them.
    """

    certificate: x509.Certificate
    private_key: Any = attrs.field(repr=False)
    fingerprint: Fingerprint
    chain: tuple[x509.Certificate, ...] = ()

    @classmethod
    def from_pair(
        cls, certificate: x509.Certificate, private_key: Any, chain: tuple[x509.Certificate, ...] = ()
    ) -> Identity:
        """Pair a certificate with its key, refusing a key that is not the certificate's."""
        fp = fingerprint(certificate)
        if fingerprint_of_key(private_key.public_key()) != fp:
            raise ValueError("the private key does not belong to the certificate")
        return cls(certificate, private_key, fp, tuple(chain))


def generate(common_name: str, now: datetime.datetime | None = None) -> Identity:
    """A fresh key pair and self-signed certificate, in memory only."""
    key = ec.generate_private_key(ec.SECP256R1())
    return Identity.from_pair(self_signed(key, common_name, now), key)


def self_signed(key: Any, common_name: str, now: datetime.datetime | None = None) -> x509.Certificate:
    """A self-signed certificate for ``key``, valid from a day ago (clock skew) for good."""
    if now is None:
        now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or "fileshare")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(NO_EXPIRY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def load_or_create(path_cert: str | os.PathLike, path_key: str | os.PathLike, common_name: str) -> Identity:
    """
    The identity kept in ``path_cert`` and ``path_key``, made on first use.

    Blocking: call it at start-up, before the reactor runs (or in a thread).
    Missing parent directories are made with mode 0700.  Raises
    :class:`IdentityError` naming the file when a file is damaged, when the
    key and certificate do not belong together, or when the certificate is
    there but its key is not.
    """
    cert_path, key_path = Path(path_cert), Path(path_key)
    have_cert, have_key = cert_path.exists(), key_path.exists()
    if have_cert and not have_key:
        raise IdentityError(
            f"{cert_path} exists but its private key {key_path} does not; restore the key, or delete "
            f"{cert_path} to make a new identity (its fingerprint will change and peers must accept it)"
        )
    if not have_key:
        identity = generate(common_name)
        write_atomically(key_path, _key_pem(identity.private_key), 0o600)
        write_atomically(cert_path, _cert_pem(identity.certificate), 0o644)
        log.info(
            "Created TLS identity {fingerprint} in {key_path}",
            fingerprint=str(identity.fingerprint),
            key_path=str(key_path),
        )
        return identity

    key = _load_key(key_path)
    if not have_cert:
        certificate = self_signed(key, common_name)
        write_atomically(cert_path, _cert_pem(certificate), 0o644)
        log.warn("Certificate {cert_path} was missing; made a new one for the same key", cert_path=str(cert_path))
    else:
        certificate = _load_certificate(cert_path)
    try:
        return Identity.from_pair(certificate, key)
    except ValueError:
        raise IdentityError(
            f"the certificate {cert_path} does not belong to the private key {key_path}; "
            f"delete {cert_path} to make a new certificate for this key"
        ) from None


def _load_key(path: Path) -> Any:
    data = _read(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warn("Private key {path} is readable by others (mode {mode:o}); chmod 600 it", path=str(path), mode=mode)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise IdentityError(f"cannot read the private key in {path}: {_reason(e)}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        # Other key types would work with TLS too; refusing keeps one tested kind.
        raise IdentityError(f"the private key in {path} is not an EC key")
    return key


def _load_certificate(path: Path) -> x509.Certificate:
    data = _read(path)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise IdentityError(f"cannot read the certificate in {path}: {_reason(e)}") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise IdentityError(f"cannot read {path}: {e.strerror}") from None


def _reason(error: Exception) -> str:
    text = str(error).split("\n", 1)[0]
    return text or "damaged or not PEM"


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """
    Put ``data`` under ``path`` whole or not at all, created with ``mode``.

    The temporary file is created with its final mode (never briefly
    world-readable), fsynced before the rename and the directory after it,
    and removed if anything fails on the way.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as e:
        raise IdentityError(f"cannot write {path}: {e.strerror}") from None
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed or widened it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as e:
        temporary.unlink(missing_ok=True)
        raise IdentityError(f"cannot write {path}: {e.strerror}") from None
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
