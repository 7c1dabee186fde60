"""
The peer's JSON API under ``/api/v1/``: the console's commands, for its web page and for scripts.

Every endpoint calls the domain method the console command calls (:class:`~fileshare.peer.node.Peer`)
and shapes its answer with :mod:`fileshare.peer.views`, so the page, the console and a script see
the same figures; a domain error keeps the console's message and gets an HTTP status by its code.
The one thing the API adds is that a fetch runs in the background: ``POST fetches`` answers once
the tracker has named the sources (or refused), and the page follows the fetch in ``GET fetches``.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import IResource

from ..errors import FileshareError
from ..peer.fetches import Fetch
from ..peer.node import FetchResult, Peer
from ..peer.views import (
    fetches_view,
    file_view,
    files_view,
    found_view,
    paused_view,
    progress_view,
    session_view,
    uploads_view,
)
from ..timestamps import utc_text
from .jsonapi import ApiError, Endpoint, body_text, json_body, query_int, query_text
from .site import site_root

log = Logger()

#: HTTP status of a domain error, by its code; other codes are 400 (ours) or 502 (the tracker's).
STATUS = {
    "bad-request": 400,
    "not-found": 404,
    "conflict": 409,
    "ambiguous": 409,
    "not-logged-in": 409,
    "online-elsewhere": 409,
    "cancelled": 409,
    "auth": 403,
    "banned": 403,
    "throttled": 429,
    "unavailable": 503,
    "disk": 507,
}
#: Outcomes of finished fetches the API remembers (the page shows them after a fetch ends).
RECENT = 20
#: Search pages a ``page=N`` request may walk through from the first.
MAX_PAGE = 100


def api_error(error: FileshareError) -> ApiError:
    """The API's reply for a domain error: the console's message, a status by its code."""
    status = STATUS.get(error.code, 502 if type(error).__name__ == "RemoteError" else 400)
    return ApiError(status, error.code, error.message)


async def domain(awaitable: Any) -> Any:
    """Await a domain call; its FileshareError becomes the matching ApiError."""
    try:
        return await awaitable
    except FileshareError as e:
        raise api_error(e) from None


def path_name(segment: bytes) -> str:
    """A file name from one path segment (already percent-decoded by twisted.web)."""
    try:
        return segment.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "bad-request", "a file name in the path must be UTF-8") from None


class PeerApi:
    """The peer the endpoints act on, and the fetches they started (which run on after the reply)."""

    def __init__(self, peer: Peer, clock: Any) -> None:
        self.peer = peer
        self.clock = clock
        #: How the last fetches started here ended, newest last.
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._settled: dict[str, list[Deferred]] = {}

    def endpoints(self) -> dict[str, IResource]:
        return {
            "session": SessionEndpoint(self),
            "search": SearchEndpoint(self),
            "fetches": FetchesEndpoint(self),
            "files": FilesEndpoint(self),
            "publish": PublishEndpoint(self),
            "unpublish": UnpublishEndpoint(self),
            "uploads": UploadsEndpoint(self),
        }

    async def start_fetch(self, name: str, from_host: str | None, hash_prefix: str | None) -> dict[str, Any]:
        """Start fetching *name* and wait until the tracker has answered: a name nobody has, or a
        fetch that ends at once, is answered here; a fetch that goes on is followed in ``fetches``."""
        jobs: list[Fetch] = []
        outcome: list[Any] = []
        settled: Deferred = Deferred()
        running_on = [False]

        def settle(result: Any) -> None:
            outcome.append(result)
            if running_on[0]:
                if isinstance(result, Failure):
                    self._failed(result, name)
                else:
                    self._remember(name, result)
            settled.callback(None)

        Deferred.fromCoroutine(self.peer.fetch(name, from_host, hash_prefix, None, jobs.append)).addBoth(settle)
        if not outcome and jobs:
            await DeferredList([jobs[0].looked_up(), settled], fireOnOneCallback=True)
            if not outcome and jobs[0].over:  # it ended: its result is on its way
                await settled
        if outcome:
            result = outcome[0]
            if isinstance(result, Failure):
                if result.check(FileshareError):
                    raise api_error(result.value)
                result.raiseException()
            self._remember(name, result)
            return {"fetch": None, "result": self.recent[-1]}
        running_on[0] = True
        return {"fetch": progress_view(jobs[0].progress()), "result": None}

    def settled(self, name: str) -> Deferred:
        """Fires with the outcome (as in ``recent``) once the fetch of *name* started here ends."""
        d: Deferred = Deferred()
        self._settled.setdefault(name, []).append(d)
        return d

    def _record(self, outcome: dict[str, Any]) -> None:
        self.recent.append(outcome)
        for d in self._settled.pop(outcome["name"], []):
            d.callback(outcome)

    def _remember(self, name: str, result: FetchResult) -> None:
        entry = result.entry
        self._record(
            {
                "name": name,
                "outcome": "already" if result.already else "fetched",
                "message": "",
                "size": entry.size,
                "root": entry.root,
                "seconds": round(result.seconds, 2),
                "downloaded": result.downloaded,
                "sources": list(result.sources),
                "at": utc_text(self.clock.seconds()),
            }
        )

    def _failed(self, failure: Failure, name: str) -> None:
        if failure.check(FileshareError):
            error = failure.value
            outcome = "cancelled" if error.code == "cancelled" else "failed"
            message = error.message
        else:
            log.failure("fetch of {fname!r} started from the web page failed", failure, fname=name)
            outcome, message = "failed", "internal error; the peer's log says more"
        self._record({"name": name, "outcome": outcome, "message": message, "at": utc_text(self.clock.seconds())})


class _Child(Endpoint):
    def __init__(self, api: PeerApi) -> None:
        super().__init__()
        self.api = api


# -- session ------------------------------------------------------------------------------------


class SessionEndpoint(_Child):
    """``GET session``: who is logged in; ``POST session/login`` and friends change it."""

    def __init__(self, api: PeerApi) -> None:
        super().__init__(api)
        self.putChild(b"login", LoginEndpoint(api))
        self.putChild(b"logout", LogoutEndpoint(api))
        self.putChild(b"register", RegisterEndpoint(api))
        self.putChild(b"passwd", PasswdEndpoint(api))

    async def get(self, request: Any) -> Any:
        return session_view(self.api.peer)


class LoginEndpoint(_Child):
    async def post(self, request: Any) -> Any:
        body = json_body(request)
        name, password = body_text(body, "name"), body_text(body, "password")
        replace = body.get("replace", False)
        if not isinstance(replace, bool):
            raise ApiError(400, "bad-request", "field 'replace' must be true or false")
        count = await domain(self.api.peer.login(name, password, replace=replace))
        return {**session_view(self.api.peer), "announced": count}


class LogoutEndpoint(_Child):
    async def post(self, request: Any) -> Any:
        json_body(request)
        await domain(self.api.peer.logout())
        return session_view(self.api.peer)


class RegisterEndpoint(_Child):
    async def post(self, request: Any) -> Any:
        body = json_body(request)
        name, password = body_text(body, "name"), body_text(body, "password")
        await domain(self.api.peer.register(name, password))
        return {"registered": name}


class PasswdEndpoint(_Child):
    async def post(self, request: Any) -> Any:
        body = json_body(request)
        old, new = body_text(body, "old"), body_text(body, "new")
        await domain(self.api.peer.passwd(old, new))
        return {"changed": True}


# -- the index ----------------------------------------------------------------------------------


class SearchEndpoint(_Child):
    """``GET search?q=GLOB&page=N`` (or ``&after=NEXT``): one page of the tracker's index."""

    async def get(self, request: Any) -> Any:
        pattern = query_text(request, "q", "*")
        page = query_int(request, "page", 1, 1, MAX_PAGE)
        after_text = query_text(request, "after")
        if after_text is not None and request.args.get(b"page"):
            raise ApiError(400, "bad-request", "give 'page' or 'after', not both")
        after = _cursor(after_text) if after_text is not None else None
        for _ in range(page - 1 if after_text is None else 0):
            _, after = await domain(self.api.peer.search(pattern, after))
            if after is None:
                return {"q": pattern, "page": page, "items": [], "next": None}
        items, after = await domain(self.api.peer.search(pattern, after))
        return {
            "q": pattern,
            "page": page,
            "items": [found_view(i) for i in items],
            "next": json.dumps(after, separators=(",", ":"), sort_keys=True) if after is not None else None,
        }


