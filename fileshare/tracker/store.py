"""
The tracker's persistent state behind one small interface.

:class:`ITrackerStore` is all the protocols see, so a server database can
replace SQLite later (for several trackers) without touching them.
"""

import json
import sqlite3
from collections.abc import Collection
from typing import Any

import attrs
from twisted.enterprise import adbapi
from zope.interface import Interface, implementer

from ..errors import Conflict, FileshareError, NotFound
from ..storage.sqlite import Schema, open_pool, prepare
from .glob import compile_glob
from .sessions import ISessionStore, SessionRecord


@attrs.frozen
class FileRecord:
    """One file as a host announced it."""

    fname: str
    size: int
    root: str


@attrs.frozen
class Holding:
    """A file held by a host."""

    host: str
    fname: str
    size: int
    root: str


@attrs.frozen
class FileSummary:
    """One distinct content under a name, as ``search`` lists it.

    *holders* counts the hosts that indexed ``(fname, root)``, *online* those
    of them online now; *size* is the smallest size they announced (they
    agree unless one of them lies, and the root decides what is fetched).
    """

    fname: str
    size: int
    root: str
    online: int
    holders: int


#: A position in the index for paged search: ``(fname, root)`` of the last summary a page held.
Cursor = tuple[str, str]


class TooManyFiles(FileshareError):
    """A request that would leave a host with more files in the index than the tracker allows.

    The store refuses it whole: nothing of it is stored.
    """

    code = "too-many-files"

    def __init__(self, host: str, limit: int, count: int) -> None:
        super().__init__(
            f"host {host} may hold at most {limit} files in the index (--max-records); "
            f"this request would make it {count}, so nothing of it was stored"
        )
        self.host = host
        self.limit = limit
        self.count = count


@attrs.frozen
class Ban:
    """An account the operator banned, why, and since when (Unix time)."""

    name: str
    reason: str
    since: float


class ITrackerStore(Interface):
    """Accounts and the file index.  Every method but ``close`` returns an awaitable.

    Hosts are account names that exist; names never hold NUL or lone
    surrogates (:func:`fileshare.names.check_fname`).  ``memory_store`` has the
    reference semantics, and tests/tracker/test_store_suite.py holds every
    store to them.
    """

    def create_account(name: str, password_hash: str) -> Any:
        """Create an account; fails with Conflict if the name is taken."""

    def password_hash(name: str) -> Any:
        """The stored hash for *name*, or None for an unknown account."""

    def set_password_hash(name: str, password_hash: str) -> Any:
        """Replace the hash of an existing account; fails with NotFound for an unknown one."""

    def add_ban(name: str, reason: str, since: float) -> Any:
        """Ban an existing account (again: the new reason and time replace the old); NotFound if unknown."""

    def remove_ban(name: str) -> Any:
        """Lift a ban; fires with True if *name* was banned."""

    def ban(name: str) -> Any:
        """The :class:`Ban` of *name*, or None."""

    def bans() -> Any:
        """Every ban, sorted by name."""

    def replace_files(host: str, files: list[FileRecord], limit: int | None = None) -> Any:
        """Make *files* the whole announced repository of *host*.

        Fails with :class:`TooManyFiles`, changing nothing, if *host* would
        then hold more than *limit* files (a name repeated in *files* counts once).
        """

    def add_file(host: str, record: FileRecord, limit: int | None = None) -> Any:
        """Add or update one file of *host*; fires with how many files *host* now has.

        Fails with :class:`TooManyFiles`, changing nothing, if that would be more than *limit*.
        """

    def add_files(host: str, files: list[FileRecord], limit: int | None = None) -> Any:
        """Add or update many files of *host* at once, like :meth:`add_file` each; fires with the new count.

        All or nothing: :class:`TooManyFiles`, changing nothing, if *host*
        would then hold more than *limit* files.
        """

    def remove_file(host: str, fname: str) -> Any:
        """Forget one file of *host*; fires with True if it was there."""

    def holdings(fname: str | None = None, pattern: str | None = None) -> Any:
        """Holdings of one file name, or of names matching a glob *pattern*, or all; sorted by name and host.

        The pattern rule is :mod:`fileshare.tracker.glob`'s, the same for every store.
        """

    def search(pattern: str, after: Cursor | None, limit: int, online: Collection[str] = ()) -> Any:
        """One page of ``search``: at most *limit* :class:`FileSummary`, one per ``(fname, root)``.

        Names match the glob *pattern*; summaries are sorted by fname then
        root and start strictly after the key *after* (None: from the
        start), so a page costs what it holds, not what came before it, and
        paging on is stable while the index changes.  *online* names the
        hosts online now, for :attr:`FileSummary.online`.
        """

    def count_files(host: str) -> Any:
        """How many files *host* has announced."""

    def host_files(host: str) -> Any:
        """Every :class:`FileRecord` of *host*, sorted by name: one query, for a tracker re-reading a host another wrote."""

    def close() -> None:
        """Release the database."""


