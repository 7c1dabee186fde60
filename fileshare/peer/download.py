"""
One fetch: pieces pulled from several sources at once, each verified.

The piece list comes from a source and is checked against the root the
tracker indexed; every piece is checked against its digest on a worker
thread before it is written (``pwrite``) into ``.fileshare/partial/ROOT.part``.
Sources take batches of consecutive pieces from one queue, so a faster
source simply takes more; a source that fails, stalls or sends a bad piece is
dropped and its pieces go back in the queue.  The set of verified pieces is
saved every second, so a restarted peer resumes where it stopped.  Only a
complete, verified file is linked to its real name.
"""

import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ..errors import Conflict, FileshareError, IntegrityError, Unavailable
from ..pieces import Digest, piece_count, piece_span, root_of
from .pool import SourcePool
from .repository import Repository
from .source import SourceProtocol

log = Logger()

#: Requests kept outstanding on one connection, so there is no idle round trip.
PIPELINE = 2
MIN_BATCH = 2 << 20
MAX_BATCH = 16 << 20
#: Piece bytes waiting for verification before connections are paused.
MAX_PENDING = 8 << 20
#: A source that sends nothing for this long while it owes us bytes is dropped.
STALL_TIMEOUT = 15.0
SAVE_INTERVAL = 1.0

MISSING, INFLIGHT, ARRIVED, VERIFIED = 0, 1, 2, 3


@attrs.frozen
class Source:
    host: str
    endpoint: str


class Cancelled(FileshareError):
    code = "cancelled"


@attrs.define
class Progress:
    fname: str
    size: int
    done: int
    rate: float
    sources: int
    queued: int

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.size if self.size else 100.0

    @property
    def eta(self) -> float | None:
        return (self.size - self.done) / self.rate if self.rate > 0 else None


def _open_part(path: str, size: int) -> int:
    # Not pre-sized: writing into a sparse file is measurably slower on ext4
    # than extending it; the last piece written sets the final size.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if os.fstat(fd).st_size > size:
        os.ftruncate(fd, size)
    return fd


def _verify_and_write(
    fd: int, offset: int, chunks: list[memoryview], expected: bytes, root: str, lock: threading.Lock
) -> bytes | None:
    """Hash a piece and, if it is the one expected, write it; its digest, or None if corrupt.

    Pieces are hashed in parallel (hashlib releases the GIL) but written one
    at a time: concurrent writers to one file only fight over its inode lock.
    *expected* is empty for a file of one piece fetched without its piece
    list; the piece is then checked against the root directly.
    """
    found = _verify(chunks, expected, root)
    if found is not None:
        _write(fd, offset, chunks, lock)
    return found


def _verify(chunks: list[memoryview], expected: bytes, root: str) -> bytes | None:
    h = hashlib.sha256()
    for chunk in chunks:
        h.update(chunk)
    found = h.digest()
    ok = found == expected if expected else root_of(found) == root
    return found if ok else None


def _write(fd: int, offset: int, chunks: list[memoryview], lock: threading.Lock) -> None:
    with lock:
        written = os.pwritev(fd, chunks, offset) if chunks else 0
    if written != sum(len(c) for c in chunks):
        raise OSError("short write to the partial file")


def _write_whole(
    part: str, final: str, chunks: list[memoryview], root: str, size: int, lock: threading.Lock
) -> tuple[bytes, os.stat_result] | None:
    """A file of one piece in one thread hop: verify, write, make durable, name it."""
    found = _verify(chunks, b"", root)
    if found is None:
        return None
    fd = _open_part(part, size)
    try:
        _write(fd, 0, chunks, lock)
    except BaseException:
        os.close(fd)
        os.unlink(part)
        raise
    try:
        return found, _finish(fd, part, final, size)
    except Conflict:
        os.unlink(part)  # nothing to resume for one piece
        raise


def _finish(fd: int, part: str, final: str, size: int) -> os.stat_result:
    """Make the verified file durable and give it its real name, never clobbering one."""
    try:
        if os.fstat(fd).st_size != size:
            raise IntegrityError("the partial file has the wrong size; fetch it again")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(part, final)
    except FileExistsError:
        raise Conflict(f"{final} appeared while fetching; the download is kept for a retry") from None
    os.unlink(part)
    return os.stat(final)


