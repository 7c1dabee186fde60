"""
Hostile clients for the hostile-client suite, and what it measures.

The suite runs the tracker and peers as real ``twistd`` processes on
loopback (so their memory is their own: :func:`rss` reads
``/proc/PID/status``) and attacks them with the clients here:

- :func:`flood`: idle (or slow-loris) connections from a chosen loopback
  address (127.0.0.2, ...), each a :class:`Held` that records when it was
  closed;
- :class:`RPC`: a JSON-line client of the tracker over TLS, which can log in
  as a peer, announce, pipeline requests and stop reading;
- :class:`Uploader`: a raw client of a peer's upload port with a ticket;
- :class:`FakeSource`: logs in to the tracker as a peer, announces a file
  and then misbehaves on its transfer port (silent, trickling, oversized
  piece list).

Figures (memory before/peak/after, honest latency under attack) are added to
:data:`FIGURES`; ``conftest.pytest_terminal_summary`` prints them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sys
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import deferLater

from fileshare.pieces import piece_count, piece_size_for
from fileshare.tls import first_use_creator, generate, wrap_server_factory

from .harness import TRACKER_ARGS, ConsoleClient, console

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
LISTENING = re.compile(r"(tracker|admin console|peer uploads|peer console) listening on \S*:(\d+)$", re.MULTILINE)
MiB = 1 << 20

#: (test, what, figure) rows printed at the end of the run.
FIGURES: list[tuple[str, str, str]] = []


def figure(test: str, what: str, text: str) -> None:
    FIGURES.append((test, what, text))


# -- processes and their memory ------------------------------------------------


def rss(pid: int) -> int:
    """Resident memory of process *pid* in bytes (``VmRSS``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def pause(seconds: float) -> None:
    """Let the reactor run for *seconds* (between polls, never as an assertion)."""
    await deferLater(reactor, seconds, lambda: None)


async def until(predicate: Any, timeout: float, what: Any, step: float = 0.05) -> None:
    """Poll *predicate* until it holds; fail naming *what* (or what it returns) after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what() if callable(what) else what}: not within {timeout} s"
        await pause(step)


async def bounded(d: Deferred, timeout: float, what: str) -> Any:
    """The result of *d* (a Deferred or a coroutine), or a failure naming *what* once *timeout* seconds pass."""
    if not isinstance(d, Deferred):
        d = Deferred.fromCoroutine(d)
    d.addTimeout(timeout, reactor)
    try:
        return await d
    except Exception as e:
        if type(e).__name__ == "TimeoutError":
            raise AssertionError(f"{what}: no answer within {timeout} s") from None
        raise


class Node(ProcessProtocol):
    """A twistd process; ``ports`` fires once it listens on all *expected* services."""

    def __init__(self, name: str, expected: set[str]) -> None:
        self.name = name
        self.expected = expected
        self.found: dict[str, int] = {}
        self.ports: Deferred = Deferred()
        self.ended: Deferred = Deferred()
        self.output = b""
        self.watchers: list[Memory] = []

    @property
    def pid(self) -> int:
        return self.transport.pid

    def rss(self) -> int:
        return rss(self.pid)

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for name, port in LISTENING.findall(self.output.decode("utf-8", "replace")):
            self.found[name] = int(port)
        if not self.ports.called and self.expected <= set(self.found):
            self.ports.callback(self.found)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        for watcher in self.watchers:
            watcher.stop()
        self.watchers.clear()
        if not self.ports.called:
            self.ports.errback(RuntimeError(self.output.decode("utf-8", "replace")))
        self.ended.callback(None)

    @property
    def alive(self) -> bool:
        return not self.ended.called

    def log(self) -> str:
        return self.output.decode("utf-8", "replace")


class Cluster:
    """A tracker and peers as twistd processes (TLS on, as users run them), all killed at the end."""

    def __init__(self, directory: Any) -> None:
        self.directory = directory
        self.nodes: list[Node] = []
        self.tracker: Node | None = None

    async def _start(self, name: str, plugin: str, args: list[str], expected: set[str]) -> Node:
        node = Node(name, expected)
        argv = [TWISTD, "-n", "--pidfile=", "--logfile=-", plugin, *args]
        reactor.spawnProcess(node, TWISTD, argv, env=dict(os.environ), path=str(self.directory))
        self.nodes.append(node)
        await bounded(node.ports, 30, f"{name} starting")
        return node

    async def start_tracker(self, *options: str) -> Node:
        self.tracker = await self._start(
            "tracker",
            "fileshare-tracker",
            [*TRACKER_ARGS, *options],
            {"tracker", "admin console"},
        )
        return self.tracker

    async def start_peer(self, name: str, *options: str) -> Node:
        return await self._start(
            name,
            "fileshare-peer",
            [
                "--tracker",
                f"tcp:host=127.0.0.1:port={self.tracker_port}",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--control",
                "tcp:0:interface=127.0.0.1",
                "--web",
                "none",
                "--repo",
                name,
                *options,
            ],
            {"peer uploads", "peer console"},
        )

    @property
    def tracker_port(self) -> int:
        return self.tracker.found["tracker"]

    async def stop(self) -> None:
        for node in self.nodes:
            if node.alive:
                node.transport.signalProcess("KILL")
        for node in self.nodes:
            await node.ended


class Memory:
    """Watches one process's RSS through an attack: ``before``, ``peak`` (polled), ``after``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.before = node.rss()
        self.peak = self.before
        self.after: int | None = None
        self._poll = None
        self._schedule()
        node.watchers.append(self)

    def _schedule(self) -> None:
        self._poll = reactor.callLater(0.02, self._sample)

    def _sample(self) -> None:
        if self._sample_once():
            self._schedule()

    def stop(self) -> None:
        if self._poll is not None and self._poll.active():
            self._poll.cancel()
        self._sample_once()

    def _sample_once(self) -> bool:
        try:
            self.peak = max(self.peak, self.node.rss())
        except (OSError, AssertionError):
            return False  # the process has ended
        return True

    async def hold(self, seconds: float, bound: int) -> None:
        """
        Keep the attack on for *seconds* while watching: a burst is only
        bounded if memory stays bounded while it lasts.  Ends early once the
        peak passes before + *bound* (the test then fails on it).
        """
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.peak - self.before < bound and self.node.alive:
            await pause(0.05)

    async def settle(self, slack: int, timeout: float = 5.0) -> int:
        """Stop watching; wait (bounded) for RSS to come back within *slack* of ``before``; the final RSS."""
        self.stop()
        deadline = time.monotonic() + timeout
        while self.node.alive:
            self.after = self.node.rss()
            if self.after <= self.before + slack or time.monotonic() > deadline:
                break
            await pause(0.1)
        return self.after

    def record(self, test: str) -> None:
        after = "-" if self.after is None else f"{self.after / MiB:.0f}"
        figure(
            test,
            f"{self.node.name} RSS MiB",
            f"before {self.before / MiB:.0f}, peak {self.peak / MiB:.0f} (+{(self.peak - self.before) / MiB:.0f}), "
            f"after {after}",
        )


async def open_console(port: int) -> ConsoleClient:
    """A console connection whose greeting has come (bounded: a busy process must not hang the suite)."""
    return await bounded(console(port), 10, f"the console on port {port} greeting")


# -- honest users --------------------------------------------------------------


class Honest:
    """Two honest users, alice (source) and bob (fetcher), driven through their consoles."""

    def __init__(self, cluster: Cluster, alice: Node, bob: Node) -> None:
        self.cluster = cluster
        self.alice_node = alice
        self.bob_node = bob
        self.round = 0

    async def log_in(self) -> None:
        self.alice = await open_console(self.alice_node.found["peer console"])
        self.bob = await open_console(self.bob_node.found["peer console"])
        for c, name in ((self.alice, "alice"), (self.bob, "bob")):
            assert (await c.command(f"register {name} pw")).ok
            assert (await c.command(f"login {name} pw")).ok

    async def roundtrip(self, test: str, size: int = 5 * MiB // 2, timeout: float = 20.0) -> float:
        """
        Register a new account, publish a fresh file from alice and fetch it
        from bob: all must succeed with the right bytes.  Records and returns
        the fetch's latency.
        """
        self.round += 1
        name = f"honest-{self.round}-{secrets.token_hex(3)}.bin"
        path = self.cluster.directory / name
        data = os.urandom(size)
        path.write_bytes(data)
        registered = await bounded(
            self.bob.command(f"register h{self.round}{secrets.token_hex(3)} pw"), timeout, "register"
        )
        assert registered.ok, registered
        published = await bounded(self.alice.command(f"publish {path} {name}"), timeout, "publish")
        assert published.ok, published
        started = time.monotonic()
        fetched = await bounded(self.bob.command(f"fetch {name}"), timeout, "honest fetch")
        latency = time.monotonic() - started
        assert fetched.ok, fetched
        assert (self.cluster.directory / "bob" / name).read_bytes() == data
        figure(test, "honest fetch", f"{size / MiB:.1f} MiB in {latency * 1000:.0f} ms")
        return latency

    def close(self) -> None:
        for c in (self.alice, self.bob):
            if c.transport is not None:
                c.transport.loseConnection()


# -- floods of connections -----------------------------------------------------


class Held(Protocol):
    """A connection that says nothing (or what ``trickle`` gives it) and records its end."""

    def __init__(self, trickle: bytes = b"", every: float = 0.2) -> None:
        self.opened_at: float | None = None
        self.closed_at: float | None = None
        self.received = b""
        self.closed: Deferred = Deferred()
        self._trickle = trickle
        self._every = every
        self._call = None

    def connectionMade(self) -> None:
        self.opened_at = time.monotonic()
        if self._trickle:
            self._call = reactor.callLater(self._every, self._drip, 0)

    def _drip(self, i: int) -> None:
        if self.closed_at is None:
            self.transport.write(self._trickle[i % len(self._trickle) : i % len(self._trickle) + 1])
            self._call = reactor.callLater(self._every, self._drip, i + 1)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Any) -> None:
        self.closed_at = time.monotonic()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self.closed.callback(None)

    @property
    def open(self) -> bool:
        return self.opened_at is not None and self.closed_at is None

    @property
    def lifetime(self) -> float:
        return (self.closed_at or time.monotonic()) - self.opened_at

    def close(self) -> None:
        if self.open:
            self.transport.abortConnection()


def endpoint(port: int, source: str = "127.0.0.1", identity: Any = None) -> Any:
    """A client endpoint to 127.0.0.1:*port* from the loopback address *source*; TLS with *identity* if given."""
    tcp = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10, bindAddress=(source, 0))
    return tcp if identity is None else wrapClientTLS(first_use_creator(identity), tcp)


