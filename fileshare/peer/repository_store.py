"""
Where the peer's repository keeps its records: published files, the hash cache
and partial downloads.

:class:`~fileshare.peer.repository.Repository` holds the rules (what may be
published, what is served, when a partial is stale); this module only keeps
rows, behind :class:`IRepositoryStore`, so the rules are tested once and a new
backend joins by passing ``tests/peer/test_repository_store.py``.
:class:`MemoryRepositoryStore` is the reference semantics (and the fast double
for tests); :class:`SQLiteRepositoryStore` is what a peer runs on, through one
adbapi thread, on the versioned schema in ``fileshare/peer/schema/``.
"""

import os
import sqlite3
from typing import Any

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from ..errors import DiskError
from ..pieces import Digest
from ..storage.sqlite import Schema, open_pool, prepare

log = Logger()

SCHEMA = Schema("fileshare.peer.schema", "peer repository database")


@attrs.frozen
class Stamp:
    """What tells us a file is unchanged since it was hashed."""

    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> "Stamp":
        return cls(st.st_size, st.st_mtime_ns, st.st_ino)


@attrs.frozen
class Entry:
    """A published file: its name, where it is, and the content it had when hashed."""

    fname: str
    path: str
    stamp: Stamp
    digest: Digest

    @property
    def size(self) -> int:
        return self.digest.size

    @property
    def root(self) -> str:
        return self.digest.root


@attrs.frozen
class PartialRecord:
    """A paused download: enough to resume it (*verified* has one byte per piece, 1 = verified)."""

    fname: str
    digest: Digest
    verified: bytes

    @property
    def root(self) -> str:
        return self.digest.root


class IRepositoryStore(Interface):
    """The repository's three tables.  Every method returns a Deferred.

    Writes replace: putting a row whose key (``fname``, ``path``, ``root``)
    exists replaces it whole.  Reads of a missing key give ``None``; deleting
    a missing key does nothing.  Keys are compared exactly.
    """

    def load_published() -> Deferred:
        """Every published entry, ordered by fname."""

    def get_published(fname: str) -> Deferred:
        """The entry published as *fname*, or ``None``."""

    def put_published(entry: Entry) -> Deferred:
        """Publish *entry* under its fname."""

    def put_fetched(entry: Entry) -> Deferred:
        """Publish *entry* and cache its digest for its path, both or neither (a finished download)."""

    def delete_published(fname: str) -> Deferred:
        """Forget *fname*; its hash-cache row stays."""

    def get_cached(path: str) -> Deferred:
        """``(Stamp, Digest)`` last hashed for *path*, or ``None``."""

    def put_cached(path: str, stamp: Stamp, digest: Digest) -> Deferred:
        """Remember that *path*, as *stamp* says, hashes to *digest*."""

    def save_partial(record: PartialRecord) -> Deferred:
        """Keep *record* under its root."""

    def get_partial(root: str) -> Deferred:
        """The :class:`PartialRecord` for *root*, or ``None``."""

    def list_partials() -> Deferred:
        """Every partial record, ordered by fname, then root."""

    def drop_partial(root: str) -> Deferred:
        """Forget the partial record for *root*."""

    def close() -> None:
        """Release the backend; no other call may follow (closing again does nothing)."""


@implementer(IRepositoryStore)
class MemoryRepositoryStore:
    """The reference semantics, in dictionaries; nothing survives the process."""

    def __init__(self) -> None:
        self.published: dict[str, Entry] = {}
        self.hashcache: dict[str, tuple[Stamp, Digest]] = {}
        self.partial: dict[str, PartialRecord] = {}

    def load_published(self) -> Deferred:
        return succeed(sorted(self.published.values(), key=lambda e: e.fname))

    def get_published(self, fname: str) -> Deferred:
        return succeed(self.published.get(fname))

    def put_published(self, entry: Entry) -> Deferred:
        self.published[entry.fname] = entry
        return succeed(None)

    def put_fetched(self, entry: Entry) -> Deferred:
        self.hashcache[entry.path] = (entry.stamp, entry.digest)
        self.published[entry.fname] = entry
        return succeed(None)

    def delete_published(self, fname: str) -> Deferred:
        self.published.pop(fname, None)
        return succeed(None)

    def get_cached(self, path: str) -> Deferred:
        return succeed(self.hashcache.get(path))

    def put_cached(self, path: str, stamp: Stamp, digest: Digest) -> Deferred:
        self.hashcache[path] = (stamp, digest)
        return succeed(None)

    def save_partial(self, record: PartialRecord) -> Deferred:
        self.partial[record.root] = record
        return succeed(None)

    def get_partial(self, root: str) -> Deferred:
        return succeed(self.partial.get(root))

    def list_partials(self) -> Deferred:
        return succeed(sorted(self.partial.values(), key=lambda r: (r.fname, r.root)))

    def drop_partial(self, root: str) -> Deferred:
        self.partial.pop(root, None)
        return succeed(None)

    def close(self) -> None:
        pass


_PUBLISHED = "fname, path, size, mtime_ns, inode, piece_size, pieces, root"
_CACHED = "size, mtime_ns, inode, piece_size, pieces, root"
_PARTIAL = "root, fname, size, piece_size, pieces, verified"


