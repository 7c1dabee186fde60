"""``twistd fileshare-tracker``: options and the service tree."""

import os
from typing import Any

from twisted.application import service
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from ..limits import CONSOLE_CAPS, TRACKER_CAPS, Caps, LimitingFactory, count_option, seconds_option
from ..secure import server_factory
from ..services import (
    LISTEN_BACKLOG,
    CallbackService,
    ListeningService,
    Program,
    StartupError,
    ThreadPoolService,
    first_failure,
)
from ..storage.sqlite import DatabaseError
from ..tls import Identity, IdentityError, load_or_create
from ..tls.ca import load_identity
from ..web.site import web_listener
from ..web.tracker_api import tracker_root
from ..wire.rpc import MAX_IN_FLIGHT
from .admin import AdminConsoleFactory
from .cluster import LocalCluster
from .database import open_database, open_pg_database
from .directory import MAX_RECORDS, PAGE_SIZE, Directory
from .passwords import HASH_QUEUE, HASH_THREADS, HashingQueue
from .pg_store import PostgresTrackerStore, is_postgres
from .protocol import TrackerFactory
from .sessions import SESSION_LIFETIME
from .store import SQLiteTrackerStore
from .throttle import Gate
from .timeouts import IDLE_TIMEOUT, LOGIN_TIMEOUT, Timeouts

log = Logger()


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Run a fileshare tracker: accounts, online hosts and the file index."
    optParameters = [
        ["listen", None, "tcp:7700", "Endpoint where peers connect."],
        ["admin", None, "tcp:7701:interface=127.0.0.1", "Endpoint of the admin console (no password: keep it local)."],
        [
            "web",
            None,
            "tcp:7780:interface=127.0.0.1",
            "Endpoint of the status page and JSON API ('none': off); beyond loopback it needs "
            "--admin-password-file and TLS.",
        ],
        ["admin-password-file", None, None, "File whose first line is the password of the web page (--web)."],
        [
            "db",
            None,
            "fileshare-tracker.db",
            "SQLite database file of accounts and the file index, or postgresql://USER@HOST/DB.",
        ],
        ["tls-cert", None, None, "PEM certificate (chain) from your own CA, instead of the self-signed one."],
        ["tls-key", None, None, "PEM private key of --tls-cert (unencrypted)."],
        ["max-connections", None, TRACKER_CAPS.total, "Connections --listen holds at once.", count_option],
        ["max-per-address", None, TRACKER_CAPS.per_address, "Connections to --listen from one address.", count_option],
        ["max-pending", None, TRACKER_CAPS.pending, "Connections to --listen not yet logged in.", count_option],
        ["login-timeout", None, LOGIN_TIMEOUT, "Seconds from connecting to a successful login.", seconds_option],
        ["idle-timeout", None, IDLE_TIMEOUT, "Seconds of silence before a logged-in peer is pinged.", seconds_option],
        [
            "listen-backlog",
            None,
            LISTEN_BACKLOG,
            "Connects the kernel queues for --listen before they are accepted (unless --listen says backlog=).",
            count_option,
        ],
        [
            "session-lifetime",
            None,
            SESSION_LIFETIME,
            "Seconds a session token lets a peer whose connection dropped log in again without the password check.",
            seconds_option,
        ],
        [
            "hash-threads",
            None,
            HASH_THREADS,
            "Password checks computed at once (default: one fewer than the CPUs, at least 1).",
            count_option,
        ],
        [
            "hash-queue",
            None,
            HASH_QUEUE,
            "Password checks waiting in line; past it a login is told to retry.",
            count_option,
        ],
        ["max-records", None, MAX_RECORDS, "Files one host may have in the index.", int],
        ["cluster", None, None, "PostgreSQL database (URL or libpq string) of a group of trackers acting as one."],
        ["tracker-name", None, None, "This tracker's name in the group (default: host name and process id)."],
        ["heartbeat", None, 5.0, "Seconds between two heartbeats of this tracker in --cluster.", seconds_option],
        ["dead-after", None, 15.0, "Seconds without a heartbeat before a tracker's hosts go offline.", seconds_option],
        ["page-size", None, PAGE_SIZE, "Files per search reply; the reply says how to ask for the next page.", int],
        [
            "max-in-flight",
            None,
            MAX_IN_FLIGHT,
            "Requests per peer connection handled at once; then reading pauses.",
            int,
        ],
    ]
    optFlags = [
        [
            "create",
            None,
            "Start an empty database if the one at --db is missing or empty, although this tracker used one there "
            "before (without it the tracker refuses to start, so accounts are never lost silently).",
        ],
        ["no-tls", None, "Speak plain text to peers (debugging, benchmarks); peers need --no-tls too."],
    ]

    def postOptions(self) -> None:
        if bool(self["tls-cert"]) != bool(self["tls-key"]):
            raise usage.UsageError("--tls-cert and --tls-key go together")
        if self["no-tls"] and self["tls-cert"]:
            raise usage.UsageError("--tls-cert and --tls-key need TLS; drop --no-tls")
        if self["create"] and is_postgres(self["db"]):
            raise usage.UsageError("--create is for an SQLite --db; a PostgreSQL database is made by its operator")
        if self["dead-after"] < 2 * self["heartbeat"]:
            raise usage.UsageError("--dead-after must be at least twice --heartbeat, or a live tracker looks dead")
        if self["cluster"] and not self["cluster"].startswith(("postgresql:", "postgres:", "host=", "dbname=")):
            raise usage.UsageError("--cluster takes a PostgreSQL URL (postgresql://USER@HOST/DB) or libpq string")
        for name in ("max-records", "page-size", "max-in-flight"):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be at least 1")


