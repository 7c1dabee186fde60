"""
Limits on password guessing, driven by a clock and nothing else.

:class:`Throttle` counts failed logins per key (an account name, or an
address).  The first few failures are free; after that each failure closes the
key for an exponentially growing delay, and enough of them close it for a
long lockout.  Nothing waits here: a refused attempt is answered at once with
how long to wait, so an attacker holds no connection or thread open.

:class:`Gate` bounds the password checks in flight per address (and in all),
so a flood from one address is refused at once instead of filling the hashing
pool's queue in front of honest logins.

Both keep memory bounded: a throttle forgets a key once its window has passed
and evicts the least recently failed key when the table is full.
"""

import math
from collections import OrderedDict

import attrs
from twisted.internet.interfaces import IReactorTime

from ..errors import Throttled


@attrs.frozen
class Limits:
    """How hard a throttle is; see :meth:`Throttle.failed` for the schedule."""

    #: Failures allowed before any delay.
    free_failures: int = 3
    #: The delay after the first failure past the free ones; it doubles with each further one.
    base_delay: float = 1.0
    #: The longest delay before the lockout.
    max_delay: float = 60.0
    #: Failures that lock the key out for ``lockout`` seconds.
    lockout_failures: int = 10
    lockout: float = 900.0
    #: A key with no failure for this long (and not locked) starts again from zero.
    window: float = 900.0
    #: Most keys remembered; the least recently failed are forgotten first.
    max_entries: int = 10_000


#: Per account: 3 free failures, then 1 s, 2 s, 4 s ... 60 s; 15 min lockout after 10.
ACCOUNT_LIMITS = Limits()
#: Per address: looser, since many users may share one address (NAT), but still bounded.
ADDRESS_LIMITS = Limits(free_failures=10, lockout_failures=50)


@attrs.define
class _Entry:
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0


class Throttle:
    def __init__(self, clock: IReactorTime, limits: Limits = ACCOUNT_LIMITS) -> None:
        self.clock = clock
        self.limits = limits
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def wait(self, key: str) -> float:
        """Seconds before *key* may try again; 0.0 if it may try now."""
        self._forget_old()
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return max(0.0, entry.blocked_until - self.clock.seconds())

    def failures(self, key: str) -> int:
        self._forget_old()
        entry = self._entries.get(key)
        return entry.failures if entry is not None else 0

    def failed(self, key: str) -> float:
        """Count a failure of *key*; return the delay it now has to wait.

        With the default limits: failures 1-3 cost nothing, the 4th closes the
        key for 1 s, the 5th for 2 s, doubling up to 60 s; the 10th and every
        later one locks it out for 15 minutes.
        """
        now = self.clock.seconds()
        self._forget_old()
        entry = self._entries.pop(key, None) or _Entry()
        entry.failures += 1
        entry.last_failure = now
        limits = self.limits
        if entry.failures >= limits.lockout_failures:
            delay = limits.lockout
        elif entry.failures > limits.free_failures:
            delay = min(limits.max_delay, limits.base_delay * 2 ** (entry.failures - limits.free_failures - 1))
        else:
            delay = 0.0
        entry.blocked_until = now + delay
        self._entries[key] = entry
        while len(self._entries) > limits.max_entries:
            self._entries.popitem(last=False)
        return delay

    def succeeded(self, key: str) -> None:
        """A success wipes the slate for *key*."""
        self._entries.pop(key, None)

    def _forget_old(self) -> None:
        # Entries are ordered by their last failure, so expired ones are at the front.
        now = self.clock.seconds()
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if now - entry.last_failure < self.limits.window or now < entry.blocked_until:
                return
            del self._entries[key]


def seconds_text(seconds: float) -> str:
    """A wait in whole seconds, rounded up so that trying again then succeeds."""
    return f"{max(1, math.ceil(seconds))} s"


class Gate:
    """At most *per_key* operations in flight per key and *total* in all."""

    def __init__(self, per_key: int = 2, total: int = 64) -> None:
        self.per_key = per_key
        self.total = total
        self._in_flight: dict[str, int] = {}
        self._count = 0

    def in_flight(self, key: str) -> int:
        return self._in_flight.get(key, 0)

    def enter(self, key: str) -> bool:
        """Take a place for *key*; False (and nothing taken) if its share or the total is used up."""
        if self._count >= self.total or self._in_flight.get(key, 0) >= self.per_key:
            return False
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        self._count += 1
        return True

    def admit(self, key: str) -> None:
        """:meth:`enter` for a password check from address *key*, or Throttled saying which cap is full."""
        if not self.enter(key):
            if self.in_flight(key) >= self.per_key:
                raise Throttled(f"too many password checks at once from {key}; wait for their answers")
            raise Throttled("the tracker is busy checking passwords; try again in 1 s")

    def leave(self, key: str) -> None:
        left = self._in_flight[key] - 1
        if left:
            self._in_flight[key] = left
        else:
            del self._in_flight[key]
        self._count -= 1
