"""
JSON over HTTP for the web API under ``/api/v1/``: replies, errors, routing and query parsing.

Every reply here is JSON, errors included -- ``{"error": CODE, "message": TEXT}`` with an HTTP
status -- so a script never meets an HTML error page and a browser never sees a traceback.  An
:class:`Endpoint` answers with ``async def get(request)`` (or ``post``/``delete``); whatever it
returns is the reply body, an :class:`ApiError` becomes its status and code, and anything else is
logged with its traceback and answered ``500 internal``.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET

log = Logger()

#: The largest request body the API reads; a larger one is refused (413) unread.
MAX_BODY = 64 * 1024
#: The longest query-string value the API takes (a glob is at most 1,024 characters on the wire).
MAX_QUERY_VALUE = 1024


class ApiError(Exception):
    """A reply other than 200: ``status`` (HTTP), ``code`` (stable, for scripts) and a message for people."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_body(code: str, message: str) -> dict[str, str]:
    return {"error": code, "message": message}


def json_bytes(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def start_json(request: Any, status: int, body: Any) -> bytes:
    """Set *request*'s status and JSON headers; return the encoded *body* to write."""
    data = json_bytes(body)
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"content-length", b"%d" % len(data))
    return data


def render_error(request: Any, error: ApiError) -> bytes:
    return start_json(request, error.status, error_body(error.code, error.message))


class Endpoint(Resource):
    """One path of the API.  Subclasses define ``async def get(self, request)`` and friends.

    Children not named in ``putChild`` answer 404 JSON, so a typo in a path never falls through
    to an HTML page.  A subclass may override :meth:`getChild` for path parameters.
    """

    METHODS = ("GET", "POST", "DELETE")

    def getChild(self, path: bytes, request: Any) -> IResource:
        if path == b"" and not request.postpath:
            return self  # "/api/v1/peers/" is "/api/v1/peers"
        return NotFound()

    def allowed(self) -> list[str]:
        return [m for m in self.METHODS if getattr(self, m.lower(), None) is not None]

    def render(self, request: Any) -> Any:
        method = request.method.decode("latin-1")
        handler = getattr(self, method.lower(), None) if method in self.METHODS else None
        if handler is None:
            allowed = self.allowed()
            if method == "HEAD" and "GET" in allowed:
                handler = self.get
            else:
                request.setHeader(b"allow", ", ".join(allowed).encode())
                return render_error(request, ApiError(405, "method-not-allowed", f"{method} is not allowed here"))
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def reply(body: Any) -> None:
            if not gone:
                request.write(start_json(request, 200, body))
                request.finish()

        def failed(failure: Failure) -> None:
            if failure.check(ApiError):
                error = failure.value
            else:
                log.failure("web API {method} {path} failed", failure, method=method, path=request.path)
                error = ApiError(500, "internal", "internal error; the server's log says more")
            if not gone:
                request.write(render_error(request, error))
                request.finish()

        Deferred.fromCoroutine(_call(handler, request)).addCallbacks(reply, failed)
        return NOT_DONE_YET


async def _call(handler: Any, request: Any) -> Any:
    return await handler(request)


class NotFound(Resource):
    """404 JSON for any method and any path below."""

    isLeaf = True

    def render(self, request: Any) -> bytes:
        path = request.path.decode("utf-8", "replace")
        return render_error(request, ApiError(404, "not-found", f"no such path: {path}"))


class ApiRoot(Endpoint):
    """``/api/v1``: the endpoints given, each under its name; everything else 404 JSON."""

    def __init__(self, endpoints: dict[str, IResource]) -> None:
        super().__init__()
        for name, endpoint in endpoints.items():
            self.putChild(name.encode("ascii"), endpoint)

    async def get(self, request: Any) -> Any:
        return {"endpoints": sorted(k.decode() for k in self.children)}


def api_tree(endpoints: dict[str, IResource]) -> Resource:
    """The ``api`` resource to put under a site's root: ``/api/v1/NAME`` for each endpoint."""
    api = Endpoint()
    api.putChild(b"v1", ApiRoot(endpoints))
    return api


# -- query strings and bodies -------------------------------------------------------------------


def query_text(request: Any, name: str, default: str | None = None, max_length: int = MAX_QUERY_VALUE) -> str | None:
    """The query parameter *name* as text; 400 ``bad-request`` if repeated, not UTF-8, or too long."""
    values = request.args.get(name.encode("ascii"))
    if not values:
        return default
    if len(values) > 1:
        raise ApiError(400, "bad-request", f"query parameter {name!r} given {len(values)} times")
    try:
        text = values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad-request", f"query parameter {name!r} is not UTF-8") from None
    if len(text) > max_length:
        raise ApiError(400, "bad-request", f"query parameter {name!r} is over {max_length} characters")
    return text


def query_int(request: Any, name: str, default: int, lowest: int, highest: int) -> int:
    """The query parameter *name* as an integer in [lowest, highest]; 400 ``bad-request`` otherwise."""
    text = query_text(request, name)
    if text is None:
        return default
    if not text.isascii() or not text.lstrip("-").isdigit():
        raise ApiError(400, "bad-request", f"query parameter {name!r} must be a whole number, not {text!r}")
    value = int(text)
    if not lowest <= value <= highest:
        raise ApiError(400, "bad-request", f"query parameter {name!r} must be between {lowest} and {highest}")
    return value


def json_body(request: Any) -> dict[str, Any]:
    """The request's body as a JSON object.

    Only ``Content-Type: application/json`` is read: an HTML form on another site cannot send it
    without the browser asking first (and this server answers no such question), which is one of
    the two guards against cross-site requests (the other is in :mod:`fileshare.web.access`).
    """
    kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if kind != b"application/json":
        raise ApiError(415, "unsupported-media-type", "send the request body as application/json")
    request.content.seek(0)
    data = request.content.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise ApiError(413, "too-large", f"request body over {MAX_BODY} bytes")
    try:
        body = json.loads(data.decode("utf-8")) if data else {}
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad-request", "request body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad-request", "request body must be a JSON object")
    return body


def body_text(body: dict[str, Any], name: str, max_length: int = 4096) -> str:
    """The string field *name* of a JSON body; 400 ``bad-request`` if missing or not a string."""
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(400, "bad-request", f"field {name!r} must be a non-empty string")
    if len(value) > max_length:
        raise ApiError(400, "bad-request", f"field {name!r} is over {max_length} characters")
    return value
