"""
The tracker's domain logic: accounts, who is online, and where files are.

It knows nothing of sockets: an online host is anything with ``call(op,
timeout=..., **fields)`` returning a Deferred, which the protocol provides.
"""

from typing import Any, Protocol

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from ..errors import AuthError, FileshareError, NotFound, Unavailable
from ..names import check_account, check_fname, check_password
from . import passwords
from .store import FileRecord, Holding, ITrackerStore

log = Logger()

#: How long ``ping`` and ``discover`` wait for a host to answer.
LIVE_TIMEOUT = 5.0


class HostChannel(Protocol):
    def call(self, op: str, timeout: float | None = None, **fields: Any) -> Any: ...

    def disconnect(self) -> None: ...


@attrs.define
class OnlineHost:
    name: str
    channel: HostChannel
    endpoint: str
    since: float
    files: int = 0


@attrs.frozen
class FileSummary:
    fname: str
    size: int
    root: str
    online: int
    holders: int


class Directory:
    def __init__(self, store: ITrackerStore, clock: IReactorTime, reactor: Any, threadpool: ThreadPool) -> None:
        self.store = store
        self.clock = clock
        self._reactor = reactor
        self._threadpool = threadpool
        self.online: dict[str, OnlineHost] = {}

    # -- accounts

    async def register(self, name: str, password: str) -> None:
        check_account(name)
        check_password(password)
        encoded = await deferToThreadPool(self._reactor, self._threadpool, passwords.hash_password, password)
        await self.store.create_account(name, encoded)
        log.info("account {name} registered", name=name)

    async def login(self, name: str, password: str, channel: HostChannel, endpoint: str) -> OnlineHost:
        check_account(name)
        check_password(password)
        encoded = await self.store.password_hash(name)
        ok = encoded is not None and await deferToThreadPool(
            self._reactor, self._threadpool, passwords.verify_password, password, encoded
        )
        if not ok:
            # One message for both cases, so names cannot be probed.
            raise AuthError("unknown account or wrong password")
        previous = self.online.get(name)
        if previous is not None and previous.channel is not channel:
            log.info("host {name} logged in again; ending its older session", name=name)
            previous.channel.disconnect()
        host = OnlineHost(name, channel, endpoint, since=self.clock.seconds())
        self.online[name] = host
        log.info("host {name} online at {endpoint}", name=name, endpoint=endpoint)
        return host

    def logout(self, name: str, channel: HostChannel) -> None:
        host = self.online.get(name)
        if host is not None and host.channel is channel:
            del self.online[name]
            log.info("host {name} offline", name=name)

    # -- the index

    async def announce(self, name: str, records: list[FileRecord], reset: bool) -> int:
        if reset:
            await self.store.replace_files(name, records)
        else:
            for record in records:
                await self.store.add_file(name, record)
        count = await self.store.count_files(name)
        if name in self.online:
            self.online[name].files = count
        return count

    async def publish(self, name: str, record: FileRecord) -> None:
        count = await self.store.add_file(name, record)
        if name in self.online:
            self.online[name].files = count

    async def unpublish(self, name: str, fname: str) -> None:
        check_fname(fname)
        if not await self.store.remove_file(name, fname):
            raise NotFound(f"{fname!r} is not published by {name}")
        if name in self.online:
            self.online[name].files = max(0, self.online[name].files - 1)

    async def search(self, pattern: str = "*") -> list[FileSummary]:
        """Files whose names match the glob *pattern*, with how many holders are online."""
        summaries: dict[tuple[str, str], FileSummary] = {}
        for h in await self.store.holdings(pattern=pattern):
            key = (h.fname, h.root)
            s = summaries.get(key) or FileSummary(h.fname, h.size, h.root, 0, 0)
            summaries[key] = attrs.evolve(s, holders=s.holders + 1, online=s.online + (h.host in self.online))
        return sorted(summaries.values(), key=lambda s: (s.fname, s.root))

    async def sources(self, fname: str, asking: str | None) -> list[tuple[Holding, OnlineHost]]:
        """Online hosts other than *asking* that hold *fname*."""
        check_fname(fname)
        return [
            (h, self.online[h.host])
            for h in await self.store.holdings(fname)
            if h.host in self.online and h.host != asking
        ]

    # -- live requests to hosts

    async def _online(self, name: str) -> OnlineHost:
        host = self.online.get(name)
        if host is not None:
            return host
        if await self.store.password_hash(name) is None:
            raise NotFound(f"no host named {name!r}")
        raise Unavailable(f"host {name!r} is offline")

    async def ping(self, name: str) -> float:
        """Round-trip time to *name* in seconds."""
        host = await self._online(name)
        start = self.clock.seconds()
        try:
            await host.channel.call("ping", timeout=LIVE_TIMEOUT)
        except FileshareError as e:
            raise Unavailable(f"{name} did not answer: {e.message}") from None
        return self.clock.seconds() - start

    async def discover(self, name: str) -> list[dict[str, Any]]:
        """Ask *name* for the files in its repository."""
        host = await self._online(name)
        try:
            reply = await host.channel.call("list", timeout=LIVE_TIMEOUT)
        except FileshareError as e:
            raise Unavailable(f"{name} did not answer: {e.message}") from None
        return reply.get("items", [])
