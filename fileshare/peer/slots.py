"""
Upload slots: how many fetchers a peer serves at once, who is next, and who gives a slot back.

Kept apart from the protocol so the policy can be read and changed on its
own.  Waiting connections are kept per remote address and served round-robin
by address, so one address with many connections delays another by at most
one slot turn; the queue a single address may fill is bounded; and while
others wait, an address holds no more than its fair share of the slots.
"""

import math
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime

from ..errors import FileshareError

if TYPE_CHECKING:
    from .upload import UploadProtocol

#: While others wait for a slot, a connection idle this long loses its slot.
SLOT_IDLE_GRACE = 2.0
#: Connections from one address that may wait for a slot at once; more are refused.
MAX_QUEUED_PER_ADDRESS = 8
#: A waiting connection hears its place at least this often, so a fetcher
#: can tell a live queue from a dead source.
QUEUE_KEEPALIVE = 10.0


class QueueFull(FileshareError):
    """This address already has as many connections waiting as it may."""

    code = "queue-full"


def host_of(protocol: "UploadProtocol") -> str:
    return getattr(protocol.transport.getPeer(), "host", "?")


class UploadSlots:
    """At most *limit* connections are served at once; the rest wait, at most *per_address* per address.

    A freed slot goes to the address holding the fewest slots; among equal
    addresses, to the one whose turn came longest ago (an address that is
    served goes to the back of the line), and within an address to its
    oldest connection.  While other addresses wait, an address holding more
    than ``ceil(limit / addresses holding or waiting)`` slots is asked to
    give the newest of them back at its next request boundary
    (:meth:`UploadProtocol.must_yield`).  A fetcher keeps its connection
    open for a moment after a fetch, to reuse it; while others wait, a
    connection idle for SLOT_IDLE_GRACE is closed to free its slot.
    Fetchers keep idle connections for less than that, so they never reuse
    one being closed.
    """

    def __init__(
        self,
        limit: int | None,
        clock: IReactorTime,
        per_address: int = MAX_QUEUED_PER_ADDRESS,
        keepalive: float = QUEUE_KEEPALIVE,
    ) -> None:
        self.limit = limit
        self.clock = clock
        self.per_address = per_address
        self.keepalive = keepalive
        #: Slot holders, each with the time it got its slot.
        self.granted: dict[UploadProtocol, float] = {}
        #: Waiting connections by address; the order of the addresses is their turn.
        self._queues: dict[str, deque[UploadProtocol]] = {}
        self._reclaim_call: Any = None
        self._keepalive_call: Any = None
        self._places_call: Any = None
        self._changing = False
        self._again = False

    @property
    def active(self) -> set["UploadProtocol"]:
        return set(self.granted)

    @property
    def waiting(self) -> list["UploadProtocol"]:
        """Waiting connections in the order they would be served if no slot holder changed address."""
        held = Counter(host_of(p) for p in self.granted)
        order = sorted(self._queues, key=lambda host: held[host])  # stable: turn order among equals
        queues = [list(self._queues[host]) for host in order]
        return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]

    @property
    def anyone_waits(self) -> bool:
        """Whether any connection waits (without ordering them all, as :attr:`waiting` does)."""
        return bool(self._queues)

    def queued_from(self, host: str) -> int:
        return len(self._queues.get(host, ()))

    def request(self, protocol: "UploadProtocol") -> None:
        """Grant *protocol* a slot or queue it; QueueFull if its address may queue no more."""
        if self.limit is None or (len(self.granted) < self.limit and not self._queues):
            self._grant(protocol)
            return
        host = host_of(protocol)
        queue = self._queues.setdefault(host, deque())
        if len(queue) >= self.per_address:
            raise QueueFull(
                f"too many connections from {host} wait for an upload slot (limit {self.per_address}); try later"
            )
        queue.append(protocol)
        protocol.queued(self.waiting.index(protocol) + 1)  # its place at once; later moves in a batch
        self._changed()
        self.reclaim()

    def release(self, protocol: "UploadProtocol") -> None:
        """*protocol* gives up its slot or its place (closed or taken back)."""
        if self.granted.pop(protocol, None) is None:
            host = host_of(protocol)
            queue = self._queues.get(host)
            if queue is None or protocol not in queue:
                return
            queue.remove(protocol)
            if not queue:
                del self._queues[host]
        self._changed()

    def others_wait(self, protocol: "UploadProtocol") -> int:
        """How many connections wait, if any waits from another address than *protocol*'s; else 0."""
        host = host_of(protocol)
        if any(h != host for h in self._queues):
            return sum(map(len, self._queues.values()))
        return 0

    # -- the policy

    def _grant(self, protocol: "UploadProtocol") -> None:
        self.granted[protocol] = self.clock.seconds()
        protocol.slotGranted()

    def _changed(self) -> None:
        """Fill free slots, ask greedy addresses to give slots back, and have the waiting told their places.

        A slot given back at once (by an idle holder) calls in here again:
        that call only asks for another pass, so each pass sees the slots as
        they are and no more slots are taken back than others wait for.
        Places are told once per reactor turn (:meth:`_tell_places`), so a
        thousand waiting connections closing at once cost one pass over
        the line, not a thousand passes and half a million messages.
        """
        if self._changing:
            self._again = True
            return
        self._changing = True
        try:
            self._again = True
            while self._again:
                self._again = False
                self._fill()
                self._rebalance()
            if self._queues and self._places_call is None:
                self._places_call = self.clock.callLater(0, self._tell_places)
            self._schedule_keepalive()
        finally:
            self._changing = False

    def _tell_places(self) -> None:
        """Tell every waiting connection whose place changed its new place."""
        self._places_call = None
        for position, p in enumerate(self.waiting, 1):
            if p.position != position:
                p.queued(position)

    def _fill(self) -> None:
        while self._queues and self.limit is not None and len(self.granted) < self.limit:
            held = Counter(host_of(p) for p in self.granted)
            host = min(self._queues, key=lambda h: held[h])  # min() keeps the first in turn among equals
            queue = self._queues.pop(host)
            protocol = queue.popleft()
            if queue:
                self._queues[host] = queue  # to the back of the line
            self._grant(protocol)

    def _rebalance(self) -> None:
        held: dict[str, list[UploadProtocol]] = {}
        for p in sorted(self.granted, key=self.granted.__getitem__):
            held.setdefault(host_of(p), []).append(p)
        share = 0
        if self._queues and self.limit is not None:
            share = max(1, math.ceil(self.limit / len(held.keys() | self._queues.keys())))
        for host, holders in held.items():
            over = share and len(holders) > share and any(h != host for h in self._queues)
            for i, p in enumerate(holders):
                if self._again:
                    return  # a slot was given back: the next pass looks again
                p.must_yield(bool(over) and i >= share, share)

    def _schedule_keepalive(self) -> None:
        if self._queues and self._keepalive_call is None:
            self._keepalive_call = self.clock.callLater(self.keepalive, self._keep_alive)
        elif not self._queues and self._keepalive_call is not None:
            if self._keepalive_call.active():
                self._keepalive_call.cancel()
            self._keepalive_call = None

    def _keep_alive(self) -> None:
        """Tell every waiting connection its place again, changed or not."""
        self._keepalive_call = None
        for position, p in enumerate(self.waiting, 1):
            p.queued(position)
        self._schedule_keepalive()

    def reclaim(self) -> None:
        """Close slot holders idle for long enough while others wait; check again later for the rest."""
        if self._reclaim_call is not None and self._reclaim_call.active():
            self._reclaim_call.cancel()
        self._reclaim_call = None
        if not self._queues:
            return
        now = self.clock.seconds()
        soonest = None
        for p in list(self.granted):
            if p.idle_since is None:
                continue
            left = p.idle_since + SLOT_IDLE_GRACE - now
            if left <= 0:
                p.give_back()
                if not self._queues:
                    return
            else:
                soonest = left if soonest is None else min(soonest, left)
        if soonest is not None:
            self._reclaim_call = self.clock.callLater(soonest, self.reclaim)
