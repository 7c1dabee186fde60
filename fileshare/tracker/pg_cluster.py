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
offline for the group within ``DEAD_AFTER + HEARTBEAT_INTERVAL`` seconds.
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
from ..tls import Fingerprint
from .cluster import ICluster
from .directory import OnlineHost
from .online import OnlineHosts
from .pg_relay import Listener, Relays, RemoteChannel, _notify, channel_of

log = Logger()

#: Seconds between two heartbeats of a tracker (``--heartbeat``).
HEARTBEAT_INTERVAL = 5.0
#: A tracker whose last heartbeat is older than this many seconds is dead; its hosts go offline (``--dead-after``).
DEAD_AFTER = 15.0
#: Where every tracker announces session changes.
SESSIONS_CHANNEL = "fileshare_sessions"
#: Heartbeats between two full reloads of the mirror of remote sessions (it heals anything missed).
RELOAD_EVERY = 12

_COLUMNS = 'name, tracker, session, endpoint, "where", transfer_address, fingerprint, ticket_key, since'


def schema_sql() -> str:
    return importlib.resources.files("fileshare.tracker.pg_schema").joinpath("100-cluster.sql").read_text()


@implementer(ICluster)
class PostgresCluster:
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
        self._names: dict[str, str] = {}  # tracker id -> name, for 'peers'
        self._unsent: set[str] = set()  # hosts whose files-changed notice failed (sent again at the next heartbeat)
        #: Called with no arguments after every change of ``remote`` (tests wait on it instead of sleeping).
        self.watchers: list[Any] = []

    def _changed(self) -> None:
        for watcher in list(self.watchers):
            watcher()

    def _remote_changed(self, name: str, online: bool) -> None:
        if self.directory is not None:
            self.directory.online_changed(name)

    def _set_remote(self, hosts: dict[str, OnlineHost]) -> None:
        """``remote`` becomes *hosts*, changed in place so the directory hears of each host that came or went."""
        for name in [n for n in self.remote if n not in hosts]:
            del self.remote[name]
        for name, host in hosts.items():
            self.remote[name] = host

    def files_changed(self, host: str) -> Deferred:
        """Tell the group that *host*'s files changed (its name only: payloads stay far under 8000 bytes).

        A notice that could not be sent is sent again at the next heartbeat.
        """

        def unsent(failure: Any) -> None:
            self._unsent.add(host)
            log.warn("could not tell the group that {name}'s files changed: {why}", name=host, why=failure.value)

        return self._pool.runInteraction(_notify, SESSIONS_CHANNEL, {"files": host, "tracker": self.id}).addErrback(
            unsent
        )

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
        return Deferred.fromCoroutine(self._start())

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

    # -- heartbeats

    async def _beat(self) -> None:
        try:
            hosts = list(self.directory.online.values()) if self.directory is not None else []
            rejoined, dead, dropped = await self._pool.runInteraction(self._beat_in_db, hosts)
            if rejoined:
                log.warn("tracker {name} was taken for dead by the group; rejoined it", name=self.name)
            if dead or dropped:
                gone = {tracker for tracker, _ in dead} | set(dropped)
                # At once here, without waiting for this tracker's own 'reload' to come back.
                self._set_remote({n: h for n, h in self.remote.items() if h.channel.tracker not in gone})
                self._changed()
            for tracker, name in dead:
                log.warn(
                    "tracker {name} missed its heartbeats for {bound} s: its hosts are offline ({count})",
                    name=name,
                    bound=self.dead_after,
                    count=dropped.count(tracker),
                )
            if self._listener is None and not self._stopping:
                await self._listen()
                self._beats = 0
                # Notifications sent while the LISTEN connection was down are lost: load the index again.
                if self.directory is not None:
                    await self.directory.reload_index()
            unsent, self._unsent = self._unsent, set()
            for host in sorted(unsent):
                self.files_changed(host)
            self._beats += 1
            if self._beats % RELOAD_EVERY == 1:
                await self._reload()
        except Exception as e:
            log.warn("cluster heartbeat failed: {why}", why=e)

    def _beat_in_db(self, cursor: Any, hosts: list[OnlineHost]) -> tuple[bool, list[Any], list[str]]:
        """Stamp this tracker's row, drop the dead; (rejoined, dead (id, name) pairs, trackers of dropped sessions)."""
        cursor.execute("UPDATE cluster_trackers SET heartbeat = now() WHERE id = %s", (self.id,))
        rejoined = cursor.rowcount == 0
        if rejoined:
            # The others thought this tracker dead and dropped its hosts: put them back where nobody took them.
            cursor.execute("INSERT INTO cluster_trackers (id, name) VALUES (%s, %s)", (self.id, self.name))
            for host in hosts:
                self._insert(cursor, host, conflict="DO NOTHING")
            _notify(cursor, SESSIONS_CHANNEL, {"reload": self.id})
        cursor.execute(
            "DELETE FROM cluster_trackers WHERE id <> %s AND heartbeat < now() - make_interval(secs => %s) "
            "RETURNING id, name",
            (self.id, self.dead_after),
        )
        dead = cursor.fetchall()
        cursor.execute(
            "DELETE FROM cluster_sessions WHERE tracker NOT IN (SELECT id FROM cluster_trackers) RETURNING tracker"
        )
        dropped = [tracker for (tracker,) in cursor.fetchall()]
        # Replies whose asker died before reading them.
        cursor.execute("DELETE FROM cluster_replies WHERE made < now() - interval '1 minute'")
        if dead or dropped:
            _notify(cursor, SESSIONS_CHANNEL, {"reload": self.id})
        return rejoined, dead, dropped

    # -- the mirror of remote sessions

    async def _reload(self) -> None:
        def load(cursor: Any) -> tuple[list[Any], list[Any]]:
            cursor.execute(f"SELECT {_COLUMNS} FROM cluster_sessions WHERE tracker <> %s", (self.id,))
            rows = cursor.fetchall()
            cursor.execute("SELECT id, name FROM cluster_trackers")
            return rows, cursor.fetchall()

        rows, trackers = await self._pool.runInteraction(load)
        self._names = dict(trackers)
        self._set_remote({row[0]: self._host(_row_dict(row)) for row in rows})
        self._changed()

    def _host(self, row: dict[str, Any]) -> OnlineHost:
        tracker = row["tracker"]
        return OnlineHost(
            row["name"],
            RemoteChannel(self.relays, row["name"], tracker),
            row["endpoint"],
            since=row["since"],
            where=row["where"],
            session=row["session"],
            ticket_key=bytes.fromhex(row["ticket_key"]),
            fingerprint=Fingerprint.from_wire(row["fingerprint"]) if row["fingerprint"] else None,
            transfer_address=json.loads(row["transfer_address"]),
            tracker=self._names.get(tracker, tracker),
        )

    def _deliver(self, channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
            if channel == SESSIONS_CHANNEL:
                self._session_changed(message)
            else:
                self.relays.received(message)
        except Exception:
            log.failure("bad cluster notification on {channel}: {payload!r}", channel=channel, payload=payload[:200])

    def _session_changed(self, message: dict[str, Any]) -> None:
        self._update(message)
        self._changed()

    def _update(self, message: dict[str, Any]) -> None:
        if "up" in message:
            row = message["up"]
            if row["tracker"] == self.id:
                self.remote.pop(row["name"], None)
            else:
                self._names[row["tracker"]] = row["tracker_name"]
                self.remote[row["name"]] = self._host(row)
        elif "down" in message:
            host = self.remote.get(message["down"])
            if host is not None and host.session == message["session"]:
                del self.remote[message["down"]]
        elif "files" in message:
            if message["tracker"] != self.id and self.directory is not None:
                read = self.directory.files_changed(message["files"])
                if read is not None:  # its watchers hear when the index has the change
                    read.addCallback(lambda _: self._changed())
        elif "reload" in message:
            Deferred.fromCoroutine(self._reload()).addErrback(lambda f: log.failure("reloading sessions", f))

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


_NAMES = [c.strip().strip('"') for c in _COLUMNS.split(",")]


def _row_dict(row: Any) -> dict[str, Any]:
    d = dict(zip(_NAMES, row, strict=True))
    d["ticket_key"] = bytes(d["ticket_key"]).hex()
    return d
