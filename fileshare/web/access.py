"""
Who may use a web page and its API, and how a browser proves it.

The rules (docs/api.rst, "Access"):

- On loopback without a password, anyone on this machine may use the page, but only by a loopback
  name (``localhost``, ``127.0.0.1``, ``[::1]``) in the ``Host`` header: a web site that points its
  own name at 127.0.0.1 (DNS rebinding) is refused ``403 bad-host``.
- With a password file every request must be signed in: by the session cookie the login form
  sets, or by HTTP basic authentication (user name ignored) over TLS.  The API answers ``401
  unauthorized``; a page answers with the login form.  Failed passwords are throttled per address.
- A request that changes state (anything but GET and HEAD) is refused ``403 cross-site`` when the
  browser says it comes from another origin (``Origin`` or ``Sec-Fetch-Site``).
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import math
import secrets
from collections import OrderedDict
from typing import Any
from urllib.parse import parse_qs

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource
from twisted.web.util import Redirect

from ..ratelog import RateLimitedLog
from ..tracker.throttle import ACCOUNT_LIMITS, Throttle
from .jsonapi import ApiError, render_error

log = Logger()

#: The session cookie's name.
COOKIE = b"fileshare_session"
#: How long a signed-in browser stays signed in.
SESSION_LIFETIME = 12 * 3600.0
#: Most signed-in browsers remembered; the oldest is signed out first.
MAX_SESSIONS = 256
#: Methods that change nothing and need no cross-site check.
SAFE_METHODS = (b"GET", b"HEAD")

_LOOPBACK_NAMES = ("localhost",)


class PasswordFileError(Exception):
    """The password file cannot be used; the message names it and why."""


def read_password_file(path: str) -> str:
    """The password in *path*: its first line without the line end (blocking: call at start-up)."""
    try:
        with open(path, encoding="utf-8") as f:
            line = f.readline().rstrip("\r\n")
    except OSError as e:
        raise PasswordFileError(f"cannot read password file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise PasswordFileError(f"password file {path} is not UTF-8 text") from None
    if not line:
        raise PasswordFileError(f"password file {path} is empty: write the password on its first line")
    return line


def is_loopback_host(host: str) -> bool:
    """Whether *host* (a ``Host`` header's name, without port) names this machine's loopback."""
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: bytes) -> str:
    """The name part of a ``Host`` header (``[::1]:7780`` -> ``[::1]``; ``localhost:7780`` -> ``localhost``)."""
    text = header.decode("latin-1").strip()
    if text.startswith("["):
        return text[: text.find("]") + 1] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class Access:
    """The access rules of one web listener; see the module docstring."""

    def __init__(self, clock: IReactorTime, password: str | None, what: str) -> None:
        """*what* names the page in log lines ("tracker web", "peer web")."""
        self.clock = clock
        self.password = password
        self.what = what
        self._sessions: OrderedDict[str, float] = OrderedDict()
        self._throttle = Throttle(clock, ACCOUNT_LIMITS)
        self._ratelog = RateLimitedLog(log, clock)

    # -- checks --------------------------------------------------------------------------------

    def refusal(self, request: Any) -> ApiError | None:
        """Why *request* may not go on, or None."""
        if self.password is None:
            host = request.getHeader(b"host") or b""
            if not is_loopback_host(host_name(host)):
                self._ratelog.warn(
                    ("bad-host", self.what),
                    "{what}: refused a request for host {host!r}: this page answers only loopback names",
                    what=self.what,
                    host=host.decode("latin-1"),
                )
                return ApiError(403, "bad-host", "this page answers only at a loopback address, e.g. 127.0.0.1")
        if request.method not in SAFE_METHODS and self.cross_site(request):
            return ApiError(403, "cross-site", "refused a request from another site")
        if self.password is not None and not self.signed_in(request):
            return ApiError(401, "unauthorized", "sign in first")
        return None

    def cross_site(self, request: Any) -> bool:
        fetch_site = request.getHeader(b"sec-fetch-site")
        if fetch_site is not None and fetch_site.lower() not in (b"same-origin", b"none"):
            return True
        origin = request.getHeader(b"origin")
        if origin is None:
            return False
        scheme = b"https" if request.isSecure() else b"http"
        return origin.lower() != scheme + b"://" + (request.getHeader(b"host") or b"").lower()

    def signed_in(self, request: Any) -> bool:
        token = request.getCookie(COOKIE)
        if token is not None:
            expires = self._sessions.get(token.decode("latin-1"))
            if expires is not None and expires > self.clock.seconds():
                return True
        authorization = request.getHeader(b"authorization")
        if authorization and request.isSecure():
            kind, _, encoded = authorization.partition(b" ")
            if kind.lower() == b"basic":
                try:
                    _, _, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
                except (ValueError, UnicodeDecodeError):
                    return False
                return self.check_password(request, password)
        return False

    def wait(self, request: Any) -> float:
        """Seconds *request*'s address must wait before a password is checked again (0.0: none)."""
        return self._throttle.wait(_address(request))

    def check_password(self, request: Any, password: str) -> bool:
        """Constant-time check; a failure is counted against the address, which may then wait."""
        address = _address(request)
        if self._throttle.wait(address) > 0:
            return False
        assert self.password is not None
        if hmac.compare_digest(password.encode("utf-8"), self.password.encode("utf-8")):
            return True
        delay = self._throttle.failed(address)
        self._ratelog.warn(
            ("bad-password", address),
            "{what}: wrong password from {address}" + (" (it now waits {delay:.0f} s)" if delay else ""),
            what=self.what,
            address=address,
            delay=delay,
        )
        return False

    # -- sessions ------------------------------------------------------------------------------

    def sign_in(self, request: Any) -> None:
        """Start a session for *request*'s browser: a random token in an HttpOnly, SameSite cookie."""
        now = self.clock.seconds()
        for token, expires in list(self._sessions.items()):
            if expires <= now:
                del self._sessions[token]
        while len(self._sessions) >= MAX_SESSIONS:
            self._sessions.popitem(last=False)
        token = secrets.token_urlsafe(32)
        self._sessions[token] = now + SESSION_LIFETIME
        request.addCookie(
            COOKIE,
            token.encode(),
            path=b"/",
            httpOnly=True,
            secure=request.isSecure(),
            sameSite="strict",
            max_age=str(int(SESSION_LIFETIME)).encode(),
        )

    def sign_out(self, request: Any) -> None:
        token = request.getCookie(COOKIE)
        if token is not None:
            self._sessions.pop(token.decode("latin-1"), None)
        request.addCookie(COOKIE, b"", path=b"/", max_age=b"0", httpOnly=True, sameSite="strict")


def _address(request: Any) -> str:
    peer = request.getClientAddress()
    return getattr(peer, "host", None) or "local"


class Guarded(Resource):
    """*inner* behind *access*; ``/login`` and ``/logout`` are answered here.

    A refused API request gets its JSON error; a refused page request gets the login form
    (*login_page*, HTML) with status 401 when signing in is what it lacks.
    """

    def __init__(self, inner: IResource, access: Access, login_page: bytes) -> None:
        super().__init__()
        self.inner = inner
        self.access = access
        self.login_page = login_page

    def getChildWithDefault(self, path: bytes, request: Any) -> IResource:
        if path == b"login":
            return _Login(self.access, self.login_page)
        if path == b"logout":
            return _Logout(self.access)
        refusal = self.access.refusal(request)
        if refusal is not None:
            return _Refused(refusal, self.login_page if path != b"api" else None)
        return self.inner.getChildWithDefault(path, request)

    def render(self, request: Any) -> Any:
        refusal = self.access.refusal(request)
        if refusal is not None:
            return _Refused(refusal, self.login_page).render(request)
        return self.inner.render(request)


class _Refused(Resource):
    isLeaf = True

    def __init__(self, error: ApiError, login_page: bytes | None) -> None:
        super().__init__()
        self.error = error
        self.login_page = login_page

    def render(self, request: Any) -> bytes:
        if self.error.status == 401 and self.login_page is not None:
            request.setResponseCode(401)
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            request.setHeader(b"cache-control", b"no-store")
            return self.login_page
        return render_error(request, self.error)


class _Login(Resource):
    """``POST /login`` with a form field ``password``: sign in and go to ``/``; ``GET`` shows the form."""

    isLeaf = True

    def __init__(self, access: Access, page: bytes) -> None:
        super().__init__()
        self.access = access
        self.page = page

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return self.page

    def render_POST(self, request: Any) -> bytes:
        if self.access.cross_site(request):
            return render_error(request, ApiError(403, "cross-site", "refused a request from another site"))
        if self.access.password is None:
            return Redirect(b"/").render(request)
        request.content.seek(0)
        form = parse_qs(request.content.read(4096).decode("utf-8", "replace"))
        password = (form.get("password") or [""])[0]
        wait = math.ceil(self.access.wait(request))
        if wait > 0:
            # Say so: "wrong password" would tell an honest user their right password is wrong.
            request.setResponseCode(429)
            request.setHeader(b"retry-after", b"%d" % wait)
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            note = f'<p class="error" id="login-error">Too many wrong passwords: try again in {wait} s.</p>'
            return self.page.replace(b"<!--error-->", note.encode())
        if not self.access.check_password(request, password):
            request.setResponseCode(401)
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return self.page.replace(b"<!--error-->", b'<p class="error" id="login-error">Wrong password.</p>')
        self.access.sign_in(request)
        request.setResponseCode(303)
        request.setHeader(b"location", b"/")
        return b""


class _Logout(Resource):
    isLeaf = True

    def __init__(self, access: Access) -> None:
        super().__init__()
        self.access = access

    def render_POST(self, request: Any) -> bytes:
        if self.access.cross_site(request):
            return render_error(request, ApiError(403, "cross-site", "refused a request from another site"))
        self.access.sign_out(request)
        request.setResponseCode(303)
        request.setHeader(b"location", b"/")
        return b""