async def flood(port: int, count: int, source: str, identity: Any = None, trickle: bytes = b"") -> list[Held]:
    """*count* connections from *source*, all connected (a refused one may already be closed)."""
    held = [Held(trickle) for _ in range(count)]
    results = await DeferredList([connectProtocol(endpoint(port, source, identity), h) for h in held])
    for ok, value in results:
        assert ok, value
    return held


def close_all(held: list[Held]) -> None:
    for h in held:
        h.close()


# -- the tracker's RPC, spoken by hand -----------------------------------------


class RPC(Protocol):
    """
    A client of the tracker's JSON-line RPC that keeps every reply by ``re``
    (frames joined) and answers the tracker's ``ping`` unless told not to.
    """

    def __init__(self, answer_pings: bool = True) -> None:
        self.answer_pings = answer_pings
        self.buffer = b""
        self.next_id = 0
        self.waiting: dict[int, Deferred] = {}
        self.items: dict[int, list] = {}
        self.requests_seen: list[dict] = []
        self.closed: Deferred = Deferred()
        self.is_open = False
        self.on_request: Any = None

    def connectionMade(self) -> None:
        self.is_open = True

    def send(self, op: str, **fields: Any) -> tuple[int, bytes]:
        self.next_id += 1
        return self.next_id, json.dumps({"id": self.next_id, "op": op, **fields}).encode() + b"\n"

    def request(self, op: str, **fields: Any) -> Deferred:
        rid, line = self.send(op, **fields)
        d = self.waiting[rid] = Deferred()
        self.items[rid] = []
        self.transport.write(line)
        return d

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self.messageReceived(json.loads(line))

    def messageReceived(self, message: dict) -> None:
        if "re" not in message:
            self.requests_seen.append(message)
            if self.on_request is not None:
                self.on_request(self, message)
            elif self.answer_pings and message.get("op") in ("ping", "ended"):
                self.transport.write(json.dumps({"re": message["id"], "ok": True}).encode() + b"\n")
            return
        rid = message["re"]
        if rid not in self.waiting:
            return
        self.items[rid].extend(message.get("items", []))
        if message.get("ok") and message.get("more") is True:
            return
        message["items"] = self.items.pop(rid)
        self.waiting.pop(rid).callback(message)

    def connectionLost(self, reason: Any) -> None:
        self.is_open = False
        for d in self.waiting.values():
            d.errback(ConnectionError("tracker connection lost"))
        self.waiting.clear()
        self.closed.callback(None)

    def stop_reading(self) -> None:
        """Never read again: the tracker's replies pile up in its own buffers, as a hostile client's would."""
        self.transport.pauseProducing()


