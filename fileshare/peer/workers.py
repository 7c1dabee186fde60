"""
The sources of one fetch: a worker per source, and the crew that keeps them.

A worker connects, claims pieces from the scheduler, asks for them and
hands every piece it receives to the download's ``piece_arrived``; it knows
nothing of verification or of the part file.  It keeps PIPELINE requests
outstanding on its connection so there is no idle round trip, and sizes
its batches from the rate it sees (a faster source simply takes more).

The :class:`Crew` knows the sources: which are spare, connecting, connected
or failed (and why), starts workers up to the connection limit, pauses and
resumes every connection together.  A source that stops sending is
dropped by its connection's request timeout (:mod:`.source`).
"""

from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..errors import FileshareError, TicketExpired
from .interfaces import ISourceConnection, ISourcePool

if TYPE_CHECKING:
    from .download import Download

log = Logger()

#: Requests kept outstanding on one connection, so there is no idle round trip.
PIPELINE = 2
MIN_BATCH = 2 << 20
MAX_BATCH = 16 << 20


@attrs.frozen
class Source:
    """A holder of the file, as the tracker listed it."""

    host: str
    #: Where it listens and, with TLS, the key it must hold (checked, from the tracker's record).
    address: Any
    #: The tracker's ticket for fetching this file from this source (not part of its identity).
    ticket: str = attrs.field(default="", eq=False, repr=False)


class PieceSink:
    """Cuts the byte stream of one ``get`` (pieces *first*.. in order) into pieces.

    *deliver(index, chunks)* gets each piece as it completes: slices of the
    received buffers, never copies.
    """

    def __init__(
        self, deliver: Callable[[int, list[memoryview]], None], span: Callable[[int], tuple[int, int]], first: int
    ) -> None:
        self.deliver = deliver
        self.span = span
        self.index = first
        self._chunks: list[memoryview] = []
        self._need = span(first)[1]

    def write(self, data: memoryview) -> None:
        pos, n = 0, len(data)
        while pos < n and self._need:
            take = min(n - pos, self._need)
            self._chunks.append(data[pos : pos + take])
            self._need -= take
            pos += take
            if not self._need:
                chunks, self._chunks = self._chunks, []
                self.deliver(self.index, chunks)
                self.index += 1
                self._need = self.span(self.index)[1]


async def fetch_from(download: "Download", crew: "Crew", source: Source) -> None:
    """Fetch pieces of *download* from *source* until there is nothing left or it fails.

    Whatever happens, the pieces it was asked for and did not deliver are
    released to the scheduler and the download is told the worker ended.
    """
    scheduler = download.scheduler
    protocol: ISourceConnection | None = None
    inflight: deque[tuple[list[int], Deferred]] = deque()
    try:
        protocol = await _connect(crew, source)
        crew.connected(source, protocol)
        batch_bytes = MIN_BATCH
        while download.running and source in crew.active:  # not if dropped for a bad piece
            while len(inflight) < PIPELINE:
                share = scheduler.fair_share(len(crew.active), PIPELINE)
                batch = scheduler.claim(source, min(batch_bytes, share))
                if not batch:
                    break
                offset = scheduler.span(batch[0])[0]
                end = sum(scheduler.span(batch[-1]))
                if end == offset:  # an empty file: nothing to ask for
                    download.piece_arrived(batch[0], [], source, protocol)
                    continue
                sink = PieceSink(_deliver(download, source, protocol), scheduler.span, batch[0])
                inflight.append((batch, protocol.get(download.digest.root, offset, end - offset, sink)))
            if not inflight:
                if download.running:
                    await download.changed()
                continue
            started = download.clock.seconds()
            batch, d = inflight[0]
            got = await d
            inflight.popleft()
            elapsed = download.clock.seconds() - started
            if elapsed > 0:
                batch_bytes = int(min(MAX_BATCH, max(MIN_BATCH, got / elapsed * 0.25)))
    except FileshareError as e:
        crew.drop(source, protocol, e.message)
    except Exception as e:  # a connection error of any kind: this source is done
        crew.drop(source, protocol, str(e) or e.__class__.__name__)
    else:
        crew.finished_with(source, protocol)
    finally:
        scheduler.release(source, [i for batch, _ in inflight for i in batch])
        for _, d in inflight:
            d.addErrback(lambda _: None)
        download.worker_ended()


async def _connect(crew: "Crew", source: Source) -> ISourceConnection:
    """A greeted connection to *source*; once, a ticket that expired (a spare
    source started late in a long fetch) is renewed from the tracker."""

    def watch(protocol: ISourceConnection) -> None:
        crew.watching(source, protocol)

    try:
        return await crew.pool.connect(source.address, watch, ticket=source.ticket or None)
    except TicketExpired:
        ticket = await crew.renew(source.host) if crew.renew is not None else None
        if not ticket:
            raise
    return await crew.pool.connect(source.address, watch, ticket=ticket)


