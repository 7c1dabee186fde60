"""
The tracker's domain logic: accounts, who is online, and where files are.

It knows nothing of sockets: an online host is anything with ``call(op,
timeout=..., **fields)`` returning a Deferred, which the protocol provides.
"""

import hmac
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from .. import tickets
from ..errors import (
    AuthError,
    Banned,
    FileshareError,
    NotFound,
    NotLoggedIn,
    OnlineElsewhere,
    Throttled,
    Unavailable,
)
from ..names import check_account, check_fname, check_password
from ..ratelog import RateLimitedLog
from ..tls import Fingerprint
from . import passwords
from .cluster import ICluster, LocalCluster
from .glob import check_pattern
from .index import Holder, Index
from .online import HostChannel, OnlineHost, OnlineHosts, SearchPage
from .passwords import HashingQueue
from .sessions import SESSION_LIFETIME, SessionTokens
from .stats import TrackerStats
from .store import Cursor, FileRecord, ITrackerStore, TooManyFiles
from .throttle import ACCOUNT_LIMITS, ADDRESS_LIMITS, Gate, Limits, Throttle, seconds_text

log = Logger()

#: How long ``ping`` and ``discover`` wait for a host to answer.
LIVE_TIMEOUT = 5.0
#: Files one host may have in the index (``--max-records``).
MAX_RECORDS = 10_000
#: Items per ``search`` reply (``--page-size``); the reply's ``next`` cursor asks for the following page.
PAGE_SIZE = 500