def identity_paths(db: str) -> tuple[str, str]:
    """Where the self-signed identity lives: ``tracker.db`` -> ``tracker-cert.pem``, ``tracker-key.pem``.

    With a PostgreSQL ``--db``, in the working directory, under the default names.
    """
    base = "fileshare-tracker" if is_postgres(db) else os.path.splitext(db)[0]
    return f"{base}-cert.pem", f"{base}-key.pem"


def tracker_identity(options: dict[str, Any]) -> Identity | None:
    """Load (or on first start make) the tracker's identity and log its fingerprint (blocking, at start-up)."""
    if options.get("no-tls"):
        log.warn("TLS is off (--no-tls): passwords and files cross the network in clear")
        return None
    if options.get("tls-cert"):
        identity = load_identity(options["tls-cert"], options["tls-key"])
    else:
        identity = load_or_create(*identity_paths(options["db"]), "fileshare tracker")
    log.info(
        "tracker certificate fingerprint {fingerprint} (peers pin it on first contact, "
        "or take it with --tracker-fingerprint)",
        fingerprint=str(identity.fingerprint),
    )
    return identity


def group_of(options: dict[str, Any], reactor: Any) -> Any:
    """The tracker's group: --cluster, or a PostgreSQL --db (trackers on one database are one group); else alone."""
    url = options.get("cluster") or (options["db"] if is_postgres(options.get("db") or "") else None)
    if not url:
        return LocalCluster()
    from .pg_cluster import DEAD_AFTER, HEARTBEAT_INTERVAL, PostgresCluster

    return PostgresCluster(
        url,
        reactor,
        name=options.get("tracker-name"),
        heartbeat=options.get("heartbeat", HEARTBEAT_INTERVAL),
        dead_after=options.get("dead-after", DEAD_AFTER),
    )


class ClusterService(service.Service):
    """Joins the group at start (``ready`` fires when joined) and leaves it at stop."""

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.ready: Any = None

    def startService(self) -> None:
        super().startService()
        self.ready = self.cluster.start()
        self.ready.addErrback(self._refused)

    def _refused(self, failure: Any) -> None:
        raise StartupError(f"cannot join the group of trackers at --cluster: {failure.getErrorMessage()}")

    def stopService(self) -> Any:
        super().stopService()
        return self.cluster.stop()


