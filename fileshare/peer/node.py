"""
The peer's domain logic: what the console commands do.

It ties the repository, the tracker link, the upload service and downloads
together, and knows nothing of console syntax.
"""

import os
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from ..errors import BadRequest, Conflict, FileshareError, NotFound, Unavailable
from ..logfilter import rate_text
from ..names import check_account, check_fname, check_password
from ..pieces import MIN_PIECE_SIZE, Digest, piece_size_for
from ..secure import address_from_wire
from ..wire.framing import is_integer
from .download import Cancelled, Download, Source
from .fetches import Fetch, Phase
from .interfaces import IRepository, ISourcePool, ITrackerLink, IUploadService
from .piece_list import PieceListRace
from .repository import Entry

log = Logger()


#: The tracker's error code for a host over its ``--max-records`` limit.
TOO_MANY_FILES = "too-many-files"


@attrs.frozen
class Candidate:
    """One distinct content offered under a name, with its online holders."""

    root: str
    size: int
    sources: tuple[Source, ...]


@attrs.frozen
class FetchResult:
    entry: Entry
    seconds: float
    downloaded: int
    resumed: int
    sources: tuple[str, ...]
    already: bool = False


class AmbiguousName(FileshareError):
    code = "ambiguous"

    def __init__(self, fname: str, candidates: list[Candidate]) -> None:
        super().__init__(f"{len(candidates)} different files are named {fname!r}; choose one with --hash PREFIX")
        self.candidates = candidates