def _cursor(text: str) -> Any:
    """``after``: the ``next`` of the page before, given back unchanged (the tracker checks it)."""
    try:
        return json.loads(text)
    except ValueError:
        raise ApiError(400, "bad-request", "query parameter 'after' must be the 'next' of a search reply") from None


# -- fetches ------------------------------------------------------------------------------------


class FetchesEndpoint(_Child):
    """``GET fetches``: every fetch; ``POST fetches`` starts one; ``fetches/NAME`` is one."""

    async def get(self, request: Any) -> Any:
        peer = self.api.peer
        return {"fetches": fetches_view(peer), "paused": await paused_view(peer), "recent": list(self.api.recent)}

    async def post(self, request: Any) -> Any:
        body = json_body(request)
        name = body_text(body, "name")
        options = {}
        for field in ("from", "hash"):
            value = body.get(field)
            if value is not None and not isinstance(value, str):
                raise ApiError(400, "bad-request", f"field {field!r} must be a string")
            options[field] = value or None
        return await self.api.start_fetch(name, options["from"], options["hash"])

    def getChild(self, path: bytes, request: Any) -> IResource:
        if path == b"" and not request.postpath:
            return self
        return FetchEndpoint(self.api, path)


class FetchEndpoint(_Child):
    """``GET fetches/NAME``: its progress; ``DELETE`` (or ``POST fetches/NAME/cancel``) cancels it."""

    def __init__(self, api: PeerApi, segment: bytes) -> None:
        super().__init__(api)
        self.segment = segment
        self.putChild(b"cancel", CancelEndpoint(api, segment))

    async def get(self, request: Any) -> Any:
        name = path_name(self.segment)
        job = self.api.peer.fetches.get(name)
        if job is None:
            raise ApiError(404, "not-found", f"no fetch of {name!r} in progress")
        return progress_view(job.progress())

    async def delete(self, request: Any) -> Any:
        return await cancel(self.api, path_name(self.segment))


