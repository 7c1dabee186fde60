"""
The tracker database at start: created on first use, never silently replaced.

The database holds every account; if it vanished or were emptied and the
tracker simply made a new one, every name would be free for whoever
registers first.  So the tracker keeps a marker beside it, ``DB.id``, holding
the random id that the database also keeps (table ``meta``, schema step 2).
The marker is a separate file because the point is to remember the database
when the database itself is gone or truncated; the id ties the marker to one
database, so a different database put in its place is noticed too.

- No marker: a first start.  The database is created (or a 0.1.0 one
  upgraded) and the marker written.
- A marker, but the database is missing, zero bytes or without tables: refused,
  unless ``create`` (``--create``) asks for an empty database in its place.
- A marker naming another database than the one found: refused; deleting the
  marker accepts that database.
- Damaged, foreign or newer databases are refused by
  :func:`fileshare.storage.sqlite.prepare` whatever the marker says.

Everything here blocks; it runs once, before the reactor serves anyone.
"""

import os
import sqlite3

import attrs
from twisted.logger import Logger

from ..storage.sqlite import DatabaseError, EmptyDatabase, Prepared, prepare
from .store import SCHEMA

log = Logger()

MARKER_SUFFIX = ".id"


@attrs.frozen
class Opened:
    """A checked, up-to-date tracker database."""

    path: str
    id: str
    prepared: Prepared


def marker_path(path: str) -> str:
    return path + MARKER_SUFFIX


def open_database(path: str, create: bool = False) -> Opened:
    """Check the tracker database at *path* as the module explains; raise DatabaseError to refuse it."""
    marker = marker_path(path)
    known = _read_marker(marker)
    if known is not None and not create:
        again = (
            f"but this tracker used one there before ({marker} remembers it); restore it from a backup, "
            "or start with --create for an empty database"
        )
        if not os.path.exists(path):
            raise DatabaseError(f"the tracker database {path} is missing, {again}")
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise DatabaseError(f"the tracker database {path} is empty, {again}")
        try:
            prepared = prepare(path, SCHEMA, create=False)
        except EmptyDatabase:
            raise DatabaseError(f"the tracker database {path} has no tables, {again}") from None
    else:
        prepared = prepare(path, SCHEMA)
    found = _database_id(path)
    if known is not None and found != known and not prepared.created:
        raise DatabaseError(
            f"the tracker database {path} is not the one this tracker used before ({marker} names another); "
            f"if it is the right one, delete {marker}"
        )
    if prepared.created:
        log.info(
            "Created the tracker database {path}{instead}",
            path=path,
            instead=" (--create: in place of the one used before)" if known is not None else "",
        )
    elif prepared.old_version != prepared.version:
        log.info(
            "Upgraded the tracker database {path} from schema version {old} to {new}",
            path=path,
            old=prepared.old_version,
            new=prepared.version,
        )
    if found != known:
        _write_marker(marker, found)
    return Opened(path, found, prepared)


def _read_marker(marker: str) -> str | None:
    try:
        with open(marker, encoding="ascii") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DatabaseError(f"cannot read {marker}: {e}") from None


def _database_id(path: str) -> str:
    connection = sqlite3.connect(path)
    try:
        row = connection.execute("SELECT value FROM meta WHERE key = 'id'").fetchone()
    except sqlite3.Error as e:
        raise DatabaseError(f"cannot read the id of the tracker database {path}: {e}") from None
    finally:
        connection.close()
    if row is None:
        raise DatabaseError(f"the tracker database {path} has no id in its meta table; restore it from a backup")
    return row[0]


def _write_marker(marker: str, database_id: str) -> None:
    """Replace the marker atomically, so a crash leaves the old one or the new one."""
    partial = marker + ".partial"
    try:
        with open(partial, "w", encoding="ascii") as f:
            f.write(database_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, marker)
    except OSError as e:
        raise DatabaseError(f"cannot write {marker}: {e.strerror}") from None
