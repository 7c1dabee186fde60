"""
The tracker's domain logic: accounts, who is online, and where files are.

It knows nothing of sockets: an online host is anything with ``call(op,
timeout=..., **fields)`` returning a Deferred, which the protocol provides.
"""

import hmac
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from ..errors import (
    AuthError,
    Banned,
    FileshareError,
    NotFound,
    OnlineElsewhere,
    Throttled,
    Unavailable,
)
from ..names import check_account, check_password
from ..ratelog import RateLimitedLog
from ..tls import Fingerprint
from . import passwords
from .cluster import ICluster, LocalCluster
from .index import Index
from .index_coherence import IndexCoherence
from .index_requests import IndexRequests
from .online import HostChannel, OnlineHost, OnlineHosts
from .passwords import HashingQueue
from .sessions import SESSION_LIFETIME, SessionTokens
from .stats import TrackerStats
from .store import ITrackerStore
from .throttle import ACCOUNT_LIMITS, ADDRESS_LIMITS, Gate, Limits, Throttle, seconds_text

log = Logger()

#: How long ``ping`` and ``discover`` wait for a host to answer.
LIVE_TIMEOUT = 5.0
#: Files one host may have in the index (``--max-records``).
MAX_RECORDS = 10_000
#: Items per ``search`` reply (``--page-size``); the reply's ``next`` cursor asks for the following page.
PAGE_SIZE = 500


