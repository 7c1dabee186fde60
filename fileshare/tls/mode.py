"""
Telling a TLS/plain-text mix-up from other failures, so a node can say so.

A peer started with ``--no-tls`` against a TLS tracker (or the reverse)
should print one clear line -- "the tracker speaks TLS; start this peer
without --no-tls" -- instead of retrying on "connection lost".  Both sides
can tell:

- a node speaking plain text reads the other end's first bytes:
  :func:`looks_like_tls` is true for a TLS record (a ClientHello from a TLS
  client, an alert from a TLS server), which no fileshare line starts with;
- a node speaking TLS sees its handshake fail: :func:`spoke_plain_text` is
  true for the OpenSSL errors a plain-text other end causes.

The wording of the message belongs to the service that knows which role and
which option is involved.
"""

from __future__ import annotations

from OpenSSL import SSL
from twisted.python.failure import Failure

#: TLS record content types a TLS endpoint sends first: alert (21), handshake (22).
_FIRST_RECORD_TYPES = (0x15, 0x16)

#: What OpenSSL reports when the bytes it reads are not TLS records.
_NOT_TLS = frozenset(
    {
        "wrong version number",
        "http request",
        "https proxy request",
        "packet length too long",
        "record layer failure",
        "unknown protocol",
    }
)


def looks_like_tls(first_bytes: bytes) -> bool:
    """
    Whether bytes that opened a plain-text connection are TLS.

    Two bytes are enough: a record type (alert or handshake) and the major
    version 3 that every TLS version since SSL 3 puts there.  Fileshare's
    lines are printable text, so neither byte can start one.
    """
    return len(first_bytes) >= 2 and first_bytes[0] in _FIRST_RECORD_TYPES and first_bytes[1] == 0x03


def spoke_plain_text(reason: Failure | BaseException) -> bool:
    """Whether a TLS connection failed because the other end does not speak TLS."""
    error = reason.value if isinstance(reason, Failure) else reason
    if not isinstance(error, SSL.Error) or not error.args:
        return False
    details = error.args[0]
    if not isinstance(details, list):
        return False
    return any(isinstance(entry, tuple) and entry and entry[-1] in _NOT_TLS for entry in details)