class CancelEndpoint(_Child):
    def __init__(self, api: PeerApi, segment: bytes) -> None:
        super().__init__(api)
        self.segment = segment

    async def post(self, request: Any) -> Any:
        json_body(request)
        return await cancel(self.api, path_name(self.segment))


async def cancel(api: PeerApi, name: str) -> dict[str, Any]:
    await domain(api.peer.cancel(name))
    return {"cancelled": name}


# -- the repository -----------------------------------------------------------------------------


class FilesEndpoint(_Child):
    async def get(self, request: Any) -> Any:
        return {"directory": self.api.peer.repository.directory, "files": files_view(self.api.peer)}


class PublishEndpoint(_Child):
    async def post(self, request: Any) -> Any:
        body = json_body(request)
        path, name = body_text(body, "path"), body_text(body, "name")
        entry, told = await domain(self.api.peer.publish(path, name))
        return {"published": file_view(self.api.peer, entry), "told": told}


class UnpublishEndpoint(_Child):
    async def post(self, request: Any) -> Any:
        name = body_text(json_body(request), "name")
        entry = await domain(self.api.peer.unpublish(name))
        return {"unpublished": entry.fname}


class UploadsEndpoint(_Child):
    async def get(self, request: Any) -> Any:
        return uploads_view(self.api.peer)


def peer_site(api: PeerApi) -> IResource:
    """The peer's whole site: its page at ``/``, the page's files, and this API."""
    assets = {"style.css": "style.css", "peer.css": "peer.css", "peer.js": "peer.js"}
    return site_root("peer.html", assets, api.endpoints())
