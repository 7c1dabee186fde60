"""
Recording fakes of the peer's seams (fileshare.peer.interfaces), for tests
of Peer and Download without sockets, databases or threads.

Thread work is queued on a :class:`QueuedThreadPool` and runs when the test
says (:meth:`QueuedThreadPool.run`), so every interleaving is chosen by the
test; time is a :class:`FakeReactor` (a ``task.Clock``).
"""

import hashlib
import os
from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from fileshare.errors import NotFound, Unavailable
from fileshare.peer.interfaces import IRepository, ISourceConnection, ISourcePool, ITrackerLink, IUploadService
from fileshare.peer.repository import Entry, Stamp
from fileshare.pieces import Digest, root_of


def digest_of(data: bytes, piece_size: int) -> Digest:
    """The Digest of *data* cut into pieces of *piece_size* (any size, for small tests)."""
    chunks = [data[i : i + piece_size] for i in range(0, len(data), piece_size)] or [b""]
    pieces = b"".join(hashlib.sha256(c).digest() for c in chunks)
    return Digest(len(data), piece_size, pieces, root_of(pieces))


class FakeReactor(Clock):
    """A Clock that also takes results back from (fake) threads, at once."""

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class QueuedThreadPool:
    """Stands in for a ThreadPool: jobs wait until :meth:`run`, then run in order on this thread."""

    def __init__(self) -> None:
        self.jobs: deque[tuple[Any, Any, tuple, dict]] = deque()
        self.ran: list[str] = []
        #: (job name, exception) of the jobs that raised.
        self.failures: list[tuple[str, BaseException]] = []

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        self.jobs.append((on_result, f, args, kwargs))

    def run(self, limit: int | None = None) -> int:
        """Run queued jobs (and those they queue) until none is left, or *limit* ran; how many ran."""
        n = 0
        while self.jobs and (limit is None or n < limit):
            on_result, f, args, kwargs = self.jobs.popleft()
            self.ran.append(f.__name__)
            n += 1
            try:
                result = f(*args, **kwargs)
            except BaseException as e:
                self.failures.append((f.__name__, e))
                on_result(False, Failure())
            else:
                on_result(True, result)
        return n


class FakeTransport:
    def __init__(self, connection: "FakeConnection") -> None:
        self.connection = connection
        self.aborted = False
        self.closed = False

    def abortConnection(self) -> None:
        self.aborted = True
        self.connection.lose("aborted")

    def loseConnection(self) -> None:
        self.closed = True
        self.connection.lose("closed")


