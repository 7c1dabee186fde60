"""
Getting a file's piece list from its sources, before the transfer starts.

Sources are asked one at a time, in the tracker's order; but while a source
keeps us in its upload queue, the next one is asked too (and so on), so a
busy source never holds up a fetch another source could start at once.  The
first valid list wins and the other attempts are called off (their
connections closed).  A source that fails (cannot be reached, refuses,
times out, sends a list that does not match the root) is noted with why; the
fetch fails with every reason when none is left.
"""

from typing import Any

from twisted.internet.defer import Deferred

from ..errors import FileshareError, Unavailable
from ..pieces import Digest
from .interfaces import ISourcePool
from .workers import Source


class PieceListRace:
    """The piece list of *root* (of *size* bytes) from one of *sources*; *failed* collects those that failed.

    *watch* is called with each connection asked (so its queue place can be
    shown), *unwatch* when it is done with.
    """

    def __init__(
        self,
        pool: ISourcePool,
        root: str,
        size: int,
        sources: tuple[Source, ...],
        failed: set[Source],
        watch: Any,
        unwatch: Any,
    ) -> None:
        self.pool = pool
        self.root = root
        self.size = size
        self.sources = sources
        self.failed = failed
        self.watch = watch
        self.unwatch = unwatch
        self._waiting = list(sources)
        self._attempts: dict[Source, Deferred | None] = {}
        self._errors: dict[Source, str] = {}
        #: Decided (won, failed or cancelled): attempts ending now change nothing.
        self._over = False
        #: Sources to ask still, from calls to _next made while it was asking one.
        self._asks = 0
        self._asking = False
        self.done: Deferred = Deferred(lambda _: self._call_off())

    def run(self) -> Deferred:
        """Fires with the Digest, or fails with Unavailable listing each source's reason."""
        self._next()
        return self.done

    def _next(self) -> None:
        """Ask the next source.

        An attempt can end (or queue us) before it is started, and ask for
        the next source from within this call: it is counted, and this loop
        asks it, so a thousand sources failing in a row do not nest a
        thousand calls.
        """
        self._asks += 1
        if self._asking:
            return
        self._asking = True
        try:
            while self._asks and not self._over:
                self._asks -= 1
                self._ask_next()
        finally:
            self._asking = False
            self._asks = 0

    def _ask_next(self) -> None:
        if not self._waiting:
            if not self._attempts:
                reasons = "; ".join(f"{s.host}: {self._errors[s]}" for s in self.sources if s in self._errors)
                self._over = True
                self.done.errback(Unavailable(f"no source gave a valid piece list ({reasons})"))
            return
        source = self._waiting.pop(0)
        self._attempts[source] = None  # under way already while it starts (it may queue us at once)
        d = Deferred.fromCoroutine(self._ask(source))
        if self._over:  # decided while it started (the next source, asked at once, won)
            self._attempts.pop(source, None)
            d.addErrback(lambda _: None)
            d.cancel()
            return
        self._attempts[source] = d
        d.addCallbacks(self._won, self._lost, (source,), None, (source,))

    async def _ask(self, source: Source) -> Digest:
        hedged = False

        def queued(place: int) -> None:
            nonlocal hedged
            if not hedged:  # this one makes us wait: ask the next source meanwhile
                hedged = True
                self._next()

        watched = []

        def watch(protocol: Any) -> None:
            watched.append(protocol)
            protocol.on_queued = queued
            if protocol.queue_position:
                queued(protocol.queue_position)
            self.watch(protocol)

        try:
            protocol = await self.pool.connect(source.address, watch, ticket=source.ticket or None)
        except BaseException:
            for p in watched:
                self.unwatch(p)
            raise
        try:
            reply = await protocol.pieces(self.root)
            digest = Digest.from_wire(reply.get("size"), reply.get("piece_size"), reply.get("pieces"), self.root)
        except BaseException:  # a bad reply, or called off with the request outstanding
            self.pool.discard(protocol)
            raise
        finally:
            self.unwatch(protocol)
        self.pool.release(protocol)
        if digest.size != self.size:
            raise Unavailable("size differs from the index")
        return digest

    def _won(self, digest: Digest, source: Source) -> None:
        self._attempts.pop(source, None)
        if not self._over:
            self._call_off()
            self.done.callback(digest)

    def _lost(self, failure: Any, source: Source) -> None:
        self._attempts.pop(source, None)
        if self._over:
            return  # called off
        if not failure.check(FileshareError, ValueError, TypeError):
            self._call_off()
            self.done.errback(failure)
            return
        self._errors[source] = failure.value.message if failure.check(FileshareError) else str(failure.value)
        self.failed.add(source)
        self._next()

    def _call_off(self) -> None:
        """Cancel every attempt still running (their connections are aborted)."""
        self._over = True
        attempts, self._attempts = self._attempts, {}
        for d in attempts.values():
            if d is not None:
                d.addErrback(lambda _: None)
                d.cancel()
