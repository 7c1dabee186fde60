"""
SQLite through ``adbapi``: every query runs on one worker thread.

One thread (``cp_max=1``) keeps SQLite's single-writer rule trivially true and
serialises transactions; WAL mode keeps commits cheap.
"""

import sqlite3
from typing import Any

from twisted.enterprise import adbapi


def _prepare(schema: str) -> Any:
    def prepare(connection: sqlite3.Connection) -> None:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.executescript(schema)
        connection.commit()

    return prepare


def open_pool(path: str, schema: str, reactor: Any) -> adbapi.ConnectionPool:
    """A connection pool on *path* (``":memory:"`` for tests) with *schema* applied."""
    return adbapi.ConnectionPool(
        "sqlite3",
        path,
        check_same_thread=False,
        cp_min=1,
        cp_max=1,
        cp_openfun=_prepare(schema),
        cp_reactor=reactor,
    )
