"""
Log lines for limits that trigger, at most one per key per interval.

A flood of 1,000 connections over a cap must not write 1,000 lines: the
operator needs one line saying which limit triggered, for whom, and how many
times since the last line.  Callers pass the clock, so tests drive it with
:class:`twisted.internet.task.Clock`.
"""

from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

#: Seconds between two lines with the same key.
INTERVAL = 60.0


class RateLimitedLog:
    """Emit a warning per *key* at most once every *interval* seconds.

    The first line for a key is written at once; repeats within the
    interval are counted, and the next line written for that key says how
    many were held back (``suppressed`` field, and "(N more like this)").
    """

    def __init__(self, log: Logger, clock: IReactorTime, interval: float = INTERVAL) -> None:
        self.log = log
        self.clock = clock
        self.interval = interval
        self._last: dict[Any, float] = {}
        self._held: dict[Any, int] = {}

    def warn(self, key: Any, format: str, **fields: Any) -> bool:
        """Write *format* with *fields* unless *key* was logged within the interval; True if written."""
        return self._emit(self.log.warn, key, format, fields)

    def info(self, key: Any, format: str, **fields: Any) -> bool:
        """Like :meth:`warn`, at info level: for routine events that a flood could repeat."""
        return self._emit(self.log.info, key, format, fields)

    def _emit(self, emit: Any, key: Any, format: str, fields: dict[str, Any]) -> bool:
        now = self.clock.seconds()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        suppressed = self._held.pop(key, 0)
        self._last[key] = now
        if len(self._last) > 4096:
            self._forget(now)
        if suppressed:
            format += " ({suppressed} more like this in the last {interval:g} s)"
        emit(format, suppressed=suppressed, interval=self.interval, limit_key=str(key), **fields)
        return True

    def _forget(self, now: float) -> None:
        """Drop keys not logged within the interval, so the table stays small under a flood of addresses."""
        for key, last in list(self._last.items()):
            if now - last >= self.interval:
                del self._last[key]
                self._held.pop(key, None)
