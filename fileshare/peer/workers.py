"""
One worker per source of a fetch: connect, claim pieces, ask for them, hand them on.

A worker keeps PIPELINE requests outstanding on its connection so there is
no idle round trip, and sizes its batches from the rate it sees (a faster
source simply takes more).  It knows nothing of verification or of the part
file: every piece it receives goes to the download's ``piece_arrived``, and
the download decides what happens when a source fails.
"""

from collections import deque
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..errors import FileshareError
from .interfaces import ISourceConnection

if TYPE_CHECKING:
    from .download import Download

log = Logger()

#: Requests kept outstanding on one connection, so there is no idle round trip.
PIPELINE = 2
MIN_BATCH = 2 << 20
MAX_BATCH = 16 << 20


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


async def fetch_from(download: "Download", source: Hashable) -> None:
    """Fetch pieces of *download* from *source* until there is nothing left or it fails.

    Whatever happens, the pieces it was asked for and did not deliver are
    released to the scheduler and the download is told the worker ended.
    """
    scheduler = download.scheduler
    protocol: ISourceConnection | None = None
    inflight: deque[tuple[list[int], Deferred]] = deque()
    try:
        protocol = await download.pool.connect(source.endpoint, lambda p: download.watching(source, p))
        download.connected(source, protocol)
        batch_bytes = MIN_BATCH
        while download.running:
            while len(inflight) < PIPELINE:
                share = scheduler.fair_share(len(download.active), PIPELINE)
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
        download.drop(source, protocol, e.message)
    except Exception as e:  # a connection error of any kind: this source is done
        download.drop(source, protocol, str(e) or e.__class__.__name__)
    else:
        download.finished_with(source, protocol)
    finally:
        for batch, d in inflight:
            scheduler.release(source, batch)
            d.addErrback(lambda _: None)
        download.worker_ended()


def _deliver(download: "Download", source: Hashable, protocol: ISourceConnection) -> Callable:
    def deliver(index: int, chunks: list[memoryview]) -> None:
        download.piece_arrived(index, chunks, source, protocol)

    return deliver
