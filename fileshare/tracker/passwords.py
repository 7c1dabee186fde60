"""
Password hashing with scrypt, a salted memory-hard function.

Only the encoded hash is stored; hashing takes tens of milliseconds on
purpose, so callers run it in a thread.
"""

import base64
import hashlib
import hmac
import os
from collections import deque
from collections.abc import Callable

from twisted.internet.defer import Deferred, maybeDeferred

from ..errors import Throttled, Unavailable

# 16 MiB of memory per hash (128 * r * n bytes).
N, R, P = 2**14, 8, 1
_DKLEN = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, n: int = N, r: int = R, p: int = P) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_DKLEN, maxmem=256 * 1024 * 1024)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        if len(expected) != _DKLEN:
            return False
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=_DKLEN,
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


#: A hash in the stored format with today's cost that no password matches.  A
#: login to an unknown account is checked against it, so that it costs the same
#: scrypt work, and takes the same time, as a wrong password for a real one.
DUMMY_HASH = f"scrypt${N}${R}${P}${_b64(bytes(16))}${_b64(bytes(_DKLEN))}"


#: Password hashes computed at once (``--hash-threads``): one fewer than the CPUs leaves a core to the
#: reactor thread, which answers lookups while a login storm is checked.
HASH_THREADS = max(1, (os.cpu_count() or 2) - 1)
#: Password checks waiting in line at most (``--hash-queue``); a login past it is refused at once as busy.
#: At ~50 checks a second a full line drains in about 10 s, well inside the 30 s login timeout.
HASH_QUEUE = 500


class HashingQueue:
    """Password hashing in line: at most *concurrency* in the thread pool, at most *waiting* queued.

    A login storm then costs the tracker *concurrency* cores, never all of
    them, and the hashes wait here in order rather than in the pool's
    unbounded queue.  A check whose connection is gone by its turn is
    skipped: its login could not be answered anyway.  The line is walked in
    a loop, not by callbacks calling each other, so hundreds of skipped
    checks in a row (a storm whose connections timed out while waiting) do
    not nest one call per check.
    """

    def __init__(self, concurrency: int = HASH_THREADS, waiting: int = HASH_QUEUE) -> None:
        self.concurrency = concurrency
        self.waiting = waiting
        self._line: deque[tuple[Callable[[], Deferred], Callable[[], bool], Deferred]] = deque()
        self._running = 0
        self._pumping = False

    @property
    def queued(self) -> int:
        """Checks waiting for their turn (not counting those running)."""
        return len(self._line)

    def run(self, start: Callable[[], Deferred], wanted: Callable[[], bool] = lambda: True) -> Deferred:
        """Call *start* (which hands the hash to the pool) in turn; Throttled at once if the line is full."""
        if self.queued >= self.waiting:
            raise Throttled("the tracker is busy checking passwords; try again in 1 s")
        d: Deferred = Deferred()
        self._line.append((start, wanted, d))
        self._pump()
        return d

    def _pump(self) -> None:
        if self._pumping:
            return  # the loop below is running further up the stack and will see the change
        self._pumping = True
        try:
            while self._line and self._running < self.concurrency:
                start, wanted, d = self._line.popleft()
                if not wanted():
                    d.errback(Unavailable("connection lost while waiting for the password check"))
                    continue
                self._running += 1
                maybeDeferred(start).addBoth(self._done, d)
        finally:
            self._pumping = False

    def _done(self, result: object, d: Deferred) -> None:
        self._running -= 1
        d.callback(result)  # a Failure fails it
        self._pump()
