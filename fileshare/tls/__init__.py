"""
Node identities and pinned TLS, with no certificate work for the user.

Not wired in yet (issue 8 groundwork).  How the services are meant to use it:

Files.  Every node calls :func:`load_or_create` once at start-up, before it
listens or connects:

- the tracker beside its database: ``tracker.db`` -> ``tracker-cert.pem`` and
  ``tracker-key.pem`` in the same directory; it logs its fingerprint at start
  and shows it on the admin console, so an operator can hand it out;
- a peer in its state directory ``DIR/.fileshare``: ``peer-cert.pem``,
  ``peer-key.pem``, and the trust-on-first-use pins in ``tracker-pins``
  (:class:`PinStore`).

Keys and pins are written 0600, atomically (temporary name, fsync, rename).

Listening (tracker port, peer ``--listen``): ``wrap_server_factory(identity,
factory, reactor)`` and listen on the endpoint as today; a handshake not done
in 30 s is aborted.  The server requires a client
certificate but checks it against no CA; a protocol reads the client's key
with ``peer_fingerprint(self.transport)`` once data arrives (or in
``handshakeCompleted``).  The tracker should register a peer's fingerprint
*from its TLS connection* at login rather than trust a claimed one, and a
source binds tickets to ``peer_fingerprint`` of the fetcher.

Connecting:

- peer to tracker: ``expected = pins.expected(host, port, given)`` where
  ``given`` is ``--tracker-fingerprint`` parsed with
  :func:`parse_fingerprint`; with a pin use
  ``pinned_endpoint(reactor, PinnedAddress(host, port, expected), identity)``,
  without one ``first_use_endpoint`` and then
  ``pins.remember(reactor, host, port, peer_fingerprint(transport), accepted=given is not None)``
  before sending the password.  A :class:`FingerprintMismatch` in
  ``connectionLost`` goes through ``pins.refusal(...)`` for the message with
  both fingerprints and how to accept the new one.
- fetcher to source: the tracker sends ``PinnedAddress.to_wire()`` records;
  the fetcher rebuilds them with ``PinnedAddress.from_wire`` (validated) and
  connects with ``pinned_endpoint``: never ``clientFromString``.

A client endpoint's ``connect`` fires only after the handshake and the pin
check succeeded, and fails with :class:`FingerprintMismatch`,
:class:`HandshakeTimeout` or the OpenSSL error otherwise (so ``ClientService``
backs off from a refused tracker).  The protocol's ``connectionMade`` runs
earlier, at the TCP connection; anything it writes is held back by Twisted's
TLS layer until the handshake succeeds, so nothing leaks to an impostor.

Operator's CA (``--tls-cert``/``--tls-key`` on the tracker, ``--tracker-ca``
on the peer): :func:`.ca.load_identity` instead of :func:`load_or_create`,
and :func:`.ca.ca_endpoint` instead of a pinned endpoint (chain and host name
checked with ``service_identity``).

Wrong mode (``--no-tls`` on one side only): :func:`looks_like_tls` on the
first bytes a plain-text node reads, :func:`spoke_plain_text` on the reason a
TLS connection was lost; the service prints the one-line advice.
"""

from .connect import (
    FingerprintMismatch,
    PinnedAddress,
    first_use_creator,
    first_use_endpoint,
    peer_fingerprint,
    pinned_creator,
    pinned_endpoint,
    server_creator,
    wrap_server_factory,
)
from .fingerprints import BadFingerprint, Fingerprint, fingerprint, parse_fingerprint
from .handshake import HandshakeTimeout
from .identity import Identity, IdentityError, generate, load_or_create
from .mode import looks_like_tls, spoke_plain_text
from .pins import PinFileError, PinStore, TrackerPinChanged

__all__ = [
    "BadFingerprint",
    "Fingerprint",
    "FingerprintMismatch",
    "HandshakeTimeout",
    "Identity",
    "IdentityError",
    "PinFileError",
    "PinStore",
    "PinnedAddress",
    "TrackerPinChanged",
    "fingerprint",
    "first_use_creator",
    "first_use_endpoint",
    "generate",
    "load_or_create",
    "looks_like_tls",
    "parse_fingerprint",
    "peer_fingerprint",
    "pinned_creator",
    "pinned_endpoint",
    "server_creator",
    "spoke_plain_text",
    "wrap_server_factory",
]
