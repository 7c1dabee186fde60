"""
Messages between the trackers of a group, by PostgreSQL ``NOTIFY``.

Each tracker listens on its own channel ``fileshare_<id>`` (and on the
group's sessions channel) through one dedicated connection whose socket the
reactor watches (:class:`Listener`).  Three messages travel there:

- ``end``: another tracker took over a session (or the operator there kicked
  or banned the host): end it here (:func:`~fileshare.tracker.cluster.end_local`);
- ``call``: ask a host connected here for ``ping`` or ``list`` and answer on
  the asker's channel;
- ``reply``: the answer to a ``call`` this tracker relayed; a reply over
  :data:`MAX_PAYLOAD` bytes is stored in ``cluster_replies`` and only its id
  is notified (PostgreSQL refuses payloads of 8000 bytes and more).
"""

import json
import secrets
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger

from ..errors import FileshareError, Unavailable
from .cluster import end_local

log = Logger()

#: Where every tracker announces session changes (and file notices): the group's channel.
SESSIONS_CHANNEL = "fileshare_sessions"
#: A NOTIFY payload must stay under 8000 bytes; longer replies go through ``cluster_replies``.
MAX_PAYLOAD = 7000


def channel_of(tracker: str) -> str:
    """The NOTIFY channel of the tracker with id *tracker*."""
    return f"fileshare_{tracker}"


def _notify(cursor: Any, channel: str, message: dict[str, Any]) -> None:
    cursor.execute("SELECT pg_notify(%s, %s)", (channel, json.dumps(message)))


class RemoteChannel:
    """A host's connection on another tracker, reached through that tracker (a HostChannel)."""

    def __init__(self, relays: "Relays", name: str, tracker: str) -> None:
        self.relays = relays
        self.name = name
        self.tracker = tracker

    def call(self, op: str, timeout: float | None = None, **fields: Any) -> Deferred:
        return self.relays.relay(self.tracker, self.name, op, timeout)

    def disconnect(self) -> None:
        self.relays.send(self.tracker, {"end": self.name, "code": "reconnected", "reason": "", "session": ""})

    def end_session(self, code: str, reason: str) -> None:
        self.relays.send(self.tracker, {"end": self.name, "code": code, "reason": reason, "session": ""})


class Listener:
    """The LISTEN connection as a reactor reader (IReadDescriptor): notifications are drained when readable."""

    def __init__(self, conn: Any, deliver: Any, lost: Any) -> None:
        self.conn = conn
        self._fd = conn.fileno()  # kept: psycopg raises for a lost connection, and the reactor still asks
        self._deliver = deliver
        self._lost = lost

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "fileshare-cluster"

    def doRead(self) -> Any:
        try:
            while True:
                batch = list(self.conn.notifies(timeout=0))
                if not batch:
                    return None
                for n in batch:
                    self._deliver(n.channel, n.payload)
        except Exception as e:  # psycopg.OperationalError and kin: the connection is gone
            self._lost(e)
            return None

    def connectionLost(self, reason: Any) -> None:
        self._lost(reason)


class Relays:
    """This tracker's side of the messages: sending, relaying with a timeout, answering.

    *cluster* gives ``directory`` (whose hosts are asked and ended) and
    ``_pool`` (the adbapi pool NOTIFYs are sent through).
    """

    def __init__(self, cluster: Any, reactor: Any, tracker_id: str) -> None:
        self.cluster = cluster
        self._reactor = reactor
        self.tracker_id = tracker_id
        self._waiting: dict[str, Deferred] = {}

    @property
    def _pool(self) -> Any:
        return self.cluster._pool

    def cancel_all(self) -> None:
        """Fail every relayed request still waiting (the tracker leaves the group)."""
        for d in list(self._waiting.values()):
            d.cancel()

    def send(self, tracker: str, message: dict[str, Any]) -> Deferred:
        d = self._pool.runInteraction(_notify, channel_of(tracker), message)
        d.addErrback(lambda f: log.warn("could not reach tracker {tracker}: {why}", tracker=tracker, why=f.value))
        return d

    def relay(self, tracker: str, name: str, op: str, timeout: float | None) -> Deferred:
        """Ask the host *name* on *tracker* for *op*; fails with Unavailable if no reply comes within *timeout*."""
        request = secrets.token_hex(8)
        d = Deferred(lambda _: self._waiting.pop(request, None))
        self._waiting[request] = d
        if timeout is not None:
            d.addTimeout(timeout, self._reactor)
        d.addErrback(_timeout_to_unavailable, name, timeout)
        message = {"call": request, "host": name, "op": op, "timeout": timeout, "reply_to": self.tracker_id}
        self._pool.runInteraction(_notify, channel_of(tracker), message).addErrback(
            lambda f: d.called or d.errback(Unavailable(f"cannot reach the tracker of {name}: {f.value}"))
        )
        return d

    def received(self, message: dict[str, Any]) -> None:
        if "end" in message:
            if self.cluster.directory is not None:
                end_local(
                    self.cluster.directory, message["end"], message["code"], message["reason"], message["session"]
                )
        elif "call" in message:
            Deferred.fromCoroutine(self._answer(message)).addErrback(
                lambda f: log.failure("answering a relayed request", f)
            )
        elif "reply" in message:
            Deferred.fromCoroutine(self._replied(message)).addErrback(
                lambda f: log.failure("reading a relayed reply", f)
            )

    async def _answer(self, message: dict[str, Any]) -> None:
        host = self.cluster.directory.online.get(message["host"]) if self.cluster.directory is not None else None
        reply: dict[str, Any] = {"reply": message["call"]}
        if host is None:
            reply["error"] = f"host {message['host']!r} is offline"
        else:
            try:
                reply["result"] = await host.channel.call(message["op"], timeout=message["timeout"])
            except FileshareError as e:
                reply["error"] = e.message
            except Exception as e:
                log.warn("relayed {op} to {name} failed: {why}", op=message["op"], name=message["host"], why=e)
                reply["error"] = "the host's tracker could not ask it"

        def answer(cursor: Any) -> None:
            text = json.dumps(reply)
            if len(text.encode()) > MAX_PAYLOAD:
                cursor.execute("INSERT INTO cluster_replies (id, body) VALUES (%s, %s)", (message["call"], text))
                text = json.dumps({"reply": message["call"], "stored": True})
            cursor.execute("SELECT pg_notify(%s, %s)", (channel_of(message["reply_to"]), text))

        try:
            await self._pool.runInteraction(answer)
        except Exception as e:
            log.warn("could not answer a relayed {op}: {why}", op=message["op"], why=e)

    async def _replied(self, message: dict[str, Any]) -> None:
        if message.get("stored"):
            rows = await self._pool.runQuery(
                "DELETE FROM cluster_replies WHERE id = %s RETURNING body", (message["reply"],)
            )
            if not rows:
                return
            message = json.loads(rows[0][0])
        d = self._waiting.pop(message["reply"], None)
        if d is None or d.called:
            return
        if "error" in message:
            d.errback(Unavailable(message["error"]))
        else:
            d.callback(message["result"])


def _timeout_to_unavailable(failure: Any, name: str, timeout: float | None) -> Any:
    if failure.check(TimeoutError, CancelledError):
        raise Unavailable(f"no answer from {name} through its tracker within {timeout} s")
    return failure
