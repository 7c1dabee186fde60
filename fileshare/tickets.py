"""
Download tickets: a source serves a file only to a fetcher the tracker sent to it.

At login the tracker gives each peer a random key for that session (the
``ticket_key`` of the login reply); the peer keeps it in memory only.  Each
item of a ``sources`` reply carries a ticket the tracker made with the
*source's* key, naming:

- the fetcher's host (its account) and its identity binding: the
  fingerprint of the fetcher's TLS key (``sha256:...``), or ``none`` when
  TLS is off, so a stolen ticket is useless to anyone with another key;
- the file's root and the source's host;
- when it expires (issue time + :data:`LIFETIME`) and a random nonce.

The source checks it alone, without asking the tracker: HMAC-SHA256 under
its key, compared in constant time, then the source, the binding and the
expiry.  The wire form is one line of text, fields separated by ``/`` (no
field may contain one; each is checked against a strict pattern)::

    1/alice/sha256:<64 hex>/<root>/bob/1764233100/<nonce: 32 hex>/<mac: 64 hex>

The MAC covers ``fileshare-ticket/`` plus every byte before the last ``/``,
exactly as received, so no two texts share a MAC input.

Everything here is pure: the caller passes the time and the key.
"""

import hashlib
import hmac
import re
import secrets
from typing import Any

import attrs

from .errors import TicketError, TicketExpired, TicketInvalid, TicketMisbound, TicketMissing, TicketUnverifiable
from .tls import peer_fingerprint

__all__ = [
    "LIFETIME",
    "NO_BINDING",
    "VERSION",
    "Ticket",
    "TicketError",
    "TicketKey",
    "client_binding",
    "issue",
    "issue_many",
    "new_key",
    "parse",
    "verify",
]

VERSION = 1
#: Seconds a ticket is good for after the tracker issued it.
LIFETIME = 60
#: The binding of a fetcher that has no TLS identity (``--no-tls``).
NO_BINDING = "none"
#: Bytes of a per-login key.
KEY_SIZE = 32

_DOMAIN = b"fileshare-ticket/"
_SEP = "/"
_ACCOUNT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_TICKET = re.compile(
    rf"(?P<signed>(?P<version>1)/(?P<fetcher>{_ACCOUNT})/(?P<binding>none|sha256:[0-9a-f]{{64}})"
    rf"/(?P<root>[0-9a-f]{{64}})/(?P<source>{_ACCOUNT})/(?P<expires>0|[1-9][0-9]{{0,15}})"
    r"/(?P<nonce>[0-9a-f]{32}))/(?P<mac>[0-9a-f]{64})"
)
#: The parts of _TICKET that issue_many checks apart: the fetcher's (once a reply), the source's (once a ticket).
_HEAD = re.compile(rf"1/{_ACCOUNT}/(?:none|sha256:[0-9a-f]{{64}})/")
_SOURCE = re.compile(rf"[0-9a-f]{{64}}/{_ACCOUNT}")
#: Longer than any ticket the pattern accepts; longer text is refused before matching.
MAX_LENGTH = 512


@attrs.frozen
class TicketKey:
    """What a source checks tickets with: its host name and its login's key (never stored).

    *offset* is the tracker's clock minus the source's at login, so expiry is
    judged on the tracker's clock and a source whose clock is wrong by
    minutes still honours fresh tickets.
    """

    host: str
    key: bytes = attrs.field(repr=False)
    offset: float = 0.0


@attrs.frozen
class Ticket:
    version: int
    fetcher: str
    binding: str
    root: str
    source: str
    expires: int
    nonce: str
    mac: str


def new_key() -> bytes:
    """A fresh random per-login key."""
    return secrets.token_bytes(KEY_SIZE)


def _mac(key: bytes, signed: str) -> str:
    # hmac.digest is OpenSSL's one-shot HMAC: half the cost of an hmac.new object.
    return hmac.digest(key, _DOMAIN + signed.encode("ascii"), hashlib.sha256).hex()


def issue(key: bytes, fetcher: str, binding: str, root: str, source: str, now: float, nonce: str | None = None) -> str:
    """The ticket text letting *fetcher* (bound to *binding*) get *root* from *source* until now + LIFETIME."""
    if nonce is None:
        nonce = secrets.token_hex(16)
    head = _SEP.join([str(VERSION), fetcher, binding, ""])
    return _issue(key, head, root, source, _SEP + str(int(now) + LIFETIME) + _SEP + nonce)


