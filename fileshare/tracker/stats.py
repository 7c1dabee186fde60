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
        self.logins = EventCounter(clock)
        self.failed_logins = EventCounter(clock)
        # Tickets for members-only downloads are issued elsewhere (another part
        # of issue 8); this stays at 0 until that code calls tickets.add().
        self.tickets = EventCounter(clock)
