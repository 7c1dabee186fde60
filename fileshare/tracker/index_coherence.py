"""
Keeping a tracker's file index in memory coherent with the store and with the other trackers of its group.

:class:`IndexCoherence` is a part of :class:`~fileshare.tracker.directory.Directory`
(a mixin: it uses the directory's ``store``, ``index``, ``online``, ``cluster``,
``tokens`` and the bookkeeping attributes made in ``Directory.__init__``).  It
loads the index at start, re-reads one host's files when another tracker
says they changed, and reloads the whole index when notices may have been lost.

A store that keeps a version number per host's files (:class:`IFileVersions`:
PostgreSQL) bumps it in the transaction of each change.  The directory then
holds, for each host, the version its index reflects (``versions``); a
notice carries the version of the change, so a notice the index already
holds reads nothing, and a notice past a missed one re-reads the host.  Each
heartbeat of a group compares the versions in the store with those held
(:meth:`IndexCoherence.check_versions`, one query) and re-reads only the hosts
whose notices were lost, so no lost notice outlives a heartbeat.
"""

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.logger import Logger
from zope.interface import Interface

from .index import Index

log = Logger()


#: Store checks of a ``sources`` miss (:meth:`IndexCoherence.read_unheard_holders`) running at once, at most.
MAX_MISS_CHECKS = 8


class IFileVersions(Interface):
    """A store whose every change of a host's files bumps that host's version, in the same transaction.

    Each read answers the versions first, then the rows, so the rows are at
    least as new as the versions: a change between the two is read again
    later, never missed.
    """

    def file_version(host: str) -> Any:
        """Awaitable: *host*'s version now (0 if its files never changed)."""

    def file_versions() -> Any:
        """Awaitable dict host -> version, of every host whose files ever changed (one query)."""

    def versioned_host_files(host: str) -> Any:
        """Awaitable (version, the FileRecords of *host*)."""

    def versioned_holdings() -> Any:
        """Awaitable (dict host -> version, every Holding)."""


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
        holdings = await self._holdings()
        self.index = Index.of(holdings, self.online.keys() | self.cluster.remote.keys())
        self._loaded = True
        try:
            elsewhere = await self.cluster.sessions_elsewhere()
        except Exception as e:
            log.warn("session tokens left open at start: cannot read the group's sessions ({why})", why=e)
            return
        # Nor those of logins on this tracker while it joined the group: their sessions go on too.
        await self.tokens.started(elsewhere | self.online.keys())

    # -- keeping the index coherent with the other trackers of a group

    def online_changed(self, name: str, online: bool = False) -> None:
        """*name* came or went here or on another tracker: online in the index if online anywhere in the group."""
        self.index.set_online(name, name in self.online or name in self.cluster.remote)

    @property
    def versioned(self) -> bool:
        """Whether the store keeps versions of each host's files (:class:`IFileVersions`)."""
        return IFileVersions.providedBy(self.store)

    async def _holdings(self) -> list[Any]:
        """Every holding in the store, and with a versioned store the versions they are at."""
        if not self.versioned:
            return await self.store.holdings()
        versions, holdings = await self.store.versioned_holdings()
        self.versions = versions
        return holdings

    def files_changed(self, name: str, version: int | None = None) -> Deferred | None:
        """Another tracker stored a change of *name*'s files (*version*, if known): re-read them into the index.

        One read per host at a time; a notice during a read asks for one
        more, so the last read starts after the last change.  A notice of a
        version the index already holds reads nothing.  Answers the read's
        Deferred, or None if the running one takes the notice or none is needed.
        """
        if version is not None and name not in self._rereading and version <= self.versions.get(name, 0):
            return None
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
                if self.versioned:
                    version, records = await self.store.versioned_host_files(name)
                    self.versions[name] = version
                else:
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

    async def check_versions(self) -> int:
        """Re-read the hosts whose version in the store is ahead of the index's: their notices were missed.

        One query for the versions, then one per host found behind; answers
        how many were (after their reads).  Nothing without a versioned store.
        """
        if not (self._loaded and self.versioned) or self._touched is not None:
            return 0
        current = await self.store.file_versions()
        behind = sorted(name for name, version in current.items() if version > self.versions.get(name, 0))
        if behind:
            log.info(
                "re-reading the files of {count} hosts whose changes this tracker had not heard of ({names})",
                count=len(behind),
                names=" ".join(behind[:10]),
            )
            reads = [self.files_changed(name) for name in behind]
            await DeferredList([d for d in reads if d is not None])
        return len(behind)

    async def read_unheard_holders(self, fname: str, asking: str | None) -> bool:
        """A lookup found no online holder of *fname*: read the hosts the store says hold it, if any is online.

        In a group, another tracker's notice of the file may still be on its
        way (a busy database delivers notices late), and its host's peer may
        ask here at once.  Only with versions (PostgreSQL) and hosts online
        elsewhere: a tracker alone heard of every change itself.  One store
        query per miss; True if a holder was read again.
        """
        if not (self.versioned and self.cluster.remote):
            return False
        if self._miss_checks >= MAX_MISS_CHECKS:
            # A flood of lookups of names nobody has would queue store queries without end in front of
            # logins and writes; past this many at once a miss is answered as it is (the next heartbeat heals).
            return False
        online, remote = self.online, self.cluster.remote
        self._miss_checks += 1
        try:
            found = await self.store.holdings(fname)
        finally:
            self._miss_checks -= 1
        holders = sorted({h.host for h in found if h.host != asking and (h.host in online or h.host in remote)})
        if not holders:
            return False
        reads = [self.files_changed(name) for name in holders]
        await DeferredList([d for d in reads if d is not None] + [Deferred.fromCoroutine(self._reread_done())])
        return True

    async def reload_index(self) -> None:
        """Load the whole index again (notifications may have been missed); hosts changed meanwhile are re-read.

        With a versioned store only the hosts whose versions moved are read (:meth:`check_versions`).
        """
        if self.versioned:
            await self.check_versions()
            return
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
        if name in self._rereading:
            self._rereading[name] = True  # a read that started before this change would undo it: read once more
        if not self.versioned:
            await self.cluster.files_changed(name)
            return
        try:
            version = await self.store.file_version(name)
        except Exception as e:  # the change is stored: tell the group without its version (the others read the host)
            log.warn("could not read the version of {name}'s files: {why}", name=name, why=e)
            await self.cluster.files_changed(name)
            return
        self._wrote(name, version)
        await self.cluster.files_changed(name, version)

    def _wrote(self, name: str, version: int) -> None:
        """*name*'s files are at *version* in the store after this tracker's change, which its index holds.

        The index holds *version* if that change was the only one since the
        version it held; if another came between, it reads the host again.
        """
        held = self.versions.get(name, 0)
        if name in self._rereading or version <= held:
            return
        if version == held + 1:
            self.versions[name] = version
        else:
            self.files_changed(name)

    def _tell_waiting(self, result: Any) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(result)  # a Failure fails each of them
