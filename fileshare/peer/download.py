"""
One fetch: pieces pulled from several sources at once, each verified.

The piece list comes from a source and is checked against the root the
tracker indexed; each piece is checked against its digest on the download's
thread pool before it is written into ``.fileshare/partial/ROOT.part``
(:mod:`.partfile`).  Who fetches which piece is the scheduler's business
(:mod:`.scheduler`, with its end game); each source has a worker
(:mod:`.workers`).  Verified pieces are recorded every second, so a
restarted peer resumes; only a complete, verified file gets its name.

This module is the life cycle: *preparing* (opening the part file),
*running*, then *completing* (saving, fsync, naming) and *finished*; or
*stopping* then *paused* (partial data kept: the peer stopped, every source
failed) or *cancelling* then *cancelled* (partial data removed).

It is a little over 400 lines on purpose: the states and the piece
bookkeeping they guard (arrived, verified, saved) change together, and
splitting them would spread one transition over two modules.
"""

import enum
import os
from collections import deque
from collections.abc import Hashable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ..errors import DiskError, FileshareError, Unavailable
from ..pieces import Digest
from . import partfile
from .interfaces import IRepository, ISourceConnection, ISourcePool
from .scheduler import PieceScheduler
from .workers import Crew, Source

log = Logger()

#: Piece bytes waiting for verification before connections are paused.
MAX_PENDING = 8 << 20
SAVE_INTERVAL = 1.0


class Cancelled(FileshareError):
    code = "cancelled"


@attrs.define
class Progress:
    fname: str
    #: None while the tracker has not said yet.
    size: int | None
    done: int
    rate: float
    sources: int
    #: Our best place in a source's upload queue while waiting for a slot, else None.
    queued: int | None
    #: Before the transfer: "lookup" (asking the tracker) or "piece-list"; "" once it runs.
    phase: str = ""

    @property
    def percent(self) -> float:
        if self.size is None:
            return 0.0
        return 100.0 * self.done / self.size if self.size else 100.0

    @property
    def eta(self) -> float | None:
        return (self.size - self.done) / self.rate if self.rate > 0 and self.size is not None else None


class State(enum.Enum):
    PREPARING = "preparing"
    RUNNING = "running"
    COMPLETING = "completing"
    FINISHED = "finished"
    STOPPING = "stopping"
    PAUSED = "paused"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


_NEXT = {
    State.PREPARING: {State.RUNNING, State.STOPPING, State.CANCELLING},
    State.RUNNING: {State.COMPLETING, State.STOPPING, State.CANCELLING},
    # Naming can fail (a file appeared under the name): kept for a retry.
    State.COMPLETING: {State.FINISHED, State.PAUSED},
    # A one-piece file may be named while the stop is winding down.
    State.STOPPING: {State.PAUSED, State.CANCELLING, State.FINISHED},
    State.CANCELLING: {State.CANCELLED, State.FINISHED},
}
_OVER = {State.FINISHED, State.PAUSED, State.CANCELLED}


