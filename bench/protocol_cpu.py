"""
Tracker CPU per lookup, in-process: the Python work of one ``sources`` or ``search`` from request line to reply bytes.

Run it from the checkout with the venv's Python::

    PYTHONPATH=$PWD .venv/bin/python bench/protocol_cpu.py [--peers 2000] [--requests 20000] [--repeat 5]

It is not part of the test suite.  ``bench/tracker.py`` measures a real
tracker over TLS and loopback, where the kernel, OpenSSL and the load
generator share the machine's cores and its per-request CPU moves by 20-30%
from run to run on a busy machine.  This measures what this repository's code
costs per request, with nothing else in the way: one Directory on the memory
store, ``--peers`` hosts logged in through :class:`TrackerServerProtocol` on
StringTransports (no TLS: a ticket binds to ``none``), each holding 100 files
of ``--peers`` x 20 names (5 holders a name, as ``bench/tracker.py``); then
``--requests`` requests spread over 50 of those connections, one line at a
time: ``sources`` of a random name, then ``search`` of a random 10-name
prefix.  Reported: process CPU time per request (best and median of
``--repeat`` rounds: the best is the least disturbed by other processes).

To compare two builds, run the same file with each build on ``PYTHONPATH``
(it imports ``fileshare`` from there), alternating, in the same minutes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from fileshare.tracker import directory as directory_module
from fileshare.tracker import passwords
from fileshare.tracker.directory import Directory
from fileshare.tracker.memory_store import MemoryTrackerStore
from fileshare.tracker.protocol import TrackerServerProtocol
from fileshare.tracker.store import FileRecord

FILES = 100
COPIES = 5
CONNECTIONS = 50
ROOT = "ab" * 32


def done(awaitable: Any) -> Any:
    """The result of a directory call that has nothing to wait for (memory store, no threads)."""
    results: list[Any] = []
    defer.ensureDeferred(awaitable).addBoth(results.append)
    (result,) = results
    return result


def build(peers: int) -> tuple[Directory, list[tuple[TrackerServerProtocol, StringTransport]]]:
    # As the tests do: no thread pool, and a cheap password hash (logins are not measured).
    directory_module.deferToThreadPool = lambda reactor, pool, f, *a, **kw: defer.maybeDeferred(f, *a, **kw)
    original = passwords.hash_password
    passwords.hash_password = lambda password: original(password, n=16, r=1, p=1)
    directory = Directory(MemoryTrackerStore(), Clock(), reactor=None, threadpool=None)
    names = peers * FILES // COPIES
    connections = []
    for p in range(peers):
        protocol = TrackerServerProtocol(directory)
        transport = StringTransport(peerAddress=IPv4Address("TCP", f"127.0.{p // 250}.{p % 250 + 1}", 40000))
        protocol.makeConnection(transport)
        name = f"p{p:06d}"
        lines = [
            {"id": 1, "op": "hello", "versions": [1]},
            {"id": 2, "op": "register", "name": name, "password": "secret"},
            {"id": 3, "op": "login", "name": name, "password": "secret", "port": 7000 + p % 1000},
        ]
        protocol.dataReceived(b"".join(json.dumps(m).encode() + b"\n" for m in lines))
        assert protocol.host == name, transport.value()
        records = [FileRecord(f"file-{(FILES * p + i) % names:06d}", 1000 + i, ROOT) for i in range(FILES)]
        done(directory.announce(name, records, True))
        transport.clear()
        if p < CONNECTIONS:
            connections.append((protocol, transport))
    return directory, connections


def measure(connections: list, lines: list[bytes]) -> float:
    """CPU seconds per request, answering *lines* round-robin over *connections*."""
    n = len(connections)
    start = time.process_time()
    for i, line in enumerate(lines):
        protocol, transport = connections[i % n]
        protocol.dataReceived(line)
        transport.clear()
    return (time.process_time() - start) / len(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--peers", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ops", default="sources,search", help="which lookups to measure (default sources,search)")
    args = parser.parse_args()
    started = time.process_time()
    directory, connections = build(args.peers)
    print(f"built in {time.process_time() - started:.1f} s of CPU", flush=True)
    names = args.peers * FILES // COPIES
    rng = random.Random(1)
    sources = [
        b'{"id":%d,"op":"sources","fname":"file-%06d"}\n' % (i, rng.randrange(names)) for i in range(args.requests)
    ]
    search = [
        b'{"id":%d,"op":"search","pattern":"file-%05d*"}\n' % (i, rng.randrange(names // 10))
        for i in range(args.requests)
    ]
    # A reply is checked once, so a broken build cannot look fast.
    protocol, transport = connections[0]
    protocol.dataReceived(sources[0])
    reply = json.loads(transport.value())
    assert reply["ok"] is True and len(reply["items"]) in (COPIES - 1, COPIES), reply
    transport.clear()
    for op, lines in (("sources", sources), ("search", search)):
        if op not in args.ops.split(","):
            continue
        rounds = [measure(connections, lines) * 1e6 for _ in range(args.repeat)]
        print(
            f"{op}: {min(rounds):.1f} us/request best, {statistics.median(rounds):.1f} median"
            f" ({args.repeat} x {args.requests} requests, {args.peers} peers)",
            flush=True,
        )


if __name__ == "__main__":
    main()
