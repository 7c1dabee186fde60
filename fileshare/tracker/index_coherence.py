"""
Keeping a tracker's file index in memory coherent with the store and with the other trackers of its group.

:class:`IndexCoherence` is a part of :class:`~fileshare.tracker.directory.Directory`
(a mixin: it uses the directory's ``store``, ``index``, ``online``, ``cluster``,
``tokens`` and the bookkeeping attributes made in ``Directory.__init__``).  It
loads the index at start, re-reads one host's files when another tracker
says they changed, and reloads the whole index when notices may have been lost.
"""

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger

from .index import Index

log = Logger()


class IndexCoherence:
    """The directory's index: loaded once, then kept current with this tracker's and the group's changes."""

    def load(self) -> Deferred:
        """Load the index from the store, once (again after a failure); index reads and writes wait for it."""
        if self._loaded:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiting.append(d)
        if len(self._waiting) == 1:
            Deferred.fromCoroutine(self._load()).addBoth(self._tell_waiting)
        return d

    async def _load(self) -> None:
        holdings = await self.store.holdings()
        self.index = Index.of(holdings, self.online.keys() | self.cluster.remote.keys())
        self._loaded = True
        try:
            elsewhere = await self.cluster.sessions_elsewhere()
        except Exception as e:
            log.warn("session tokens left open at start: cannot read the group's sessions ({why})", why=e)
            return
        await self.tokens.started(elsewhere)

    # -- keeping the index coherent with the other trackers of a group

    def online_changed(self, name: str, online: bool = False) -> None:
        """*name* came or went here or on another tracker: online in the index if online anywhere in the group."""
        self.index.set_online(name, name in self.online or name in self.cluster.remote)

    def files_changed(self, name: str) -> Deferred | None:
        """Another tracker stored a change of *name*'s files: re-read them from the store into the index.

        One read per host at a time; a notice during a read asks for one
        more, so the last read starts after the last change.  Answers the
        read's Deferred, or None if the running one takes the notice.
        """
        if name in self._rereading:
            self._rereading[name] = True
            return None
        self._rereading[name] = False
        return Deferred.fromCoroutine(self._reread(name)).addErrback(
            lambda f: log.warn("could not re-read the files of {name}: {why}", name=name, why=f.value)
        )

    async def _reread(self, name: str) -> None:
        try:
            if not self._loaded:
                await self.load()
            while True:
                records = await self.store.host_files(name)
                self._indexed(name, self.index.replace(name, records))
                if not self._rereading[name]:
                    return
                self._rereading[name] = False
        finally:
            del self._rereading[name]
            for d in self._reread_waiters.pop(name, []):
                d.callback(None)

    async def _reread_done(self) -> None:
        """Wait for the re-reads running now: a file another tracker just stored may be on its way to the index."""
        waits = []
        for name in self._rereading:
            d: Deferred = Deferred()
            self._reread_waiters.setdefault(name, []).append(d)
            waits.append(d)
        await DeferredList(waits)

    async def reload_index(self) -> None:
        """Load the whole index again (notifications may have been missed); hosts changed meanwhile are re-read."""
        if not self._loaded or self._touched is not None:
            return
        self._touched = set()
        try:
            holdings = await self.store.holdings()
            self.index = Index.of(holdings, self.online.keys() | self.cluster.remote.keys())
        finally:
            touched, self._touched = self._touched, None
        for name in touched:
            self.files_changed(name)

    def _indexed(self, name: str, count: int) -> None:
        if name in self.online:
            self.online[name].files = count
        if self._touched is not None:
            self._touched.add(name)

    async def _stored(self, name: str, count: int) -> None:
        """This tracker stored and indexed a change of *name*'s files: the group hears of it before the host does."""
        self._indexed(name, count)
        await self.cluster.files_changed(name)

    def _tell_waiting(self, result: Any) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(result)  # a Failure fails each of them
