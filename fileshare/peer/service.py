"""``twistd fileshare-peer``: options and the service tree."""

import os
from typing import Any

from twisted.application import service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.threadpool import ThreadPool

from ..errors import BadRequest
from ..limits import CONSOLE_CAPS, PEER_CAPS, Caps, LimitingFactory
from ..secure import server_factory
from ..services import CallbackService, ListeningService, Program, StartupError, ThreadPoolService, first_failure
from ..storage.sqlite import DatabaseError
from ..tls import Identity, IdentityError, PinFileError, PinStore, load_or_create
from ..tls.ca import load_certificates
from ..tls.pins import FILE_NAME as PIN_FILE
from ..web.peer_api import PeerApi, peer_site
from ..web.site import web_listener
from .console import PeerConsoleFactory
from .flow import SEND_TIMEOUT
from .node import Peer
from .pool import QUEUE_TIMEOUT, SourcePool
from .published import CHECK_INTERVAL, PeriodicCheck, PublishedWatch
from .ratelimit import TokenBucket, parse_rate
from .repository import Repository
from .slots import MAX_QUEUED_PER_ADDRESS
from .source import REQUEST_TIMEOUT
from .tracker_endpoint import (
    DEFAULT_TRACKER,
    TrackerEndpoint,
    TrackerEndpoints,
    tracker_addresses,
    tracker_list,
    tracker_pins,
)
from .tracker_link import TrackerLink
from .upload import UploadService

log = Logger()


def _rate(text: str) -> int | None:
    try:
        return parse_rate(text)
    except BadRequest as e:
        raise usage.UsageError(e.message) from None


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise usage.UsageError(f"not a number: {text!r}") from None
    if n < 1:
        raise usage.UsageError("must be at least 1")
    return n


