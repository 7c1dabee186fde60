"""
Trust on first use: the tracker fingerprints a peer has seen, kept in a file.

The file (``tracker-pins`` in the peer's state directory, mode 0600) holds
one line per tracker address, ``HOST:PORT sha256:<hex>``; lines starting with
``#`` are comments.  The first successful connection to an address records
the fingerprint the tracker presented; later connections demand the same one.

How an operator accepts a tracker's new key, after checking it with the
tracker's admin (the tracker prints its fingerprint at start and on its
console): start the peer once with ``--tracker-fingerprint NEW``.  A
fingerprint given on the command line always wins over the file, and once a
connection with it succeeds it replaces the recorded one.  Deleting the pin
file also works, but then the next connection trusts whatever it meets.

Reading happens once at start-up (blocking, like the identity); recording
after a handshake goes through the reactor's thread pool.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from ..errors import FileshareError
from .connect import FingerprintMismatch
from .fingerprints import BadFingerprint, Fingerprint, parse_fingerprint
from .identity import write_atomically

log = Logger()

#: The pin file's name inside a peer's state directory.
FILE_NAME = "tracker-pins"

_HEADER = (
    "# Tracker certificate fingerprints this peer trusts, one 'HOST:PORT FINGERPRINT' a line.\n"
    "# Written by fileshare on first contact; to accept a tracker's new key, start the peer\n"
    "# with --tracker-fingerprint NEW (it replaces the line) or delete the line.\n"
)


class PinFileError(FileshareError):
    """The pin file exists but cannot be read; the message names it."""

    code = "identity"


class TrackerPinChanged(FingerprintMismatch):
    """The tracker presented a key other than the one pinned on first use."""


def address_key(host: str, port: int) -> str:
    """How an address is written in the pin file: host names are case-blind, IPv6 goes in brackets."""
    host = host.strip().lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"


class PinStore:
    """The pins of one peer, loaded into memory at start-up."""

    def __init__(self, path: str | os.PathLike, pins: dict[str, Fingerprint] | None = None) -> None:
        self.path = Path(path)
        self._pins: dict[str, Fingerprint] = dict(pins or {})

    @classmethod
    def load(cls, path: str | os.PathLike) -> PinStore:
        """Read the pin file (blocking, at start-up); a missing file is an empty store."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path)
        except (OSError, UnicodeDecodeError) as e:
            raise PinFileError(f"cannot read the tracker pin file {path}: {e}") from None
        pins = {}
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            try:
                if len(fields) != 2:
                    raise BadFingerprint("expected 'HOST:PORT FINGERPRINT'")
                pins[fields[0].lower()] = parse_fingerprint(fields[1])
            except BadFingerprint as e:
                raise PinFileError(
                    f"{path} line {number} is damaged ({e}); fix or delete that line to pin the tracker anew"
                ) from None
        return cls(path, pins)

    def recorded(self, host: str, port: int) -> Fingerprint | None:
        return self._pins.get(address_key(host, port))

    def expected(self, host: str, port: int, given: Fingerprint | None = None) -> Fingerprint | None:
        """
        The fingerprint to demand of the tracker at ``host:port``.

        ``given`` (``--tracker-fingerprint``) wins; else the recorded pin; else
        ``None``: first contact, connect with ``first_use_creator`` and
        :meth:`remember` what was seen.
        """
        return given if given is not None else self.recorded(host, port)

    def refusal(self, host: str, port: int, mismatch: FingerprintMismatch) -> FingerprintMismatch:
        """
        Turn a handshake's mismatch into the error the user sees.

        When the refused pin came from this file, the message says how to
        accept the new key; when it came from ``--tracker-fingerprint``, the
        plain mismatch already says all there is.
        """
        address = address_key(host, port)
        if self._pins.get(address) != mismatch.expected:
            return mismatch
        return TrackerPinChanged(
            mismatch.expected,
            mismatch.seen,
            f"the tracker at {address} presented certificate fingerprint {mismatch.seen}, but this peer "
            f"pinned {mismatch.expected} on first contact (in {self.path}); refusing to connect. If the "
            f"tracker's key was changed on purpose, check the new fingerprint with its admin, then start "
            f"the peer with --tracker-fingerprint {mismatch.seen}",
        )

    def check(self, host: str, port: int, seen: Fingerprint) -> bool:
        """
        Whether ``seen`` must be recorded (first contact, or a new accepted pin).

        Raises :class:`TrackerPinChanged` when a pin is recorded and ``seen``
        differs -- the guard for a connection made without a pin by mistake.
        """
        recorded = self.recorded(host, port)
        if recorded is None:
            return True
        if recorded != seen:
            raise self.refusal(host, port, FingerprintMismatch(recorded, seen))
        return False

    def record(self, host: str, port: int, seen: Fingerprint) -> None:
        """Pin ``seen`` for ``host:port`` and rewrite the file atomically (blocking)."""
        pins = self._with(host, port, seen)
        write_atomically(self.path, _render(pins), 0o600)
        self._pinned(pins, host, port, seen)

    def remember(self, reactor: Any, host: str, port: int, seen: Fingerprint, accepted: bool = False) -> Deferred:
        """
        After a handshake: record ``seen`` if it is new, writing off the reactor thread.

        ``accepted`` says the connection demanded ``seen`` through
        ``--tracker-fingerprint``, so it replaces any recorded pin; otherwise a
        different recorded pin fails the Deferred with :class:`TrackerPinChanged`.
        """
        if self.recorded(host, port) == seen:
            return succeed(None)
        if not accepted:
            try:
                self.check(host, port, seen)
            except TrackerPinChanged as e:
                return fail(e)
        pins = self._with(host, port, seen)
        d = deferToThreadPool(reactor, reactor.getThreadPool(), write_atomically, self.path, _render(pins), 0o600)
        d.addCallback(lambda _: self._pinned(pins, host, port, seen))
        return d

    def _with(self, host: str, port: int, seen: Fingerprint) -> dict[str, Fingerprint]:
        return {**self._pins, address_key(host, port): seen}

    def _pinned(self, pins: dict[str, Fingerprint], host: str, port: int, seen: Fingerprint) -> None:
        self._pins = pins
        log.info(
            "Pinned tracker {address} to {fingerprint} in {path}",
            address=address_key(host, port),
            fingerprint=str(seen),
            path=str(self.path),
        )


def _render(pins: dict[str, Fingerprint]) -> bytes:
    lines = [_HEADER] + [f"{key} {value}\n" for key, value in sorted(pins.items())]
    return "".join(lines).encode("utf-8")