class Directory:
    """Accounts, who is online and where files are.

    Logins are throttled per account and per address (:mod:`.throttle`), and
    at most a few password checks per address are in flight at once, so one
    address cannot queue the hashing pool in front of everyone else.  An
    account has at most one live session: a second login is refused unless
    it asks to replace the first, and a session that is replaced, kicked or
    banned is told why before it is disconnected.
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

    def load(self) -> Deferred:
        """Load the index from the store, once (again after a failure); index reads and writes wait for it."""
        if self._loaded:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiting.append(d)
        if len(self._waiting) == 1:
            Deferred.fromCoroutine(self._load()).addBoth(self._tell_waiting)
        return d

    async def _load(self) -> None:
        holdings = await self.store.holdings()
        self.index = Index.of(holdings, self.online.keys() | self.cluster.remote.keys())
        self._loaded = True
        await self.tokens.started()

    # -- keeping the index coherent with the other trackers of a group

    def online_changed(self, name: str, online: bool = False) -> None:
        """*name* came or went here or on another tracker: online in the index if online anywhere in the group."""
        self.index.set_online(name, name in self.online or name in self.cluster.remote)

    def files_changed(self, name: str) -> Deferred | None:
        """Another tracker stored a change of *name*'s files: re-read them from the store into the index.

        One read per host at a time; a notice during a read asks for one
        more, so the last read starts after the last change.  Answers the
        read's Deferred, or None if the running one takes the notice.
        """
        if name in self._rereading:
            self._rereading[name] = True
            return None
        self._rereading[name] = False
        return Deferred.fromCoroutine(self._reread(name)).addErrback(
            lambda f: log.warn("could not re-read the files of {name}: {why}", name=name, why=f.value)
        )

    async def _reread(self, name: str) -> None:
        try:
            if not self._loaded:
                await self.load()
            while True:
                records = await self.store.host_files(name)
                self._indexed(name, self.index.replace(name, records))
                if not self._rereading[name]:
                    return
                self._rereading[name] = False
        finally:
            del self._rereading[name]
            for d in self._reread_waiters.pop(name, []):
                d.callback(None)

    async def _reread_done(self) -> None:
        """Wait for the re-reads running now: a file another tracker just stored may be on its way to the index."""
        waits = []
        for name in self._rereading:
            d: Deferred = Deferred()
            self._reread_waiters.setdefault(name, []).append(d)
            waits.append(d)
        await DeferredList(waits)

    async def reload_index(self) -> None:
        """Load the whole index again (notifications may have been missed); hosts changed meanwhile are re-read."""
        if not self._loaded or self._touched is not None:
            return
        self._touched = set()
        try:
            holdings = await self.store.holdings()
            self.index = Index.of(holdings, self.online.keys() | self.cluster.remote.keys())
        finally:
            touched, self._touched = self._touched, None
        for name in touched:
            self.files_changed(name)

    def _indexed(self, name: str, count: int) -> None:
        if name in self.online:
            self.online[name].files = count
        if self._touched is not None:
            self._touched.add(name)

    async def _stored(self, name: str, count: int) -> None:
        """This tracker stored and indexed a change of *name*'s files: the group hears of it before the host does."""
        self._indexed(name, count)
        await self.cluster.files_changed(name)

    def _tell_waiting(self, result: Any) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(result)  # a Failure fails each of them

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

    # -- the index

    async def announce(self, name: str, records: list[FileRecord], reset: bool) -> int:
        """Index *records* for *name* (all of its files if *reset*); over ``max_records``, nothing is stored."""
        if not self._loaded:
            await self.load()
        with self._writing():
            try:
                if reset:
                    await self.store.replace_files(name, records, self.max_records)
                else:
                    await self.store.add_files(name, records, self.max_records)
            except TooManyFiles as e:
                self._too_many(e, "announce")
                raise
            count = self.index.replace(name, records) if reset else self.index.add(name, records)
        await self._stored(name, count)
        return count

    async def publish(self, name: str, record: FileRecord) -> None:
        if not self._loaded:
            await self.load()
        with self._writing():
            try:
                await self.store.add_file(name, record, self.max_records)
            except TooManyFiles as e:
                self._too_many(e, "publish")
                raise
            count = self.index.add(name, [record])
        await self._stored(name, count)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A change on its way to the store and then the index: a lookup that finds nothing waits for it.

        So a file whose publish reached this tracker before a ``sources`` is
        found by it, as when one database thread served both in turn.
        """
        done: Deferred = Deferred()
        self._writes.add(done)
        try:
            yield
        finally:
            self._writes.discard(done)
            done.callback(None)

    def _too_many(self, e: TooManyFiles, op: str) -> None:
        self._limits_log.warn(
            ("too-many-files", e.host),
            "refused {op} from {host}: it would hold {count} files in the index, over --max-records {limit}",
            op=op,
            host=e.host,
            count=e.count,
            limit=e.limit,
        )

    async def unpublish(self, name: str, fname: str) -> None:
        check_fname(fname)
        if not self._loaded:
            await self.load()
        with self._writing():
            if not await self.store.remove_file(name, fname):
                raise NotFound(f"{fname!r} is not published by {name}")
            self.index.remove(name, fname)
        await self._stored(name, self.index.count(name))

    async def search(self, pattern: str = "*", after: Cursor | None = None) -> SearchPage:
        """One page of the files whose names match the glob *pattern*, with how many holders are online.

        At most ``page_size`` summaries, sorted by fname then root, after the
        cursor *after*; the index is asked for one more to learn whether
        another page follows, so *next* is None exactly on the last page.
        Answered from memory, without a store call once the index is loaded.
        """
        check_pattern(pattern)
        if not self._loaded:
            await self.load()
        found = self.index.search(pattern, after, self.page_size + 1)
        if len(found) <= self.page_size:
            return SearchPage(found, None)
        last = found[self.page_size - 1]
        return SearchPage(found[: self.page_size], (last.fname, last.root))

    async def sources(self, fname: str, asking: str | None) -> list[tuple[Holder, OnlineHost]]:
        """Online hosts other than *asking* (here or on another tracker of the group) that hold *fname*, from the index in memory."""
        check_fname(fname)
        if not self._loaded:
            await self.load()
        found = self._sources(fname, asking)
        if not found and (self._rereading or self._writes):
            # A change stored just now, here or by another tracker, may be on its way
            # to the index: answer after the writes and re-reads running now.
            await DeferredList([*self._writes, Deferred.fromCoroutine(self._reread_done())])
            found = self._sources(fname, asking)
        return found

    def _sources(self, fname: str, asking: str | None) -> list[tuple[Holder, OnlineHost]]:
        online, remote = self.online, self.cluster.remote
        found = []
        for h in self.index.holders(fname):
            host = online.get(h.host) or remote.get(h.host)
            if host is not None and h.host != asking:
                found.append((h, host))
        return found

    def ticket(self, asking: str, binding: str, root: str, source: OnlineHost) -> str:
        """A download ticket letting *asking* (bound to *binding*) get *root* from *source*.

        Only a host online now gets one, so a kicked or banned host gets no
        new tickets; the ones it holds lapse within ``tickets.LIFETIME``.
        """
        if asking not in self.online:
            raise NotLoggedIn(f"{asking} is not logged in")
        text = tickets.issue(source.ticket_key, asking, binding, root, source.name, self.clock.seconds())
        self.stats.tickets.add()
        return text

    def source_tickets(self, asking: str, binding: str, found: list[tuple[Holder, OnlineHost]]) -> list[str]:
        """:meth:`ticket` for each item of a ``sources`` answer (*found*), made at once (its hot path)."""
        if asking not in self.online:
            raise NotLoggedIn(f"{asking} is not logged in")
        wanted = [(source.ticket_key, h.root, source.name) for h, source in found]
        texts = tickets.issue_many(asking, binding, wanted, self.clock.seconds())
        self.stats.tickets.add(len(texts))
        return texts

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
        return self.clock.seconds() - start

    async def discover(self, name: str) -> list[dict[str, Any]]:
        """Ask *name* for the files in its repository."""
        host = await self._online(name)
        try:
            reply = await host.channel.call("list", timeout=LIVE_TIMEOUT)
        except FileshareError as e:
            raise Unavailable(f"{name} did not answer: {e.message}") from None
        return reply.get("items", [])
