"""
Repository thread pools: hashing on one, quick file calls on the other.

The bug this guards against: with one pool for both, ``drop_partial`` (awaited
before a multi-piece fetch answers OK) waited behind a publish that was
hashing.  The hash here blocks on an Event, on a real thread; every wait is
bounded by a timeout on the reactor, and the hash is always released before
the pools stop.
"""

import os
import threading
from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from fileshare.peer.repository import Repository
from fileshare.pieces import Digest, hash_file

BOUND = 10  # seconds; only a broken build waits this long
BIG = Digest(3 << 20, 1 << 20, bytes(96), "c" * 64)


class RecordingPool:
    """Runs calls at once and records the name of each function run."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any) -> None:
        self.ran.append(getattr(f, "__name__", type(f).__name__))
        try:
            result = f(*args)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)


class BlockingHasher:
    """hash_file that, for *blocked*, tells the reactor it started and then waits for ``release``."""

    def __init__(self, blocked: str) -> None:
        self.blocked = blocked
        self.started: Deferred = Deferred()
        self.release = threading.Event()

    def __call__(self, path: str) -> Digest:
        if path == self.blocked:
            reactor.callFromThread(self.started.callback, path)
            # Longer than any wait on the reactor, so a wait behind this hash times out there first.
            if not self.release.wait(3 * BOUND):
                raise TimeoutError("the test never released the hash")
        return hash_file(path)


def bounded(coroutine: Any) -> Deferred:
    return Deferred.fromCoroutine(coroutine).addTimeout(BOUND, reactor)


@pytest_twisted.ensureDeferred
async def test_hashing_runs_on_the_hashing_pool_and_file_checks_on_the_metadata_pool(tmp_path):
    hashing, metadata = RecordingPool(), RecordingPool()
    repo = Repository(str(tmp_path / "repo"), reactor, hashing, metadata)
    try:
        path = tmp_path / "notes.txt"
        path.write_bytes(b"notes")
        await repo.publish(str(path), "notes.txt")
        await repo.save_partial("big.iso", BIG, b"\x00\x00\x00")
        await repo.partial_digest(BIG.root)
        await repo.drop_partial(BIG.root)
    finally:
        repo.close()
    assert hashing.ran == ["hash_file"]
    assert metadata.ran == ["_stat_regular", "_stat_regular", "_stat_or_none", "remove_part", "remove_part"]


@pytest_twisted.ensureDeferred
async def test_drop_partial_and_unpublish_do_not_wait_for_a_publish_that_is_hashing(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"b" * 4096)
    small = tmp_path / "small.txt"
    small.write_bytes(b"small")
    hasher = BlockingHasher(str(big))
    hashing = ThreadPool(minthreads=0, maxthreads=1, name="test-hashing")
    metadata = ThreadPool(minthreads=0, maxthreads=1, name="test-metadata")
    hashing.start()
    metadata.start()
    repo = Repository(str(tmp_path / "repo"), reactor, hashing, metadata, hasher=hasher)
    try:
        await bounded(repo.publish(str(small), "small.txt"))
        await repo.save_partial("big.iso", BIG, b"\x00\x00\x00")
        part = Path(repo.partial_path(BIG.root))
        part.write_bytes(b"x")

        publishing = Deferred.fromCoroutine(repo.publish(str(big), "big.bin"))
        assert await hasher.started.addTimeout(BOUND, reactor) == str(big)

        await bounded(repo.drop_partial(BIG.root))
        assert not part.exists()
        assert await bounded(repo.partials()) == []
        await bounded(repo.unpublish("small.txt"))
        assert [e.fname for e in repo.entries()] == []
        # A cached file needs only a stat, so it is published meanwhile too.
        again = await bounded(repo.publish(str(small), "small.txt"))
        assert again.digest == hash_file(str(small))
        assert not publishing.called

        hasher.release.set()
        entry = await publishing.addTimeout(BOUND, reactor)
        assert entry.digest == hash_file(str(big))
        assert [e.fname for e in repo.entries()] == ["big.bin", "small.txt"]
    finally:
        hasher.release.set()
        repo.close()
        hashing.stop()
        metadata.stop()
    assert os.path.exists(big)
