"""
One fetch from the moment it is asked for, before and while its Download runs.

The tracker lookup and the piece list come before there is a
:class:`~fileshare.peer.download.Download`, and either can wait (a source
that queues us for a slot); a :class:`Fetch` is what ``status`` shows and
``cancel`` stops during that time too.
"""

import enum
from typing import Any

from twisted.internet.defer import Deferred, succeed

from ..errors import FileshareError
from .download import Download, Progress


class Phase(enum.Enum):
    LOOKUP = "lookup"  # asking the tracker for sources
    PIECE_LIST = "piece-list"  # asking a source for the piece list (maybe queued for a slot)
    TRANSFER = "transfer"  # the Download runs


class Fetch:
    """A fetch of *fname* in flight; ``started`` is when it was asked for (its reported time counts from there)."""

    def __init__(self, fname: str, clock: Any) -> None:
        self.fname = fname
        self.clock = clock
        self.started = clock.seconds()
        self._looked_up: list[Deferred] = []
        self._phase = Phase.LOOKUP
        self.size: int | None = None
        self.root: str | None = None
        #: The connections asked for the piece list (their queue places are shown).
        self.asking: list[Any] = []
        self.download: Download | None = None
        #: The work before the download, cancelled to stop it.
        self.work: Deferred | None = None
        #: Why it was stopped before its download existed (raised by the fetch), if it was.
        self.stopped: FileshareError | None = None
        self._ended: list[Deferred] = []
        self.over = False

    @property
    def phase(self) -> Phase:
        return self._phase

    @phase.setter
    def phase(self, value: Phase) -> None:
        self._phase = value
        if value is not Phase.LOOKUP:
            self._fire_looked_up()

    def looked_up(self) -> Deferred:
        """Fires once the tracker's answer is in (the fetch went past the lookup) or the fetch ended.

        The web API waits for it, so a name nobody has is an error reply, not a fetch that fails later.
        """
        if self.over or self._phase is not Phase.LOOKUP:
            return succeed(None)
        d: Deferred = Deferred()
        self._looked_up.append(d)
        return d

    def _fire_looked_up(self) -> None:
        waiting, self._looked_up = self._looked_up, []
        for d in waiting:
            d.callback(None)

    def watch(self, connection: Any) -> None:
        """*connection* is being asked for the piece list (pool ``watch`` hook)."""
        self.asking.append(connection)

    def unwatch(self, connection: Any) -> None:
        if connection in self.asking:
            self.asking.remove(connection)

    def progress(self) -> Progress:
        if self.download is not None:
            return self.download.progress()
        asking = [c for c in self.asking if c.connected]
        places = [c.queue_position for c in asking if c.queue_position]
        queued = min(places) if places else None
        return Progress(self.fname, self.size, 0, 0.0, len(asking), queued, self.phase.value)

    def stop(self, why: FileshareError, cancel: bool) -> Deferred:
        """End the fetch with *why*; fires once it has ended.  Its Download, if any, is
        cancelled (partial data removed) or stopped (kept) as *cancel* says."""
        if self.over:
            return succeed(None)
        if self.download is not None:
            return self.download.cancel() if cancel else self.download.stop()
        d: Deferred = Deferred()
        self._ended.append(d)
        if self.stopped is None:
            self.stopped = why
            if self.work is not None:
                self.work.cancel()
        return d

    def ended(self) -> None:
        self.over = True
        self._fire_looked_up()
        ended, self._ended = self._ended, []
        for d in ended:
            d.callback(None)
