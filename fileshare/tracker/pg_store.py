"""
The tracker store in PostgreSQL, for ``--db postgresql://USER@HOST/DB``: one index for several trackers.

Why ``adbapi`` and not psycopg_pool or psycopg's async API: psycopg 3 is a
DB-API 2 module, so :class:`twisted.enterprise.adbapi.ConnectionPool` runs it
the way the SQLite store already runs ``sqlite3`` -- one connection per pool
thread, every query off the reactor thread, a Deferred back -- with no second
pool library, no asyncio reactor, and adbapi's reconnect (``cp_reconnect``)
when PostgreSQL restarts: the query that finds a connection dead fails, the
next one gets a new connection.  psycopg releases the GIL while it waits on the
server, so :data:`POOL_SIZE` threads keep that many queries in flight.

Connections run in autocommit mode: a read is one round trip, with no BEGIN
or COMMIT around it; what must be all or nothing runs in
``connection.transaction()``, which rolls back when :class:`TooManyFiles`
or anything else is raised.  Writes to one host's files first lock its
account row, so two writes for one host (on two trackers, say) see each
other's counts and ``--max-records`` holds.

The schema (``pg_schema/``) is prepared at start by
:func:`fileshare.tracker.database.open_pg_database`; text columns sort by
code point (``COLLATE "C"``), so pages and listings come in the order the
memory store defines.
"""

import re
from collections.abc import Collection
from typing import Any

from psycopg import errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from twisted.enterprise import adbapi
from zope.interface import implementer

from ..errors import Conflict, NotFound
from .glob import ANY, STAR, CharSet, compile_glob
from .index_coherence import IFileVersions
from .sessions import ISessionStore, SessionRecord
from .store import Ban, Cursor, FileRecord, FileSummary, Holding, ITrackerStore, TooManyFiles

#: Connections (and threads) the store keeps: queries in flight at once.
POOL_SIZE = 4

#: Seconds to wait for the server when connecting, unless the URL sets ``connect_timeout``.
CONNECT_TIMEOUT = 10

_URL = re.compile(r"^postgres(ql)?://", re.IGNORECASE)


def is_postgres(db: str) -> bool:
    """Whether ``--db`` names a PostgreSQL database (a ``postgresql://`` URL) rather than an SQLite file."""
    return bool(_URL.match(db))


def conninfo(url: str) -> str:
    """libpq's connection string for *url*, with :data:`CONNECT_TIMEOUT` unless the URL gives its own."""
    params = conninfo_to_dict(url)
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT))
    params.setdefault("application_name", "fileshare-tracker")
    return make_conninfo("", **params)


def redacted(url: str) -> str:
    """*url* fit for a log line: its password, if it has one, replaced by ``***``."""
    return re.sub(r"^([^:]+://[^:@/]*):[^@/]*@", r"\1:***@", url)


#: A text argument PostgreSQL cannot hold (NUL, a lone surrogate): no stored name equals it.
def _storable(text: str) -> bool:
    return "\x00" not in text and not any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


