"""
The ``--web`` listener of the tracker and of a peer: one ``twisted.web`` site in the same reactor.

:func:`web_listener` reads the ``--web`` endpoint and the password, and refuses at start-up what
would expose the page: an endpoint beyond loopback without a password, or without TLS.  The site
it builds bounds what one browser can make the process hold: 64 connections (32 from one
address), request bodies of :data:`~fileshare.web.jsonapi.MAX_BODY`, an idle connection closed
after :data:`IDLE_TIMEOUT` seconds.
"""

from __future__ import annotations

import ipaddress
import re
from importlib import resources
from typing import Any

from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from ..limits import Caps, LimitingFactory
from ..ratelog import RateLimitedLog
from ..services import ListeningService, StartupError
from ..tls.connect import wrap_server_factory
from .access import Access, Guarded, PasswordFileError, read_password_file
from .jsonapi import MAX_BODY, NotFound, api_tree

log = Logger()

#: Connections one web listener holds (in all, from one address); browsers open about six.
WEB_CAPS = Caps(total=64, per_address=32, pending=64)
#: Seconds an HTTP connection may sit idle before it is closed.
IDLE_TIMEOUT = 60.0
#: Seconds from a request's first byte to its last (headers and body).  twisted.web's idle timeout
#: starts again at every byte, so without this a client sending a byte a minute holds a place for days.
REQUEST_DEADLINE = 30.0

#: Headers on every reply: no framing by other sites, no sniffing, scripts only from this origin.
SECURITY_HEADERS = {
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"same-origin",
    b"content-security-policy": b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
}

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


def is_local_endpoint(description: str) -> bool:
    """Whether a server endpoint string listens only where this machine alone can reach it.

    ``unix:`` sockets and TCP on a loopback ``interface=`` are local; TCP without ``interface=``
    listens on every address, and any other endpoint type is taken as not local.
    """
    parts = re.split(r"(?<!\\):", description)
    kind = parts[0].lower()
    if kind == "unix":
        return True
    if kind not in ("tcp", "tcp6", "ssl"):
        return False
    for part in parts[1:]:
        if part.startswith("interface="):
            interface = part[len("interface=") :].replace("\\:", ":")
            if interface.lower() == "localhost":
                return True
            try:
                return ipaddress.ip_address(interface).is_loopback
            except ValueError:
                return False
    return False


class WebRequest(Request):
    """A request with the security headers set and its body bounded.

    twisted.web reads a whole body before any resource sees it; a body over
    :data:`MAX_BODY` closes the connection instead of filling memory or disk.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._body_bytes = 0

    def gotLength(self, length: int | None) -> None:
        super().gotLength(length)
        if length is not None and length > MAX_BODY:
            self._too_large()

    def handleContentChunk(self, data: bytes) -> None:
        self._body_bytes += len(data)
        if self._body_bytes > MAX_BODY:
            self._too_large()
            return
        super().handleContentChunk(data)

    def _too_large(self) -> None:
        site = getattr(self.channel, "site", None)
        warnings = getattr(site, "warnings", None)
        if warnings is not None:
            host = getattr(self.getClientAddress(), "host", "local")
            warnings.warn(
                ("too-large", host),
                "{what}: closed a connection from {host} sending a request body over {limit} bytes",
                what=site.what,
                host=host,
                limit=MAX_BODY,
            )
        if self.channel is not None and self.channel.transport is not None:
            self.channel.transport.abortConnection()

    def process(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.setHeader(name, value)
        super().process()


class WebChannel(HTTPChannel):
    """An HTTP/1.1 connection that bounds what a slow or non-reading client holds.

    A request must arrive within :data:`REQUEST_DEADLINE` seconds.  A line over twisted's 16 KiB
    gets ``414`` or ``431`` (twisted.web would close without a word).  And the next pipelined request waits
    while the client leaves replies unread: twisted.web stops reading the socket then, but still
    answers every request it has already read, so 64 KiB of tiny pipelined requests could queue
    megabytes of replies; holding the pipeline keeps the queue to about one reply.
    """

    _deadline: Any = None
    _held: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self._deadline is None and not self._handlingRequest and data:
            self._deadline = self.callLater(REQUEST_DEADLINE, self._too_slow)
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self._stop_deadline()
        super().allContentReceived()

    def connectionLost(self, reason: Any) -> None:
        self._stop_deadline()
        super().connectionLost(reason)

    def lineLengthExceeded(self, line: bytes) -> None:
        # twisted.web sets _command once it has read a request line, so without it this is one.
        status = b"431 Request Header Fields Too Large" if hasattr(self, "_command") else b"414 URI Too Long"
        self._warn("too-long", "a line over {limit} bytes", limit=self.MAX_LENGTH)
        self.transport.write(b"HTTP/1.1 %s\r\nconnection: close\r\ncontent-length: 0\r\n\r\n" % status)
        self.loseConnection()

    def _respondToBadRequestAndDisconnect(self) -> None:
        # twisted.web's one way out for a request it cannot parse (or over its header limits).
        self._warn(
            "bad-request",
            "a request it could not read (malformed, or headers over {limit} bytes)",
            limit=self.totalHeadersSize,
        )
        super()._respondToBadRequestAndDisconnect()

    def requestDone(self, request: Any) -> None:
        if self._waitingForTransport and self.persistent and self._held is None:
            # The client is not reading: answer nothing more until it does.  The idle timeout
            # (off while a request is handled) runs again, so a client that never reads is closed.
            self._held = request
            # Read no more either: twisted.web buffers what arrives while a request is handled,
            # and stops reading only if the transport is not already full (here it is).
            self._networkProducer.pauseProducing()
            if self._savedTimeOut:
                self.setTimeout(self._savedTimeOut)
            return
        super().requestDone(request)

    def resumeProducing(self) -> None:
        super().resumeProducing()
        if self._held is not None and not self._waitingForTransport:
            held, self._held = self._held, None
            super().requestDone(held)

    def _stop_deadline(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def _warn(self, key: str, why: str, **fields: Any) -> None:
        """One log line (rate-limited per kind and address) naming the listener, the address and why."""
        host = getattr(self.transport.getPeer(), "host", "local")
        self.site.warnings.warn(
            (key, host),
            "{what}: closed a connection from {host} that sent " + why,
            what=self.site.what,
            host=host,
            **fields,
        )

    def _too_slow(self) -> None:
        self._deadline = None
        self._warn("too-slow", "a request over {limit:.0f} s", limit=REQUEST_DEADLINE)
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
        self.timeoutConnection()  # closes, and aborts after abortTimeout if the client does not read


class WebSite(Site):
    # A plain HTTP/1.1 channel (no HTTP/2 switch: h2 is not a dependency) with the request deadline.
    protocol = WebChannel  # type: ignore[assignment]
    requestFactory = WebRequest
    displayTracebacks = False

    def __init__(self, resource: IResource, reactor: Any, what: str) -> None:
        super().__init__(resource, timeout=IDLE_TIMEOUT, reactor=reactor)
        self.what = what
        self.warnings = RateLimitedLog(log, reactor)

    def log(self, request: Any) -> None:
        """No access log line per request: a page that polls would fill the log."""


def package_file(path: str) -> bytes:
    """A file shipped in ``fileshare/web/static/`` (read once, at start-up)."""
    return resources.files("fileshare.web").joinpath("static", path).read_bytes()


class Bytes(Resource):
    """One file's bytes, held in memory."""

    isLeaf = True

    def __init__(self, data: bytes, content_type: str) -> None:
        super().__init__()
        self.data = data
        self.content_type = content_type.encode()

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-cache")
        return self.data

    render_HEAD = render_GET


