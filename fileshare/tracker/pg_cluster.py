"""
Several trackers on one PostgreSQL database acting as one group.

Shared in the database (``pg_schema/100-cluster.sql``): ``cluster_trackers``,
one row per running tracker with its heartbeat, and ``cluster_sessions``, one
row per online account: the tracker holding its connection, its session
secret, transfer address, fingerprint and login ticket key (so any tracker
can answer ``sources`` with a ticket the source accepts).  Each tracker keeps
a mirror of the other trackers' sessions in memory (``remote``), kept current
by notifications on :data:`SESSIONS_CHANNEL`, so a lookup costs no query.

Messages between trackers (:mod:`.pg_relay`) travel by ``NOTIFY`` on the
channel of the receiving tracker, read on a dedicated connection whose socket
is registered with the reactor, so nothing blocks; everything else goes
through an ``adbapi`` pool (threads), like the SQLite store.

Every :data:`HEARTBEAT_INTERVAL` seconds a tracker stamps its row with the
database's clock and removes the sessions of trackers whose stamp is older
than :data:`DEAD_AFTER`: a tracker that dies without leaving takes its hosts
offline for the group within ``DEAD_AFTER + HEARTBEAT_INTERVAL`` seconds
(:mod:`.pg_heartbeats`).  The mirror of the other trackers' sessions is
:mod:`.pg_mirror`; this module holds joining, leaving and claiming sessions.
"""

import hmac
import importlib.resources
import json
import os
import secrets
import socket
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

from ..errors import OnlineElsewhere, Unavailable
from .cluster import ICluster
from .directory import OnlineHost
from .online import OnlineHosts
from .pg_heartbeats import RELOAD_EVERY as RELOAD_EVERY  # the tests' and tools' name for it
from .pg_heartbeats import Heartbeats
from .pg_mirror import _COLUMNS, _NAMES, SessionMirror
from .pg_relay import SESSIONS_CHANNEL, Listener, Relays, _notify, channel_of

log = Logger()

#: Seconds between two heartbeats of a tracker (``--heartbeat``).
HEARTBEAT_INTERVAL = 5.0
#: A tracker whose last heartbeat is older than this many seconds is dead; its hosts go offline (``--dead-after``).
DEAD_AFTER = 15.0


def schema_sql() -> str:
    return importlib.resources.files("fileshare.tracker.pg_schema").joinpath("100-cluster.sql").read_text()


