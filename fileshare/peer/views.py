"""
What the peer's console and its web API show, as plain dicts of stable field names.

One reading of the domain objects (the tracker link, the repository, a fetch's
:class:`~fileshare.peer.download.Progress`, the upload slots) for both: the console
formats these dicts as text or prints them with ``--json``, the web API sends them as
they are, so the two never disagree on a figure.
"""

from typing import Any

from .download import Progress
from .node import Peer
from .repository import Entry


def session_view(peer: Peer) -> dict[str, Any]:
    """Who this peer is logged in as, and how it stands with the tracker."""
    link = peer.tracker
    where = getattr(link, "where", None)
    credentials = getattr(link, "credentials", None)
    return {
        "connected": bool(link.connected),
        "logged_in": credentials is not None,
        "name": getattr(link, "host", None) if credentials is not None else None,
        "state": link.describe(),
        "tracker": where() if where is not None else None,
    }


def progress_view(p: Progress) -> dict[str, Any]:
    """One fetch: ``phase`` is "lookup" or "piece-list" before the transfer, "transfer" during it."""
    return {
        "name": p.fname,
        "phase": p.phase or "transfer",
        "done": p.done,
        "size": p.size,
        "percent": round(p.percent, 1),
        "rate": round(p.rate, 1),
        "eta": round(p.eta, 1) if p.eta is not None else None,
        "sources": p.sources,
        "queued": p.queued,
    }


def fetches_view(peer: Peer) -> list[dict[str, Any]]:
    """Every fetch in flight, by name."""
    return [progress_view(job.progress()) for _, job in sorted(peer.fetches.items())]


async def paused_view(peer: Peer) -> list[dict[str, Any]]:
    """Downloads stopped with their verified pieces kept (a later fetch resumes them)."""
    inflight = {job.root for job in peer.fetches.values()}
    return [
        {"name": fname, "root": root, "size": size, "pieces": len(verified), "verified": sum(verified)}
        for root, fname, size, verified in await peer.repository.partials()
        if root not in inflight
    ]


def file_view(peer: Peer, entry: Entry) -> dict[str, Any]:
    """A repository entry; ``origin`` says whether it was fetched here or published from a local path."""
    fetched = entry.path == peer.repository.path_for(entry.fname)
    return {
        "name": entry.fname,
        "size": entry.size,
        "root": entry.root,
        "path": entry.path,
        "origin": "fetched" if fetched else "published",
    }


def files_view(peer: Peer) -> list[dict[str, Any]]:
    return [file_view(peer, e) for e in peer.repository.entries()]


def found_view(item: Any) -> dict[str, Any]:
    """One item of the tracker's index (a ``search`` reply), with the API's field names."""
    item = item if isinstance(item, dict) else {}
    return {
        "name": item.get("fname"),
        "size": item.get("size"),
        "root": item.get("root"),
        "online": item.get("online"),
        "holders": item.get("holders"),
    }


def uploads_view(peer: Peer) -> dict[str, Any]:
    """The upload slots, and each connection holding or waiting for one."""
    service = peer.uploads
    slots = service.slots
    now = peer.reactor.seconds()
    names = {e.root: e.fname for e in peer.repository.entries()}
    rows = []
    for protocol in list(slots.active):
        rows.append(_upload_row(protocol, names, now, None))
    for position, protocol in enumerate(slots.waiting, 1):
        rows.append(_upload_row(protocol, names, now, position))
    rows.sort(key=lambda r: (r["queued"] is not None, r["queued"] or 0, r["who"], r["address"]))
    return {
        "active": len(slots.active),
        "max": slots.limit,
        "queued": len(slots.waiting),
        "sent": getattr(service, "sent_bytes", 0),
        "connections": rows,
    }


def _upload_row(protocol: Any, names: dict[str, str], now: float, position: int | None) -> dict[str, Any]:
    peer_address = getattr(protocol, "peer", None)
    host = getattr(peer_address, "host", None)
    address = f"{host}:{getattr(peer_address, 'port', '?')}" if host is not None else str(peer_address)
    tickets = getattr(protocol, "tickets", None)
    fetcher = getattr(tickets, "fetcher", None)
    sent = getattr(protocol, "sent_bytes", 0)
    granted = getattr(protocol, "granted_at", None)
    serving = position is None and granted is not None and now > granted
    return {
        "who": fetcher or host or address,
        "address": address,
        "files": sorted(names.get(root, root) for root in getattr(protocol, "roots", ())),
        "sent": sent,
        "rate": round(sent / (now - granted), 1) if serving else 0.0,
        "queued": position,
    }