@implementer(ITrackerStore, ISessionStore, IFileVersions)
class PostgresTrackerStore:
    """The store in the PostgreSQL database at *url*, already prepared; ``pool`` is there for other tables' code."""

    def __init__(self, url: str, reactor: Any, pool_size: int = POOL_SIZE) -> None:
        self.pool = adbapi.ConnectionPool(
            "psycopg",
            conninfo(url),
            autocommit=True,
            cp_min=1,
            cp_max=pool_size,
            cp_reconnect=True,
            cp_reactor=reactor,
        )

    def _run(self, function: Any, *args: Any) -> Any:
        return self.pool.runWithConnection(function, *args)

    async def _rows(
        self, query: str, params: tuple[Any, ...] = (), prepare: bool | None = None
    ) -> list[tuple[Any, ...]]:
        """The rows of *query*; ``prepare=False`` for one whose best plan depends on its pattern parameter."""
        return await self._run(lambda connection: connection.execute(query, params, prepare=prepare).fetchall())

    async def _rowcount(self, query: str, params: tuple[Any, ...]) -> int:
        return await self._run(lambda connection: connection.execute(query, params).rowcount)

    async def create_account(self, name: str, password_hash: str) -> None:
        try:
            await self._rowcount("INSERT INTO accounts (name, password_hash) VALUES (%s, %s)", (name, password_hash))
        except errors.UniqueViolation:
            raise Conflict(f"account {name!r} already exists") from None

    async def password_hash(self, name: str) -> str | None:
        if not _storable(name):
            return None
        rows = await self._rows("SELECT password_hash FROM accounts WHERE name = %s", (name,))
        return rows[0][0] if rows else None

    async def set_password_hash(self, name: str, password_hash: str) -> None:
        updated = _storable(name) and await self._rowcount(
            "UPDATE accounts SET password_hash = %s WHERE name = %s", (password_hash, name)
        )
        if not updated:
            raise NotFound(f"no account named {name!r}")

    async def add_ban(self, name: str, reason: str, since: float) -> None:
        try:
            if not _storable(name):
                raise NotFound(f"no account named {name!r}")
            await self._rowcount(
                "INSERT INTO bans (name, reason, since) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET reason = EXCLUDED.reason, since = EXCLUDED.since",
                (name, reason, since),
            )
        except errors.ForeignKeyViolation:
            raise NotFound(f"no account named {name!r}") from None

    async def remove_ban(self, name: str) -> bool:
        return _storable(name) and await self._rowcount("DELETE FROM bans WHERE name = %s", (name,)) > 0

    async def ban(self, name: str) -> Ban | None:
        if not _storable(name):
            return None
        rows = await self._rows("SELECT name, reason, since FROM bans WHERE name = %s", (name,))
        return Ban(*rows[0]) if rows else None

    async def bans(self) -> list[Ban]:
        return [Ban(*row) for row in await self._rows("SELECT name, reason, since FROM bans ORDER BY name")]

    def replace_files(self, host: str, files: list[FileRecord], limit: int | None = None) -> Any:
        return self._run(_write, host, files, limit, True)

    def add_file(self, host: str, record: FileRecord, limit: int | None = None) -> Any:
        return self.add_files(host, [record], limit)

    def add_files(self, host: str, files: list[FileRecord], limit: int | None = None) -> Any:
        return self._run(_write, host, files, limit, False)

    async def remove_file(self, host: str, fname: str) -> bool:
        if not (_storable(host) and _storable(fname)):
            return False
        return await self._run(_remove, host, fname)

    async def holdings(self, fname: str | None = None, pattern: str | None = None) -> list[Holding]:
        query = "SELECT host, fname, size, root FROM files"
        if fname is not None:
            if not _storable(fname):
                return []
            rows = await self._rows(query + " WHERE fname = %s ORDER BY host", (fname,))
        elif pattern is not None:
            found = _glob_filter(pattern)
            if found is None:
                return []
            term, params = found
            rows = await self._rows(f"{query} WHERE {term} ORDER BY fname, host", params, prepare=False)
        else:
            rows = await self._rows(query + " ORDER BY fname, host")
        return [Holding(*row) for row in rows]

    async def search(
        self, pattern: str, after: Cursor | None, limit: int, online: Collection[str] = ()
    ) -> list[FileSummary]:
        found = _glob_filter(pattern)
        if found is None or limit <= 0:
            return []
        term, params = found
        if after is not None:
            more, more_params = _after(*after)
            term, params = f"{term} AND {more}", params + more_params
        rows = await self._rows(
            "SELECT fname, MIN(size), root, COUNT(*) FILTER (WHERE host = ANY(%s::text[])), COUNT(*) FROM files "
            f"WHERE {term} GROUP BY fname, root ORDER BY fname, root LIMIT %s",
            ([h for h in online if _storable(h)], *params, limit),
            prepare=False,
        )
        return [FileSummary(*row) for row in rows]

    async def host_files(self, host: str) -> list[FileRecord]:
        if not _storable(host):
            return []
        rows = await self._rows("SELECT fname, size, root FROM files WHERE host = %s ORDER BY fname", (host,))
        return [FileRecord(*row) for row in rows]

    # -- versions of each host's files (IFileVersions): how the trackers of a group find notices they missed

    async def file_version(self, host: str) -> int:
        if not _storable(host):
            return 0
        rows = await self._rows("SELECT version FROM file_versions WHERE host = %s", (host,))
        return rows[0][0] if rows else 0

    async def file_versions(self) -> dict[str, int]:
        return dict(await self._rows("SELECT host, version FROM file_versions"))

    async def versioned_host_files(self, host: str) -> tuple[int, list[FileRecord]]:
        version = await self.file_version(host)  # first: the rows read next are at least this new
        return version, await self.host_files(host)

    async def versioned_holdings(self) -> tuple[dict[str, int], list[Holding]]:
        versions = await self.file_versions()  # first: the rows read next are at least this new
        return versions, await self.holdings()

    async def count_files(self, host: str) -> int:
        if not _storable(host):
            return 0
        return (await self._rows("SELECT COUNT(*) FROM files WHERE host = %s", (host,)))[0][0]

    # -- session tokens (ISessionStore): in the database, so a reconnect skips the password check after a restart

    async def session(self, name: str) -> SessionRecord | None:
        if not _storable(name):
            return None
        rows = await self._rows("SELECT token_hash, expires FROM sessions WHERE name = %s", (name,))
        return SessionRecord(*rows[0]) if rows else None

    async def save_session(self, name: str, token_hash: str) -> None:
        await self._rowcount(
            "INSERT INTO sessions (name, token_hash, expires) VALUES (%s, %s, NULL) "
            "ON CONFLICT (name) DO UPDATE SET token_hash = EXCLUDED.token_hash, expires = NULL",
            (name, token_hash),
        )

    async def expire_session(self, name: str, token_hash: str, expires: float | None) -> None:
        await self._rowcount(
            "UPDATE sessions SET expires = %s WHERE name = %s AND token_hash = %s", (expires, name, token_hash)
        )

    async def revoke_session(self, name: str) -> None:
        if _storable(name):
            await self._rowcount("DELETE FROM sessions WHERE name = %s", (name,))

    async def expire_open_sessions(self, expires: float, keep: Collection[str] = ()) -> None:
        await self._rowcount(
            "UPDATE sessions SET expires = %s WHERE expires IS NULL AND NOT (name = ANY(%s::text[]))",
            (expires, [name for name in keep if _storable(name)]),
        )

    def close(self) -> None:
        self.pool.close()


