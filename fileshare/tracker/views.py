"""
What the tracker shows its operator, as plain dicts: one shaping for the admin console and the web API.

The admin console prints these as text (or, with ``--json``, as they are) and the web API
(:mod:`fileshare.web.tracker_api`) sends them as JSON, so a figure is computed once, here, from
the directory's own calls.  The field names are the API's (docs/api.rst, "Tracker API").
"""

from __future__ import annotations

import base64
import json
from typing import Any

from ..errors import BadRequest
from ..names import check_account
from ..timestamps import utc_text
from .directory import Directory
from .store import Cursor, FileSummary


async def peers_view(directory: Directory) -> list[dict[str, Any]]:
    """The online hosts, sorted by name; in a group, those on the other trackers too, each with its tracker."""
    rows, _, _ = await peers_page(directory, None, None)
    return rows


async def peers_page(
    directory: Directory, after: str | None, limit: int | None
) -> tuple[list[dict[str, Any]], str | None, int]:
    """At most *limit* online hosts named after *after*, by name; the next page's name (or None) and how many are online.

    A page, not all of them, so a status page polling a tracker of 10,000 peers
    gets a reply of bounded size.
    """
    group = directory.cluster
    everyone = {**group.remote, **directory.online}
    if everyone:
        await directory.load()  # at once when loaded
    names = sorted(name for name in everyone if after is None or name > after)
    more = limit is not None and len(names) > limit
    if limit is not None:
        names = names[:limit]
    rows = []
    for name in names:
        host = everyone[name]
        remote = name not in directory.online
        # The index in memory holds every host of the group: no store query per host on each poll.
        count = directory.index.count(name) if remote else host.files
        rows.append(
            {
                "name": host.name,
                "address": host.endpoint,
                "online_since": utc_text(host.since),
                "files": count,
                "rtt_ms": None if host.rtt is None else round(host.rtt * 1000, 1),
                "tracker": (host.tracker if remote else group.name) or None,
            }
        )
    return rows, (names[-1] if more else None), len(everyone)


def file_view(s: FileSummary) -> dict[str, Any]:
    return {"name": s.fname, "size": s.size, "root": s.root, "holders": s.holders, "online_holders": s.online}


async def files_page(directory: Directory, pattern: str, after: Cursor | None) -> tuple[list[dict[str, Any]], Any]:
    """One page of the index (``directory.search``: its page size and keyset paging) and the next cursor."""
    found = await directory.search(pattern, after)
    return [file_view(s) for s in found.items], found.next


def page_token(cursor: Cursor | None) -> str | None:
    """The web API's ``next``: the cursor ``(fname, root)`` as one URL-safe word (None on the last page)."""
    if cursor is None:
        return None
    return base64.urlsafe_b64encode(json.dumps(list(cursor)).encode()).decode().rstrip("=")


def cursor_of(token: str) -> Cursor:
    """The cursor a :func:`page_token` names; :class:`BadRequest` for anything else."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("page must be the 'next' of an earlier reply") from None
    if not (isinstance(data, list) and len(data) == 2 and all(isinstance(x, str) for x in data)):
        raise BadRequest("page must be the 'next' of an earlier reply")
    return (data[0], data[1])


async def discover_view(directory: Directory, name: str) -> list[dict[str, Any]]:
    """Ask *name* live for the files in its repository (relayed in a group)."""
    check_account(name)
    items = await directory.discover(name)
    return [{"name": item.get("fname"), "size": item.get("size"), "root": item.get("root")} for item in items]


async def stats_view(directory: Directory) -> dict[str, Any]:
    """The figures of the admin ``stats``: counters since start and in the last minute, and the uptime."""
    s = directory.stats
    await directory.load()  # at once once loaded

    def counter(c: Any) -> dict[str, int]:
        return {"last_minute": c.recent(), "since_start": c.total}

    return {
        "hosts_online": len(directory.online.keys() | directory.cluster.remote.keys()),
        "files_indexed": directory.index.size,
        "files_on_online_hosts": sum(h.files for h in directory.online.values()),
        "logins": counter(s.logins),
        "failed_logins": counter(s.failed_logins),
        "tickets_issued": counter(s.tickets),
        "fetches_started": counter(s.fetches_started),
        "fetches_finished": counter(s.fetches_finished),
        "uptime_s": int(s.uptime()),
    }