class TrackerService(service.MultiService):
    """The tracker; ``directory``, ``listener`` and ``admin`` are there for tests and tools.

    Checks the database first (:func:`~fileshare.tracker.database.open_database`,
    blocking) and raises :class:`~fileshare.storage.sqlite.DatabaseError` to refuse it.
    """

    def __init__(self, options: dict[str, Any], reactor: Any) -> None:
        super().__init__()
        postgres = is_postgres(options["db"])
        if postgres:
            open_pg_database(options["db"])
        else:
            database = open_database(options["db"], create=bool(options.get("create")))
        #: The tracker's TLS identity (None with --no-tls); made beside the database on first start.
        self.identity = tracker_identity(options)
        hash_threads = options.get("hash-threads", HASH_THREADS)
        pool = ThreadPool(minthreads=0, maxthreads=hash_threads, name="fileshare-tracker-cpu")
        ThreadPoolService(pool).setServiceParent(self)
        if postgres:
            store: Any = PostgresTrackerStore(options["db"], reactor)
        else:
            store = SQLiteTrackerStore(database.path, reactor, prepared=True)
        CallbackService(store.close).setServiceParent(self)
        self.cluster = group_of(options, reactor)
        self._cluster_service = ClusterService(self.cluster)
        self._cluster_service.setServiceParent(self)
        self.directory = Directory(
            store,
            reactor,
            reactor,
            pool,
            max_records=options.get("max-records", MAX_RECORDS),
            page_size=options.get("page-size", PAGE_SIZE),
            cluster=self.cluster,
            hashing=HashingQueue(hash_threads, options.get("hash-queue", HASH_QUEUE)),
            # The line above bounds the checks in all; the gate keeps only each address's share.
            gate=Gate(total=hash_threads + options.get("hash-queue", HASH_QUEUE)),
            session_lifetime=options.get("session-lifetime", SESSION_LIFETIME),
        )
        timeouts = Timeouts(
            login=options.get("login-timeout", LOGIN_TIMEOUT), idle=options.get("idle-timeout", IDLE_TIMEOUT)
        )
        self.peers = TrackerFactory(self.directory, timeouts)
        self.peers.max_in_flight = options.get("max-in-flight", MAX_IN_FLIGHT)
        caps = Caps.from_options(options, TRACKER_CAPS)
        listening = LimitingFactory(
            server_factory(self.peers, self.identity, reactor, "peer", "peer"),
            caps,
            reactor,
            "tracker port",
            pending="not yet logged in",
        )
        self.listener = ListeningService(
            reactor,
            options["listen"],
            listening,
            "tracker",
            "--listen",
            backlog=options.get("listen-backlog", LISTEN_BACKLOG),
        )
        self.listener.setServiceParent(self)
        self.admin = ListeningService(
            reactor,
            options["admin"],
            LimitingFactory(
                AdminConsoleFactory(self.directory, self.identity),
                CONSOLE_CAPS,
                reactor,
                "admin console",
                options=False,
            ),
            "admin console",
            "--admin",
        )
        self.admin.setServiceParent(self)
        #: The status page and JSON API (None with ``--web none``); see fileshare.web.tracker_api.
        self.web = web_listener(
            reactor,
            options.get("web", "none"),
            tracker_root(self.directory),
            self.identity,
            options.get("admin-password-file"),
            "tracker web page",
        )
        if self.web is not None:
            self.web.setServiceParent(self)

    def startService(self) -> None:
        self.directory.stats.started = self.directory.clock.seconds()
        # The index is read into memory before the first login asks for it (and waits for it).
        loading = self.directory.load()
        loading.addCallback(lambda _: log.info("index loaded: {count} files", count=self.directory.index.size))
        loading.addErrback(lambda f: log.failure("cannot load the index from the database", f))
        super().startService()
        self.cluster_ready = self._cluster_service.ready
        listening = [self.listener.listening, self.admin.listening, self.cluster_ready]
        if self.web is not None:
            listening.append(self.web.listening)
        self.started = first_failure(listening)

    def stopService(self) -> Any:
        self.peers.disconnect_all()
        return super().stopService()


def makeService(options: Options) -> service.IService:
    from twisted.internet import reactor

    try:
        top = TrackerService(options, reactor)
    except (DatabaseError, IdentityError, StartupError) as e:
        # twistd prints this one line and exits with status 1.
        raise SystemExit(f"fileshare-tracker: {e}") from None
    return Program("fileshare-tracker", top, reactor)