def _write(connection: Any, host: str, files: list[FileRecord], limit: int | None, replace: bool) -> int:
    """Add (or with *replace*, make) *files* the files of *host*, all or nothing; the new count (in a pool thread).

    The count is known before anything is written, so a request over
    *limit* is refused without writing; the account row's lock keeps it true
    until the commit.
    """
    latest = {f.fname: f for f in files}  # a name repeated keeps its last record
    with connection.transaction():
        connection.execute("SELECT 1 FROM accounts WHERE name = %s FOR NO KEY UPDATE", (host,))
        if replace:
            count = len(latest)
        else:
            others = connection.execute(
                "SELECT COUNT(*) FROM files WHERE host = %s AND NOT (fname = ANY(%s::text[]))", (host, list(latest))
            )
            count = others.fetchone()[0] + len(latest)
        if limit is not None and count > limit:
            raise TooManyFiles(host, limit, count)
        if replace:
            connection.execute("DELETE FROM files WHERE host = %s", (host,))
        if latest:
            connection.execute(
                "INSERT INTO files (host, fname, size, root) "
                "SELECT %s, f, s, r FROM unnest(%s::text[], %s::bigint[], %s::text[]) AS t (f, s, r) "
                "ON CONFLICT (host, fname) DO UPDATE SET size = EXCLUDED.size, root = EXCLUDED.root",
                (host, list(latest), [f.size for f in latest.values()], [f.root for f in latest.values()]),
            )
        _bump(connection, host)
    return count