def _deliver(download: "Download", source: Hashable, protocol: ISourceConnection) -> Callable:
    def deliver(index: int, chunks: list[memoryview]) -> None:
        download.piece_arrived(index, chunks, source, protocol)

    return deliver


class Crew:
    """The sources of one download and their workers."""

    def __init__(self, download: "Download", sources: Iterable[Source], pool: ISourcePool, limit: int) -> None:
        self.download = download
        self.pool = pool
        self.limit = limit
        self._spare = deque(sources)
        #: Sources with a worker, and their connection once there is one (maybe still queued).
        self.active: dict[Source, ISourceConnection | None] = {}
        #: Greeted connections in use.
        self.connections: dict[ISourceConnection, Source] = {}
        #: Sources given up, and why.
        self.failed: dict[Source, str] = {}
        self.paused_for: set[str] = set()
        #: Asks the tracker for a fresh ticket for this file from a host (None: no way to).
        self.renew: Callable[[str], Awaitable[str | None]] | None = None
        self._topping_up = False

    @property
    def queued(self) -> int | None:
        """Our best (lowest) place in the upload queue of a source we wait for, if any."""
        places = [p.queue_position for p in self.active.values() if p is not None and p.queue_position]
        return min(places) if places else None

    @property
    def exhausted(self) -> bool:
        """No worker runs and no source is left to start one for."""
        return not self.active and not self._spare

    def top_up(self) -> None:
        """Start workers for spare sources, up to the connection limit.

        A worker can end before it is started (its source failed at once)
        and ask to top up again: that call returns and this loop goes on, so
        a thousand sources failing in a row do not nest a thousand calls.
        """
        if self._topping_up:
            return
        self._topping_up = True
        try:
            while self._spare and len(self.active) < self.limit:
                source = self._spare.popleft()
                self.active[source] = None
                d = Deferred.fromCoroutine(fetch_from(self.download, self, source))
                d.addErrback(lambda f: log.failure("download worker failed", f))
        finally:
            self._topping_up = False

    def failure_summary(self) -> str:
        return "; ".join(f"{s.host}: {why}" for s, why in self.failed.items()) or "no source could be reached"

    # -- a worker's connection

    def watching(self, source: Source, protocol: ISourceConnection) -> None:
        """A connection to *source* exists (maybe still queued at the source)."""
        self.active[source] = protocol

    def connected(self, source: Source, protocol: ISourceConnection) -> None:
        self.active[source] = protocol
        self.connections[protocol] = source
        for reason in self.paused_for:
            protocol.pause(reason)

    def finished_with(self, source: Source, protocol: ISourceConnection) -> None:
        """The worker of *source* has nothing left to do: its connection may be reused."""
        self.connections.pop(protocol, None)
        if source in self.failed:  # it sent a bad piece meanwhile
            self.pool.discard(protocol)
        else:
            self.pool.release(protocol)
        self.active.pop(source, None)

    def drop(self, source: Source, protocol: ISourceConnection | None, why: str) -> None:
        """*source* failed; while the download runs, it is logged and remembered."""
        if source in self.active:
            if self.download.running:
                log.info(
                    "source {host} dropped from fetch of {fname}: {why}",
                    host=source.host,
                    fname=self.download.fname,
                    why=why,
                )
                self.failed.setdefault(source, why)
            del self.active[source]
        if protocol is not None:
            self.connections.pop(protocol, None)
            self.pool.discard(protocol)

    def exclude(self, source: Source, protocol: ISourceConnection, why: str) -> None:
        """Never use *source* again for this fetch, even if its worker already finished."""
        self.failed[source] = why
        self.active.pop(source, None)
        self.pool.discard(protocol)

    # -- all connections at once

    def pause(self, reason: str) -> None:
        if reason not in self.paused_for:
            self.paused_for.add(reason)
            for protocol in self.connections:
                protocol.pause(reason)

    def resume(self, reason: str) -> None:
        if reason in self.paused_for:
            self.paused_for.discard(reason)
            for protocol in self.connections:
                protocol.resume(reason)

    def discard_busy(self) -> None:
        """Drop connections still owed bytes nobody wants (losing end-game copies)."""
        for protocol in list(self.connections):
            if protocol.busy:
                self.pool.discard(protocol)

    def abort_all(self) -> None:
        """Abort every connection, those still queued at their source included."""
        for protocol in {*self.connections, *(p for p in self.active.values() if p is not None)}:
            protocol.transport.abortConnection()
