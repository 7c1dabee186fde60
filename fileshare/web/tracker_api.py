"""
The tracker's web API under ``/api/v1/`` and its status page at ``/`` (docs/api.rst, "Tracker API").

Read-only: every endpoint is a view of :mod:`fileshare.tracker.views`, the same the admin
console prints, so the page and the console never disagree about a figure.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from twisted.web.resource import IResource, Resource

from ..errors import BadRequest, FileshareError, NotFound, Unavailable
from ..names import check_account
from ..tracker import views
from ..tracker.directory import Directory
from ..tracker.glob import MAX_PATTERN
from .jsonapi import ApiError, Endpoint, query_text
from .site import site_root

#: HTTP status of each domain error an endpoint may meet; the code is the error's own.
STATUS = {BadRequest: 400, NotFound: 404, Unavailable: 503}

#: The page and its files under ``/static/``.
PAGE = "tracker.html"
ASSETS = {"style.css": "style.css", "tracker.css": "tracker.css", "tracker.js": "tracker.js"}


def api_error(e: FileshareError) -> ApiError:
    for kind, status in STATUS.items():
        if isinstance(e, kind):
            return ApiError(status, e.code, e.message)
    return ApiError(500, e.code, e.message)


class TrackerEndpoint(Endpoint):
    def __init__(self, directory: Directory) -> None:
        super().__init__()
        self.directory = directory

    async def get(self, request: Any) -> Any:
        try:
            return await self.view(request)
        except FileshareError as e:
            raise api_error(e) from None

    async def view(self, request: Any) -> Any:
        raise NotImplementedError


class Peers(TrackerEndpoint):
    """``peers``: the online hosts; ``peers/NAME/files``: NAME's repository, asked live."""

    async def view(self, request: Any) -> Any:
        after = query_text(request, "page")
        if after is not None:
            try:
                check_account(after)
            except BadRequest:
                raise BadRequest("page must be the 'next' of an earlier reply") from None
        rows, after, online = await views.peers_page(self.directory, after, self.directory.page_size)
        return {"peers": rows, "online": online, "next": after}

    def getChild(self, path: bytes, request: Any) -> IResource:
        if path and request.postpath == [b"files"]:
            request.postpath.pop()
            return PeerFiles(self.directory, path)
        return super().getChild(path, request)


class PeerFiles(TrackerEndpoint):
    isLeaf = True

    def __init__(self, directory: Directory, name: bytes) -> None:
        super().__init__(directory)
        self.name = name

    async def view(self, request: Any) -> Any:
        try:
            name = unquote_to_bytes(self.name).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("a host name is UTF-8") from None
        return {"host": name, "files": await views.discover_view(self.directory, name)}


class Files(TrackerEndpoint):
    """``files?q=GLOB&page=TOKEN``: one page of the index, the admin ``files``'s page."""

    async def view(self, request: Any) -> Any:
        pattern = query_text(request, "q", "*", MAX_PATTERN) or "*"
        page = query_text(request, "page")
        after = views.cursor_of(page) if page is not None else None
        items, cursor = await views.files_page(self.directory, pattern, after)
        return {"pattern": pattern, "files": items, "next": views.page_token(cursor)}


class Stats(TrackerEndpoint):
    async def view(self, request: Any) -> Any:
        return await views.stats_view(self.directory)


def tracker_root(directory: Directory) -> Resource:
    """The tracker's site: the status page, its files, and the API."""
    return site_root(
        PAGE,
        ASSETS,
        {"peers": Peers(directory), "files": Files(directory), "stats": Stats(directory)},
    )