def _remove(connection: Any, host: str, fname: str) -> bool:
    """Remove *fname* of *host*, bumping its version if there was one (in a pool thread)."""
    with connection.transaction():
        removed = connection.execute("DELETE FROM files WHERE host = %s AND fname = %s", (host, fname)).rowcount > 0
        if removed:
            _bump(connection, host)
    return removed


def _bump(connection: Any, host: str) -> None:
    """One more version of *host*'s files, in the transaction that changed them (``pg_schema/003``)."""
    connection.execute(
        "INSERT INTO file_versions (host, version) VALUES (%s, 1) "
        "ON CONFLICT (host) DO UPDATE SET version = file_versions.version + 1",
        (host,),
    )


def _glob_filter(pattern: str) -> tuple[str, tuple[Any, ...]] | None:
    """The WHERE term (and its parameters) matching names against *pattern*; None if nothing can match.

    ``LIKE`` does the filtering where it can, several times faster than a
    regex: it is exact for a pattern without brackets (``*`` is ``%``, ``?``
    is ``_``), and for one with brackets it screens rows (a bracket as ``_``)
    before the regex of :meth:`Glob.postgres` decides.  A pattern that starts
    with literal characters also bounds ``fname`` to the names with that
    prefix, so the ``(fname, root)`` index narrows the scan.
    """
    glob = compile_glob(pattern)
    regex = glob.postgres()
    if regex is None:
        return None
    like = "".join(
        "%" if t == STAR else "_" if t == ANY or isinstance(t, CharSet) else _LIKE_SPECIAL.sub(r"\\\g<0>", t)
        for t in glob.tokens
    )
    term, params = "fname LIKE %s", [like]
    if any(isinstance(t, CharSet) for t in glob.tokens):
        term, params = term + " AND fname ~ %s", params + [regex]
    prefix = ""
    for token in glob.tokens:
        if isinstance(token, CharSet) or token in (STAR, ANY):
            break
        prefix += token
    if prefix:
        term, params = term + " AND fname >= %s", params + [prefix]
        upper = _successor(prefix)
        if upper is not None:
            term, params = term + " AND fname < %s", params + [upper]
    return term, tuple(params)


_LIKE_SPECIAL = re.compile(r"[%_\\]")


def _next_char(c: int) -> int | None:
    """The storable code point after *c* (none is a surrogate or NUL), or None past the last."""
    c += 1
    if 0xD800 <= c <= 0xDFFF:
        c = 0xE000
    return c if c <= 0x10FFFF else None


def _successor(prefix: str) -> str | None:
    """The least string above every string starting with *prefix* (by code point), or None if there is none."""
    while prefix:
        following = _next_char(ord(prefix[-1]))
        if following is not None:
            return prefix[:-1] + chr(following)
        prefix = prefix[:-1]
    return None


def _after(fname: str, root: str) -> tuple[str, tuple[str, ...]]:
    """The keyset term "(fname, root) strictly after the cursor", for any cursor a client may send.

    A cursor part holding a character no name holds (NUL, a lone surrogate)
    cannot be sent to PostgreSQL, but it need not be: no name equals it, so
    "after it" is "at or after" the least storable string above it.
    """
    if not _storable(fname):
        return "fname >= %s", (_lowest_above(fname),)
    if not _storable(root):
        return "(fname, root) >= (%s, %s)", (fname, _lowest_above(root))
    return "(fname, root) > (%s, %s)", (fname, root)


def _lowest_above(text: str) -> str:
    """The least storable string above *text*, which holds an unstorable character: cut there, step it up."""
    i = next(i for i, ch in enumerate(text) if not _storable(ch))
    following = _next_char(ord(text[i]))
    assert following is not None  # NUL and surrogates are below U+E000
    return text[:i] + chr(following)
