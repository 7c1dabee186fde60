"""A rate-limited upload sends small chunks often, so a fetcher's request timeout never sees a paced source as dead."""

from itertools import pairwise

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from fileshare.peer.ratelimit import TokenBucket
from fileshare.peer.senders import CHUNK, SENDFILE_CHUNK, RangeSender, paced

DATA = bytes(range(256)) * 4096  # 1 MiB


class TimedTransport(StringTransport):
    """Notes the clock time of every write."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.writes: list[tuple[float, int]] = []

    def write(self, data: bytes) -> None:
        self.writes.append((self.clock.seconds(), len(data)))
        super().write(data)


def test_a_limited_bucket_caps_every_chunk_at_its_grain_and_an_unlimited_one_does_not():
    clock = Clock()
    assert paced(TokenBucket(1 << 20, clock), SENDFILE_CHUNK) == (1 << 20) // 32
    assert paced(TokenBucket(10_000, clock), CHUNK) == 4096
    assert paced(TokenBucket(None, clock), SENDFILE_CHUNK) == SENDFILE_CHUNK


def test_a_slow_upload_writes_at_least_every_few_seconds_never_a_megabyte_a_minute():
    clock = Clock()
    transport = TimedTransport(clock)
    bucket = TokenBucket(16 * 1024, clock)  # 16 KiB/s: 64 s per MiB

    def read(fd: int, size: int, offset: int):
        return succeed(DATA[offset : offset + size])

    sender = RangeSender(transport, -1, 0, len(DATA), clock, bucket, read)
    done = sender.start()
    while not done.called:
        clock.advance(0.5)

    assert transport.value() == DATA
    times = [t for t, _ in transport.writes]
    assert max(n for _, n in transport.writes) == 4096  # the grain of 16 KiB/s
    assert max(b - a for a, b in pairwise(times)) <= 4.5  # with 1 MiB chunks: 64 s
