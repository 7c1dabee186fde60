"""
Who is online, as the directory sees it: a channel to each host and what it told at login.
"""

from typing import Any, Protocol

import attrs

from .. import tickets
from ..tls import Fingerprint
from .store import Cursor, FileSummary


class HostChannel(Protocol):
    def call(self, op: str, timeout: float | None = None, **fields: Any) -> Any: ...

    def disconnect(self) -> None: ...

    def end_session(self, code: str, reason: str) -> None:
        """Tell the host why its session ends (``ended``), then disconnect."""


@attrs.define
class OnlineHost:
    name: str
    channel: HostChannel
    endpoint: str
    since: float
    files: int = 0
    #: Where the host is, for people: its address and transfer port ("192.0.2.7:7710").
    where: str = ""
    #: A secret given at login that lets the same peer take its own stale session back.
    session: str = ""
    #: This session's key for the download tickets other hosts present to it (see fileshare.tickets).
    ticket_key: bytes = attrs.field(factory=tickets.new_key, repr=False)
    #: The certificate fingerprint of the host's TLS connection to the tracker (None with --no-tls):
    #: read from the connection, never claimed, so fetchers and tickets can bind to it.
    fingerprint: Fingerprint | None = None
    #: What fetchers are told: ``PinnedAddress.to_wire()`` (host, port, fingerprint), or host and port alone.
    transfer_address: dict[str, object] = attrs.field(factory=dict)


@attrs.frozen
class SearchPage:
    """One page of ``search``; *next* is the cursor of the following page, None on the last."""

    items: list[FileSummary]
    next: Cursor | None
