"""
The load generator of ``bench/tracker.py``: worker processes that play many peers at once.

Each worker is a process of its own (``multiprocessing``) running one asyncio
loop, so the load can use more than one core; ``bench/tracker.py`` tells it
what to do over a pipe, one command at a time, and gets one result back per
command.  A worker plays the peers ``start <= index < stop``:

* each simulated peer speaks the tracker's JSON-lines protocol itself
  (``docs/protocol.rst``): ``hello``, ``login`` and one ``announce`` of its 100
  files; it answers the tracker's ``ping`` and ``list`` at any time, as a
  real peer must, and acknowledges ``ended``;
* it behaves as the reference peer does when the tracker is busy: a refused
  or failed connection is tried again after 0.5 s growing 1.5x to 30 s (with
  jitter, as Twisted's ``backoffPolicy``), a ``throttled`` login again after
  1 s doubling to ``relogin_max`` (the reference peer: 60 s; the benchmark's
  default, 8 s, see ``bench/tracker.py``), and a new connection tries at once;
* each peer connects from its own 127.0.0.x source address (a few dozen peers
  share one), so the tracker's per-address caps and gates see many addresses;
* lookups (``sources``, ``search``) run on the connections of logged-in
  peers, one request outstanding per connection, timed request by request;
* opentracker gets HTTP announces, one TCP connection each (it closes every
  connection after its answer), with the same number of requests in flight.

Times are ``time.monotonic()``: CLOCK_MONOTONIC is one clock for every
process on the machine, so the parent compares the workers' timestamps.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import random
import selectors
import socket
import ssl
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

FILES_PER_PEER = 100
EXTENSIONS = ("iso", "mp3", "pdf", "txt", "mkv", "jpg", "zip", "flac", "epub", "odt")
#: Peers that share one 127.x.y.z source address (``--peers-per-address``): one, as on a real network,
#: so the tracker's per-address gate (2 password checks in flight) does not bind the storm.
PEERS_PER_ADDRESS = 1
PASSWORD = "bench-secret"

CONNECT_TIMEOUT = 10.0  # the reference peer's connect and hello timeout
REQUEST_TIMEOUT = 30.0  # the reference peer's request timeout
RECONNECT_INITIAL, RECONNECT_FACTOR, RECONNECT_MAX = 0.5, 1.5, 30.0
RELOGIN_INITIAL = 1.0
#: The reference peer's cap on the re-login delay; ``--relogin-max`` sets the simulated peers'.
REFERENCE_RELOGIN_MAX = 60.0

#: Linux's IP_BIND_ADDRESS_NO_PORT: bind a source address now, choose the port at connect().
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_loads = json.loads


# -- the shared catalogue: who holds what


def catalogue_size(peers: int, copies: int) -> int:
    """Distinct files in the index: each held by *copies* peers (a multiple of 100, at least 100)."""
    return max(FILES_PER_PEER, peers * FILES_PER_PEER // copies // FILES_PER_PEER * FILES_PER_PEER)


def file_of(peer: int, k: int, files: int) -> int:
    """The *k*-th file of *peer*: blocks of 100 consecutive files, so block b is held by peers b, b + F/100, ..."""
    return (peer * FILES_PER_PEER + k) % files


def fname(i: int) -> str:
    return f"file-{i:07d}.{EXTENSIONS[i % len(EXTENSIONS)]}"


def root(i: int) -> str:
    return hashlib.sha256(b"bench-file-%d" % i).hexdigest()


def info_hash(i: int) -> bytes:
    """The torrent standing for file *i* at opentracker (the same file set)."""
    return hashlib.sha1(b"bench-file-%d" % i).digest()


def record(i: int) -> dict[str, Any]:
    return {"fname": fname(i), "size": 1_000_000 + 7 * i, "root": root(i)}


def peer_name(index: int) -> str:
    return f"p{index:06d}"


def source_address(index: int, per_address: int = PEERS_PER_ADDRESS) -> str:
    """127.0.0.2, 127.0.0.3, ... 127.0.0.251, 127.0.1.2, ...: *per_address* peers on each."""
    a = index // per_address
    return f"127.0.{a // 250}.{a % 250 + 2}"


# -- one tracker connection


class Closed(Exception):
    """The connection closed before the reply came."""


class Link(asyncio.Protocol):
    """A peer's tracker connection: requests with ids, replies matched by ``re``, the tracker's requests answered."""

    def __init__(self, peer: SimPeer | None, stats: Counter) -> None:
        self.peer = peer
        self.stats = stats
        self.transport: Any = None
        self.buffer = b""
        self.next_id = 1
        self.waiting: dict[int, tuple[asyncio.Future, list]] = {}
        self.closed = asyncio.get_running_loop().create_future()
        self.last_error: str | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.buffer:
            data = self.buffer + data
        lines = data.split(b"\n")
        self.buffer = lines.pop()
        for line in lines:
            message = _loads(line)
            if "re" in message:
                self._reply(message["re"], message)
            else:
                self._request(message)

    def _reply(self, re: int | None, message: dict[str, Any]) -> None:
        entry = self.waiting.get(re) if re is not None else None
        if entry is None:
            if re is None:  # about the connection, e.g. a timeout just before the tracker closes it
                self.last_error = message.get("code")
                self.stats[f"tracker said {message.get('code')}"] += 1
            return
        future, items = entry
        if "items" in message:
            items += message["items"]
        if message.get("more") is True:
            return
        del self.waiting[re]
        message["items"] = items
        if not future.done():
            future.set_result(message)

    def _request(self, message: dict[str, Any]) -> None:
        op, request_id = message.get("op"), message.get("id")
        if op == "ping":
            self.stats["pings answered"] += 1
            self._send({"re": request_id, "ok": True})
        elif op == "list":
            self.stats["lists answered"] += 1
            items = self.peer.records() if self.peer is not None else []
            for start in range(0, max(len(items), 1), 200):
                last = start + 200 >= len(items)
                frame = {"re": request_id, "ok": True, "items": items[start : start + 200]}
                if not last:
                    frame["more"] = True
                self._send(frame)
        elif op == "ended":
            self.stats[f"ended {message.get('code')}"] += 1
            self._send({"re": request_id, "ok": True})
        else:
            self._send({"re": request_id, "ok": False, "code": "unknown-op", "message": f"unknown op {op!r}"})

    def _send(self, message: dict[str, Any]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_dumps(message).encode() + b"\n")

    def call(self, op: str, **fields: Any) -> asyncio.Future:
        """Send a request; the future gets the whole reply (items of every frame merged) or Closed."""
        request_id = self.next_id
        self.next_id += 1
        future = asyncio.get_running_loop().create_future()
        if self.closed.done():
            future.set_exception(Closed("connection closed"))
            return future
        self.waiting[request_id] = (future, [])
        self.transport.write(_dumps({"id": request_id, "op": op, **fields}).encode() + b"\n")
        return future

    async def ask(self, op: str, timeout: float = REQUEST_TIMEOUT, **fields: Any) -> dict[str, Any]:
        return await asyncio.wait_for(self.call(op, **fields), timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        for future, _ in self.waiting.values():
            if not future.done():
                future.set_exception(Closed(self.last_error or "connection closed"))
        self.waiting.clear()
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# -- a simulated peer


class SimPeer:
    def __init__(self, worker: Worker, index: int) -> None:
        self.worker = worker
        self.index = index
        self.name = peer_name(index)
        self.address = source_address(index, worker.per_address)
        self.port = worker.tracker_ports[index % len(worker.tracker_ports)]
        self.link: Link | None = None
        self.logged_in_at: float | None = None
        self.announced_at: float | None = None
        self.relogin_failures = 0
        self.gave_up: str | None = None

    def records(self) -> list[dict[str, Any]]:
        files = self.worker.files
        return sorted((record(file_of(self.index, k, files)) for k in range(FILES_PER_PEER)), key=lambda r: r["fname"])

    async def connect(self) -> Link:
        loop = asyncio.get_running_loop()
        stats = self.worker.stats
        _, link = await asyncio.wait_for(
            loop.create_connection(
                lambda: Link(self, stats),
                "127.0.0.1",
                self.port,
                ssl=self.worker.tls,
                server_hostname="" if self.worker.tls else None,
                local_addr=(self.address, 0),
                ssl_handshake_timeout=CONNECT_TIMEOUT if self.worker.tls else None,
            ),
            CONNECT_TIMEOUT,
        )
        return link

    async def come_online(self, deadline: float, register: bool = False) -> None:
        """Connect, hello and log in (or only register) the way the reference peer does, until *deadline*."""
        stats = self.worker.stats
        reconnects = 0
        while time.monotonic() < deadline:
            if reconnects:
                delay = min(RECONNECT_MAX, RECONNECT_INITIAL * RECONNECT_FACTOR ** (reconnects - 1))
                await asyncio.sleep(delay + random.random() * delay * 0.5)
            reconnects += 1
            try:
                link = await self.connect()
            except (TimeoutError, OSError, ssl.SSLError) as e:
                stats[f"connect failed: {type(e).__name__}"] += 1
                continue
            try:
                hello = await link.ask("hello", CONNECT_TIMEOUT, versions=[1], software="fileshare-bench/1")
                if not hello.get("ok"):
                    raise Closed(hello.get("message"))
            except (TimeoutError, Closed) as e:
                stats[f"no hello reply: {type(e).__name__}"] += 1
                link.close()
                continue
            reconnects = 0
            if register:
                done = await self._register(link, deadline)
                link.close()
                if done:
                    return
                continue
            if await self._login(link, deadline):
                self.link = link
                await self._announce(link)
                return
            link.close()
        if self.gave_up is None:
            self.gave_up = "deadline"

    async def _login(self, link: Link, deadline: float) -> bool:
        stats = self.worker.stats
        while time.monotonic() < deadline and not link.closed.done():
            try:
                reply = await link.ask("login", name=self.name, password=PASSWORD, port=20000 + self.index % 40000)
            except (TimeoutError, Closed) as e:
                stats[f"login lost: {type(e).__name__} {e}".strip()] += 1
                return False
            if reply.get("ok"):
                self.logged_in_at = time.monotonic()
                self.relogin_failures = 0
                return True
            code = reply.get("code")
            stats[f"login refused: {code}"] += 1
            if code not in ("throttled",):
                self.gave_up = f"{code}: {reply.get('message')}"
                return False
            delay = min(self.worker.relogin_max, RELOGIN_INITIAL * 2**self.relogin_failures)
            delay *= 1 + random.random() * 0.25
            self.relogin_failures += 1
            pause = asyncio.ensure_future(asyncio.sleep(delay))
            await asyncio.wait([pause, link.closed], return_when=asyncio.FIRST_COMPLETED)
            pause.cancel()
        return False

    async def _register(self, link: Link, deadline: float) -> bool:
        while time.monotonic() < deadline and not link.closed.done():
            try:
                reply = await link.ask("register", name=self.name, password=PASSWORD)
            except (TimeoutError, Closed):
                return False
            if reply.get("ok") or reply.get("code") == "conflict":
                return True
            if reply.get("code") != "throttled":
                self.gave_up = f"register: {reply.get('message')}"
                return True
            await asyncio.sleep(0.5 + random.random())
        return False

    async def _announce(self, link: Link) -> None:
        try:
            reply = await link.ask("announce", files=self.records(), reset=True)
        except (TimeoutError, Closed) as e:
            self.worker.stats[f"announce lost: {type(e).__name__}"] += 1
            return
        if reply.get("ok") and reply.get("count") == FILES_PER_PEER:
            self.announced_at = time.monotonic()
        else:
            self.worker.stats[f"announce refused: {reply.get('code')}"] += 1


# -- HTTP announces to opentracker


class _Request:
    __slots__ = ("sock", "request", "started", "chunks", "slot", "connected")

    def __init__(self, sock: socket.socket, request: bytes, slot: Iterator[tuple[str, bytes]]) -> None:
        self.sock, self.request, self.slot = sock, request, slot
        self.started = time.monotonic()
        self.chunks: list[bytes] = []
        self.connected = False


def http_run(
    port: int, slots: list[Iterator[tuple[str, bytes]]], measure_from: float = 0.0, until: float = float("inf")
) -> dict[str, Any]:
    """
    HTTP requests, one per TCP connection, one in flight per slot, until the slots run dry or *until*.

    Plain non-blocking sockets on epoll rather than asyncio: a connection per
    request costs asyncio several times the CPU, and the load generator must
    not be what limits opentracker.  A response is complete when the server
    closes (opentracker closes every connection after its answer).
    """
    selector = selectors.DefaultSelector()
    latencies: list[float] = []
    errors: Counter = Counter()
    target = ("127.0.0.1", port)
    live = 0

    def launch(slot: Iterator[tuple[str, bytes]]) -> None:
        nonlocal live
        if time.monotonic() >= until:
            return
        job = next(slot, None)
        if job is None:
            return
        address, request = job
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)  # the port is picked at connect
        sock.bind((address, 0))
        err = sock.connect_ex(target)
        if err not in (0, errno.EINPROGRESS):
            errors[errno.errorcode.get(err, str(err))] += 1
            sock.close()
            launch(slot)
            return
        selector.register(sock, selectors.EVENT_WRITE, _Request(sock, request, slot))
        live += 1

    def finish(r: _Request, error: str | None) -> None:
        nonlocal live
        selector.unregister(r.sock)
        r.sock.close()
        live -= 1
        if error is None:
            response = b"".join(r.chunks)
            if not response.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")) or b"failure reason" in response:
                error = response[:60].decode("latin-1") or "empty response"
        if error is not None:
            errors[error] += 1
        elif r.started >= measure_from:
            latencies.append(time.monotonic() - r.started)
        launch(r.slot)

    for slot in slots:
        launch(slot)
    while live:
        events = selector.select(REQUEST_TIMEOUT)
        if not events:
            for key in list(selector.get_map().values()):
                finish(key.data, "timeout")
            continue
        for key, _ in events:
            r = key.data
            if not r.connected:
                err = r.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    finish(r, errno.errorcode.get(err, str(err)))
                    continue
                r.connected = True
                r.sock.send(r.request)  # a few hundred bytes: the socket buffer takes them whole
                selector.modify(r.sock, selectors.EVENT_READ, r)
                continue
            try:
                chunk = r.sock.recv(65536)
            except OSError as e:
                finish(r, type(e).__name__)
                continue
            if chunk:
                r.chunks.append(chunk)
            else:
                finish(r, None)
    selector.close()
    return {"latencies": latencies, "errors": dict(errors), "finished": time.monotonic()}


def announce_request(ih: bytes, peer_id: bytes, port: int, left: int, event: str | None) -> bytes:
    query = (
        f"info_hash={urllib.parse.quote_from_bytes(ih)}&peer_id={urllib.parse.quote_from_bytes(peer_id)}"
        f"&port={port}&uploaded=0&downloaded=0&left={left}&compact=1"
    )
    if event:
        query += f"&event={event}"
    return f"GET /announce?{query} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()


# -- the worker


class Worker:
    def __init__(self, pipe: Connection, config: dict[str, Any]) -> None:
        self.pipe = pipe
        self.tracker_ports: list[int] = config["tracker_ports"]
        self.start, self.stop = config["start"], config["stop"]
        self.files: int = config["files"]
        self.number: int = config["number"]
        self.per_address: int = config.get("per_address", PEERS_PER_ADDRESS)
        self.relogin_max: float = config.get("relogin_max", REFERENCE_RELOGIN_MAX)
        self.tls: ssl.SSLContext | None = None
        if config.get("tls"):
            cert, key = config["tls"]
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # a benchmark on loopback: no pin to check
            context.load_cert_chain(cert, key)  # the tracker requires a client certificate
            self.tls = context
        self.peers = [SimPeer(self, i) for i in range(self.start, self.stop)]
        self.stats: Counter = Counter()
        self.rng = random.Random(config.get("seed", 1) * 1000 + self.number)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            ready = asyncio.Event()
            loop.add_reader(self.pipe.fileno(), ready.set)
            await ready.wait()
            loop.remove_reader(self.pipe.fileno())
            command, args = self.pipe.recv()
            if command == "stop":
                for peer in self.peers:
                    if peer.link is not None:
                        peer.link.close()
                await asyncio.sleep(0.2)
                self.pipe.send({})
                return
            try:
                result = await getattr(self, f"do_{command}")(**args)
            except Exception as e:  # reported to the parent, which stops the run
                result = {"error": f"{type(e).__name__}: {e}"}
            self.pipe.send(result)

    def _sleep_until(self, when: float) -> Any:
        return asyncio.sleep(max(0.0, when - time.monotonic()))

    async def do_storm(self, start_at: float, deadline: float, register: bool = False) -> dict[str, Any]:
        """Every peer of this worker comes online at once (or registers, with *register*)."""
        await self._sleep_until(start_at)
        self.stats.clear()
        await asyncio.gather(*(p.come_online(deadline, register) for p in self.peers))
        return {
            "logged_in": [p.logged_in_at for p in self.peers if p.logged_in_at is not None],
            "announced": [p.announced_at for p in self.peers if p.announced_at is not None],
            "gave_up": Counter(p.gave_up for p in self.peers if p.gave_up),
            "stats": dict(self.stats),
        }

    def _online_links(self) -> list[Link]:
        return [p.link for p in self.peers if p.link is not None and not p.link.closed.done()]

    async def do_online(self) -> dict[str, Any]:
        return {"online": len(self._online_links()), "stats": dict(self.stats)}

    def _lookup_fields(self, op: str) -> Callable[[], dict[str, Any]]:
        files, rng = self.files, self.rng
        if op == "sources":
            return lambda: {"fname": fname(rng.randrange(files))}
        # A prefix matching 10 names (one of each extension).
        return lambda: {"pattern": f"file-{rng.randrange(files // 10):06d}*"}

    async def do_lookups(
        self, op: str, connections: int, start_at: float, measure_from: float, until: float
    ) -> dict[str, Any]:
        """*connections* logged-in links each ask *op* in a loop, one at a time; latencies from *measure_from*."""
        links = self._online_links()[:connections]
        make = self._lookup_fields(op)
        latencies: list[float] = []
        errors: Counter = Counter()
        items = 0

        async def loop(link: Link) -> None:
            nonlocal items
            while True:
                started = time.monotonic()
                if started >= until:
                    return
                try:
                    reply = await link.call(op, **make())  # no wait_for: a task per request would cost more
                except Closed as e:
                    errors[f"closed: {e}"] += 1
                    return
                if not reply.get("ok"):
                    errors[reply.get("code")] += 1
                elif started >= measure_from:
                    latencies.append(time.monotonic() - started)
                    items += len(reply["items"])

        await self._sleep_until(start_at)
        try:
            await asyncio.wait_for(asyncio.gather(*(loop(link) for link in links)), until - start_at + REQUEST_TIMEOUT)
        except TimeoutError:
            errors["no reply within 30 s"] += 1
        return {"latencies": latencies, "errors": dict(errors), "items": items, "connections": len(links)}

    async def do_single(self, op: str, fields: dict[str, Any], timeout: float) -> dict[str, Any]:
        """One request on one logged-in link, timed (e.g. a search that aggregates the whole index)."""
        links = self._online_links()
        if not links:
            return {"error": "no peer online"}
        started = time.monotonic()
        try:
            reply = await links[0].ask(op, timeout, **fields)
        except (TimeoutError, Closed) as e:
            return {"error": f"{type(e).__name__} after {time.monotonic() - started:.1f} s"}
        return {"seconds": time.monotonic() - started, "ok": reply.get("ok"), "items": len(reply.get("items", []))}

    async def do_http_fill(self, port: int, concurrency: int, start_at: float) -> dict[str, Any]:
        """Every peer of this worker announces its 100 torrents as a seeder (opentracker's login + announce)."""

        def jobs() -> Iterator[tuple[str, bytes]]:
            for p in range(self.start, self.stop):
                peer_id = b"-BN0001-%012d" % p
                address = source_address(p, self.per_address)
                for k in range(FILES_PER_PEER):
                    ih = info_hash(file_of(p, k, self.files))
                    yield address, announce_request(ih, peer_id, 20000 + p % 40000, 0, "started")

        await self._sleep_until(start_at)
        shared = jobs()
        return http_run(port, [shared] * concurrency)  # blocks this worker's loop: nothing else runs in it now

    async def do_http_lookups(
        self, port: int, connections: int, start_at: float, measure_from: float, until: float
    ) -> dict[str, Any]:
        """*connections* leechers ask for random torrents (opentracker's equivalent of ``sources``)."""
        files, rng, number = self.files, self.rng, self.number

        def jobs(slot: int) -> Iterator[tuple[str, bytes]]:
            peer_id = b"-BN0002-%06d%06d" % (number, slot)
            address = f"127.0.250.{(number * 50 + slot) % 250 + 2}"
            port_of_leecher = 60000 + number * 100 + slot
            while True:
                ih = info_hash(rng.randrange(files))
                yield address, announce_request(ih, peer_id, port_of_leecher, 1, None)

        await self._sleep_until(start_at)
        result = http_run(port, [jobs(i) for i in range(connections)], measure_from, until)
        result["connections"] = connections
        return result


def main(pipe: Connection, config: dict[str, Any]) -> None:
    """The entry point of a worker process."""
    asyncio.run(Worker(pipe, config).run())
