"""
The peer's repository: which local files are published under which names.

State lives in ``DIR/.fileshare/peer.db`` (SQLite, through adbapi), so a
restarted peer still has its repository.  Piece digests are cached by
(path, size, mtime, inode): restarting or re-publishing does not re-hash.
Fetched files land in ``DIR/FNAME``; partial downloads in
``DIR/.fileshare/partial/``.
"""

import os
import stat
from typing import Any

import attrs
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from ..errors import BadRequest, Conflict, NotFound
from ..names import check_fname
from ..pieces import Digest, hash_file
from ..storage.sqlite import Schema, open_pool, prepare

log = Logger()

STATE_DIR = ".fileshare"

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


def _stat_regular(path: str) -> os.stat_result:
    """Stat *path*, insisting on a readable regular file (blocking)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"no such file: {path}") from None
    except OSError as e:
        raise BadRequest(f"cannot read {path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise BadRequest(f"{path} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise BadRequest(f"{path} is not a regular file")
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise BadRequest(f"cannot read {path}: {e.strerror}") from None
    return st


class Repository:
    """Published files by name and by root, mirrored in memory for fast lookups."""

    def __init__(self, directory: str, reactor: Any, threadpool: ThreadPool) -> None:
        self.directory = os.path.abspath(directory)
        self.state_dir = os.path.join(self.directory, STATE_DIR)
        self.partial_dir = os.path.join(self.state_dir, "partial")
        os.makedirs(self.partial_dir, exist_ok=True)
        self._reactor = reactor
        self._threadpool = threadpool
        db = os.path.join(self.state_dir, "peer.db")
        prepare(db, SCHEMA)
        self._db = open_pool(db, reactor)
        self.by_name: dict[str, Entry] = {}
        self.by_root: dict[str, Entry] = {}

    def _in_thread(self, f: Any, *args: Any) -> Any:
        return deferToThreadPool(self._reactor, self._threadpool, f, *args)

    async def load(self) -> None:
        rows = await self._db.runQuery(
            "SELECT fname, path, size, mtime_ns, inode, piece_size, pieces, root FROM published"
        )
        for fname, path, size, mtime_ns, inode, piece_size, pieces, root in rows:
            self._remember(
                Entry(fname, path, Stamp(size, mtime_ns, inode), Digest(size, piece_size, bytes(pieces), root))
            )
        log.info("repository {directory} holds {count} files", directory=self.directory, count=len(self.by_name))

    def _remember(self, entry: Entry) -> None:
        self.by_name[entry.fname] = entry
        self.by_root[entry.root] = entry

    def _forget(self, entry: Entry) -> None:
        self.by_name.pop(entry.fname, None)
        if self.by_root.get(entry.root) is entry:
            del self.by_root[entry.root]
            for other in self.by_name.values():
                if other.root == entry.root:
                    self.by_root[entry.root] = other
                    break

    def entries(self) -> list[Entry]:
        return sorted(self.by_name.values(), key=lambda e: e.fname)

    def path_for(self, fname: str) -> str:
        """Where a fetched file named *fname* lands."""
        return os.path.join(self.directory, check_fname(fname))

    async def digest_of(self, path: str) -> tuple[Stamp, Digest]:
        """Piece digests of *path*, from the cache when the file is unchanged."""
        st = await self._in_thread(_stat_regular, path)
        stamp = Stamp.of(st)
        rows = await self._db.runQuery(
            "SELECT size, mtime_ns, inode, piece_size, pieces, root FROM hashcache WHERE path = ?", (path,)
        )
        if rows and Stamp(*rows[0][:3]) == stamp:
            size, _, _, piece_size, pieces, root = rows[0]
            return stamp, Digest(size, piece_size, bytes(pieces), root)
        log.info("hashing {path} ({size} bytes)", path=path, size=stamp.size)
        digest = await self._in_thread(hash_file, path)
        after = Stamp.of(await self._in_thread(_stat_regular, path))
        if after != stamp or digest.size != stamp.size:
            raise Conflict(f"{path} changed while it was being hashed; try again")
        await self._db.runOperation(
            "INSERT OR REPLACE INTO hashcache VALUES (?, ?, ?, ?, ?, ?, ?)",
            (path, stamp.size, stamp.mtime_ns, stamp.inode, digest.piece_size, digest.pieces, digest.root),
        )
        return stamp, digest

    async def publish(self, local_path: str, fname: str) -> Entry:
        check_fname(fname)
        path = os.path.abspath(os.path.expanduser(local_path))
        existing = self.by_name.get(fname)
        stamp, digest = await self.digest_of(path)
        if existing is not None and existing.path != path:
            raise Conflict(f"{fname!r} is already published from {existing.path}; unpublish it first")
        entry = Entry(fname, path, stamp, digest)
        await self._store(entry)
        return entry

    async def _store(self, entry: Entry) -> None:
        await self._db.runOperation(
            "INSERT OR REPLACE INTO published VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _published_row(entry)
        )
        self._replace(entry)

    def _replace(self, entry: Entry) -> None:
        old = self.by_name.get(entry.fname)
        if old is not None:
            self._forget(old)
        self._remember(entry)

    async def add_fetched(self, fname: str, digest: Digest, st: os.stat_result) -> Entry:
        """Record a verified download that now sits at ``DIR/FNAME`` (whose stat is *st*)."""
        path = self.path_for(fname)
        entry = Entry(fname, path, Stamp.of(st), digest)

        def record(cursor: Any) -> None:
            cursor.execute("INSERT OR REPLACE INTO hashcache VALUES (?, ?, ?, ?, ?, ?, ?)", _cache_row(entry))
            cursor.execute("INSERT OR REPLACE INTO published VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _published_row(entry))

        await self._db.runInteraction(record)
        self._replace(entry)
        return entry

    async def unpublish(self, fname: str) -> Entry:
        check_fname(fname)
        entry = self.by_name.get(fname)
        if entry is None:
            raise NotFound(f"{fname!r} is not published here")
        await self._db.runOperation("DELETE FROM published WHERE fname = ?", (fname,))
        self._forget(entry)
        return entry

    def servable(self, root: str) -> Entry:
        """The entry to serve for *root*; only published content is ever served."""
        entry = self.by_root.get(root)
        if entry is None:
            raise NotFound("no such file is published here")
        return entry

    # -- partial downloads (see fileshare.peer.download)

    def partial_path(self, root: str) -> str:
        return os.path.join(self.partial_dir, f"{root}.part")

    async def partial_digest(self, root: str) -> tuple[Digest, bytes] | None:
        """The piece list and verified-piece map of a paused download of *root*."""
        rows = await self._db.runQuery("SELECT size, piece_size, pieces, verified FROM partial WHERE root = ?", (root,))
        if not rows:
            return None
        size, piece_size, pieces, verified = rows[0]
        part = self.partial_path(root)
        st = await self._in_thread(_stat_or_none, part)
        if st is None or st.st_size > size:
            await self.drop_partial(root)
            return None
        return Digest(size, piece_size, bytes(pieces), root), bytes(verified)

    async def partials(self) -> list[tuple[str, str, int, bytes]]:
        rows = await self._db.runQuery("SELECT root, fname, size, verified FROM partial ORDER BY fname")
        return [(r, f, s, bytes(v)) for r, f, s, v in rows]

    def save_partial(self, fname: str, digest: Digest, verified: bytes) -> Any:
        return self._db.runOperation(
            "INSERT OR REPLACE INTO partial VALUES (?, ?, ?, ?, ?, ?)",
            (digest.root, fname, digest.size, digest.piece_size, digest.pieces, verified),
        )

    async def drop_partial(self, root: str) -> None:
        await self._db.runOperation("DELETE FROM partial WHERE root = ?", (root,))
        path = self.partial_path(root)
        await self._in_thread(_remove_quietly, path)

    def close(self) -> None:
        self._db.close()


def _published_row(e: Entry) -> tuple[Any, ...]:
    return (e.fname, e.path, e.size, e.stamp.mtime_ns, e.stamp.inode, e.digest.piece_size, e.digest.pieces, e.root)


def _cache_row(e: Entry) -> tuple[Any, ...]:
    return (e.path, e.size, e.stamp.mtime_ns, e.stamp.inode, e.digest.piece_size, e.digest.pieces, e.root)


def _stat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
