"""
The installed twistd plugins, run as a user runs them: separate processes,
side by side in one directory, driven through their consoles.
"""

import os
import re
import sys
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from tests.web.http import request

from .harness import TRACKER_ARGS, console

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
LISTENING = re.compile(
    r"(tracker|admin console|peer uploads|peer console|peer web page) listening on \S*:(\d+)$", re.MULTILINE
)

pytestmark = pytest.mark.skipif(not os.path.exists(TWISTD), reason="twistd is not installed next to this Python")


class Twistd(ProcessProtocol):
    """A twistd process; ``ports`` fires once it listens on all *expected* services."""

    def __init__(self, expected: set[str]) -> None:
        self.expected = expected
        self.found: dict[str, int] = {}
        self.ports: Deferred = Deferred()
        self.ended: Deferred = Deferred()
        self.output = b""
        self.status: int | None = None

    def outReceived(self, data: bytes) -> None:
        self.output += data
        for name, port in LISTENING.findall(self.output.decode("utf-8", "replace")):
            self.found[name] = int(port)
        if not self.ports.called and self.expected <= set(self.found):
            self.ports.callback(self.found)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.status = reason.value.exitCode
        if not self.ports.called:
            self.ports.errback(RuntimeError(self.output.decode("utf-8", "replace")))
        self.ended.callback(None)


async def start(cwd, plugin: str, args: list[str], expected: set[str]) -> tuple[Twistd, dict[str, int]]:
    proto = Twistd(expected)
    argv = [TWISTD, "-n", "--pidfile=", "--logfile=-", plugin, *args]
    reactor.spawnProcess(proto, TWISTD, argv, env=dict(os.environ), path=str(cwd))
    timeout = reactor.callLater(30, proto.transport.signalProcess, "KILL")
    try:
        ports = await proto.ports
    finally:
        if timeout.active():
            timeout.cancel()
    return proto, ports


class Processes:
    """twistd processes of one test, all killed at its end."""

    def __init__(self, cwd) -> None:
        self.cwd = cwd
        self.running: list[Twistd] = []
        self.tracker_port = 0

    async def start(self, plugin: str, args: list[str], expected: set[str]) -> tuple[Twistd, dict[str, int]]:
        proto, ports = await start(self.cwd, plugin, args, expected)
        self.running.append(proto)
        return proto, ports

    async def tracker(self, *options: str) -> dict[str, int]:
        """A tracker process (with *options*, e.g. ``--db``); the ports of its tracker and admin console."""
        _, ports = await self.start(
            "fileshare-tracker",
            [*TRACKER_ARGS, *options],
            {"tracker", "admin console"},
        )
        self.tracker_port = ports["tracker"]
        return ports

    async def peer(self, repo: str, *options: str) -> tuple[Twistd, int]:
        """A peer process; the port of its console."""
        proto, ports = await self.start(
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
                repo,
                *options,
            ],
            {"peer console"},
        )
        return proto, ports["peer console"]

    async def stop_all(self) -> None:
        for p in self.running:
            if not p.ended.called:
                p.transport.signalProcess("KILL")
        for p in self.running:
            await p.ended


async def alice_publishes_to_bob(procs: Processes, tmp_path) -> tuple[Any, Any]:
    """Peer processes alice and bob on *procs*' tracker, both logged in, alice publishing hello.txt (85,000 bytes).

    Their consoles, which the caller closes.
    """
    _, alice_port = await procs.peer("alice")
    _, bob_port = await procs.peer("bob")
    (tmp_path / "hello.txt").write_bytes(b"hello from alice\n" * 5000)
    a = await console(alice_port)
    b = await console(bob_port)
    assert (await a.command("register alice pw")).ok
    assert (await a.command("login alice pw")).ok
    assert (await a.command(f"publish {tmp_path / 'hello.txt'} hello.txt")).ok
    assert (await b.command("register bob pw")).ok
    assert (await b.command("login bob pw")).ok
    return a, b


@pytest_twisted.ensureDeferred
async def test_two_peer_processes_share_a_file_through_a_tracker_process(tmp_path):
    procs = Processes(tmp_path)
    try:
        tports = await procs.tracker()
        a, b = await alice_publishes_to_bob(procs, tmp_path)
        fetched = await b.command("fetch hello.txt")
        admin = await console(tports["admin console"])
        peers = await admin.command("peers")
        for c in (a, b, admin):
            c.transport.loseConnection()

        assert fetched.status.startswith("OK fetched hello.txt 85000 bytes"), fetched
        assert (tmp_path / "bob" / "hello.txt").read_bytes() == (tmp_path / "hello.txt").read_bytes()
        assert peers.status == "OK 2 hosts online"
        assert (tmp_path / "fileshare-tracker.db").exists()
    finally:
        await procs.stop_all()


@pytest_twisted.ensureDeferred
async def test_a_fetcher_killed_mid_fetch_resumes_after_restart(tmp_path):
    from .test_restarts import until

    procs = Processes(tmp_path)
    try:
        await procs.tracker()
        _, alice_port = await procs.peer("alice", "--upload-rate", "4M")
        bob, bob_port = await procs.peer("bob")
        size = 16 * 1024 * 1024
        (tmp_path / "big.bin").write_bytes(os.urandom(size))
        a = await console(alice_port)
        b = await console(bob_port)
        for c, name in ((a, "alice"), (b, "bob")):
            assert (await c.command(f"register {name} pw")).ok
            assert (await c.command(f"login {name} pw")).ok
        assert (await a.command(f"publish {tmp_path / 'big.bin'} big.bin")).ok

        b.send_raw(b"fetch big.bin\n")
        # Two progress lines: the verified pieces have been saved at least once.
        await until(lambda: sum(line.startswith("progress ") for line in b._data) >= 2)
        bob.transport.signalProcess("KILL")
        await bob.ended
        _, bob_port = await procs.peer("bob")
        b = await console(bob_port)
        assert (await b.command("login bob pw")).ok
        reply = await b.command("fetch big.bin")
        a.transport.loseConnection()
        b.transport.loseConnection()

        assert reply.ok, reply
        resumed = [line for line in reply.data if line.startswith("resuming big.bin with ")]
        assert resumed and int(resumed[0].split()[3]) > 0, reply
        assert (tmp_path / "bob" / "big.bin").read_bytes() == (tmp_path / "big.bin").read_bytes()
    finally:
        await procs.stop_all()


@pytest_twisted.ensureDeferred
async def test_a_peer_process_serves_its_page_and_api_on_web(tmp_path):
    procs = Processes(tmp_path)
    try:
        await procs.tracker()
        proto, _ = await procs.start(
            "fileshare-peer",
            [
                "--tracker",
                f"tcp:host=127.0.0.1:port={procs.tracker_port}",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--control",
                "tcp:0:interface=127.0.0.1",
                "--web",
                "tcp:0:interface=127.0.0.1",
                "--repo",
                "carol",
            ],
            {"peer console", "peer web page"},
        )
        base = f"http://127.0.0.1:{proto.found['peer web page']}"

        page = await request(reactor, base + "/")
        session = await request(reactor, base + "/api/v1/session")

        assert page.status == 200 and b'<script src="/static/peer.js"></script>' in page.body
        assert session.status == 200 and session.json["logged_in"] is False
    finally:
        await procs.stop_all()