class Directory(IndexRequests, IndexCoherence):
    """Accounts, who is online and where files are.

    Logins are throttled per account and per address (:mod:`.throttle`), and
    at most a few password checks per address are in flight at once, so one
    address cannot queue the hashing pool in front of everyone else.  An
    account has at most one live session: a second login is refused unless
    it asks to replace the first, and a session that is replaced, kicked or
    banned is told why before it is disconnected.

    The index's parts are in :mod:`.index_requests` (what hosts announce
    and look up) and :mod:`.index_coherence` (loading it, and keeping it
    current with the other trackers of a group).
    """

    def __init__(
        self,
        store: ITrackerStore,
        clock: IReactorTime,
        reactor: Any,
        threadpool: ThreadPool,
        account_limits: Limits = ACCOUNT_LIMITS,
        address_limits: Limits = ADDRESS_LIMITS,
        gate: Gate | None = None,
        max_records: int = MAX_RECORDS,
        page_size: int = PAGE_SIZE,
        cluster: ICluster | None = None,
        hashing: HashingQueue | None = None,
        session_lifetime: float = SESSION_LIFETIME,
    ) -> None:
        """*hashing* lines up the password checks (None: straight to *threadpool*, bounded by its threads)."""
        self.store = store
        self.clock = clock
        self._reactor = reactor
        self._threadpool = threadpool
        #: Online hosts by name; the index counts each file's online holders from its changes.
        self.online: dict[str, OnlineHost] = OnlineHosts(self.online_changed)
        self.by_account = Throttle(clock, account_limits)
        self.by_address = Throttle(clock, address_limits)
        self.gate = gate if gate is not None else Gate()
        self.stats = TrackerStats(clock)
        self.max_records = max_records
        self.page_size = page_size
        self._limits_log = RateLimitedLog(log, clock)
        #: Hosts online on other trackers of the group (``cluster.remote``) and its one-session rule.
        self.cluster = cluster if cluster is not None else LocalCluster()
        self.cluster.bind(self)
        self.hashing = hashing
        #: Session tokens, which let a reconnecting peer skip the password check (:mod:`.sessions`).
        self.tokens = SessionTokens(store, clock, session_lifetime)
        #: The file index in memory (:mod:`.index`), loaded from the store by :meth:`load`.
        self.index = Index()
        self._waiting: list[Deferred] = []
        self._loaded = False
        #: Changes of this tracker on their way to the store and the index (:meth:`_writing`).
        self._writes: set[Deferred] = set()
        #: host -> whether another re-read was asked while one runs (:meth:`files_changed`).
        self._rereading: dict[str, bool] = {}
        #: host -> lookups waiting for its re-read to end (:meth:`_reread_done`).
        self._reread_waiters: dict[str, list[Deferred]] = {}
        #: Hosts whose files changed while :meth:`reload_index` read the store (None: no reload runs).
        self._touched: set[str] | None = None
        #: host -> the version of its files the index holds, with a versioned store (:mod:`.index_coherence`).
        self.versions: dict[str, int] = {}
        #: Store checks of ``sources`` misses running now (:meth:`read_unheard_holders`, bounded).
        self._miss_checks = 0

    # -- accounts

    async def register(self, name: str, password: str, address: str = "") -> None:
        check_account(name)
        check_password(password)
        encoded = await self._hashed(address, passwords.hash_password, password)
        await self.store.create_account(name, encoded)
        log.info("account {name} registered from {address}", name=name, address=address)

    async def login(
        self,
        name: str,
        password: str | None,
        channel: HostChannel,
        endpoint: str,
        address: str = "",
        where: str = "",
        replace: bool = False,
        session: str | None = None,
        fingerprint: Fingerprint | None = None,
        transfer_address: dict[str, object] | None = None,
    ) -> OnlineHost:
        """Check the password and bring *name* online on *channel*.

        *address* is the connection's remote address (throttling, logs),
        *where* what others are told about it; *session* is the secret of an
        earlier login by the same peer, which may take that session back
        without *replace* (the peer reconnected before the tracker noticed the
        old connection had died).  *fingerprint* is the key of the host's TLS
        connection and *transfer_address* the record fetchers get (see
        :class:`OnlineHost`).

        *session* is also the session token (:mod:`.sessions`): while valid it
        stands in for the password, which is checked only when it is not.
        """
        check_account(name)
        if password is not None:
            check_password(password)
        if not self._loaded:
            await self.load()
        by_token = session is not None and await self.tokens.valid(name, session)
        wanted = lambda: getattr(channel, "connected", True)  # noqa: E731
        if not by_token and not await self._password_matches(name, password, address, wanted):
            # One message for both cases, so names cannot be probed.
            if password is None:
                raise AuthError("unknown account or expired session; log in with the password")
            raise AuthError("unknown account or wrong password")
        ban = await self.store.ban(name)
        if ban is not None:
            log.warn("refused a login for banned {name} from {address}", name=name, address=address)
            raise Banned(f"{name} is banned: {ban.reason}")
        previous = self.online.get(name)
        if previous is not None and previous.channel is not channel:
            if session is not None and previous.session and hmac.compare_digest(session, previous.session):
                log.info("host {name} reconnected from {where}; dropping its old connection", name=name, where=where)
                del self.online[name]
                previous.channel.disconnect()
            elif replace:
                self._end(previous, "replaced", f"{name} logged in from {where} with --replace")
            else:
                log.info(
                    "refused a second login for {name} from {address}: online from {online_from}",
                    name=name,
                    address=address,
                    online_from=previous.where,
                )
                raise OnlineElsewhere(
                    f"{name} is already logged in from {previous.where}; use login --replace to take over"
                )
        host = OnlineHost(
            name,
            channel,
            endpoint,
            since=self.clock.seconds(),
            where=where,
            fingerprint=fingerprint,
            transfer_address=dict(transfer_address or {}),
        )
        host.session = self.tokens.new()
        if previous is not None and previous.channel is channel:
            host.files = previous.files
        await self.cluster.claim(host, replace, session)
        self.online[name] = host
        self.tokens.save(name, host.session)
        self.stats.logins.add()
        log.info(
            "host {name} logged in from {address}; fetchers reach it at {where}",
            name=name,
            address=address,
            where=where,
            endpoint=endpoint,
        )
        return host

    def logout(self, name: str, channel: HostChannel, dropped: bool = False) -> None:
        """*name* on *channel* goes offline: its session token is revoked, or if the connection *dropped*, expires."""
        host = self.online.get(name)
        if host is not None and host.channel is channel:
            del self.online[name]
            self.cluster.release(host)
            if dropped:
                self.tokens.dropped(name, host.session)
            else:
                self.tokens.revoke(name)
            log.info("host {name} logged out (was at {where})", name=name, where=host.where)

    async def passwd(self, name: str, old: str, new: str, address: str = "") -> None:
        """Change *name*'s password; the old one is checked (and throttled) like a login."""
        check_password(old)
        check_password(new)
        if not await self._password_matches(name, old, address):
            raise AuthError("wrong password")
        encoded = await self._hashed(address, passwords.hash_password, new)
        await self.store.set_password_hash(name, encoded)
        await self.tokens.revoke(name)
        log.info("host {name} changed its password", name=name, address=address)

    async def _password_matches(
        self, name: str, password: str | None, address: str, wanted: Callable[[], bool] = lambda: True
    ) -> bool:
        """Throttle, then verify in the thread pool; failures are counted and logged.

        No *password* (a login by session token whose token did not hold)
        is a failure without a hash; *wanted* says whether the connection
        still waits for the answer when the check's turn comes.
        """
        for throttle, key, who in (
            (self.by_account, name, f"for {name}"),
            (self.by_address, address, f"from {address}"),
        ):
            wait = throttle.wait(key)
            if wait > 0:
                raise Throttled(f"too many failed logins {who}; try again in {seconds_text(wait)}")
        encoded = await self.store.password_hash(name)
        matches = password is not None and await self._hashed(
            address,
            passwords.verify_password,
            password,
            encoded if encoded is not None else passwords.DUMMY_HASH,
            wanted=wanted,
        )
        if matches and encoded is not None:
            self.by_account.succeeded(name)
            return True
        self.stats.failed_logins.add()
        delay = max(self.by_account.failed(name), self.by_address.failed(address))
        log.warn(
            "failed login for {name} from {address} ({failures} in a row; next try allowed in {delay} s)",
            name=name,
            address=address,
            failures=self.by_account.failures(name),
            delay=delay,
        )
        return False

    async def _hashed(
        self, address: str, f: Callable[..., Any], *args: Any, wanted: Callable[[], bool] = lambda: True
    ) -> Any:
        """*f(*args)* in the hashing pool, through the per-address gate and the hashing queue."""
        self.gate.admit(address)
        try:
            start = lambda: deferToThreadPool(self._reactor, self._threadpool, f, *args)  # noqa: E731
            return await (start() if self.hashing is None else self.hashing.run(start, wanted))
        finally:
            self.gate.leave(address)

    # -- the operator's powers

    def _end(self, host: OnlineHost, code: str, reason: str) -> None:
        if self.online.get(host.name) is host:
            del self.online[host.name]
            self.cluster.release(host)
        log.info("ending the session of {name}: {reason}", name=host.name, reason=reason, code=code)
        host.channel.end_session(code, reason)

    async def kick(self, name: str) -> None:
        """End *name*'s session, telling it why; it may log in again."""
        host = await self._online(name)
        self._end(host, "kicked", "kicked by the tracker's operator")
        await self.tokens.revoke(name)

    async def ban(self, name: str, reason: str) -> bool:
        """Refuse *name*'s logins from now on and end its session; True if it was online."""
        check_account(name)
        await self.store.add_ban(name, reason, self.clock.seconds())
        await self.tokens.revoke(name)
        log.info("banned {name}: {reason}", name=name, reason=reason)
        host = self.online.get(name) or self.cluster.remote.get(name)
        if host is not None:
            self._end(host, "banned", f"{name} is banned: {reason}")
        return host is not None

    async def unban(self, name: str) -> None:
        check_account(name)
        if not await self.store.remove_ban(name):
            raise NotFound(f"{name} is not banned")
        log.info("lifted the ban on {name}", name=name)

    # -- live requests to hosts

    async def _online(self, name: str) -> OnlineHost:
        host = self.online.get(name) or self.cluster.remote.get(name)
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
        host.rtt = self.clock.seconds() - start
        return host.rtt

    def pinged(self, name: str, channel: HostChannel, rtt: float) -> None:
        """*name*'s connection answered the idle check's ``ping`` in *rtt* seconds."""
        host = self.online.get(name)
        if host is not None and host.channel is channel:
            host.rtt = rtt

    async def discover(self, name: str) -> list[dict[str, Any]]:
        """Ask *name* for the files in its repository."""
        host = await self._online(name)
        try:
            reply = await host.channel.call("list", timeout=LIVE_TIMEOUT)
        except FileshareError as e:
            raise Unavailable(f"{name} did not answer: {e.message}") from None
        return reply.get("items", [])