class Download:
    def __init__(
        self,
        fname: str,
        digest: Digest,
        sources: list[Source],
        repository: IRepository,
        pool: ISourcePool,
        reactor: Any,
        hashers: ThreadPool,
        max_connections: int = 4,
        verified: bytes | None = None,
    ) -> None:
        """*reactor* gives the time and takes results back from threads
        (IReactorTime, IReactorFromThreads); *hashers* is the download's own
        pool: piece verification and part-file I/O."""
        self.fname = fname
        self.digest = digest
        self.repository = repository
        self.reactor = self.clock = reactor
        self.state = State.PREPARING
        self.scheduler = PieceScheduler(digest.size, digest.piece_size, verified)
        self.crew = Crew(self, sources, pool, max_connections)
        part, final = repository.partial_path(digest.root), repository.path_for(fname)
        self.part = partfile.PartFile(reactor, hashers, part, final, digest.size, digest.root)
        self.final_stat: os.stat_result | None = None
        #: Whether a record of this partial download exists (to drop once done).
        self.saved = verified is not None
        #: A one-piece file is verified, written and named in one go.
        self._single = self.scheduler.count == 1 and not self.scheduler.verified_bytes
        self.resumed_bytes = self.scheduler.verified_bytes
        #: Bytes of accepted piece copies (a losing end-game copy is not counted).
        self.received_bytes = 0
        self._pending = 0
        self._waiters: list[Deferred] = []
        self._running: Deferred = Deferred()
        self._samples: deque[tuple[float, int]] = deque(maxlen=8)
        self.started = self.clock.seconds()
        self._dirty = False
        #: One save at a time, so a stop never closes the file under a periodic save.
        self._save_lock = DeferredLock()
        self._ended: list[Deferred] = []
        #: Hosts that delivered at least one verified piece.
        self.contributors: set[str] = set()

    @property
    def verified_bytes(self) -> int:
        return self.scheduler.verified_bytes

    @property
    def running(self) -> bool:
        return self.state is State.RUNNING

    @property
    def over(self) -> bool:
        """Finished, paused or cancelled: nothing more will happen."""
        return self.state in _OVER

    def _move(self, to: State) -> None:
        if to not in _NEXT.get(self.state, ()):
            raise RuntimeError(f"download of {self.fname!r} cannot go from {self.state.value} to {to.value}")
        self.state = to

    # -- what the console sees

    def progress(self) -> Progress:
        now = self.clock.seconds()
        self._samples.append((now, self.received_bytes))
        t0, b0 = self._samples[0]
        if now > t0:
            rate = (self.received_bytes - b0) / (now - t0)
        else:
            rate = self.received_bytes / max(now - self.started, 1e-6)
        return Progress(
            self.fname, self.digest.size, self.verified_bytes, rate, len(self.crew.active), self.crew.queued
        )

    def verified_map(self) -> bytes:
        return self.scheduler.verified_map()

    # -- life cycle

    async def run(self) -> None:
        """Fetch until finished; raises Cancelled, Unavailable (stopped, every source failed) or a write error."""
        try:
            await self._run()
        finally:
            ended, self._ended = self._ended, []
            for d in ended:
                d.callback(None)

    def stop(self) -> Deferred:
        """Stop for now (peer shutting down); verified pieces are kept for resuming.

        Fires once the download has wound down: its pieces in the thread
        pool written, its state saved.
        """
        return self._wind_down(Unavailable(f"fetch of {self.fname!r} interrupted; fetch it again to resume"))

    def cancel(self) -> Deferred:
        """Stop and discard the partial data; fires once it is gone."""
        if self.state is State.STOPPING:
            self._move(State.CANCELLING)
        return self._wind_down(Cancelled(f"fetch of {self.fname!r} cancelled"), cancel=True)

    def _wind_down(self, why: FileshareError, cancel: bool = False) -> Deferred:
        if self.state in _OVER:
            return succeed(None)
        d: Deferred = Deferred()
        self._ended.append(d)
        if self.state in (State.PREPARING, State.RUNNING):
            self._end(why, cancel)
        return d

    def _end(self, why: BaseException | Failure | None, cancel: bool = False) -> None:
        """Leave the running state: complete (*why* None) or wind down; idle workers wake and see it."""
        if self._running.called:
            return
        if why is None:
            self._move(State.COMPLETING)
            self.crew.discard_busy()
            self._running.callback(None)
        else:
            self._move(State.CANCELLING if cancel else State.STOPPING)
            self._running.errback(why)
        self._wake()

    async def _run(self) -> None:
        saver = LoopingCall(self._save)
        saver.clock = self.clock
        try:
            if not self._single:
                await self.part.open()
            if self.state is State.PREPARING:
                self._move(State.RUNNING)
                self._start()
                if not self._single:  # one piece: nothing to resume, nothing to save
                    saver.start(SAVE_INTERVAL, now=False).addErrback(self._save_failed)
            await self._running
        except Exception:
            _stop_loops(saver)
            if self.state in (State.PREPARING, State.RUNNING):  # the part file could not be opened
                self._move(State.STOPPING)
            self._running.addErrback(lambda _: None)
            if await self._stopped():
                return
            raise
        finally:
            _stop_loops(saver)
        if not self._single:
            try:
                self._dirty = True
                await self._save()  # should naming fail, the download is kept for a retry
                self.final_stat = await self.part.finish()
            except Exception:
                self._move(State.PAUSED)
                raise
        self._move(State.FINISHED)

    def _start(self) -> None:
        if self.scheduler.complete:  # resumed with every piece already verified
            self._end(None)
            return
        self.crew.top_up()

    async def _stopped(self) -> bool:
        """Wind down after a stop, a cancel or a failure: nothing in flight, partial data saved or gone.

        True if the download finished after all (a one-piece file named meanwhile).
        """
        self.crew.abort_all()
        await self._drain()
        if self._single and self.final_stat is not None:
            self._move(State.FINISHED)  # the file was already complete and named when we were stopped
            return True
        try:
            if self.state is not State.CANCELLING:
                await self._save()
        except Exception as e:
            # The disk is full (say): the last record saved, if any, still holds.
            log.warn("could not save the progress of {fname}: {why}", fname=self.fname, why=e)
        finally:
            self.part.close()
        if self.state is State.CANCELLING:  # also when cancelled while saving
            await self.repository.drop_partial(self.digest.root)
            self._move(State.CANCELLED)
        else:
            if self.part.opened and not self.saved:
                # No record says what is in it: remove it rather than leave it orphaned.
                try:
                    await self.repository.drop_partial(self.digest.root)
                except Exception as e:  # the file went first; a stray record is dropped on next look
                    log.warn("could not forget the partial {fname}: {why}", fname=self.fname, why=e)
            self._move(State.PAUSED)
        return False

    async def _drain(self) -> None:
        while self._pending:
            await self.changed()

    async def _save(self) -> None:
        await self._save_lock.acquire()
        try:
            # Without the piece list (a one-piece file) there is nothing to resume from.
            if self._dirty and self.digest.pieces and self.part.is_open:
                self._dirty = False
                verified = self.verified_map()
                # The pieces must be on disk before the record says they are:
                # after a crash, resuming trusts the record without re-reading.
                await self.part.sync()
                await self.repository.save_partial(self.fname, self.digest, verified)
                self.saved = True
        finally:
            self._save_lock.release()

    def _save_failed(self, failure: Failure) -> None:
        """A periodic save failed (a full disk, say): end the fetch with the reason, keeping what was saved."""
        if not failure.check(FileshareError):
            log.failure("saving the progress of {fname} failed", failure, fname=self.fname)
            failure = Failure(
                DiskError(f"could not record the progress of {self.fname!r}: {failure.getErrorMessage()}")
            )
        if self.state in (State.PREPARING, State.RUNNING):
            self._end(failure)

    # -- what workers (fileshare.peer.workers) wait for and report

    def changed(self) -> Deferred:
        """Fires at the next change a waiting worker may care about: a piece given
        back or verified, the pending bytes drained, the download over."""
        d: Deferred = Deferred()
        self._waiters.append(d)
        return d

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    def worker_ended(self) -> None:
        if not self.running:
            return
        if self.scheduler.all_arrived:
            self._check_done()
            return
        self._wake()  # its given-back pieces are there for the others
        self.crew.top_up()
        if self.crew.exhausted:
            self._end(Unavailable(f"every source failed ({self.crew.failure_summary()})"))

    def _check_done(self) -> None:
        if self.running and not self._pending and self.scheduler.complete:
            self._end(None)

    # -- pieces

    def piece_arrived(
        self, index: int, chunks: list[memoryview], source: Hashable, protocol: ISourceConnection
    ) -> None:
        """A worker received every byte of piece *index* from *source*: verify and write it, off the reactor."""
        if not self.part.is_open and not self._single:
            return
        if not self.scheduler.arrived(source, index):
            return  # another copy won (end game), or the piece was given back
        offset, length = self.scheduler.span(index)
        self.received_bytes += length
        self._pending += length
        if self._pending > MAX_PENDING:
            self.crew.pause("disk")
        if self._single:
            # Small files: one thread hop does it all, a few tenths of a millisecond each saved.
            d = self.part.check_whole(chunks)
        else:
            d = self.part.check(offset, chunks, self.digest.piece_digest(index))
            d.addCallback(lambda found: (found, None) if found is not None else None)
        d.addCallbacks(self._piece_checked, self._piece_failed, (index, length, source, protocol), None, (length,))

    def _piece_checked(
        self,
        result: tuple[bytes, os.stat_result | None] | None,
        index: int,
        length: int,
        source: Source,
        protocol: ISourceConnection,
    ) -> None:
        self._written(length)
        if result is not None:
            found, stat = result
            if stat is not None:
                self.final_stat = stat
            if not self.digest.pieces:
                self.digest = attrs.evolve(self.digest, pieces=found)
            self.scheduler.verified(index)
            self.contributors.add(source.host)
            self._dirty = True
            self._wake()
            self._check_done()
        else:
            log.warn(
                "piece {index} of {fname} from {host} failed verification",
                index=index,
                fname=self.fname,
                host=source.host,
            )
            self.scheduler.corrupt(index)
            self.crew.exclude(source, protocol, f"sent a corrupt piece ({index})")
            self.worker_ended()

    def _piece_failed(self, failure: Failure, length: int) -> None:
        self._written(length)
        if self.state in (State.PREPARING, State.RUNNING):
            self._end(failure)

    def _written(self, length: int) -> None:
        self._pending -= length
        if self._pending <= MAX_PENDING // 2:
            self.crew.resume("disk")
        if not self._pending:
            self._wake()


def _stop_loops(*loops: LoopingCall) -> None:
    for loop in loops:
        if loop.running:
            loop.stop()
