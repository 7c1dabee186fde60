"""
The heartbeats of a tracker in a group, and the sweep of dead trackers.

:class:`Heartbeats` is a part of :class:`~fileshare.tracker.pg_cluster.PostgresCluster`
(a mixin: it uses the cluster's pool, listener, directory and mirror).  Every
heartbeat stamps this tracker's row with the database's clock, removes the
trackers whose stamp is older than ``dead_after`` and the sessions of trackers
that have no row (their tokens' lifetime starts then), reopens a lost LISTEN
connection, re-reads the hosts whose file notices were missed (their version
in the store is ahead of the index's), sends again the file notices that
could not be sent, and every :data:`RELOAD_EVERY` heartbeats
reads the other trackers' sessions again.
"""

from typing import Any

from twisted.internet.defer import DeferredList
from twisted.logger import Logger

from .online import OnlineHost
from .pg_relay import SESSIONS_CHANNEL, _notify

log = Logger()

#: Heartbeats between two full reloads of the mirror of remote sessions (it heals anything missed).
RELOAD_EVERY = 12


class Heartbeats:
    """A tracker's heartbeat in the database, and what it does for the group each time."""

    async def _beat(self) -> None:
        try:
            hosts = list(self.directory.online.values()) if self.directory is not None else []
            rejoined, dead, dropped = await self._pool.runInteraction(self._beat_in_db, hosts)
            if rejoined is not None:
                log.warn("tracker {name} was taken for dead by the group; rejoined it", name=self.name)
                if self.directory is not None:
                    # The sweep started the lifetime clock on its hosts' tokens, but their sessions went on:
                    # open again those nobody took meanwhile (and only if the token is still theirs).
                    await DeferredList(
                        [self.directory.tokens.reopened(h.name, h.session) for h in rejoined if h.session]
                    )
            if dropped and self.directory is not None:
                # Those sessions ended with their tracker: their tokens live ``lifetime`` more (from now, before
                # the group sees them offline), so the peers log in on another tracker without the password
                # check, but not forever.
                await DeferredList([self.directory.tokens.dropped(name, session) for _, name, session in dropped])
            if dead or dropped:
                gone = {tracker for tracker, _ in dead} | {tracker for tracker, _, _ in dropped}
                # At once here, without waiting for this tracker's own 'reload' to come back.
                self._set_remote({n: h for n, h in self.remote.items() if h.channel.tracker not in gone})
                self._changed()
            for tracker, name in dead:
                log.warn(
                    "tracker {name} missed its heartbeats for {bound} s: its hosts are offline ({count})",
                    name=name,
                    bound=self.dead_after,
                    count=sum(1 for t, _, _ in dropped if t == tracker),
                )
            if self._listener is None and not self._stopping:
                await self._listen()
                self._beats = 0
                # Notifications sent while the LISTEN connection was down are lost: load the index again.
                if self.directory is not None:
                    await self.directory.reload_index()
            # Notices lost on the way (not only with the LISTEN connection): re-read the hosts they were about.
            if self.directory is not None and await self.directory.check_versions():
                self._changed()
            unsent, self._unsent = self._unsent, set()
            for host in sorted(unsent):
                self.files_changed(host)
            self._beats += 1
            if self._beats % RELOAD_EVERY == 1:
                await self._reload()
        except Exception as e:
            log.warn("cluster heartbeat failed: {why}", why=e)

    def _beat_in_db(self, cursor: Any, hosts: list[OnlineHost]) -> tuple[list[OnlineHost] | None, list[Any], list[Any]]:
        """Stamp this tracker's row, drop the dead.

        Returns (the hosts put back if this tracker had been taken for dead, else None; the dead (id, name);
        the dropped sessions (tracker, name, session)).
        """
        cursor.execute("UPDATE cluster_trackers SET heartbeat = now() WHERE id = %s", (self.id,))
        rejoined: list[OnlineHost] | None = None
        if cursor.rowcount == 0:
            # The others thought this tracker dead and dropped its hosts: put them back where nobody took them.
            cursor.execute("INSERT INTO cluster_trackers (id, name) VALUES (%s, %s)", (self.id, self.name))
            rejoined = [host for host in hosts if self._insert(cursor, host, conflict="DO NOTHING")]
            _notify(cursor, SESSIONS_CHANNEL, {"reload": self.id})
        cursor.execute(
            "DELETE FROM cluster_trackers WHERE id <> %s AND heartbeat < now() - make_interval(secs => %s) "
            "RETURNING id, name",
            (self.id, self.dead_after),
        )
        dead = cursor.fetchall()
        cursor.execute(
            "DELETE FROM cluster_sessions WHERE tracker NOT IN (SELECT id FROM cluster_trackers) "
            "RETURNING tracker, name, session"
        )
        dropped = cursor.fetchall()
        # Replies whose asker died before reading them.
        cursor.execute("DELETE FROM cluster_replies WHERE made < now() - interval '1 minute'")
        if dead or dropped:
            _notify(cursor, SESSIONS_CHANNEL, {"reload": self.id})
        return rejoined, dead, dropped