class StaticFiles(Resource):
    """Files of the package held in memory, so serving them touches no disk."""

    def __init__(self, files: dict[str, str]) -> None:
        """*files*: URL name -> path under ``fileshare/web/static/``."""
        super().__init__()
        for name, path in files.items():
            suffix = path[path.rfind(".") :]
            self.putChild(
                name.encode(), Bytes(package_file(path), _CONTENT_TYPES.get(suffix, "application/octet-stream"))
            )

    def getChild(self, path: bytes, request: Any) -> IResource:
        return NotFound()


def site_root(page: str, assets: dict[str, str], endpoints: dict[str, IResource]) -> Resource:
    """``/`` is *page*, ``/static/NAME`` the *assets*, ``/api/v1/...`` the *endpoints*."""
    root = StaticFiles({})
    root.putChild(b"", Bytes(package_file(page), _CONTENT_TYPES[".html"]))
    root.putChild(b"static", StaticFiles(assets))
    root.putChild(b"api", api_tree(endpoints))
    return root


def web_listener(
    reactor: Any,
    description: str,
    root: IResource,
    identity: Any,
    password_file: str | None,
    what: str,
    option: str = "--web",
    password_option: str = "--admin-password-file",
) -> ListeningService | None:
    """The listening service for ``--web DESCRIPTION`` (None for ``none``).

    Beyond loopback the page needs a password (*password_file*) and TLS (*identity*, the
    node's own certificate); both are refused at start-up with one line naming the option.
    """
    if description.strip().lower() == "none":
        return None
    local = is_local_endpoint(description)
    password = None
    if password_file:
        try:
            password = read_password_file(password_file)
        except PasswordFileError as e:
            raise StartupError(f"{password_option}: {e}") from None
    if not local and password is None:
        raise StartupError(
            f"{option} {description} listens beyond loopback: give {password_option}, or listen on"
            " loopback (interface=127.0.0.1)"
        )
    tls = not local and not description.lower().startswith("ssl:")
    if tls and identity is None:
        raise StartupError(f"{option} {description} listens beyond loopback and needs TLS: drop --no-tls")
    access = Access(reactor, password, what)
    site = WebSite(Guarded(root, access, package_file("login.html")), reactor, what)
    factory: Any = site
    if tls:
        factory = wrap_server_factory(identity, site, reactor, require_client_certificate=False)
    limited = LimitingFactory(factory, WEB_CAPS, reactor, f"the {what} port", options=False)
    service = ListeningService(reactor, description, limited, what, option)
    service.access = access  # type: ignore[attr-defined]
    return service
