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

A PostgreSQL database (``--db postgresql://...``) is the operator's to
create, back up and keep: :func:`open_pg_database` only checks it and applies
the schema steps of ``pg_schema/`` it lacks; it keeps no marker.

Everything here blocks; it runs once, before the reactor serves anyone.
"""

import os
import sqlite3
from importlib import resources

import attrs
import psycopg
from twisted.logger import Logger

from .. import __version__
from ..storage.sqlite import STEP, DatabaseError, EmptyDatabase, Prepared, prepare
from .pg_store import conninfo, redacted
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


# -- PostgreSQL (--db postgresql://...)

#: Taken while steps are applied, so trackers starting together upgrade one at a time.
_UPGRADE_LOCK = 0x66696C65  # "file"

PG_SCHEMA = "fileshare.tracker.pg_schema"


@attrs.frozen
class PgOpened:
    """A checked, up-to-date PostgreSQL tracker database: its id and the steps applied now and before."""

    url: str
    id: str
    created: bool
    applied: tuple[int, ...]
    before: tuple[int, ...]


def pg_steps(package: str = PG_SCHEMA) -> list[tuple[int, str, str]]:
    """The numbered steps ``(number, name, SQL)`` in *package*, in order (numbers may have gaps)."""
    found = []
    for item in resources.files(package).iterdir():
        m = STEP.match(item.name)
        if m:
            found.append((int(m.group(1)), item.name, item.read_text("utf-8")))
    return sorted(found)


def open_pg_database(url: str, package: str = PG_SCHEMA) -> PgOpened:
    """Check the PostgreSQL database at *url* and apply the steps it lacks, all in one transaction (blocking).

    The table ``schema_version`` lists the steps applied.  Raises
    DatabaseError, with a one-line message naming ``--db``, for a database
    that cannot be reached, is not UTF-8, holds other tables and no
    ``schema_version``, or has a step this code does not know (a newer
    fileshare upgraded it).
    """
    shown = redacted(url)
    steps = pg_steps(package)
    try:
        connection = psycopg.connect(conninfo(url), autocommit=True)
    except psycopg.Error as e:
        raise DatabaseError(f"cannot reach the tracker database --db {shown}: {_one_line(e)}") from None
    try:
        encoding = connection.execute("SHOW server_encoding").fetchone()[0]
        if encoding != "UTF8":
            raise DatabaseError(
                f"the tracker database --db {shown} is encoded {encoding}; fileshare needs UTF8 "
                "(createdb --encoding=UTF8 --template=template0)"
            )
        with connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (_UPGRADE_LOCK,))
            known = connection.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()[0]
            if not known:
                tables = connection.execute(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
                ).fetchone()[0]
                if tables:
                    raise DatabaseError(
                        f"--db {shown} is not a tracker database (it holds other tables and no schema_version); "
                        "give another database"
                    )
                connection.execute(
                    "CREATE TABLE schema_version (step integer PRIMARY KEY, name text NOT NULL, "
                    "applied timestamptz NOT NULL DEFAULT now())"
                )
            before = tuple(row[0] for row in connection.execute("SELECT step FROM schema_version ORDER BY step"))
            unknown = sorted(set(before) - {number for number, _, _ in steps})
            if unknown:
                raise DatabaseError(
                    f"the tracker database --db {shown} has schema step {unknown[-1]}, which this fileshare "
                    f"{__version__} does not know; run a newer fileshare"
                )
            for number, name, script in steps:
                if number not in before:
                    connection.execute(script)
                    connection.execute("INSERT INTO schema_version (step, name) VALUES (%s, %s)", (number, name))
            database_id = connection.execute("SELECT value FROM meta WHERE key = 'id'").fetchone()[0]
    except psycopg.Error as e:
        raise DatabaseError(f"cannot prepare the tracker database --db {shown}: {_one_line(e)}") from None
    finally:
        connection.close()
    opened = PgOpened(url, database_id, not before, tuple(n for n, _, _ in steps), before)
    if opened.created:
        log.info("Created the tracker tables in --db {url}", url=shown)
    elif opened.applied != before:
        log.info(
            "Upgraded the tracker database --db {url} with schema steps {steps}",
            url=shown,
            steps=" ".join(str(n) for n in sorted(set(opened.applied) - set(before))),
        )
    return opened


def _one_line(error: Exception) -> str:
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__