class PieceSink:
    """Cuts the byte stream of one ``get`` into pieces and hands them on."""

    def __init__(self, download: "Download", source: "Source", protocol: SourceProtocol, first: int) -> None:
        self.download = download
        self.source = source
        self.protocol = protocol
        self.index = first
        self._chunks: list[memoryview] = []
        self._need = download.span(first)[1]

    def write(self, data: memoryview) -> None:
        """Slice (never copy) the received buffers into pieces."""
        pos, n = 0, len(data)
        while pos < n:
            take = min(n - pos, self._need)
            self._chunks.append(data[pos : pos + take])
            self._need -= take
            pos += take
            if not self._need:
                chunks, self._chunks = self._chunks, []
                self.download.piece_arrived(self.index, chunks, self.source, self.protocol)
                self.index += 1
                if self.index < self.download.count:
                    self._need = self.download.span(self.index)[1]


class Download:
    def __init__(
        self,
        fname: str,
        digest: Digest,
        sources: list[Source],
        repository: Repository,
        pool: SourcePool,
        reactor: Any,
        hashers: ThreadPool,
        max_connections: int = 4,
        verified: bytes | None = None,
    ) -> None:
        self.fname = fname
        self.digest = digest
        self.repository = repository
        self.pool = pool
        self.reactor = reactor
        self.clock = reactor
        self.hashers = hashers
        self.max_connections = max_connections
        self._spare = deque(sources)
        n = self.count = piece_count(digest.size, digest.piece_size)
        self._write_lock = threading.Lock()
        self.final_stat: os.stat_result | None = None
        self.saved = verified is not None
        self.state = bytearray(n)
        if verified is not None and len(verified) == n:
            for i, v in enumerate(verified):
                if v:
                    self.state[i] = VERIFIED
        #: A one-piece file is verified, written and named in one go.
        self._single = n == 1 and not any(self.state)
        self.resumed_bytes = self.verified_bytes = sum(self.span(i)[1] for i in range(n) if self.state[i] == VERIFIED)
        self._missing = deque(i for i in range(n) if self.state[i] != VERIFIED)
        self.received_bytes = 0
        self._pending = 0
        self._connections: dict[SourceProtocol, Source] = {}
        self.active: dict[Source, SourceProtocol | None] = {}
        self.failed: dict[Source, str] = {}
        self._waiters: list[Deferred] = []
        self._done: Deferred = Deferred()
        self._fd: int | None = None
        self._cancelled = False
        self._samples: deque[tuple[float, int]] = deque(maxlen=8)
        self.started = self.clock.seconds()
        self._dirty = False
        self._ended: list[Deferred] = []
        #: Hosts that delivered at least one verified piece.
        self.contributors: set[str] = set()
        self._finished = False

    def span(self, index: int) -> tuple[int, int]:
        return piece_span(index, self.digest.size, self.digest.piece_size)

    # -- what the console sees

    def progress(self) -> Progress:
        now = self.clock.seconds()
        self._samples.append((now, self.received_bytes))
        t0, b0 = self._samples[0]
        if now > t0:
            rate = (self.received_bytes - b0) / (now - t0)
        else:
            rate = self.received_bytes / max(now - self.started, 1e-6)
        queued = sum(1 for p in self.active.values() if p is not None and p.queue_position)
        return Progress(self.fname, self.digest.size, self.verified_bytes, rate, len(self.active), queued)

    def verified_map(self) -> bytes:
        return bytes(1 if s == VERIFIED else 0 for s in self.state)

    # -- running

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self._finished = True
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
        self._cancelled = not self._finished
        return self._wind_down(Cancelled(f"fetch of {self.fname!r} cancelled"))

    def _wind_down(self, why: FileshareError) -> Deferred:
        if self._finished:
            return succeed(None)
        d: Deferred = Deferred()
        self._ended.append(d)
        if not self._done.called:
            self._end(why)
        return d

    async def _run(self) -> None:
        part = self.repository.partial_path(self.digest.root)
        final = self.repository.path_for(self.fname)
        if not self._single:
            self._fd = await self._thread(_open_part, part, self.digest.size)
        saver = LoopingCall(self._save)
        saver.clock = self.clock
        checker = LoopingCall(self._check_stalls)
        checker.clock = self.clock
        try:
            if self._missing and not self._single:  # one piece: nothing to resume, nothing to save
                saver.start(SAVE_INTERVAL, now=False).addErrback(
                    lambda f: log.failure("saving the progress of {fname} failed", f, fname=self.fname)
                )
            if self._missing:
                checker.start(1.0, now=False)
                while self._spare and len(self.active) < self.max_connections:
                    self._start_worker()
                await self._done
        except BaseException:
            waiting = [p for p in self.active.values() if p is not None]  # incl. those still queued
            for protocol in {*self._connections, *waiting}:
                protocol.transport.abortConnection()
            await self._drain()
            if self._single and self.final_stat is not None:
                return  # the file was already complete and named when we were stopped
            try:
                if not self._cancelled:
                    await self._save()
            finally:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
            if self._cancelled:
                await self.repository.drop_partial(self.digest.root)
            raise
        finally:
            for loop in (saver, checker):
                if loop.running:
                    loop.stop()
        if not self._single:
            self._dirty = True
            await self._save()  # should naming fail, the download is kept for a retry
            fd, self._fd = self._fd, None
            self.final_stat = await self._thread(_finish, fd, part, final, self.digest.size)

    async def _drain(self) -> None:
        while self._pending:
            d: Deferred = Deferred()
            self._waiters.append(d)
            await d

    async def _save(self) -> None:
        # Without the piece list (a one-piece file) there is nothing to resume from.
        if self._dirty and self.digest.pieces and self._fd is not None:
            self._dirty = False
            self.saved = True
            verified = self.verified_map()
            # The pieces must be on disk before the record says they are:
            # after a crash, resuming trusts the record without re-reading.
            await deferToThreadPool(self.reactor, self.reactor.getThreadPool(), os.fdatasync, self._fd)
            await self.repository.save_partial(self.fname, self.digest, verified)

    def _thread(self, f: Callable[..., Any], *args: Any) -> Deferred:
        return deferToThreadPool(self.reactor, self.hashers, f, *args)

    def _start_worker(self) -> None:
        source = self._spare.popleft()
        self.active[source] = None
        d = Deferred.fromCoroutine(self._worker(source))
        d.addErrback(lambda f: log.failure("download worker failed", f))

    def _fair_share(self) -> int:
        """Near the end, smaller batches: no source should hold the tail while others idle."""
        missing = len(self._missing) * self.digest.piece_size
        return max(self.digest.piece_size, missing // (PIPELINE * max(1, len(self.active))))

    def _take(self, batch_bytes: int) -> list[int]:
        """Claim a run of consecutive missing pieces of about *batch_bytes*."""
        batch: list[int] = []
        size = 0
        while self._missing and size < batch_bytes:
            i = self._missing[0]
            if batch and i != batch[-1] + 1:
                break
            self._missing.popleft()
            if self.state[i] != MISSING:
                continue
            batch.append(i)
            size += self.span(i)[1]
            self.state[i] = INFLIGHT
        return batch

    def _give_back(self, batch: list[int]) -> None:
        back = [i for i in batch if self.state[i] == INFLIGHT]
        for i in reversed(back):
            self.state[i] = MISSING
            self._missing.appendleft(i)
        if back:
            self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    async def _worker(self, source: Source) -> None:
        protocol: SourceProtocol | None = None
        inflight: deque[tuple[list[int], Deferred]] = deque()
        try:
            protocol = await self.pool.connect(source.endpoint, lambda p: self.active.__setitem__(source, p))
            self.active[source] = protocol
            self._connections[protocol] = source
            if self._pending > MAX_PENDING:
                protocol.pause("disk")
            batch_bytes = MIN_BATCH
            while not self._done.called:
                while len(inflight) < PIPELINE:
                    batch = self._take(min(batch_bytes, self._fair_share()))
                    if not batch:
                        break
                    offset = self.span(batch[0])[0]
                    end = sum(self.span(batch[-1]))
                    if end == offset:  # an empty file: nothing to ask for
                        self.piece_arrived(batch[0], [], source, protocol)
                        continue
                    sink = PieceSink(self, source, protocol, batch[0])
                    inflight.append((batch, protocol.get(self.digest.root, offset, end - offset, sink)))
                if not inflight:
                    if self._done.called:
                        break
                    waiter: Deferred = Deferred()
                    self._waiters.append(waiter)
                    await waiter
                    continue
                started = self.clock.seconds()
                batch, d = inflight[0]
                got = await d
                inflight.popleft()
                elapsed = self.clock.seconds() - started
                if elapsed > 0:
                    batch_bytes = int(min(MAX_BATCH, max(MIN_BATCH, got / elapsed * 0.25)))
        except FileshareError as e:
            self._drop(source, protocol, e.message)
        except Exception as e:  # a connection error of any kind: this source is done
            self._drop(source, protocol, str(e) or e.__class__.__name__)
        else:
            if protocol is not None:
                self._connections.pop(protocol, None)
                self.pool.release(protocol)
            self.active.pop(source, None)
        finally:
            for batch, d in inflight:
                self._give_back(batch)
                d.addErrback(lambda _: None)
            self._worker_ended()

    def _drop(self, source: Source, protocol: SourceProtocol | None, why: str) -> None:
        if source in self.active:
            log.info("source {host} dropped from fetch of {fname}: {why}", host=source.host, fname=self.fname, why=why)
            self.failed.setdefault(source, why)
            del self.active[source]
        if protocol is not None:
            self._connections.pop(protocol, None)
            self.pool.discard(protocol)

    def _worker_ended(self) -> None:
        if self._done.called:
            return
        if self._complete():
            self._check_done()
            return
        while self._spare and len(self.active) < self.max_connections:
            self._start_worker()
        if not self.active:
            reasons = "; ".join(f"{s.host}: {why}" for s, why in self.failed.items()) or "no source could be reached"
            self._end(Unavailable(f"every source failed ({reasons})"))

    def _end(self, result: Any) -> None:
        """Finish the download; idle workers wake, see it is over and hand back their connections."""
        if isinstance(result, BaseException | Failure):
            self._done.errback(result)
        else:
            self._done.callback(result)
        self._wake()

    def _complete(self) -> bool:
        return not self._missing and all(s != MISSING and s != INFLIGHT for s in self.state)

    def _check_done(self) -> None:
        if not self._done.called and not self._pending and all(s == VERIFIED for s in self.state):
            self._end(None)

    # -- pieces

    def piece_arrived(self, index: int, chunks: list[memoryview], source: Source, protocol: SourceProtocol) -> None:
        if self.state[index] != INFLIGHT or (self._fd is None and not self._single):
            return
        self.state[index] = ARRIVED
        offset, length = self.span(index)
        self.received_bytes += length
        self._pending += length
        if self._pending > MAX_PENDING:
            for p in self._connections:
                p.pause("disk")
        if self._single:
            # Small files: one thread hop does it all, a few tenths of a millisecond each saved.
            part = self.repository.partial_path(self.digest.root)
            final = self.repository.path_for(self.fname)
            d = self._thread(_write_whole, part, final, chunks, self.digest.root, length, self._write_lock)
        else:
            d = self._thread(
                _verify_and_write,
                self._fd,
                offset,
                chunks,
                self.digest.piece_digest(index),
                self.digest.root,
                self._write_lock,
            )
            d.addCallback(lambda found: (found, None) if found is not None else None)
        d.addCallbacks(
            self._piece_checked, self._piece_failed, (index, length, source, protocol), None, (index, length)
        )

    def _piece_checked(
        self,
        result: tuple[bytes, os.stat_result | None] | None,
        index: int,
        length: int,
        source: Source,
        protocol: SourceProtocol,
    ) -> None:
        self._written(length)
        if result is not None:
            found, self.final_stat = result
            if not self.digest.pieces:
                self.digest = attrs.evolve(self.digest, pieces=found)
            self.state[index] = VERIFIED
            self.contributors.add(source.host)
            self.verified_bytes += length
            self._dirty = True
            self._check_done()
        else:
            log.warn(
                "piece {index} of {fname} from {host} failed verification",
                index=index,
                fname=self.fname,
                host=source.host,
            )
            self.state[index] = MISSING
            self._missing.appendleft(index)
            # The source is not used again for this fetch, even if its worker
            # already finished and handed the connection back to the pool.
            self.failed[source] = f"sent a corrupt piece ({index})"
            self.active.pop(source, None)
            self.pool.discard(protocol)
            self._wake()
            self._worker_ended()

    def _piece_failed(self, failure: Any, index: int, length: int) -> None:
        self._written(length)
        if not self._done.called:
            self._end(failure)

    def _written(self, length: int) -> None:
        self._pending -= length
        if self._pending <= MAX_PENDING // 2:
            for protocol in self._connections:
                protocol.resume("disk")
        if not self._pending:
            self._wake()

    def _check_stalls(self) -> None:
        now = self.clock.seconds()
        for protocol, source in list(self._connections.items()):
            if protocol.busy and not protocol._pauses and now - protocol.last_progress > STALL_TIMEOUT:
                log.info("source {host} stalled", host=source.host)
                self.failed[source] = f"stalled for {STALL_TIMEOUT:g} s"
                protocol.transport.abortConnection()
