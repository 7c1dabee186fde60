"""Event counters for the admin console's ``stats``: since start and in the last minute."""

from collections import deque

from twisted.internet.interfaces import IReactorTime

#: The "recent" window of every counter, in seconds.
RECENT = 60


class EventCounter:
    """Counts events in one-second buckets, so memory stays bounded however many arrive."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.total = 0
        self._buckets: deque[list[int]] = deque()  # [second, count], oldest first

    def add(self, n: int = 1) -> None:
        self.total += n
        second = int(self.clock.seconds())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([second, n])
        self._trim(second)

    def recent(self) -> int:
        """Events in the last :data:`RECENT` seconds."""
        self._trim(int(self.clock.seconds()))
        return sum(count for _, count in self._buckets)

    def _trim(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - RECENT:
            self._buckets.popleft()


class TrackerStats:
    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        #: When the tracker started, for the uptime the admin console and the web page show (set by the
        #: service as it starts; clocks in tests start at 0).
        self.started = 0.0
        self.logins = EventCounter(clock)
        self.failed_logins = EventCounter(clock)
        # Tickets for members-only downloads are issued elsewhere (another part
        # of issue 8); this stays at 0 until that code calls tickets.add().
        self.tickets = EventCounter(clock)
        #: ``sources`` lookups that found at least one online holder: a fetch starts with one
        #: (a fetch that asks again, for a fresh ticket, counts again).
        self.fetches_started = EventCounter(clock)
        #: Publishes of a file (name and root) another host already held: a finished fetch ends with
        #: one (so does publishing an identical local copy under the same name).
        self.fetches_finished = EventCounter(clock)

    def uptime(self) -> float:
        return self.clock.seconds() - self.started