@implementer(ISourceConnection)
class FakeConnection:
    """A source serving *data*: every request is answered when the test calls :meth:`serve`,
    or at once if *auto*.  *corrupt* holds offsets whose byte is flipped in what it sends."""

    def __init__(
        self,
        clock: Clock,
        data: bytes,
        endpoint: str,
        auto: bool = True,
        pieces_reply: Any = None,
        corrupt: set[int] | None = None,
    ) -> None:
        self.clock = clock
        self.data = data
        self.endpoint_name = endpoint
        self.auto = auto
        self.pieces_reply = pieces_reply
        self.corrupt = corrupt or set()
        self.connected = True
        self.transport = FakeTransport(self)
        self.queue_position: int | None = None
        self.last_progress = clock.seconds()
        self.pauses: set[str] = set()
        self.requests: deque[tuple[int, int, Any, Deferred]] = deque()
        self.asked: list[tuple[int, int]] = []
        self.pieces_asked: list[str] = []

    @property
    def busy(self) -> bool:
        return bool(self.requests)

    @property
    def paused(self) -> bool:
        return bool(self.pauses)

    def pause(self, reason: str, for_seconds: float | None = None) -> None:
        self.pauses.add(reason)

    def resume(self, reason: str) -> None:
        self.pauses.discard(reason)

    def pieces(self, root: str) -> Deferred:
        self.pieces_asked.append(root)
        if isinstance(self.pieces_reply, Deferred):  # answered when the test says
            return self.pieces_reply
        if isinstance(self.pieces_reply, Exception):
            return _failed(self.pieces_reply)
        return succeed(self.pieces_reply)

    def get(self, root: str, offset: int, length: int, sink: Any) -> Deferred:
        d: Deferred = Deferred()
        if not self.connected:
            d.errback(Unavailable("connection to source is closed"))
            return d
        self.asked.append((offset, length))
        self.requests.append((offset, length, sink, d))
        if self.auto:
            self.serve()
        return d

    def body(self, offset: int, length: int) -> bytes:
        out = bytearray(self.data[offset : offset + length])
        for at in self.corrupt:
            if offset <= at < offset + length:
                out[at - offset] ^= 0xFF
        return bytes(out)

    def serve(self, requests: int = 1, split: int = 1) -> None:
        """Answer the next *requests* requests, each body in *split* writes."""
        for _ in range(requests):
            if not self.requests:
                return
            offset, length, sink, d = self.requests.popleft()
            body = self.body(offset, length)
            step = max(1, -(-length // split))
            for i in range(0, length, step):
                self.last_progress = self.clock.seconds()
                sink.write(memoryview(body[i : i + step]))
            d.callback(length)

    def serve_all(self) -> None:
        while self.requests:
            self.serve()

    def lose(self, why: str) -> None:
        self.drop(f"connection to source lost: {why}")

    def drop(self, why: str) -> None:
        """Give up on the source as a request timeout does: what it owed fails with *why*."""
        if not self.connected:
            return
        self.connected = False
        requests, self.requests = self.requests, deque()
        for *_, d in requests:
            d.errback(Unavailable(why))


def _failed(e: Exception) -> Deferred:
    d: Deferred = Deferred()
    d.errback(e)
    return d


@implementer(ISourcePool)
class FakePool:
    """Hands out the connection registered for an endpoint (or raises the error registered).

    A callable registered is called for a new connection at each connect,
    and what it made is kept in ``made``.
    """

    #: Plain text: sources are PlainAddress records.
    identity = None

    def __init__(self) -> None:
        self.sources: dict[str, Any] = {}
        self.made: dict[str, list[Any]] = {}
        self.calls: list[tuple[str, Any]] = []
        #: (endpoint, ticket) of every connect, in order.
        self.tickets: list[tuple[str, str | None]] = []

    def add(self, endpoint: str, connection: Any) -> Any:
        self.sources[endpoint] = connection
        return connection

    async def connect(
        self, endpoint: str, watch: Any = None, queue_timeout: float | None = None, ticket: str | None = None
    ) -> Any:
        self.calls.append(("connect", endpoint, queue_timeout))
        self.tickets.append((endpoint, ticket))
        found = self.sources.get(endpoint)
        if found is None:
            raise Unavailable("cannot connect: ConnectionRefusedError")
        if isinstance(found, Exception):
            raise found
        if isinstance(found, tuple):  # (connection, slot): watched at once, greeted when slot fires
            connection, slot = found
            if watch is not None:
                watch(connection)
            try:
                await slot
            except BaseException:  # cancelled, or the slot never came: as the real pool, abort
                connection.transport.abortConnection()
                raise
            return connection
        if isinstance(found, Deferred):  # a connection the test completes itself
            found = await found
        elif callable(found):
            found = found()
            self.made.setdefault(endpoint, []).append(found)
        if watch is not None:
            watch(found)
        return found

    def release(self, connection: Any) -> None:
        self.calls.append(("release", connection.endpoint_name))

    def discard(self, connection: Any) -> None:
        self.calls.append(("discard", connection.endpoint_name))
        if connection.connected:
            connection.transport.abortConnection()

    def close(self) -> None:
        self.calls.append(("close",))


@implementer(IRepository)
class FakeRepository:
    """Fetched files and part files in a real directory; records in memory."""

    def __init__(self, directory: Any) -> None:
        self.directory = str(directory)
        os.makedirs(os.path.join(self.directory, ".fileshare", "partial"), exist_ok=True)
        self.by_name: dict[str, Entry] = {}
        self.saved: dict[str, tuple[str, Digest, bytes]] = {}
        self.calls: list[tuple] = []

    def entries(self) -> list[Entry]:
        return sorted(self.by_name.values(), key=lambda e: e.fname)

    def path_for(self, fname: str) -> str:
        return os.path.join(self.directory, fname)

    def partial_path(self, root: str) -> str:
        return os.path.join(self.directory, ".fileshare", "partial", f"{root}.part")

    async def publish(self, local_path: str, fname: str) -> Entry:
        raise NotImplementedError

    async def unpublish(self, fname: str) -> Entry:
        self.calls.append(("unpublish", fname))
        if fname not in self.by_name:
            raise NotFound(f"{fname!r} is not published here")
        return self.by_name.pop(fname)

    async def add_fetched(self, fname: str, digest: Digest, st: os.stat_result, resumable: bool = False) -> Entry:
        self.calls.append(("add_fetched", fname, digest.root))
        entry = Entry(fname, self.path_for(fname), Stamp.of(st), digest)
        self.by_name[fname] = entry
        if resumable:
            self.saved.pop(digest.root, None)
        return entry

    async def partial_digest(self, root: str) -> tuple[Digest, bytes] | None:
        self.calls.append(("partial_digest", root))
        saved = self.saved.get(root)
        return (saved[1], saved[2]) if saved else None

    async def partials(self) -> list[tuple[str, str, int, bytes]]:
        return [(root, f, d.size, v) for root, (f, d, v) in sorted(self.saved.items())]

    def save_partial(self, fname: str, digest: Digest, verified: bytes) -> Deferred:
        self.calls.append(("save_partial", fname, verified))
        self.saved[digest.root] = (fname, digest, verified)
        return succeed(None)

    async def drop_partial(self, root: str) -> bool:
        self.calls.append(("drop_partial", root))
        try:
            os.remove(self.partial_path(root))
        except FileNotFoundError:
            removed = False
        else:
            removed = True
        self.saved.pop(root, None)
        return removed


@implementer(ITrackerLink)
class FakeTracker:
    """Answers requests from *replies* (op -> reply dict or exception) and records them."""

    def __init__(self, replies: dict[str, Any] | None = None) -> None:
        self.replies = replies or {}
        self.calls: list[tuple] = []
        self.connected = True
        self.credentials: tuple[str, str] | None = ("bob", "secret")
        self.host: str | None = "bob"

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        self.calls.append((op, fields))
        reply = self.replies.get(op, {})
        if isinstance(reply, Deferred):  # answered when the test says
            reply = await reply
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def authed_call(self, op: str, **fields: Any) -> dict[str, Any]:
        return await self.call(op, **fields)

    async def login(self, name: str, password: str) -> int:
        self.calls.append(("login", name))
        return 0

    async def logout(self) -> None:
        self.calls.append(("logout",))

    async def publish(self, entry: Entry) -> bool:
        return await self.publish_fields(entry.fname, entry.size, entry.root)

    async def publish_fields(self, fname: str, size: int, root: str) -> bool:
        self.calls.append(("publish", fname, size, root))
        return True

    async def unpublish(self, fname: str) -> bool:
        self.calls.append(("unpublish", fname))
        return True


@implementer(IUploadService)
class FakeUploads:
    def __init__(self) -> None:
        self.slots = None
        self.sent_bytes = 0
        self.connections: set[Any] = set()
