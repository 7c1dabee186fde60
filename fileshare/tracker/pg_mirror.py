"""
A tracker's mirror of the sessions on the other trackers of its group (``remote``).

:class:`SessionMirror` is a part of :class:`~fileshare.tracker.pg_cluster.PostgresCluster`
(a mixin: it uses the cluster's pool, relays, directory and watchers).  The
mirror is read from ``cluster_sessions`` at start and at every reload, and
kept current in between by the notices on the group's channel: ``up``,
``down``, ``files`` and ``reload``.
"""

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..tls import Fingerprint
from .online import OnlineHost
from .pg_relay import SESSIONS_CHANNEL, RemoteChannel

log = Logger()

_COLUMNS = 'name, tracker, session, endpoint, "where", transfer_address, fingerprint, ticket_key, since'


class SessionMirror:
    """``remote``: the hosts online on other trackers, as :class:`OnlineHost` objects whose channel relays."""

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
                read = self.directory.files_changed(message["files"], message.get("version"))
                if read is not None:  # its watchers hear when the index has the change
                    read.addCallback(lambda _: self._changed())
        elif "reload" in message:
            Deferred.fromCoroutine(self._reload()).addErrback(lambda f: log.failure("reloading sessions", f))


_NAMES = [c.strip().strip('"') for c in _COLUMNS.split(",")]


def _row_dict(row: Any) -> dict[str, Any]:
    d = dict(zip(_NAMES, row, strict=True))
    d["ticket_key"] = bytes(d["ticket_key"]).hex()
    return d