def issue_many(fetcher: str, binding: str, wanted: list[tuple[bytes, str, str]], now: float) -> list[str]:
    """
    The tickets of one ``sources`` reply: for each ``(key, root, source)``
    of *wanted*, what :func:`issue` gives, the random nonces drawn at once.

    The fields are checked against the ticket pattern part by part, the
    fetcher's once, so every text is one :func:`parse` accepts.
    """
    head = _SEP.join([str(VERSION), fetcher, binding, ""])
    expires = int(now) + LIFETIME
    if not _HEAD.fullmatch(head) or not 0 <= expires < 10**16:
        raise ValueError(f"cannot issue a ticket for these fields: {head!r}, expiry {expires}")
    nonces = secrets.token_hex(16 * len(wanted))
    texts = []
    for i, (key, root, source) in enumerate(wanted):
        middle = root + _SEP + source
        if not _SOURCE.fullmatch(middle):
            raise ValueError(f"cannot issue a ticket for these fields: {middle!r}")
        signed = f"{head}{middle}/{expires}/{nonces[32 * i : 32 * i + 32]}"
        texts.append(signed + _SEP + _mac(key, signed))
    return texts


def _issue(key: bytes, head: str, root: str, source: str, tail: str) -> str:
    signed = head + root + _SEP + source + tail
    text = signed + _SEP + _mac(key, signed)
    if not _TICKET.fullmatch(text):
        raise ValueError(f"cannot issue a ticket for these fields: {signed!r}")
    return text


def _match(text: Any) -> re.Match[str]:
    if not isinstance(text, str) or len(text) > MAX_LENGTH:
        raise TicketInvalid("the ticket is not one the tracker makes")
    m = _TICKET.fullmatch(text)
    if m is None:
        raise TicketInvalid("the ticket is not one the tracker makes")
    return m


def parse(text: Any) -> Ticket:
    """The fields of a well-formed ticket (its MAC unchecked); TicketInvalid for anything else."""
    m = _match(text)
    return Ticket(
        version=int(m["version"]),
        fetcher=m["fetcher"],
        binding=m["binding"],
        root=m["root"],
        source=m["source"],
        expires=int(m["expires"]),
        nonce=m["nonce"],
        mac=m["mac"],
    )


def verify(text: Any, key: TicketKey | None, binding: str, now: float) -> Ticket:
    """
    The ticket *text* if this source (*key*) may honour it for a fetcher with *binding* at *now*
    (the source's clock; ``key.offset`` turns it into the tracker's).

    Raises a :class:`~fileshare.errors.TicketError` and nothing else: missing
    (no text), unverifiable (no key: not logged in), invalid (malformed or
    wrong MAC), misbound (another source or another fetcher identity),
    expired.  The MAC is checked before anything it covers is believed.
    """
    if text is None or text == "":
        raise TicketMissing("a ticket from the tracker is required; fetch through the tracker's sources list")
    if key is None:
        raise TicketUnverifiable("the source is not logged in to the tracker, so it cannot check tickets")
    m = _match(text)
    if not hmac.compare_digest(_mac(key.key, m["signed"]), m["mac"]):
        raise TicketInvalid("the ticket was not issued for this source's current login (forged, altered or outdated)")
    ticket = parse(text)
    if ticket.source != key.host:
        raise TicketMisbound(f"the ticket is for source {ticket.source}, not {key.host}")
    if ticket.binding != binding:
        raise TicketMisbound(f"the ticket is bound to another identity than this connection's ({binding})")
    now += key.offset
    if now >= ticket.expires:
        raise TicketExpired(f"the ticket expired {int(now - ticket.expires)} s ago; ask the tracker for sources again")
    return ticket


def client_binding(transport: Any) -> str:
    """The identity a ticket binds to for the other end of *transport*: its TLS key's fingerprint, or ``none``.

    The one place both the tracker (issuing) and a source (checking) read it,
    so the two always agree.
    """
    seen = peer_fingerprint(transport)
    return NO_BINDING if seen is None else str(seen)
