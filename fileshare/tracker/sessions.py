"""
Session tokens: a reconnecting peer logs in without the password check.

A password check costs tens of milliseconds of scrypt on purpose, so a
tracker checks about 50 a second: 10,000 peers reconnecting after a tracker
restart would wait minutes.  Each login reply carries a fresh random
``session`` token; a login that presents the account's token while it is
valid skips the password check.  The store keeps only the token's SHA-256
(a 128-bit random secret needs no slow hash), so the database gives nothing
away and the token outlives a tracker restart.

A token is valid while its session is online and for ``lifetime`` seconds
after its connection drops; a tracker that starts gives every token it finds
open (left by a stop or a crash) the same ``lifetime`` from its start --
except, in a group of trackers, the tokens of sessions online on another live
tracker, which have not ended (their tracker, or the sweep of dead trackers,
starts their clock when they end).  It is
revoked by ``logout``, a kick, a ban and a password change; a new login
replaces it (one token per account).
"""

import hashlib
import hmac
import secrets
from collections.abc import Collection
from typing import Any

import attrs
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import Interface, implementer

log = Logger()

#: Seconds a session token stays valid after its connection drops (``--session-lifetime``).
SESSION_LIFETIME = 600.0


@attrs.frozen
class SessionRecord:
    """An account's token as stored: its SHA-256 (hex) and when it expires (None: while online)."""

    token_hash: str
    expires: float | None


class ISessionStore(Interface):
    """Where tokens' hashes live; every method returns an awaitable."""

    def session(name: str) -> Any:
        """The :class:`SessionRecord` of *name*, or None."""

    def save_session(name: str, token_hash: str) -> Any:
        """Make *token_hash* *name*'s token, valid while online (it replaces any other)."""

    def expire_session(name: str, token_hash: str, expires: float | None) -> Any:
        """Give *name*'s token an expiry time (None: none), if it is still *token_hash* (a newer login's is left alone)."""

    def revoke_session(name: str) -> Any:
        """Forget *name*'s token."""

    def expire_open_sessions(expires: float, keep: Collection[str] = ()) -> Any:
        """Give every token still open (its tracker stopped under it) the expiry time *expires*.

        Except the tokens of the accounts in *keep* (online on another tracker of the group).
        """


@implementer(ISessionStore)
class MemorySessionStore:
    """Tokens in a dictionary: for stores that keep none, where tokens last until the tracker stops."""

    def __init__(self) -> None:
        self._records: dict[str, SessionRecord] = {}

    async def session(self, name: str) -> SessionRecord | None:
        return self._records.get(name)

    async def save_session(self, name: str, token_hash: str) -> None:
        self._records[name] = SessionRecord(token_hash, None)

    async def expire_session(self, name: str, token_hash: str, expires: float | None) -> None:
        record = self._records.get(name)
        if record is not None and record.token_hash == token_hash:
            self._records[name] = SessionRecord(token_hash, expires)

    async def revoke_session(self, name: str) -> None:
        self._records.pop(name, None)

    async def expire_open_sessions(self, expires: float, keep: Collection[str] = ()) -> None:
        for name, record in self._records.items():
            if record.expires is None and name not in keep:
                self._records[name] = SessionRecord(record.token_hash, expires)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SessionTokens:
    """Issue, check and end tokens in *store* on *clock*'s time."""

    def __init__(self, store: Any, clock: IReactorTime, lifetime: float = SESSION_LIFETIME) -> None:
        self.store = store if ISessionStore.implementedBy(type(store)) else MemorySessionStore()
        self.clock = clock
        self.lifetime = lifetime

    def new(self) -> str:
        """A fresh token (128 random bits), to be :meth:`save`-d for the login that gets it."""
        return secrets.token_hex(16)

    def save(self, name: str, token: str) -> Deferred:
        return _logged(maybeDeferred(self.store.save_session, name, token_hash(token)), "saving", name)

    async def valid(self, name: str, token: str) -> bool:
        """Whether *token* is *name*'s and has not expired."""
        if not isinstance(token, str) or not token:
            return False
        record = await self.store.session(name)
        if record is None or not hmac.compare_digest(record.token_hash, token_hash(token)):
            return False
        return record.expires is None or self.clock.seconds() < record.expires

    def dropped(self, name: str, token: str) -> Deferred:
        """*name*'s connection dropped: its token lives ``lifetime`` seconds more."""
        expires = self.clock.seconds() + self.lifetime
        return _logged(maybeDeferred(self.store.expire_session, name, token_hash(token), expires), "expiring", name)

    def reopened(self, name: str, token: str) -> Deferred:
        """*name*'s session goes on after all (its tracker was wrongly taken for dead): no expiry again,
        if the token is still *token* (a newer login's is left alone)."""
        return _logged(maybeDeferred(self.store.expire_session, name, token_hash(token), None), "reopening", name)

    def revoke(self, name: str) -> Deferred:
        return _logged(maybeDeferred(self.store.revoke_session, name), "revoking", name)

    def started(self, keep: Collection[str] = ()) -> Deferred:
        """The tracker starts: tokens left open by its last run expire ``lifetime`` seconds from now.

        Not those of *keep*: accounts online on another tracker of the group, whose sessions go on.
        """
        expires = self.clock.seconds() + self.lifetime
        args = (expires, keep) if keep else (expires,)  # a tracker alone: the one statement it always ran
        return _logged(maybeDeferred(self.store.expire_open_sessions, *args), "expiring", "every open session")


def _logged(d: Deferred, doing: str, whose: str) -> Deferred:
    """A store write whose failure is logged, not raised: a token that does not work costs a password check."""
    d.addErrback(lambda f: log.failure("{doing} the session token of {whose} failed", f, doing=doing, whose=whose))
    return d
