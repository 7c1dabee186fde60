"""
The requests a tracker answers from its file index: ``announce``, ``publish``, ``unpublish``, ``search``, ``sources`` and tickets.

:class:`IndexRequests` is a part of :class:`~fileshare.tracker.directory.Directory`
(a mixin: it uses the directory's ``store``, ``index``, ``online``, ``cluster``,
``clock`` and limits, and :class:`~fileshare.tracker.index_coherence.IndexCoherence`).
Writes go to the store, then to the index in memory; lookups are answered from memory.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from .. import tickets
from ..errors import NotFound, NotLoggedIn
from ..names import check_fname
from .glob import check_pattern
from .index import Holder
from .online import OnlineHost, SearchPage
from .store import Cursor, FileRecord, TooManyFiles

log = Logger()


class IndexRequests:
    """Storing a host's files and answering lookups of them."""

    async def announce(self, name: str, records: list[FileRecord], reset: bool) -> int:
        """Index *records* for *name* (all of its files if *reset*); over ``max_records``, nothing is stored."""
        if not self._loaded:
            await self.load()
        with self._writing():
            try:
                if reset:
                    await self.store.replace_files(name, records, self.max_records)
                else:
                    await self.store.add_files(name, records, self.max_records)
            except TooManyFiles as e:
                self._too_many(e, "announce")
                raise
            count = self.index.replace(name, records) if reset else self.index.add(name, records)
        await self._stored(name, count)
        return count

    async def publish(self, name: str, record: FileRecord) -> None:
        if not self._loaded:
            await self.load()
        with self._writing():
            try:
                await self.store.add_file(name, record, self.max_records)
            except TooManyFiles as e:
                self._too_many(e, "publish")
                raise
            fetched = any(h.host != name and h.root == record.root for h in self.index.holders(record.fname))
            count = self.index.add(name, [record])
        if fetched:
            self.stats.fetches_finished.add()
        await self._stored(name, count)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A change on its way to the store and then the index: a lookup that finds nothing waits for it.

        So a file whose publish reached this tracker before a ``sources`` is
        found by it, as when one database thread served both in turn.
        """
        done: Deferred = Deferred()
        self._writes.add(done)
        try:
            yield
        finally:
            self._writes.discard(done)
            done.callback(None)

    def _too_many(self, e: TooManyFiles, op: str) -> None:
        self._limits_log.warn(
            ("too-many-files", e.host),
            "refused {op} from {host}: it would hold {count} files in the index, over --max-records {limit}",
            op=op,
            host=e.host,
            count=e.count,
            limit=e.limit,
        )

    async def unpublish(self, name: str, fname: str) -> None:
        check_fname(fname)
        if not self._loaded:
            await self.load()
        with self._writing():
            if not await self.store.remove_file(name, fname):
                raise NotFound(f"{fname!r} is not published by {name}")
            self.index.remove(name, fname)
        await self._stored(name, self.index.count(name))

    async def search(self, pattern: str = "*", after: Cursor | None = None) -> SearchPage:
        """One page of the files whose names match the glob *pattern*, with how many holders are online.

        At most ``page_size`` summaries, sorted by fname then root, after the
        cursor *after*; the index is asked for one more to learn whether
        another page follows, so *next* is None exactly on the last page.
        Answered from memory, without a store call once the index is loaded.
        """
        check_pattern(pattern)
        if not self._loaded:
            await self.load()
        found = self.index.search(pattern, after, self.page_size + 1)
        if len(found) <= self.page_size:
            return SearchPage(found, None)
        last = found[self.page_size - 1]
        return SearchPage(found[: self.page_size], (last.fname, last.root))

    async def sources(self, fname: str, asking: str | None) -> list[tuple[Holder, OnlineHost]]:
        """Online hosts other than *asking* (here or on another tracker of the group) that hold *fname*, from the index in memory."""
        check_fname(fname)
        if not self._loaded:
            await self.load()
        found = self._sources(fname, asking)
        if not found and (self._rereading or self._writes):
            # A change stored just now, here or by another tracker, may be on its way
            # to the index: answer after the writes and re-reads running now.
            await DeferredList([*self._writes, Deferred.fromCoroutine(self._reread_done())])
            found = self._sources(fname, asking)
        if not found and await self.read_unheard_holders(fname, asking):
            found = self._sources(fname, asking)
        if found:
            self.stats.fetches_started.add()
        return found

    def _sources(self, fname: str, asking: str | None) -> list[tuple[Holder, OnlineHost]]:
        online, remote = self.online, self.cluster.remote
        found = []
        for h in self.index.holders(fname):
            host = online.get(h.host) or remote.get(h.host)
            if host is not None and h.host != asking:
                found.append((h, host))
        return found

    def ticket(self, asking: str, binding: str, root: str, source: OnlineHost) -> str:
        """A download ticket letting *asking* (bound to *binding*) get *root* from *source*.

        Only a host online now gets one, so a kicked or banned host gets no
        new tickets; the ones it holds lapse within ``tickets.LIFETIME``.
        """
        if asking not in self.online:
            raise NotLoggedIn(f"{asking} is not logged in")
        text = tickets.issue(source.ticket_key, asking, binding, root, source.name, self.clock.seconds())
        self.stats.tickets.add()
        return text

    def source_tickets(self, asking: str, binding: str, found: list[tuple[Holder, OnlineHost]]) -> list[str]:
        """:meth:`ticket` for each item of a ``sources`` answer (*found*), made at once (its hot path)."""
        if asking not in self.online:
            raise NotLoggedIn(f"{asking} is not logged in")
        wanted = [(source.ticket_key, h.root, source.name) for h, source in found]
        texts = tickets.issue_many(asking, binding, wanted, self.clock.seconds())
        self.stats.tickets.add(len(texts))
        return texts
