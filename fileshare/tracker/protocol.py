"""
The tracker's side of a peer connection: translate requests into
:class:`~fileshare.tracker.directory.Directory` calls.
"""

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import BadRequest, NotLoggedIn, Unavailable
from ..limits import admitted
from ..logfilter import address_text, why_closed
from ..names import check_fname
from ..ratelog import RateLimitedLog
from ..tickets import client_binding
from ..tls import Fingerprint, PinnedAddress, peer_fingerprint
from ..wire.framing import EncodedItems, count, field, json_text
from ..wire.messages import SOFTWARE, check_hello, hello_required
from ..wire.rpc import RPCProtocol
from .directory import Directory
from .store import FileRecord
from .timeouts import Deadlines, Timeouts

log = Logger()


def record_from(message: dict[str, Any]) -> FileRecord:
    fname = check_fname(field(message, "fname", str))
    root = field(message, "root", str)
    if len(root) != 64 or any(c not in "0123456789abcdef" for c in root):
        raise BadRequest("field 'root' must be 64 lowercase hex digits")
    return FileRecord(fname, count(message, "size"), root)


def cursor_from(message: dict[str, Any]) -> tuple[str, str] | None:
    """The ``after`` of a ``search``: null or absent for the first page, else the ``next`` of the page before."""
    after = message.get("after")
    if after is None:
        return None
    if not isinstance(after, dict) or set(after) != {"fname", "root"}:
        raise BadRequest("field 'after' must be null or the 'next' of a search reply (an object of 'fname' and 'root')")
    return field(after, "fname", str), field(after, "root", str)


def endpoint_for(address: Any, port: int) -> str:
    """The client endpoint string other peers use to reach a host."""
    if isinstance(address, IPv6Address):
        host = address.host.replace(":", "\\:")
        return f"tcp:host={host}:port={port}"
    if isinstance(address, IPv4Address):
        return f"tcp:host={address.host}:port={port}"
    return f"tcp:host=127.0.0.1:port={port}"


def transfer_address(address: Any, port: int, fingerprint: Fingerprint | None) -> dict[str, object]:
    """
    The record fetchers get for a host: ``PinnedAddress.to_wire()`` with TLS,
    host and port alone without.  Data, not an endpoint string: the fetcher
    checks it and builds the connection itself.
    """
    host = address.host if isinstance(address, IPv4Address | IPv6Address) else "127.0.0.1"
    if fingerprint is None:
        return {"host": host, "port": port}
    return PinnedAddress(host, port, fingerprint).to_wire()


def address_of(address: Any) -> str:
    """The remote address as text, the key of per-address login limits."""
    if isinstance(address, IPv4Address | IPv6Address):
        return address.host
    return "local"


def where_for(address: Any, port: int) -> str:
    """Address and transfer port, for people: ``192.0.2.7:7710``, ``[2001:db8::5]:7710``."""
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{port}"
    return f"{address_of(address)}:{port}"


