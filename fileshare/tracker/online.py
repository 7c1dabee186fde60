"""
Who is online, as the directory sees it: a channel to each host and what it told at login.
"""

from collections.abc import Callable, Iterable
from typing import Any, Protocol

import attrs

from .. import tickets
from ..tls import Fingerprint
from ..wire.framing import encode
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
    #: The tracker of the group the host is connected to ('' for this one; see fileshare.tracker.cluster).
    tracker: str = ""
    #: Seconds the last ``ping`` took (the idle check's or the operator's); None until one is answered.
    rtt: float | None = None
    _source_json: bytes | None = attrs.field(default=None, init=False, repr=False, eq=False)

    def source_json(self) -> bytes:
        """
        The start of this host's item in a ``sources`` reply, as JSON:
        ``{"host":NAME,"address":ADDRESS,`` -- made once per login, not per
        lookup (neither changes while the host is online).
        """
        if self._source_json is None:
            self._source_json = encode({"host": self.name, "address": self.transfer_address})[:-2] + b","
        return self._source_json


@attrs.frozen
class SearchPage:
    """One page of ``search``; *next* is the cursor of the following page, None on the last."""

    items: list[FileSummary]
    next: Cursor | None


class OnlineHosts(dict[str, OnlineHost]):
    """The online hosts by name; every host that comes or goes is told to *changed(name, online)*.

    The index keeps per-file counts of online holders from it (``search``'s
    ``online``), whichever code adds or removes a host.
    """

    def __init__(self, changed: Callable[[str, bool], None]) -> None:
        super().__init__()
        self._changed = changed

    def __setitem__(self, name: str, host: OnlineHost) -> None:
        new = name not in self
        super().__setitem__(name, host)
        if new:
            self._changed(name, True)

    def __delitem__(self, name: str) -> None:
        super().__delitem__(name)
        self._changed(name, False)

    def pop(self, name: str, *default: Any) -> Any:
        if name not in self:
            return super().pop(name, *default)
        host = super().pop(name)
        self._changed(name, False)
        return host

    def popitem(self) -> tuple[str, OnlineHost]:
        name, host = super().popitem()
        self._changed(name, False)
        return name, host

    def setdefault(self, name: str, host: OnlineHost) -> OnlineHost:  # type: ignore[override]
        if name not in self:
            self[name] = host
        return self[name]

    def update(self, *args: Any, **kwargs: Any) -> None:
        items: Iterable[tuple[str, OnlineHost]] = dict(*args, **kwargs).items()
        for name, host in items:
            self[name] = host

    def clear(self) -> None:
        for name in list(self):
            del self[name]
