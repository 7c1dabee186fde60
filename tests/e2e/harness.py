"""
Real trackers and peers on loopback, in the test's own reactor, driven
through their consoles exactly as a user or a script would.
"""

import shlex
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import LineReceiver

from fileshare.peer.service import Options as PeerOptions
from fileshare.peer.service import PeerService
from fileshare.tls import first_use_endpoint, generate
from fileshare.tracker.service import TrackerService

#: The key a raw test client presents to TLS ports (every node requires one).
RAW_CLIENT = generate("raw test client")


#: A tracker process on free loopback ports, its web page off (tests start many side by side).
TRACKER_ARGS = ("--listen", "tcp:0:interface=127.0.0.1", "--admin", "tcp:0:interface=127.0.0.1", "--web", "none")


def raw_endpoint(port: int, tls: bool = True):
    """A client endpoint to a node's port on loopback, speaking TLS as nodes do unless *tls* is false."""
    if tls:
        return first_use_endpoint(reactor, "127.0.0.1", port, RAW_CLIENT)
    return TCP4ClientEndpoint(reactor, "127.0.0.1", port)


@attrs.frozen
class Reply:
    data: list[str]
    status: str

    @property
    def ok(self) -> bool:
        return self.status.startswith("OK ")


class ConsoleClient(LineReceiver):
    """Sends console lines and collects each reply up to its status line."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self) -> None:
        self.greeting: Deferred = Deferred()
        self._waiting: list[Deferred] = []
        self._data: list[str] = []
        self.closed: Deferred = Deferred()

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8")
        if text.startswith(("OK ", "ERR ")) or text in ("OK", "ERR"):
            reply = Reply(self._data, text)
            self._data = []
            if not self.greeting.called:
                self.greeting.callback(reply)
            else:
                self._waiting.pop(0).callback(reply)
        else:
            self._data.append(text)

    def send_raw(self, data: bytes, replies: int = 1) -> list[Deferred]:
        ds = [Deferred() for _ in range(replies)]
        self._waiting.extend(ds)
        self.transport.write(data)
        return ds

    async def command(self, line: str) -> Reply:
        d = self.send_raw(line.encode("utf-8") + b"\n")[0]
        return await d

    def connectionLost(self, reason: Any) -> None:
        self.closed.callback(None)


async def console(port: int) -> ConsoleClient:
    client = ConsoleClient()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    await client.greeting
    return client


def _flag(name: str, value: Any) -> str:
    option = "--" + name.replace("_", "-")
    return option if value is True else f"{option}={value}"


class Network:
    """Starts services and stops all of them at the end of a test."""

    def __init__(self, tmp_path: Any) -> None:
        self.tmp_path = tmp_path
        self.services: list[Any] = []
        self.consoles: list[ConsoleClient] = []
        self.tracker: TrackerService | None = None

    async def start_tracker(self, db: str = "tracker.db", port: int = 0, **options: Any) -> TrackerService:
        """A tracker; TLS is on unless ``no_tls=True`` (other *options* as twistd's, with _ for -)."""
        tracker = TrackerService(
            {
                "listen": f"tcp:{port}:interface=127.0.0.1",
                "admin": "tcp:0:interface=127.0.0.1",
                "web": "none",
                "db": str(self.tmp_path / db),
                **{k.replace("_", "-"): v for k, v in options.items()},
            },
            reactor,
        )
        tracker.startService()
        self.services.append(tracker)
        await tracker.listener.listening
        await tracker.admin.listening
        self.tracker = tracker
        return tracker

    async def start_tracker_on(self, port: int) -> TrackerService:
        """A tracker on a known port, for peers that reconnect to it."""
        return await self.start_tracker(port=port)

    async def start_peer(self, name: str, tracker_port: int | None = None, **options: str) -> PeerService:
        if tracker_port is None:
            tracker_port = self.tracker.listener.port_number
        opts = PeerOptions()
        opts.parseOptions(
            [
                "--tracker",
                f"tcp:host=127.0.0.1:port={tracker_port}",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--control",
                "tcp:0:interface=127.0.0.1",
                "--web",
                "none",
                "--repo",
                str(self.tmp_path / name),
                *[_flag(k, v) for k, v in options.items()],
            ]
        )
        peer = PeerService(opts, reactor)
        peer.startService()
        self.services.append(peer)
        await peer.started
        await peer.control.listening
        return peer

    async def console(self, service: Any) -> ConsoleClient:
        listener = service.control if hasattr(service, "control") else service.admin
        client = await console(listener.port_number)
        self.consoles.append(client)
        return client

    async def user(self, name: str, password: str = "secret", **options: str) -> tuple[PeerService, ConsoleClient]:
        """A peer whose user has registered and logged in as *name*."""
        peer = await self.start_peer(name, **options)
        c = await self.console(peer)
        assert (await c.command(f"register {name} {shlex.quote(password)}")).ok
        assert (await c.command(f"login {name} {shlex.quote(password)}")).ok
        return peer, c

    async def stop(self, service: Any) -> None:
        if service in self.services:
            self.services.remove(service)
            await service.stopService()

    async def close(self) -> None:
        for c in self.consoles:
            if c.transport is not None and c.connected:
                c.transport.loseConnection()
        for service in reversed(self.services):
            if service.running:
                await service.stopService()
        self.services.clear()