class TrackerServerProtocol(RPCProtocol):
    """
    One peer's connection.  With *timeouts* (as :class:`TrackerFactory`
    gives) it must say hello and log in in time and answer ``ping`` when
    idle (:mod:`.timeouts`); without, it has no deadlines.
    """

    def __init__(
        self, directory: Directory, timeouts: Timeouts | None = None, warnings: RateLimitedLog | None = None
    ) -> None:
        super().__init__(directory.clock)
        self.directory = directory
        self.host: str | None = None
        self.greeted = False
        #: What this connection's download tickets bind to (its TLS key), read at the first ``sources``.
        self._binding: str | None = None
        self.deadlines: Deadlines | None = None
        if timeouts is not None:
            self.deadlines = Deadlines(self, timeouts, directory.clock, warnings or RateLimitedLog(log, self.clock))
        #: When the connection was made, for its closing log line.
        self.opened = directory.clock.seconds()
        self.handlers.update(
            hello=self.hello,
            register=self.register,
            login=self.login,
            logout=self.logout,
            passwd=self.passwd,
            announce=self.announce,
            publish=self.publish,
            unpublish=self.unpublish,
            search=self.search,
            sources=self.sources,
        )

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.deadlines is not None:
            self.deadlines.connected()

    def dataReceived(self, data: bytes) -> None:
        if self.deadlines is not None:
            self.deadlines.received()
        super().dataReceived(data)

    # RPCProtocol's HostChannel half, used by the directory.
    def disconnect(self) -> None:
        self.transport.loseConnection()

    def end_session(self, code: str, reason: str) -> None:
        """Tell the peer why its session ends, then close; its reply is not waited for."""
        self.host = None
        told = self.call("ended", code=code, reason=reason)
        told.addErrback(lambda _: None)
        self.transport.loseConnection()

    def pinged(self, rtt: float) -> None:
        """The idle check's ``ping`` came back (:mod:`.timeouts`): the host's last RTT."""
        if self.host is not None:
            self.directory.pinged(self.host, self, rtt)

    def _request_received(self, message: dict[str, Any]) -> None:
        if not self.greeted and message.get("op") != "hello":
            self.refuse(hello_required(), message.get("id"))
            return
        super()._request_received(message)

    def _logged_in(self) -> str:
        if self.host is None:
            raise NotLoggedIn("log in first")
        return self.host

    def hello(self, message: dict[str, Any]) -> dict[str, Any]:
        reply = check_hello(message, "tracker")
        self.greeted = True
        if self.deadlines is not None:
            self.deadlines.greeted()
        return {**reply, "software": SOFTWARE}

    async def register(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.directory.register(
            field(message, "name", str), field(message, "password", str), address_of(self.transport.getPeer())
        )
        return {}

    async def login(self, message: dict[str, Any]) -> dict[str, Any]:
        port = count(message, "port")
        if not 0 < port < 65536:
            raise BadRequest("field 'port' must be 1-65535")
        name = field(message, "name", str)
        session = message.get("session")
        # A session token may stand in for the password (fileshare.tracker.sessions).
        password = None if isinstance(session, str) and "password" not in message else field(message, "password", str)
        peer = self.transport.getPeer()
        # The key of this very connection, not one the peer claims.
        fingerprint = peer_fingerprint(self.transport)
        host = await self.directory.login(
            name,
            password,
            self,
            endpoint_for(peer, port),
            address=address_of(peer),
            where=where_for(peer, port),
            replace=field(message, "replace", bool, False),
            session=session if isinstance(session, str) else None,
            fingerprint=fingerprint,
            transfer_address=transfer_address(peer, port, fingerprint),
        )
        if not self.connected:
            # Lost while the password was checked: connectionLost saw no host to log out.
            self.directory.logout(host.name, self, dropped=True)
            raise Unavailable("connection lost while logging in")
        if self.host is not None and self.host != host.name:
            self.directory.logout(self.host, self)
        self.host = host.name
        admitted(self.transport)  # no longer counts against --max-pending
        if self.deadlines is not None:
            self.deadlines.logged_in()
        return {
            "host": host.name,
            "endpoint": host.endpoint,
            "session": host.session,
            "ticket_key": host.ticket_key.hex(),
            "time": self.directory.clock.seconds(),
        }

    def logout(self, message: dict[str, Any]) -> dict[str, Any]:
        self.directory.logout(self._logged_in(), self)
        self.host = None
        return {}

    async def passwd(self, message: dict[str, Any]) -> dict[str, Any]:
        host = self._logged_in()
        await self.directory.passwd(
            host, field(message, "old", str), field(message, "new", str), address_of(self.transport.getPeer())
        )
        return {}

    async def announce(self, message: dict[str, Any]) -> dict[str, Any]:
        host = self._logged_in()
        records = [record_from(_object(f)) for f in field(message, "files", list)]
        total = await self.directory.announce(host, records, field(message, "reset", bool, False))
        return {"count": total}

    async def publish(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.directory.publish(self._logged_in(), record_from(message))
        return {}

    async def unpublish(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.directory.unpublish(self._logged_in(), field(message, "fname", str))
        return {}

    async def search(self, message: dict[str, Any]) -> EncodedItems:
        self._logged_in()
        page = await self.directory.search(field(message, "pattern", str, "*"), cursor_from(message))
        # Each item is {"fname", "size", "root", "online", "holders"}, formatted rather than encoded from a dict.
        return EncodedItems(
            [
                b'{"fname":%s,"size":%d,"root":%s,"online":%d,"holders":%d}'
                % (json_text(s.fname), s.size, json_text(s.root), s.online, s.holders)
                for s in page.items
            ],
            next=None if page.next is None else {"fname": page.next[0], "root": page.next[1]},
        )

    async def sources(self, message: dict[str, Any]) -> EncodedItems:
        host = self._logged_in()
        found = await self.directory.sources(field(message, "fname", str), host)
        if self._binding is None:
            # Read once: the certificate is the connection's (as at login), and the
            # fingerprint costs a hash of it, per request otherwise.
            self._binding = client_binding(self.transport)
        binding = self._binding
        texts = self.directory.source_tickets(host, binding, found) if found else []
        # Each item is {"host", "address", "size", "root", "ticket"}, joined from
        # the source's JSON made at its login: no dictionary built or encoded per item.
        # The root and the ticket need no escaping: a ticket is only issued for a root
        # of 64 hex digits, and is itself of the ticket pattern's characters.
        return EncodedItems(
            [
                b'%s"size":%d,"root":"%s","ticket":"%s"}'
                % (online.source_json(), h.size, h.root.encode(), text.encode())
                for (h, online), text in zip(found, texts, strict=True)
            ]
        )

    def connectionLost(self, reason: Failure) -> None:
        if self.deadlines is not None:
            self.deadlines.lost()
        address = address_text(self.transport.getPeer())
        fields = dict(
            address=address,
            seconds=self.directory.clock.seconds() - self.opened,
            who=f"host {self.host}" if self.host is not None else "not logged in",
            host=self.host,
            why=why_closed(reason),
        )
        closed = "connection from {address} closed after {seconds:.1f} s ({who}): {why}"
        if self.host is not None or self.factory is None:
            log.info(closed, **fields)
        else:
            # A flood of connections that never log in writes one line per address a minute.
            self.factory.closes.info(address_of(self.transport.getPeer()), closed, **fields)
        if self.factory is not None:
            self.factory.connections.discard(self)
        if self.host is not None:
            self.directory.logout(self.host, self, dropped=True)
        super().connectionLost(reason)


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest("each entry of 'files' must be an object")
    return value


class TrackerFactory(Factory):
    noisy = False  # no "Starting factory" line per connection (fileshare.logfilter)

    def __init__(self, directory: Directory, timeouts: Timeouts | None = None) -> None:
        self.directory = directory
        self.timeouts = timeouts or Timeouts()
        #: One line a minute per kind of timeout, however many connections meet it.
        self.warnings = RateLimitedLog(log, directory.clock)
        #: Closing lines of connections that never logged in, one a minute per address.
        self.closes = RateLimitedLog(log, directory.clock)
        self.connections: set[TrackerServerProtocol] = set()

    def buildProtocol(self, addr: Any) -> TrackerServerProtocol:
        p = TrackerServerProtocol(self.directory, self.timeouts, self.warnings)
        p.factory = self
        self.connections.add(p)
        return p

    def disconnect_all(self) -> None:
        for p in list(self.connections):
            p.transport.loseConnection()
