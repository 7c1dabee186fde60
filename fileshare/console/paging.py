"""
``more``: going on with a listing the server sends in pages.

A console command that lists one page (``search``, the admin console's
``files``) hands the pager how to fetch a page from a cursor and how to show
an item; when the page was not the last, the pager remembers where it
stopped for that console connection, and ``more`` lists the next page from
there.  Nothing else is kept: a page costs the server what it holds, and a
person reads one page before asking for the next.
"""

from collections.abc import Awaitable, Callable
from typing import Any
from weakref import WeakKeyDictionary

import attrs

from ..errors import BadRequest
from .protocol import Session

#: Fetches the page after a cursor (None: the first page): its items and the next cursor (None: the last page).
FetchPage = Callable[[Any], Awaitable[tuple[list[Any], Any]]]

MORE_HINT = "type 'more' for the next page"


@attrs.frozen
class _Listing:
    fetch: FetchPage
    show: Callable[[Session, Any], None]
    describe: Callable[[int, bool], str]
    after: Any


class Pager:
    """The listings in progress, one per console connection (forgotten with the connection)."""

    def __init__(self) -> None:
        self._listings: WeakKeyDictionary[Session, _Listing] = WeakKeyDictionary()

    async def start(
        self,
        session: Session,
        fetch: FetchPage,
        show: Callable[[Session, Any], None],
        describe: Callable[[int, bool], str],
    ) -> str:
        """List the first page; *describe(count, first)* is the status line's start ("3 files match '*'")."""
        self._listings.pop(session, None)
        return await self._page(session, _Listing(fetch, show, describe, None), first=True)

    async def more(self, session: Session) -> str:
        """List the page after the one last listed on *session*."""
        listing = self._listings.get(session)
        if listing is None:
            raise BadRequest(
                "nothing more to list; use 'more' after a listing that says \"type 'more' for the next page\""
            )
        return await self._page(session, listing, first=False)

    async def _page(self, session: Session, listing: _Listing, first: bool) -> str:
        # The position is kept until the page arrives, so a failed 'more' can be tried again.
        items, after = await listing.fetch(listing.after)
        for item in items:
            listing.show(session, item)
        status = listing.describe(len(items), first)
        if after is None:
            self._listings.pop(session, None)
            return status if first else f"{status}; that was the last page"
        self._listings[session] = attrs.evolve(listing, after=after)
        return f"{status}; {MORE_HINT}"


def more_command(pager: Pager) -> Callable[[Session], Awaitable[str]]:
    async def more(session: Session) -> str:
        return await pager.more(session)

    return more