class Peer:
    def __init__(
        self,
        repository: IRepository,
        tracker: ITrackerLink,
        uploads: IUploadService,
        pool: ISourcePool,
        reactor: Any,
        hashers: ThreadPool,
        max_sources: int = 4,
    ) -> None:
        """*uploads* is only shown by ``status``; *hashers* is the pool downloads
        verify and write pieces on; *reactor* gives the time and takes results
        back from that pool."""
        self.repository = repository
        self.tracker = tracker
        self.uploads = uploads
        self.pool = pool
        self.reactor = reactor
        self.hashers = hashers
        self.max_sources = max_sources
        #: Downloads running, by root.
        self.downloads: dict[str, Download] = {}
        #: Fetches in flight from the moment they are asked for, by name.
        self.fetches: dict[str, Fetch] = {}
        self._claimed: set[str] = set()

    # -- accounts

    async def register(self, name: str, password: str) -> None:
        check_account(name)
        check_password(password)
        await self.tracker.call("register", name=name, password=password)

    async def login(self, name: str, password: str, replace: bool = False) -> int:
        check_account(name)
        check_password(password)
        return await self.tracker.login(name, password, replace=replace)

    async def passwd(self, old: str, new: str) -> None:
        check_password(old)
        check_password(new)
        await self.tracker.passwd(old, new)

    async def logout(self) -> None:
        await self.tracker.logout()

    # -- the repository

    async def publish(self, local_path: str, fname: str) -> tuple[Entry, bool]:
        """Publish a local file; the bool says whether the tracker was told now.

        A tracker that refuses it for its ``--max-records`` limit gets it
        unpublished again, so the ``ERR`` leaves the repository as it was.
        """
        new = fname not in self.repository.by_name
        entry = await self.repository.publish(local_path, fname)
        try:
            told = await self.tracker.publish(entry)
        except Unavailable:
            told = False  # announced with everything else on the next login
        except FileshareError as e:
            if e.code == TOO_MANY_FILES and new:
                await self.repository.unpublish(fname)
            raise
        log.info(
            "published {fname!r} ({size} bytes) from {path}{note}",
            fname=fname,
            size=entry.size,
            path=local_path,
            note="" if told else " (the tracker is told at the next login)",
            root=entry.root,
        )
        return entry, told

    async def unpublish(self, fname: str) -> Entry:
        entry = await self.repository.unpublish(fname)
        try:
            await self.tracker.unpublish(fname)
        except (Unavailable, NotFound):
            pass
        return entry

    async def search(self, pattern: str, after: Any = None) -> tuple[list[dict[str, Any]], Any]:
        """One page of the tracker's index: its items, and the cursor of the next page (None on the last).

        *after* is the cursor a previous page gave; the tracker checks it.
        """
        fields: dict[str, Any] = {"pattern": pattern}
        if after is not None:
            fields["after"] = after
        reply = await self.tracker.authed_call("search", **fields)
        return reply.get("items", []), reply.get("next")

    # -- fetching

    async def candidates(self, fname: str, from_host: str | None, hash_prefix: str | None) -> list[Candidate]:
        reply = await self.tracker.authed_call("sources", fname=fname)
        by_root: dict[str, list[Source]] = {}
        sizes: dict[str, int] = {}
        for item in reply.get("items", []):
            if not isinstance(item, dict):
                continue
            host, root, size = item.get("host"), item.get("root"), item.get("size")
            if not (isinstance(host, str) and isinstance(root, str) and is_integer(size)):
                continue
            try:
                address = address_from_wire(item.get("address"), tls=self.pool.identity is not None)
            except BadRequest as e:
                log.warn("ignoring source {host} from the tracker: {why}", host=host, why=e.message)
                continue
            if from_host is not None and host != from_host:
                continue
            if hash_prefix is not None and not root.startswith(hash_prefix.lower()):
                continue
            ticket = item.get("ticket")
            by_root.setdefault(root, []).append(Source(host, address, ticket if isinstance(ticket, str) else ""))
            sizes[root] = size
        return [Candidate(root, sizes[root], tuple(srcs)) for root, srcs in sorted(by_root.items())]

    async def fetch(
        self,
        fname: str,
        from_host: str | None = None,
        hash_prefix: str | None = None,
        started: Callable[[Download], None] | None = None,
        begun: Callable[[Fetch], None] | None = None,
    ) -> FetchResult:
        """Fetch *fname* into the repository.

        *begun* is called with the :class:`Fetch` at once (it is in
        ``fetches``, so ``status`` shows it and ``cancel`` stops it from
        now), *started* with the Download once the transfer starts.
        """
        check_fname(fname)
        if from_host is not None:
            check_account(from_host)
        if hash_prefix is not None and (not hash_prefix or any(c not in "0123456789abcdefABCDEF" for c in hash_prefix)):
            raise BadRequest("--hash takes a prefix of the hex root")
        if fname in self.fetches:
            raise Conflict(f"{fname!r} is already being fetched")
        job = Fetch(fname, self.reactor)
        self.fetches[fname] = job
        try:
            if begun is not None:
                begun(job)
            job.work = Deferred.fromCoroutine(self._fetch(job, from_host, hash_prefix, started))
            return await job.work
        except Exception:
            if job.stopped is not None:  # whatever the cancelled step raised
                raise job.stopped from None
            raise
        finally:
            if self.fetches.get(fname) is job:
                del self.fetches[fname]
            job.ended()

    async def _fetch(
        self, job: Fetch, from_host: str | None, hash_prefix: str | None, started: Callable[[Download], None] | None
    ) -> FetchResult:
        fname = job.fname
        if job.stopped is not None:
            raise job.stopped
        candidates = await self.candidates(fname, from_host, hash_prefix)
        if not candidates:
            where = f" on {from_host}" if from_host else ""
            raise NotFound(f"no online host{where} has {fname!r}")
        if len(candidates) > 1:
            raise AmbiguousName(fname, candidates)
        chosen = candidates[0]
        have = self.repository.by_name.get(fname)
        if have is not None:
            if have.root == chosen.root:
                return FetchResult(have, 0.0, 0, 0, (), already=True)
            raise Conflict(f"{fname!r} is already in the repository with different content; unpublish it first")
        final = self.repository.path_for(fname)
        if os.path.lexists(final):
            raise Conflict(f"{final} already exists; move it away or fetch under another name")
        if chosen.root in self._claimed:
            raise Conflict(f"{fname!r} is already being fetched")
        self._claimed.add(chosen.root)
        job.root, job.size = chosen.root, chosen.size
        log.info(
            "fetching {fname!r} ({size} bytes) from {sources} source{plural}: {hosts}",
            fname=fname,
            size=chosen.size,
            sources=len(chosen.sources),
            plural="" if len(chosen.sources) == 1 else "s",
            hosts=", ".join(s.host for s in chosen.sources),
            root=chosen.root,
        )
        try:
            job.phase = Phase.PIECE_LIST
            failed: set[Source] = set()
            digest, resume = await self._digest_for(chosen, job, failed)
            if job.stopped is not None:
                raise job.stopped
            download = Download(
                fname,
                digest,
                [s for s in chosen.sources if s not in failed],  # those that failed just now are not asked again
                self.repository,
                self.pool,
                self.reactor,
                self.hashers,
                self.max_sources,
                verified=resume,
            )
            download.crew.renew = lambda host: self._fresh_ticket(fname, chosen.root, host)
            self.downloads[chosen.root] = download
            job.download, job.phase = download, Phase.TRANSFER
            if started is not None:
                started(download)
            await download.run()
        except Exception as e:
            _log_fetch_failed(fname, self.reactor.seconds() - job.started, e)
            raise
        finally:
            self._claimed.discard(chosen.root)
            self.downloads.pop(chosen.root, None)
        # Recorded before its partial record is dropped: should that fail (a full disk), it is still resumable.
        entry = await self.repository.add_fetched(fname, download.digest, download.final_stat, download.saved)
        # The file is here and ours whatever the tracker says, so the
        # announcement is not waited for; it goes out before any later
        # request on the same connection, and a failed one is logged (the
        # next login announces the whole repository again).
        announced = Deferred.fromCoroutine(self.tracker.publish_fields(fname, entry.size, entry.root))
        announced.addErrback(self._announce_failed, fname)
        # From the moment it was asked for: a wait in a queue is part of it.
        seconds = self.reactor.seconds() - job.started
        log.info(
            "fetched {fname!r} ({size} bytes) in {seconds:.2f} s at {rate} from {sources}",
            fname=fname,
            size=entry.size,
            seconds=seconds,
            rate=rate_text(download.received_bytes, seconds),
            sources=", ".join(sorted(download.contributors)) or "no one (every piece was already here)",
            downloaded=download.received_bytes,
            resumed=download.resumed_bytes,
            root=entry.root,
        )
        return FetchResult(
            entry, seconds, download.received_bytes, download.resumed_bytes, tuple(sorted(download.contributors))
        )

    def _announce_failed(self, failure: Any, fname: str) -> None:
        if failure.check(FileshareError):
            log.warn("could not announce {fname}: {why}", fname=fname, why=failure.getErrorMessage())
        else:
            log.failure("announcing {fname} failed", failure, fname=fname)

    async def _digest_for(self, candidate: Candidate, job: Fetch, failed: set[Source]) -> tuple[Digest, bytes | None]:
        """The verified piece list, from a saved partial download or from a source.

        Sources are asked in turn, the next one also while one keeps us in
        its upload queue (:mod:`.piece_list`); each may keep us queued up to
        the pool's queue timeout, and must answer within its request timeout.
        Those that failed are added to *failed*.
        """
        if candidate.size <= MIN_PIECE_SIZE:
            # One piece: its digest is checked against the root directly, so
            # the round trip for the piece list is skipped.
            return Digest(candidate.size, piece_size_for(candidate.size), b"", candidate.root), None
        saved = await self.repository.partial_digest(candidate.root)
        if saved is not None:
            return saved
        race = PieceListRace(
            self.pool, candidate.root, candidate.size, candidate.sources, failed, job.watch, job.unwatch
        )
        return await race.run(), None

    async def _fresh_ticket(self, fname: str, root: str, host: str) -> str | None:
        """A new ticket to fetch *root* from *host*, if the tracker still lists it as a source."""
        for candidate in await self.candidates(fname, host, root):
            for source in candidate.sources:
                if candidate.root == root and source.ticket:
                    return source.ticket
        return None

    async def cancel(self, fname: str) -> None:
        """Stop the fetch of *fname* at whatever step it is, and remove its partial data."""
        job = self.fetches.get(fname)
        if job is not None and not job.over and not (job.download is not None and job.download.over):
            before_download = job.download is None
            await job.stop(Cancelled(f"fetch of {fname!r} cancelled"), cancel=True)
            if before_download:  # a fetch resuming a partial download may have been cancelled before it ran
                await self._drop_partials(fname)
            return
        if await self._drop_partials(fname) or await self._drop_unrecorded(fname):
            return
        raise NotFound(f"no fetch of {fname!r} in progress or paused")

    async def _drop_partials(self, fname: str) -> bool:
        """Remove the recorded partial downloads of *fname*; whether there was any."""
        partials = [p for p in await self.repository.partials() if p[1] == fname]
        for root, *_ in partials:
            await self.repository.drop_partial(root)
        return bool(partials)

    async def _drop_unrecorded(self, fname: str) -> bool:
        """Remove part files of *fname* that have no record (left by a failed write in
        older versions); their roots come from the tracker's index.  Whether any was removed."""
        try:
            candidates = await self.candidates(fname, None, None)
        except FileshareError:
            return False
        removed = False
        for candidate in candidates:
            if candidate.root not in self._claimed and await self.repository.drop_partial(candidate.root):
                removed = True
        return removed

    def stop(self) -> Deferred:
        """Interrupt every fetch, at whatever step; fires when they have all wound down."""
        return gatherResults(
            [
                job.stop(Unavailable(f"fetch of {job.fname!r} interrupted; fetch it again to resume"), cancel=False)
                for job in list(self.fetches.values())
            ]
        )


def _log_fetch_failed(fname: str, seconds: float, error: Exception) -> None:
    """One line for a fetch that ended without the file: cancelled (info) or why it failed (warning)."""
    if isinstance(error, Cancelled):
        log.info("fetch of {fname!r} cancelled after {seconds:.1f} s", fname=fname, seconds=seconds)
        return
    why = error.message if isinstance(error, FileshareError) else f"internal error: {error!r}"
    log.warn("fetch of {fname!r} failed after {seconds:.1f} s: {why}", fname=fname, seconds=seconds, why=why)