@implementer(IRepositoryStore)
class SQLiteRepositoryStore:
    """The tables in ``peer.db``, all queries on adbapi's one thread.

    Opening is blocking and meant for start-up: it checks and upgrades the
    database (:func:`fileshare.storage.sqlite.prepare`) and raises
    :class:`~fileshare.storage.sqlite.DatabaseError` when it cannot be used.
    """

    def __init__(self, path: str, reactor: Any) -> None:
        self.path = path
        self.prepared = prepare(path, SCHEMA)
        if self.prepared.created:
            log.info("created the peer repository database {path}", path=path)
        elif self.prepared.old_version != self.prepared.version:
            log.info(
                "upgraded the peer repository database {path} from version {old} to {new}",
                path=path,
                old=self.prepared.old_version,
                new=self.prepared.version,
            )
        self._db = open_pool(path, reactor)
        self._closed = False

    # Every query goes through one of these three, so a full disk or an
    # unwritable database is reported as a DiskError naming the file.

    def _query(self, *args: Any) -> Deferred:
        return self._db.runQuery(*args).addErrback(disk_error, self.path)

    def _operation(self, *args: Any) -> Deferred:
        return self._db.runOperation(*args).addErrback(disk_error, self.path)

    def _interaction(self, f: Any) -> Deferred:
        return self._db.runInteraction(f).addErrback(disk_error, self.path)

    def load_published(self) -> Deferred:
        d = self._query(f"SELECT {_PUBLISHED} FROM published ORDER BY fname")
        return d.addCallback(lambda rows: [_entry(*row) for row in rows])

    def get_published(self, fname: str) -> Deferred:
        d = self._query(f"SELECT {_PUBLISHED} FROM published WHERE fname = ?", (fname,))
        return d.addCallback(lambda rows: _entry(*rows[0]) if rows else None)

    def put_published(self, entry: Entry) -> Deferred:
        return self._operation(
            f"INSERT OR REPLACE INTO published ({_PUBLISHED}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _published_row(entry)
        )

    def put_fetched(self, entry: Entry) -> Deferred:
        def record(cursor: Any) -> None:
            cursor.execute(
                f"INSERT OR REPLACE INTO hashcache (path, {_CACHED}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (entry.path, *_cache_row(entry.stamp, entry.digest)),
            )
            cursor.execute(
                f"INSERT OR REPLACE INTO published ({_PUBLISHED}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                _published_row(entry),
            )

        return self._interaction(record)

    def delete_published(self, fname: str) -> Deferred:
        return self._operation("DELETE FROM published WHERE fname = ?", (fname,))

    def get_cached(self, path: str) -> Deferred:
        d = self._query(f"SELECT {_CACHED} FROM hashcache WHERE path = ?", (path,))

        def cached(rows: list[Any]) -> tuple[Stamp, Digest] | None:
            if not rows:
                return None
            size, mtime_ns, inode, piece_size, pieces, root = rows[0]
            return Stamp(size, mtime_ns, inode), Digest(size, piece_size, bytes(pieces), root)

        return d.addCallback(cached)

    def put_cached(self, path: str, stamp: Stamp, digest: Digest) -> Deferred:
        return self._operation(
            f"INSERT OR REPLACE INTO hashcache (path, {_CACHED}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (path, *_cache_row(stamp, digest)),
        )

    def save_partial(self, record: PartialRecord) -> Deferred:
        d = record.digest
        return self._operation(
            f"INSERT OR REPLACE INTO partial ({_PARTIAL}) VALUES (?, ?, ?, ?, ?, ?)",
            (d.root, record.fname, d.size, d.piece_size, d.pieces, record.verified),
        )

    def get_partial(self, root: str) -> Deferred:
        d = self._query(f"SELECT {_PARTIAL} FROM partial WHERE root = ?", (root,))
        return d.addCallback(lambda rows: _partial(*rows[0]) if rows else None)

    def list_partials(self) -> Deferred:
        d = self._query(f"SELECT {_PARTIAL} FROM partial ORDER BY fname, root")
        return d.addCallback(lambda rows: [_partial(*row) for row in rows])

    def drop_partial(self, root: str) -> Deferred:
        return self._operation("DELETE FROM partial WHERE root = ?", (root,))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()


#: SQLite's primary result codes for a disk that refuses a write, and how to say so.
_DISK_CAUSES = {
    "SQLITE_FULL": "no space left on device writing {path}",
    "SQLITE_READONLY": "permission denied writing {path} (the database is read-only)",
    "SQLITE_PERM": "permission denied writing {path}",
    "SQLITE_CANTOPEN": "cannot open {path}",
    "SQLITE_IOERR": "input/output error writing {path}",
}


def disk_error(failure: Failure, path: str) -> Failure:
    """An errback: SQLite's "database or disk is full" and its kin become a DiskError naming *path*.

    Anything else (a bug) passes through unchanged, to be logged with its traceback.
    """
    error = failure.value
    if isinstance(error, sqlite3.Error):
        # Extended codes (SQLITE_IOERR_WRITE) share their primary code's prefix.
        primary = "_".join((getattr(error, "sqlite_errorname", None) or "").split("_")[:2])
        cause = _DISK_CAUSES.get(primary)
        if cause is not None:
            return Failure(DiskError(cause.format(path=path)))
    return failure


def _entry(
    fname: str, path: str, size: int, mtime_ns: int, inode: int, piece_size: int, pieces: Any, root: str
) -> Entry:
    return Entry(fname, path, Stamp(size, mtime_ns, inode), Digest(size, piece_size, bytes(pieces), root))


def _partial(root: str, fname: str, size: int, piece_size: int, pieces: Any, verified: Any) -> PartialRecord:
    return PartialRecord(fname, Digest(size, piece_size, bytes(pieces), root), bytes(verified))


def _published_row(e: Entry) -> tuple[Any, ...]:
    return (e.fname, e.path, *_cache_row(e.stamp, e.digest))


def _cache_row(stamp: Stamp, digest: Digest) -> tuple[Any, ...]:
    # One size column serves both: a stamp is only ever stored with the digest of that very file.
    return (digest.size, stamp.mtime_ns, stamp.inode, digest.piece_size, digest.pieces, digest.root)
