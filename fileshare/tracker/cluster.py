"""
Who is online across a group of trackers: the small interface the directory
calls, and the single-tracker implementation.

The directory keeps its own connected hosts in ``Directory.online``; a
cluster adds ``remote``, the hosts online on *other* trackers of the group,
as :class:`~fileshare.tracker.directory.OnlineHost` objects whose channel
relays ``call`` and ``end_session`` to the tracker holding the connection.
So ``sources``, tickets, ``ping``, ``discover``, ``kick`` and ``ban`` work
the same for a local and a remote host.  :class:`LocalCluster` (one tracker,
the default) has no remote hosts and no rules to add; the PostgreSQL
implementation is :mod:`fileshare.tracker.pg_cluster`.
"""

from typing import Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import Attribute, Interface, implementer


class ICluster(Interface):
    """The group a tracker belongs to, as the directory sees it."""

    name = Attribute("This tracker's name in the group ('' for a tracker alone), shown by the admin 'peers'.")
    remote = Attribute("dict name -> OnlineHost: hosts online on other trackers of the group (read-only).")

    def bind(directory: Any) -> None:
        """Remember *directory*, whose sessions other trackers may end or call through this cluster."""

    def claim(host: Any, replace: bool, session: str | None) -> Any:
        """Record *host*'s new session for the whole group; awaitable.

        Enforces one session per account across trackers: fails with
        :class:`~fileshare.errors.OnlineElsewhere` if the account is online on
        another tracker, unless *replace* or *session* (the secret of that
        other session) says to take it over; then that tracker is told to end
        it (``replaced``) or drop it quietly (a reconnect).
        """

    def release(host: Any) -> None:
        """*host*'s session ended here; forget it for the group (no-op if another tracker took it over)."""

    def files_changed(host: str, version: int | None = None) -> Deferred:
        """This tracker stored a change of *host*'s files (now at *version*, if the store keeps versions).

        The other trackers re-read them into their index, unless they hold that version already.

        Fires once the notice is sent (or could not be: it never fails).
        """

    def sessions_elsewhere() -> Any:
        """Awaitable set of the accounts online on another live tracker of the group (once joined).

        A starting tracker leaves their session tokens open: those sessions have not ended.
        """

    def start() -> Deferred:
        """Join the group; fires when the cluster is ready."""

    def stop() -> Deferred:
        """Leave the group cleanly: this tracker's hosts go offline for the others at once."""


@implementer(ICluster)
class LocalCluster:
    """One tracker alone: nobody else is online and nothing is shared."""

    name = ""

    def __init__(self) -> None:
        self.remote: dict[str, Any] = {}

    def bind(self, directory: Any) -> None:
        pass

    async def claim(self, host: Any, replace: bool, session: str | None) -> None:
        return None

    def release(self, host: Any) -> None:
        pass

    def files_changed(self, host: str, version: int | None = None) -> Deferred:
        return succeed(None)

    def sessions_elsewhere(self) -> Deferred:
        return succeed(set())

    def start(self) -> Deferred:
        return succeed(None)

    def stop(self) -> Deferred:
        return succeed(None)


def end_local(directory: Any, name: str, code: str, reason: str, session: str) -> bool:
    """Another tracker took over *name*: end its session here if it is still the one it took over.

    ``reconnected`` (the peer came back elsewhere with its session secret)
    drops the old connection quietly, as the directory does for a reconnect
    on one tracker; anything else tells the host why (``ended``).  True if a
    session was ended.
    """
    host = directory.online.get(name)
    if host is None or (session and host.session != session):
        return False
    if code == "reconnected":
        del directory.online[name]
        host.channel.disconnect()
    else:
        directory._end(host, code, reason)
    return True
