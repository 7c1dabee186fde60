"""
SQLite databases: versioned schemas, start-up checks, and ``adbapi`` pools.

A database records its schema version in ``PRAGMA user_version``.  The
schema is a package of numbered steps (``001-initial.sql``,
``002-....sql``), each applied once, in order, inside one transaction that
also sets the version, so a crash mid-upgrade leaves the previous version
intact.  Databases written by fileshare 0.1.0 have version 0 and exactly the
tables of step 1 (which only creates what is missing), so they upgrade like
any other.

:func:`prepare` is blocking and meant for start-up, before the reactor
serves anyone; :func:`open_pool` then gives the thread that all queries use.
One thread (``cp_max=1``) keeps SQLite's single-writer rule trivially true
and serialises transactions; WAL mode keeps commits cheap.
"""

import re
import sqlite3
from importlib import resources
from typing import Any

import attrs
from twisted.enterprise import adbapi

from .. import __version__

STEP = re.compile(r"^(\d{3})-[a-z0-9-]+\.sql$")


class DatabaseError(Exception):
    """A database that must not be used as it is; the message says why and what to do."""


class EmptyDatabase(DatabaseError):
    """A database with no tables where :func:`prepare` was told not to create one."""


@attrs.frozen
class Schema:
    """The numbered upgrade steps kept in *package* (a package of ``NNN-name.sql`` files)."""

    package: str
    #: What the database holds, for messages ("tracker database").
    kind: str

    def steps(self) -> list[tuple[int, str]]:
        found = []
        for item in resources.files(self.package).iterdir():
            m = STEP.match(item.name)
            if m:
                found.append((int(m.group(1)), item.read_text("utf-8")))
        found.sort()
        if [n for n, _ in found] != list(range(1, len(found) + 1)):
            raise RuntimeError(f"schema steps in {self.package} are not numbered 1..N")
        return found

    @property
    def version(self) -> int:
        return len(self.steps())

    def baseline_tables(self) -> set[str]:
        """Tables the first step creates: all a version-0 (0.1.0) database may hold."""
        return set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", self.steps()[0][1]))


@attrs.frozen
class Prepared:
    """What :func:`prepare` found and did."""

    created: bool
    old_version: int
    version: int


def _tables(connection: sqlite3.Connection) -> set[str]:
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    return {name for (name,) in rows}


def prepare(path: str, schema: Schema, create: bool = True) -> Prepared:
    """Check the database at *path* and bring its schema up to date (blocking).

    Creates the database if it has no tables yet, unless *create* is false.
    Raises :class:`DatabaseError` for a damaged or foreign file, a schema
    newer than this code knows, or an empty database that must not be created.
    """
    steps = schema.steps()
    latest = len(steps)
    try:
        connection = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as e:
        raise DatabaseError(f"cannot open the {schema.kind} {path}: {e}") from None
    try:
        try:
            check = "\n".join(row[0] for row in connection.execute("PRAGMA quick_check"))
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            tables = _tables(connection)
        except sqlite3.DatabaseError as e:
            raise DatabaseError(f"{path} is not a usable {schema.kind}: {e}") from None
        if check != "ok":
            raise DatabaseError(
                f"the {schema.kind} {path} is damaged ({_first_problem(check)}); restore it from a backup"
            )
        if version > latest:
            raise DatabaseError(
                f"the {schema.kind} {path} has schema version {version}, newer than this fileshare "
                f"{__version__} knows ({latest}); run a newer fileshare"
            )
        if version == 0 and not tables <= schema.baseline_tables():
            raise DatabaseError(f"{path} is not a {schema.kind} (it holds other tables); give another path")
        created = not tables
        if created and not create:
            raise EmptyDatabase(f"the {schema.kind} {path} is empty")
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            for number, script in steps[version:]:
                _apply(connection, number, script)
        except sqlite3.Error as e:
            raise DatabaseError(f"cannot upgrade the {schema.kind} {path}: {e}") from None
        return Prepared(created, version, latest)
    finally:
        connection.close()


def _first_problem(check: str) -> str:
    """quick_check's report on one line: its first problem, and how many more."""
    problems = [line.strip() for line in check.splitlines() if line.strip() and not line.startswith("***")]
    if not problems:
        return "unknown problem"
    more = len(problems) - 1
    return problems[0] + (f", and {more} more problem{'s' if more > 1 else ''}" if more else "")


def _apply(connection: sqlite3.Connection, number: int, script: str) -> None:
    """Run one step and record it, all or nothing."""
    try:
        connection.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise


def _configure(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA foreign_keys=ON")


def open_pool(path: str, reactor: Any) -> adbapi.ConnectionPool:
    """The one-thread connection pool on a prepared database at *path*."""
    return adbapi.ConnectionPool(
        "sqlite3",
        path,
        check_same_thread=False,
        cp_min=1,
        cp_max=1,
        cp_openfun=_configure,
        cp_reactor=reactor,
    )


def open_memory_pool(schema: Schema, reactor: Any) -> adbapi.ConnectionPool:
    """A pool on a private in-memory database with *schema* applied, for tests.

    ``cp_max=1`` and no reconnects keep the single connection, and so the data, alive.
    """

    def setup(connection: sqlite3.Connection) -> None:
        _configure(connection)
        for number, script in schema.steps():
            connection.executescript(f"{script}\nPRAGMA user_version = {number};")
        connection.commit()

    return adbapi.ConnectionPool(
        "sqlite3",
        ":memory:",
        check_same_thread=False,
        cp_min=1,
        cp_max=1,
        cp_openfun=setup,
        cp_reactor=reactor,
    )
