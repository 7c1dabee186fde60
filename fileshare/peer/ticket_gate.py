"""
Which files one upload connection may ask for: the roots of the tickets it presented.

The checks themselves are :func:`fileshare.tickets.verify`; this is where an
upload connection keeps what they granted and where every refusal is logged
with the fetcher's address, one line with structured fields.
"""

from typing import Any

from twisted.logger import Logger

from ..errors import TicketError, TicketMissing
from ..tickets import client_binding, verify

log = Logger()


def address_text(address: Any) -> str:
    """``host:port`` of a TCP address; anything else as it prints."""
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    return str(address) if host is None else f"{host}:{port}"


class TicketGate:
    """The roots one connection presented valid tickets for.

    *service* gives ``ticket_key()`` (this peer's current login key, None
    when not logged in) and ``clock``, read at each check.
    """

    def __init__(self, service: Any) -> None:
        self.service = service
        self.roots: set[str] = set()
        #: The fetcher's host name, from its last valid ticket (for log lines).
        self.fetcher: str | None = None

    def admit(self, text: Any, transport: Any) -> None:
        """Grant the root of ticket *text* to the connection on *transport*, or log and raise the TicketError."""
        try:
            ticket = verify(text, self.service.ticket_key(), client_binding(transport), self.service.clock.seconds())
        except TicketError as e:
            self.refused(e, transport)
            raise
        self.roots.add(ticket.root)
        self.fetcher = ticket.fetcher

    def authorised(self, root: str, transport: Any) -> str:
        """*root* if a ticket granted it, else log and raise ``ticket-missing``."""
        if root not in self.roots:
            error = TicketMissing(f"no ticket for root {root[:16]}... on this connection; send one with 'ticket'")
            self.refused(error, transport)
            raise error
        return root

    def refused(self, error: TicketError, transport: Any) -> None:
        log.warn(
            "refused fetcher {address}: {code}: {why}",
            address=address_text(transport.getPeer()),
            code=error.code,
            why=error.message,
        )
