"""
Upload slots: how many fetchers a peer serves at once, and who is next.

Kept apart from the protocol so the policy (fewest slots per host first,
idle holders closed while others wait) can be read and changed on its own.
"""

from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime

if TYPE_CHECKING:
    from .upload import UploadProtocol

#: While others wait for a slot, a connection idle this long loses its slot.
SLOT_IDLE_GRACE = 2.0


def _host_of(protocol: "UploadProtocol") -> str:
    return getattr(protocol.transport.getPeer(), "host", "?")


class UploadSlots:
    """At most *limit* connections are served at once; the rest wait.

    A freed slot goes to the waiting connection whose host holds the fewest
    slots, oldest first, so one greedy host cannot keep every slot while
    others wait.  A fetcher keeps its connection open for a moment after a
    fetch, to reuse it; while others wait, a connection idle for
    SLOT_IDLE_GRACE is closed to free its slot.  Fetchers keep idle
    connections for less than that, so they never reuse one being closed.
    """

    def __init__(self, limit: int | None, clock: IReactorTime) -> None:
        self.limit = limit
        self.clock = clock
        self.active: set[UploadProtocol] = set()
        self.waiting: deque[UploadProtocol] = deque()
        self._reclaim_call: Any = None

    def request(self, protocol: "UploadProtocol") -> None:
        if self.limit is None or len(self.active) < self.limit:
            self.active.add(protocol)
            protocol.slotGranted()
        else:
            self.waiting.append(protocol)
            protocol.queued(len(self.waiting))
            self.reclaim()

    def reclaim(self) -> None:
        """Close slot holders idle for long enough while others wait; check again later for the rest."""
        if self._reclaim_call is not None and self._reclaim_call.active():
            self._reclaim_call.cancel()
        self._reclaim_call = None
        if not self.waiting:
            return
        now = self.clock.seconds()
        soonest = None
        for p in list(self.active):
            if p.idle_since is None:
                continue
            left = p.idle_since + SLOT_IDLE_GRACE - now
            if left <= 0:
                p.transport.loseConnection()
            else:
                soonest = left if soonest is None else min(soonest, left)
        if soonest is not None:
            self._reclaim_call = self.clock.callLater(soonest, self.reclaim)

    def release(self, protocol: "UploadProtocol") -> None:
        if protocol in self.active:
            self.active.discard(protocol)
        elif protocol in self.waiting:
            self.waiting.remove(protocol)
        while self.waiting and (self.limit is None or len(self.active) < self.limit):
            held = Counter(_host_of(p) for p in self.active)
            nxt = min(self.waiting, key=lambda p: held[_host_of(p)])  # min() keeps the oldest of equals
            self.waiting.remove(nxt)
            self.active.add(nxt)
            nxt.slotGranted()
        for position, p in enumerate(self.waiting, 1):
            if p.position != position:
                p.queued(position)
