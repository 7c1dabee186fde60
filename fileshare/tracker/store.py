"""
The tracker's persistent state behind one small interface.

:class:`ITrackerStore` is all the protocols see, so a server database can
replace SQLite later (for several trackers) without touching them.
"""

import sqlite3
from typing import Any

import attrs
from twisted.enterprise import adbapi
from zope.interface import Interface, implementer

from ..errors import Conflict, NotFound
from ..storage.sqlite import Schema, open_pool, prepare
from .glob import compile_glob


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

    def replace_files(host: str, files: list[FileRecord]) -> Any:
        """Make *files* the whole announced repository of *host*."""

    def add_file(host: str, record: FileRecord) -> Any:
        """Add or update one file of *host*; fires with how many files *host* now has."""

    def remove_file(host: str, fname: str) -> Any:
        """Forget one file of *host*; fires with True if it was there."""

    def holdings(fname: str | None = None, pattern: str | None = None) -> Any:
        """Holdings of one file name, or of names matching a glob *pattern*, or all; sorted by name and host.

        The pattern rule is :mod:`fileshare.tracker.glob`'s, the same for every store.
        """

    def count_files(host: str) -> Any:
        """How many files *host* has announced."""

    def close() -> None:
        """Release the database."""


SCHEMA = Schema("fileshare.tracker.schema", "tracker database")


@implementer(ITrackerStore)
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

    def replace_files(self, host: str, files: list[FileRecord]) -> Any:
        def replace(cursor: sqlite3.Cursor) -> None:
            cursor.execute("DELETE FROM files WHERE host = ?", (host,))
            cursor.executemany(
                "INSERT OR REPLACE INTO files (host, fname, size, root) VALUES (?, ?, ?, ?)",
                [(host, f.fname, f.size, f.root) for f in files],
            )

        return self._pool.runInteraction(replace)

    def add_file(self, host: str, record: FileRecord) -> Any:
        def add(cursor: sqlite3.Cursor) -> int:
            cursor.execute(
                "INSERT OR REPLACE INTO files (host, fname, size, root) VALUES (?, ?, ?, ?)",
                (host, record.fname, record.size, record.root),
            )
            cursor.execute("SELECT COUNT(*) FROM files WHERE host = ?", (host,))
            return cursor.fetchone()[0]

        return self._pool.runInteraction(add)

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

    async def count_files(self, host: str) -> int:
        rows = await self._pool.runQuery("SELECT COUNT(*) FROM files WHERE host = ?", (host,))
        return rows[0][0]

    def close(self) -> None:
        self._pool.close()


def _search(cursor: sqlite3.Cursor, pattern: str) -> list[tuple[str, str, int, str]]:
    """Rows whose name matches *pattern*, filtered by SQLite's GLOB where it can (in the pool's thread)."""
    query = "SELECT host, fname, size, root FROM files"
    glob = compile_glob(pattern)
    translated = glob.sqlite()
    if translated is None:
        return []
    if len(translated.encode("utf-8")) <= cursor.connection.getlimit(sqlite3.SQLITE_LIMIT_LIKE_PATTERN_LENGTH):
        cursor.execute(query + " WHERE fname GLOB ? ORDER BY fname, host", (translated,))
        return cursor.fetchall()
    # Longer than SQLite accepts (it would fail "pattern too complex"): filter here instead.
    cursor.execute(query + " ORDER BY fname, host")
    return [row for row in cursor.fetchall() if glob.matches(row[1])]