SCHEMA = Schema("fileshare.tracker.schema", "tracker database")


@implementer(ITrackerStore, ISessionStore)
class SQLiteTrackerStore:
    """The store in an SQLite file; *prepared* says the caller already ran :func:`prepare` on it."""

    def __init__(self, path: str, reactor: Any, prepared: bool = False) -> None:
        if not prepared:
            prepare(path, SCHEMA)
        self._pool: adbapi.ConnectionPool = open_pool(path, reactor)

    async def create_account(self, name: str, password_hash: str) -> None:
        try:
            await self._pool.runOperation(
                "INSERT INTO accounts (name, password_hash) VALUES (?, ?)", (name, password_hash)
            )
        except sqlite3.IntegrityError:
            raise Conflict(f"account {name!r} already exists") from None

    async def password_hash(self, name: str) -> str | None:
        rows = await self._pool.runQuery("SELECT password_hash FROM accounts WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    def set_password_hash(self, name: str, password_hash: str) -> Any:
        def update(cursor: sqlite3.Cursor) -> None:
            cursor.execute("UPDATE accounts SET password_hash = ? WHERE name = ?", (password_hash, name))
            if cursor.rowcount == 0:
                raise NotFound(f"no account named {name!r}")

        return self._pool.runInteraction(update)

    def add_ban(self, name: str, reason: str, since: float) -> Any:
        def add(cursor: sqlite3.Cursor) -> None:
            cursor.execute("SELECT 1 FROM accounts WHERE name = ?", (name,))
            if cursor.fetchone() is None:
                raise NotFound(f"no account named {name!r}")
            cursor.execute("INSERT OR REPLACE INTO bans (name, reason, since) VALUES (?, ?, ?)", (name, reason, since))

        return self._pool.runInteraction(add)

    def remove_ban(self, name: str) -> Any:
        def remove(cursor: sqlite3.Cursor) -> bool:
            cursor.execute("DELETE FROM bans WHERE name = ?", (name,))
            return cursor.rowcount > 0

        return self._pool.runInteraction(remove)

    async def ban(self, name: str) -> Ban | None:
        rows = await self._pool.runQuery("SELECT name, reason, since FROM bans WHERE name = ?", (name,))
        return Ban(*rows[0]) if rows else None

    async def bans(self) -> list[Ban]:
        rows = await self._pool.runQuery("SELECT name, reason, since FROM bans ORDER BY name")
        return [Ban(*row) for row in rows]

    def replace_files(self, host: str, files: list[FileRecord], limit: int | None = None) -> Any:
        def replace(cursor: sqlite3.Cursor) -> None:
            cursor.execute("DELETE FROM files WHERE host = ?", (host,))
            _insert(cursor, host, files, limit)

        return self._pool.runInteraction(replace)

    def add_file(self, host: str, record: FileRecord, limit: int | None = None) -> Any:
        return self.add_files(host, [record], limit)

    def add_files(self, host: str, files: list[FileRecord], limit: int | None = None) -> Any:
        return self._pool.runInteraction(_insert, host, files, limit)

    def remove_file(self, host: str, fname: str) -> Any:
        def remove(cursor: sqlite3.Cursor) -> bool:
            cursor.execute("DELETE FROM files WHERE host = ? AND fname = ?", (host, fname))
            return cursor.rowcount > 0

        return self._pool.runInteraction(remove)

    async def holdings(self, fname: str | None = None, pattern: str | None = None) -> list[Holding]:
        query = "SELECT host, fname, size, root FROM files"
        if fname is not None:
            rows = await self._pool.runQuery(query + " WHERE fname = ? ORDER BY host", (fname,))
        elif pattern is not None:
            rows = await self._pool.runInteraction(_search, pattern)
        else:
            rows = await self._pool.runQuery(query + " ORDER BY fname, host")
        return [Holding(*row) for row in rows]

    async def search(
        self, pattern: str, after: Cursor | None, limit: int, online: Collection[str] = ()
    ) -> list[FileSummary]:
        rows = await self._pool.runInteraction(_search_page, pattern, after, limit, json.dumps(sorted(online)))
        return [FileSummary(*row) for row in rows]

    async def count_files(self, host: str) -> int:
        rows = await self._pool.runQuery("SELECT COUNT(*) FROM files WHERE host = ?", (host,))
        return rows[0][0]

    async def host_files(self, host: str) -> list[FileRecord]:
        rows = await self._pool.runQuery("SELECT fname, size, root FROM files WHERE host = ? ORDER BY fname", (host,))
        return [FileRecord(*row) for row in rows]

    # -- session tokens (ISessionStore)

    async def session(self, name: str) -> SessionRecord | None:
        rows = await self._pool.runQuery("SELECT token_hash, expires FROM sessions WHERE name = ?", (name,))
        return SessionRecord(*rows[0]) if rows else None

    def save_session(self, name: str, token_hash: str) -> Any:
        return self._pool.runOperation(
            "INSERT OR REPLACE INTO sessions (name, token_hash, expires) VALUES (?, ?, NULL)", (name, token_hash)
        )

    def expire_session(self, name: str, token_hash: str, expires: float | None) -> Any:
        return self._pool.runOperation(
            "UPDATE sessions SET expires = ? WHERE name = ? AND token_hash = ?", (expires, name, token_hash)
        )

    def revoke_session(self, name: str) -> Any:
        return self._pool.runOperation("DELETE FROM sessions WHERE name = ?", (name,))

    def expire_open_sessions(self, expires: float, keep: Collection[str] = ()) -> Any:
        if not keep:
            return self._pool.runOperation("UPDATE sessions SET expires = ? WHERE expires IS NULL", (expires,))
        return self._pool.runOperation(
            "UPDATE sessions SET expires = ? WHERE expires IS NULL AND name NOT IN (SELECT value FROM json_each(?))",
            (expires, json.dumps(sorted(keep))),
        )

    def close(self) -> None:
        self._pool.close()


def _insert(cursor: sqlite3.Cursor, host: str, files: list[FileRecord], limit: int | None) -> int:
    """Add or update *files* of *host* and answer its new count; over *limit*, raise (the pool rolls back)."""
    cursor.executemany(
        "INSERT OR REPLACE INTO files (host, fname, size, root) VALUES (?, ?, ?, ?)",
        [(host, f.fname, f.size, f.root) for f in files],
    )
    cursor.execute("SELECT COUNT(*) FROM files WHERE host = ?", (host,))
    count = cursor.fetchone()[0]
    if limit is not None and count > limit:
        raise TooManyFiles(host, limit, count)
    return count


#: The SQL function that matches a pattern too long for SQLite's GLOB (see :func:`_glob_filter`).
_MATCHES = "fileshare_glob_matches"


def _glob_filter(cursor: sqlite3.Cursor, pattern: str) -> tuple[str, tuple[str, ...]] | None:
    """The WHERE term (and its parameters) matching names against *pattern*; None if nothing can match.

    SQLite's own GLOB does the work unless the pattern is longer than SQLite
    takes (it would fail "pattern too complex"); then the reference matcher
    runs inside the query as an SQL function, so LIMIT still stops the scan.
    """
    glob = compile_glob(pattern)
    translated = glob.sqlite()
    if translated is None:
        return None
    if len(translated.encode("utf-8")) <= cursor.connection.getlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH):
        return "fname GLOB ?", (translated,)
    cursor.connection.create_function(_MATCHES, 1, glob.matches, deterministic=True)
    return f"{_MATCHES}(fname)", ()