def _seconds(text: str) -> float:
    try:
        n = float(text)
    except ValueError:
        raise usage.UsageError(f"not a number of seconds: {text!r}") from None
    if not 0 < n < float("inf"):
        raise usage.UsageError("must be a positive number of seconds")
    return n


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Run a fileshare peer: a repository of files shared with other peers."
    optParameters = [
        ["listen", None, "tcp:7710", "Endpoint where other peers download from this one."],
        [
            "control",
            None,
            "tcp:7711:interface=127.0.0.1",
            "Endpoint of this peer's console (no password: keep it local).",
        ],
        [
            "web",
            None,
            "tcp:7781:interface=127.0.0.1",
            "Endpoint of this peer's web page and JSON API; 'none' turns it off. Beyond loopback it needs "
            "--web-password-file and TLS.",
        ],
        ["web-password-file", None, None, "File whose first line is the password of this peer's web page."],
        ["repo", None, "fileshare-repo", "Repository directory: fetched files land here; state in DIR/.fileshare."],
        ["max-uploads", None, 4, "Concurrent upload connections; more wait in a queue.", _count],
        [
            "max-queued-per-address",
            None,
            MAX_QUEUED_PER_ADDRESS,
            "Upload connections from one address that may wait for a slot; more are refused (queue-full).",
            _count,
        ],
        [
            "send-timeout",
            None,
            SEND_TIMEOUT,
            "Seconds an upload client may take no bytes while owed some before it is disconnected.",
            _seconds,
        ],
        ["upload-rate", None, None, "Upload limit in bytes/s across all uploads, K/M/G suffixes (e.g. 20M).", _rate],
        ["download-rate", None, None, "Download limit in bytes/s across all downloads, K/M/G suffixes.", _rate],
        ["max-sources", None, 4, "Sources one fetch downloads from at once.", _count],
        [
            "request-timeout",
            None,
            REQUEST_TIMEOUT,
            "Seconds a source may owe a reply or bytes and send nothing; then it is dropped.",
            _seconds,
        ],
        [
            "queue-timeout",
            None,
            QUEUE_TIMEOUT,
            "Seconds a fetch waits in one source's upload queue for a slot before giving up on it.",
            _seconds,
        ],
        [
            "tracker-fingerprint",
            None,
            None,
            "Demand this certificate fingerprint (sha256:...) of the tracker; replaces the pin from first contact. "
            "With several --tracker endpoints: one fingerprint for all, or one per endpoint, comma-separated.",
        ],
        ["tracker-ca", None, None, "PEM file of CA certificates: check the tracker's certificate and host name."],
        ["max-connections", None, PEER_CAPS.total, "Connections --listen holds at once.", _count],
        ["max-per-address", None, PEER_CAPS.per_address, "Connections to --listen from one address.", _count],
        ["max-pending", None, PEER_CAPS.pending, "Connections to --listen without a valid ticket yet.", _count],
    ]
    optFlags = [
        ["no-tls", None, "Speak plain text to the tracker and other peers (debugging, benchmarks)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["tracker"] = []

    def opt_tracker(self, value: str) -> None:
        """Client endpoint of a tracker [default: tcp:host=127.0.0.1:port=7700]; several: commas or repeat, tried in turn."""
        try:
            self["tracker"] = [*self["tracker"], *tracker_list(value)]
        except BadRequest as e:
            raise usage.UsageError(e.message) from None

    def postOptions(self) -> None:
        if self["listen"].split(":", 1)[0] not in ("tcp", "tcp6"):
            raise usage.UsageError(
                "--listen must be a TCP endpoint such as tcp:7710: other peers connect to it by address"
            )
        if not self["tracker"]:
            self["tracker"] = [DEFAULT_TRACKER]
        try:
            self["tracker-addresses"] = tracker_addresses(self["tracker"])
            self["tracker-pins"] = tracker_pins(self["tracker-fingerprint"], len(self["tracker"]))
        except BadRequest as e:
            raise usage.UsageError(e.message) from None
        if self["no-tls"] and (self["tracker-fingerprint"] or self["tracker-ca"]):
            raise usage.UsageError("--tracker-fingerprint and --tracker-ca need TLS; drop --no-tls")
        if self["tracker-fingerprint"] and self["tracker-ca"]:
            raise usage.UsageError("give either --tracker-fingerprint or --tracker-ca, not both")


def _identity(options: dict[str, Any], state_dir: str) -> Identity | None:
    """The peer's key and certificate in DIR/.fileshare, made on first start (blocking, at start-up)."""
    if options.get("no-tls"):
        return None
    identity = load_or_create(
        os.path.join(state_dir, "peer-cert.pem"), os.path.join(state_dir, "peer-key.pem"), "fileshare peer"
    )
    log.info("peer certificate fingerprint {fingerprint}", fingerprint=str(identity.fingerprint))
    return identity


def _tracker_endpoints(
    options: dict[str, Any], reactor: Any, identity: Identity | None, state_dir: str
) -> TrackerEndpoints:
    """One endpoint per ``--tracker``, each with its own pin; ``--tracker-ca`` vouches for all."""
    texts = options["tracker"]
    texts = tracker_list(texts) if isinstance(texts, str) else list(texts)
    addresses = options.get("tracker-addresses") or tracker_addresses(texts)
    if identity is None:
        return TrackerEndpoints([TrackerEndpoint(reactor, h, p, None) for h, p in addresses], reactor)
    if options.get("tracker-ca"):
        ca = load_certificates(options["tracker-ca"])
        return TrackerEndpoints([TrackerEndpoint(reactor, h, p, identity, ca=ca) for h, p in addresses], reactor)
    pins = PinStore.load(os.path.join(state_dir, PIN_FILE))
    given = options.get("tracker-pins") or tracker_pins(options.get("tracker-fingerprint"), len(addresses))
    return TrackerEndpoints(
        [TrackerEndpoint(reactor, h, p, identity, pins, g) for (h, p), g in zip(addresses, given, strict=True)],
        reactor,
    )


class PeerService(service.MultiService):
    """The peer; ``peer``, ``uploads``, ``listener`` and ``control`` are there for tests and tools."""

    def __init__(self, options: dict[str, Any], reactor: Any) -> None:
        super().__init__()
        self.reactor = reactor
        # Each pool has one job, so no job waits behind another: verifying
        # downloaded pieces, hashing newly published files, and the
        # repository's quick stat/open/unlink calls.
        hashers = ThreadPool(minthreads=0, maxthreads=2, name="fileshare-peer-verify")
        ThreadPoolService(hashers).setServiceParent(self)
        publishing = ThreadPool(minthreads=0, maxthreads=1, name="fileshare-peer-publish")
        ThreadPoolService(publishing).setServiceParent(self)
        metadata = ThreadPool(minthreads=0, maxthreads=2, name="fileshare-peer-files")
        ThreadPoolService(metadata).setServiceParent(self)
        self.repository = Repository(options["repo"], reactor, publishing, metadata)
        CallbackService(self.repository.close).setServiceParent(self)
        # Uploads open, check and read files in their own small pool, so a
        # slow disk delays uploads only, never the reactor or hashing.
        uploading = ThreadPool(minthreads=0, maxthreads=2, name="fileshare-peer-upload")
        ThreadPoolService(uploading).setServiceParent(self)
        self.uploads = UploadService(
            self.repository,
            reactor,
            options["max-uploads"],
            options["upload-rate"],
            uploading,
            options.get("max-queued-per-address", MAX_QUEUED_PER_ADDRESS),
            options.get("send-timeout", SEND_TIMEOUT),
        )
        self.identity = _identity(options, self.repository.state_dir)
        caps = Caps.from_options(options, PEER_CAPS)
        uploads = LimitingFactory(
            server_factory(self.uploads, self.identity, reactor, "fetcher", "peer"),
            caps,
            reactor,
            "upload port",
            pending="without a valid ticket yet",
        )
        self.listener = ListeningService(reactor, options["listen"], uploads, "peer uploads", "--listen")
        self.listener.setServiceParent(self)
        self.tracker_endpoint = _tracker_endpoints(options, reactor, self.identity, self.repository.state_dir)
        self.tracker = TrackerLink(
            self.tracker_endpoint,
            self.repository,
            reactor,
            lambda: self.listener.port_number,
        )
        self.uploads.ticket_key = lambda: self.tracker.ticket_key
        self.pool = SourcePool(
            reactor,
            TokenBucket(options["download-rate"], reactor),
            identity=self.identity,
            request_timeout=options.get("request-timeout", REQUEST_TIMEOUT),
            queue_timeout=options.get("queue-timeout", QUEUE_TIMEOUT),
        )
        self.peer = Peer(
            self.repository, self.tracker, self.uploads, self.pool, reactor, hashers, options["max-sources"]
        )
        # A published file changed on disk leaves the index: found by an upload, or by the periodic check.
        self.watch = PublishedWatch(self.repository, self.peer.unpublish)
        self.uploads.on_changed = self.watch.changed
        PeriodicCheck(self.watch, reactor, CHECK_INTERVAL).setServiceParent(self)
        self.control = ListeningService(
            reactor,
            options["control"],
            LimitingFactory(
                PeerConsoleFactory(self.peer, reactor), CONSOLE_CAPS, reactor, "peer console", options=False
            ),
            "peer console",
            "--control",
        )
        self.control.setServiceParent(self)
        # Off unless asked for: the default endpoint is in Options, so code building the
        # service from a plain dict (tests, tools) opens no fixed port by accident.
        self.web_api = PeerApi(self.peer, reactor)
        self.web = web_listener(
            reactor,
            options.get("web") or "none",
            peer_site(self.web_api),
            self.identity,
            options.get("web-password-file"),
            "peer web page",
            option="--web",
            password_option="--web-password-file",
        )
        if self.web is not None:
            self.web.setServiceParent(self)
        self.started: Deferred | None = None

    def startService(self) -> None:
        super().startService()
        # The repository is loaded before the tracker connection starts, so
        # the first announcement is complete.
        self.started = first_failure(
            [
                Deferred.fromCoroutine(self.repository.load()),
                self.listener.listening,
                self.control.listening,
                *([self.web.listening] if self.web is not None else []),
            ]
        )
        self.started.addCallback(lambda _: self.tracker.service.startService())

    def stopService(self) -> Deferred:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        # Downloads first: they still need the hashing threads and the database.
        await self.peer.stop()
        self.pool.close()
        if self.tracker.service.running:
            await self.tracker.service.stopService()
        for protocol in list(self.uploads.connections):
            protocol.transport.abortConnection()
        await super().stopService()


def makeService(options: Options) -> service.IService:
    from twisted.internet import reactor

    from .tuning import reuse_large_buffers

    reuse_large_buffers()
    try:
        peer = PeerService(options, reactor)
    except (DatabaseError, IdentityError, PinFileError, StartupError) as e:
        raise SystemExit(f"fileshare-peer: {e}") from None
    return Program("fileshare-peer", peer, reactor)