async def rpc_client(port: int, identity: Any, source: str = "127.0.0.1", answer_pings: bool = True) -> RPC:
    client = RPC(answer_pings)
    await connectProtocol(endpoint(port, source, identity), client)
    return client


async def call(client: RPC, op: str, timeout: float = 10.0, **fields: Any) -> dict:
    return await bounded(client.request(op, **fields), timeout, f"tracker {op}")


async def logged_in(port: int, name: str, transfer_port: int = 9, identity: Any = None, **kw: Any) -> RPC:
    """A tracker client that said hello, registered *name* and logged in as it."""
    client = await rpc_client(port, identity or generate(name), **kw)
    assert (await call(client, "hello", versions=[1]))["ok"]
    registered = await call(client, "register", name=name, password="pw")
    assert registered["ok"] or registered["code"] == "conflict", registered
    login = await call(client, "login", name=name, password="pw", port=transfer_port)
    assert login["ok"], login
    return client


def junk_records(count: int, prefix: str) -> list[dict]:
    return [
        {"fname": f"{prefix}-{i:05d}.junk", "size": i, "root": hashlib.sha256(b"%d" % i).hexdigest()}
        for i in range(count)
    ]


# -- the transfer protocol, spoken by hand -------------------------------------


def line(message: dict) -> bytes:
    return json.dumps(message).encode() + b"\n"