def _search(cursor: sqlite3.Cursor, pattern: str) -> list[tuple[str, str, int, str]]:
    """Rows whose name matches *pattern* (in the pool's thread)."""
    found = _glob_filter(cursor, pattern)
    if found is None:
        return []
    term, params = found
    cursor.execute(f"SELECT host, fname, size, root FROM files WHERE {term} ORDER BY fname, host", params)
    return cursor.fetchall()


def _search_page(
    cursor: sqlite3.Cursor, pattern: str, after: Cursor | None, limit: int, online: str
) -> list[tuple[str, int, str, int, int]]:
    """One page of summaries: keyset pagination on the ``files_by_name_root`` index, LIMIT in SQL.

    *online* is a JSON array of host names; SQLite reads it once per query.
    """
    found = _glob_filter(cursor, pattern)
    if found is None or limit <= 0:
        return []
    term, params = found
    if after is not None:
        term += " AND (fname, root) > (?, ?)"
        params += tuple(after)
    cursor.execute(
        "SELECT fname, MIN(size), root, SUM(host IN (SELECT value FROM json_each(?))), COUNT(*) FROM files "
        f"WHERE {term} GROUP BY fname, root ORDER BY fname, root LIMIT ?",
        (online, *params, limit),
    )
    return cursor.fetchall()