@implementer(ICluster)
class PostgresCluster(Heartbeats, SessionMirror):
    """This tracker's membership of the group on the database at *conninfo* (a libpq connection string or URL)."""

    def __init__(
        self,
        conninfo: str,
        reactor: Any,
        name: str | None = None,
        heartbeat: float = HEARTBEAT_INTERVAL,
        dead_after: float = DEAD_AFTER,
    ) -> None:
        self.conninfo = conninfo
        self._reactor = reactor
        self.id = secrets.token_hex(6)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.channel = channel_of(self.id)
        self.heartbeat_interval = heartbeat
        self.dead_after = dead_after
        #: Its changes reach the directory, whose index counts a host online anywhere in the group.
        self.remote: dict[str, OnlineHost] = OnlineHosts(self._remote_changed)
        self.directory: Any = None
        self._pool = adbapi.ConnectionPool(
            "psycopg", conninfo, cp_min=1, cp_max=3, cp_noisy=False, cp_reconnect=True, cp_reactor=reactor
        )
        self._listener: Listener | None = None
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = reactor
        self._beats = 0
        self.relays = Relays(self, reactor, self.id)
        self._stopping = False
        self._joined = False
        self._ready = False  # joined, and the others' sessions read
        self._join_waiters: list[Deferred] = []  # sessions_elsewhere() calls waiting for the end of start()
        self._names: dict[str, str] = {}  # tracker id -> name, for 'peers'
        self._unsent: set[str] = set()  # hosts whose files-changed notice failed (sent again at the next heartbeat)
        #: Called with no arguments after every change of ``remote`` (tests wait on it instead of sleeping).
        self.watchers: list[Any] = []

    def files_changed(self, host: str, version: int | None = None) -> Deferred:
        """Tell the group that *host*'s files changed, and to which *version* (payloads stay far under 8000 bytes).

        A notice that could not be sent is sent again at the next heartbeat
        (without its version: the others read the host again).
        """

        def unsent(failure: Any) -> None:
            self._unsent.add(host)
            log.warn("could not tell the group that {name}'s files changed: {why}", name=host, why=failure.value)

        message: dict[str, Any] = {"files": host, "tracker": self.id}
        if version is not None:
            message["version"] = version
        return self._pool.runInteraction(_notify, SESSIONS_CHANNEL, message).addErrback(unsent)

    def bind(self, directory: Any) -> None:
        self.directory = directory

    # -- joining and leaving

    async def _start(self) -> None:
        def join(cursor: Any) -> None:
            cursor.execute(schema_sql())
            cursor.execute("INSERT INTO cluster_trackers (id, name) VALUES (%s, %s)", (self.id, self.name))

        await self._pool.runInteraction(join)
        self._joined = True
        await self._listen()
        await self._reload()
        self._ready = True
        self._tell_joined(None)
        self._heartbeat.start(self.heartbeat_interval, now=False).addErrback(
            lambda f: log.failure("cluster heartbeat stopped", f)
        )
        log.info(
            "tracker {name} joined the group (id {id}; heartbeat every {interval} s, dead after {bound} s)",
            name=self.name,
            id=self.id,
            interval=self.heartbeat_interval,
            bound=self.dead_after,
        )

    def start(self) -> Deferred:
        return Deferred.fromCoroutine(self._start()).addErrback(self._tell_joined)

    def _tell_joined(self, result: Any) -> Any:
        waiting, self._join_waiters = self._join_waiters, []
        for d in waiting:
            d.callback(result)  # a Failure fails each of them
        return result

    async def sessions_elsewhere(self) -> set[str]:
        """Accounts online on another tracker of the group, once this one has joined and read the sessions.

        Not those whose tracker has this tracker's name: that was this
        tracker before a restart, and those sessions have ended.
        """
        if not self._ready:
            d: Deferred = Deferred()
            self._join_waiters.append(d)
            await d
        return {name for name, host in self.remote.items() if host.tracker != self.name}

    async def _listen(self) -> None:
        import psycopg

        def connect() -> Any:
            conn = psycopg.connect(self.conninfo, autocommit=True)
            conn.execute(f"LISTEN {SESSIONS_CHANNEL}")
            conn.execute(f"LISTEN {self.channel}")
            return conn

        conn = await deferToThreadPool(self._reactor, self._pool.threadpool, connect)
        self._listener = Listener(conn, self._deliver, self._listener_lost)
        self._reactor.addReader(self._listener)
        self._listener.doRead()  # what arrived while LISTEN ran

    def _listener_lost(self, why: Any) -> None:
        if self._listener is None:
            return
        self._remove_reader(self._listener)
        self._listener = None
        if not self._stopping:
            log.warn(
                "lost the LISTEN connection to the group's database ({why}); reopening at the next heartbeat", why=why
            )

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            self._remove_reader(listener)
            listener.conn.close()

    def _remove_reader(self, listener: Listener) -> None:
        try:
            self._reactor.removeReader(listener)
        except (OSError, KeyError):  # the socket is already gone
            pass

    def abandon(self) -> None:
        """Stop without leaving the group, as a killed process would (tests): the others must notice."""
        self._stopping = True
        if self._heartbeat.running:
            self._heartbeat.stop()
        self._close_listener()
        self._pool.close()

    async def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._heartbeat.running:
            self._heartbeat.stop()
        self._close_listener()

        def leave(cursor: Any) -> None:
            cursor.execute("DELETE FROM cluster_sessions WHERE tracker = %s", (self.id,))
            cursor.execute("DELETE FROM cluster_trackers WHERE id = %s", (self.id,))
            _notify(cursor, SESSIONS_CHANNEL, {"reload": self.id})

        try:
            await self._pool.runInteraction(leave)
        except Exception as e:
            log.warn(
                "could not leave the group cleanly ({why}); the others drop this tracker's hosts when its heartbeat ages",
                why=e,
            )
        self._pool.close()
        self.relays.cancel_all()

    def stop(self) -> Deferred:
        return Deferred.fromCoroutine(self._stop())

    # -- sessions

    def _insert(self, cursor: Any, host: OnlineHost, conflict: str) -> bool:
        fingerprint = str(host.fingerprint) if host.fingerprint is not None else None
        values = (
            host.name,
            self.id,
            host.session,
            host.endpoint,
            host.where,
            json.dumps(host.transfer_address),
            fingerprint,
            host.ticket_key,
            host.since,
        )
        cursor.execute(
            f"INSERT INTO cluster_sessions ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            f"ON CONFLICT (name) {conflict} RETURNING name",
            values,
        )
        done = cursor.fetchone() is not None
        if done:
            row = dict(zip(_NAMES, values, strict=True))
            row["ticket_key"] = host.ticket_key.hex()
            row["tracker_name"] = self.name
            _notify(cursor, SESSIONS_CHANNEL, {"up": row})
        return done

    async def claim(self, host: OnlineHost, replace: bool, session: str | None) -> None:
        if not self._joined:
            # Sessions before this tracker's row exists would be taken for a dead tracker's.
            raise Unavailable("the tracker is still joining its group; try again in a moment")
        await self._claim(host, replace, session)

    def _claim(self, host: OnlineHost, replace: bool, session: str | None) -> Deferred:
        def take(cursor: Any) -> None:
            if self._insert(cursor, host, conflict="DO NOTHING"):
                return
            cursor.execute(
                'SELECT tracker, session, "where" FROM cluster_sessions WHERE name = %s FOR UPDATE', (host.name,)
            )
            row = cursor.fetchone()
            if row is None:  # left between the two statements
                self._insert(cursor, host, conflict="DO NOTHING")
                return
            tracker, old_session, where = row
            reconnect = session is not None and hmac.compare_digest(session, old_session)
            if tracker != self.id and not (replace or reconnect):
                raise OnlineElsewhere(
                    f"{host.name} is already logged in from {where}; use login --replace to take over"
                )
            cursor.execute("DELETE FROM cluster_sessions WHERE name = %s", (host.name,))
            self._insert(cursor, host, conflict="DO NOTHING")
            if tracker != self.id:
                code = "reconnected" if reconnect else "replaced"
                reason = f"{host.name} logged in from {host.where} with --replace"
                message = {"end": host.name, "code": code, "reason": reason, "session": old_session}
                _notify(cursor, channel_of(tracker), message)

        return self._pool.runInteraction(take)

    def release(self, host: OnlineHost) -> None:
        if self._stopping:
            return

        def forget(cursor: Any) -> None:
            cursor.execute(
                "DELETE FROM cluster_sessions WHERE name = %s AND tracker = %s AND session = %s RETURNING name",
                (host.name, self.id, host.session),
            )
            if cursor.fetchone() is not None:
                _notify(cursor, SESSIONS_CHANNEL, {"down": host.name, "session": host.session})

        self._pool.runInteraction(forget).addErrback(
            lambda f: log.warn("could not record that {name} went offline: {why}", name=host.name, why=f.value)
        )

    def tracker_name(self, tracker: str) -> str:
        return self._names.get(tracker, tracker)