class Uploader(Held):
    """
    A client of a peer's upload port that sends *greeting* (hello, requests)
    at once; unless *read*, it stops reading after the first line (the
    greeting, ``queued`` or a refusal), as a hostile fetcher would.
    """

    def __init__(self, greeting: bytes, read: bool = True) -> None:
        super().__init__()
        self.greeting = greeting
        self.read = read
        #: The first line received, decoded (None if the connection closed first).
        self.first: dict | None = None
        self.first_line: Deferred = Deferred()

    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.write(self.greeting)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if b"\n" in self.received and not self.first_line.called:
            if not self.read:
                self.transport.pauseProducing()
            self.first = json.loads(self.received.split(b"\n", 1)[0])
            self.first_line.callback(self.first)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if not self.first_line.called:
            self.first_line.callback(None)

    def lines(self) -> list[dict]:
        out = []
        for raw in self.received.split(b"\n")[:-1]:
            try:
                out.append(json.loads(raw))
            except ValueError:
                break  # a get body follows
        return out


async def upload(port: int, greeting: bytes, identity: Any, source: str, read: bool = True) -> Uploader:
    """An :class:`Uploader` connected from *source* whose first line (None if closed first) has come."""
    client = Uploader(greeting, read)
    await connectProtocol(endpoint(port, source, identity), client)
    await bounded(client.first_line, 10, "the upload port's first line")
    return client


class Sustained:
    """Keeps *count* :class:`Uploader` connections open from *source*, opening a new one whenever one ends."""

    def __init__(self, port: int, greeting: bytes, identity: Any, source: str, count: int) -> None:
        self.args = (port, greeting, identity, source)
        self.count = count
        self.running = True
        self.clients: list[Uploader] = []
        for _ in range(count):
            self._open()

    def _open(self) -> None:
        port, greeting, identity, source = self.args
        client = Uploader(greeting, read=False)
        self.clients.append(client)
        client.closed.addCallback(lambda _: reactor.callLater(0.05, self._open) if self.running else None)
        connectProtocol(endpoint(port, source, identity), client).addErrback(lambda f: None)

    def stop(self) -> None:
        self.running = False
        close_all(self.clients)

    @property
    def refused(self) -> int:
        """Connections closed without a greeting or a place in the queue."""
        return sum(1 for c in self.clients if c.closed_at is not None and not c.lines())


def established(port: int) -> list[str]:
    """Remote IPv4 addresses of the established connections a local *port* accepted (from /proc/net/tcp)."""
    found = []
    with open("/proc/net/tcp") as f:
        for row in f.readlines()[1:]:
            local, remote, state = row.split()[1:4]
            if state == "01" and int(local.split(":")[1], 16) == port:
                ip = bytes.fromhex(remote.split(":")[0])[::-1]
                found.append(".".join(str(b) for b in ip))
    return found


# -- a fake source ---------------------------------------------------------------


class _FakeUpload(Protocol):
    def __init__(self, source: FakeSource) -> None:
        self.source = source
        self.buffer = b""
        self.calls: list = []
        self.lost = False

    def connectionMade(self) -> None:
        self.source.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for raw in lines:
            message = json.loads(raw)
            self.source.requests.append(message)
            self.source.behave(self, message)

    def trickle(self, data: bytes, every: float = 0.2) -> None:
        def drip(i: int) -> None:
            if i < len(data) and not self.lost:
                self.transport.write(data[i : i + 1])
                self.calls.append(reactor.callLater(every, drip, i + 1))

        drip(0)

    def connectionLost(self, reason: Any) -> None:
        self.lost = True
        for c in self.calls:
            if c.active():
                c.cancel()


class FakeSource:
    """
    A host that logs in to the tracker as a peer over the real protocol,
    announces ``(fname, size, root)`` and then serves its transfer port
    badly, as ``mode`` says:

    - ``silent``: greets, then never answers a request;
    - ``trickle``: answers ``pieces`` truly and every ``get`` one byte each
      0.2 s (needs the real *data*): slow, but never silent;
    - ``stall``: answers ``pieces`` truly, sends a ``get`` header and 10
      bytes, then nothing;
    - ``oversized``: claims a piece list with ``piece_size`` equal to the
      file size, so one "piece" would be the whole file.
    """

    def __init__(self, mode: str, name: str, size: int, data: bytes | None = None) -> None:
        self.mode = mode
        self.name = name
        self.size = size
        self.data = data
        self.identity = generate(name)
        self.requests: list[dict] = []
        self.connections: list[_FakeUpload] = []
        if mode == "oversized":
            self.piece_size = size
            self.pieces = hashlib.sha256(b"not the file").digest()
        else:
            self.piece_size = piece_size_for(size)
            self.pieces = b"".join(
                hashlib.sha256(data[i * self.piece_size : (i + 1) * self.piece_size]).digest()
                for i in range(piece_count(size, self.piece_size))
            )
        self.root = hashlib.sha256(self.pieces).hexdigest()

    async def start(self, tracker_port: int, fname: str) -> None:
        factory = Factory.forProtocol(lambda: _FakeUpload(self))
        self.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            wrap_server_factory(self.identity, factory, reactor)
        )
        self.tracker = await logged_in(tracker_port, self.name, self.port.getHost().port, self.identity)
        record = {"fname": fname, "size": self.size, "root": self.root}
        announced = await call(self.tracker, "announce", files=[record], reset=True)
        assert announced["ok"], announced

    def behave(self, upload: _FakeUpload, message: dict) -> None:
        op = message.get("op")
        if op == "hello":
            upload.transport.write(line({"ok": True, "version": 1}))
        elif op == "ticket":
            upload.transport.write(line({"ok": True}))
        elif self.mode == "silent":
            return
        elif op == "pieces":
            upload.transport.write(
                line({"ok": True, "size": self.size, "piece_size": self.piece_size, "pieces": self.pieces.hex()})
            )
        elif op == "get" and self.mode == "trickle":
            offset, length = message["offset"], message["length"]
            upload.transport.write(line({"ok": True, "length": length}))
            upload.trickle(self.data[offset : offset + length])
        elif op == "get" and self.mode == "stall":
            offset, length = message["offset"], message["length"]
            upload.transport.write(line({"ok": True, "length": length}) + self.data[offset : offset + 10])
        elif op == "get":
            # Only an unchecked piece list gets here: say so by closing.
            upload.transport.abortConnection()

    async def stop(self) -> None:
        for c in self.connections:
            if not c.lost:
                c.transport.abortConnection()
        if self.tracker.is_open:
            self.tracker.transport.abortConnection()
        await self.port.stopListening()
