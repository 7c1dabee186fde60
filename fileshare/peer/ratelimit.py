"""
A token bucket shared by every connection of one direction (upload or
download), so ``--upload-rate`` caps the peer as a whole.

Callers ask :meth:`TokenBucket.delay_for` before moving bytes: it books the
bytes and says how long to wait first.  Nothing sleeps; the caller schedules
itself on the clock, so the reactor never stalls.
"""

import re

from twisted.internet.interfaces import IReactorTime

from ..errors import BadRequest

_RATE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMG]?)(?:i?B)?(?:/s)?\Z", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_rate(text: str) -> int | None:
    """``20M`` -> 20971520 bytes per second; ``0``/``unlimited`` -> None."""
    text = text.strip()
    if text.lower() in ("", "0", "none", "unlimited"):
        return None
    m = _RATE.match(text)
    if not m:
        raise BadRequest(f"bad rate {text!r}: use bytes per second with an optional K, M or G suffix, e.g. 20M")
    rate = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    return rate or None


class TokenBucket:
    """*rate* bytes per second with bursts of up to *burst* bytes (a quarter second by default)."""

    def __init__(self, rate: int | None, clock: IReactorTime, burst: int | None = None) -> None:
        self.rate = rate
        self.clock = clock
        self.burst = burst if burst is not None else (max(rate // 4, 64 * 1024) if rate else 0)
        self._tokens = float(self.burst)
        self._stamp = clock.seconds()

    def delay_for(self, nbytes: int) -> float:
        """Book *nbytes*; the seconds to wait before sending them (0 when unlimited)."""
        if not self.rate:
            return 0.0
        now = self.clock.seconds()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= nbytes
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate
