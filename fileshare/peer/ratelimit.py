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


#: Seconds of the rate a full bucket holds: what an idle peer may send at once.
BURST_SECONDS = 0.1
#: A booking is at most this fraction of a second's worth of the rate (see :attr:`TokenBucket.grain`).
GRAIN_FRACTION = 1 / 32
MIN_GRAIN = 4 * 1024
MAX_GRAIN = 1 << 20
#: The grain of an unlimited bucket: no reason to cut reads or writes smaller.
UNLIMITED_GRAIN = 1 << 62


class TokenBucket:
    """*rate* bytes per second with bursts of up to *burst* bytes (a tenth of a second by default).

    The bucket may go into debt: a booking larger than the tokens left is
    granted with a delay that pays the debt off.  So what moves over any
    span of time is at most ``burst + rate x span`` plus the bookings made
    but not yet waited out, one :attr:`grain` per connection; callers keep
    their bookings to a grain so that this excess is a small fraction of a
    second of the rate (a cap of 20M stays within 5% over 10 s).
    """

    def __init__(self, rate: int | None, clock: IReactorTime, burst: int | None = None) -> None:
        self.rate = rate
        self.clock = clock
        if rate:
            self.grain = max(MIN_GRAIN, min(MAX_GRAIN, int(rate * GRAIN_FRACTION)))
        else:
            self.grain = UNLIMITED_GRAIN
        self.burst = burst if burst is not None else (max(int(rate * BURST_SECONDS), self.grain) if rate else 0)
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
