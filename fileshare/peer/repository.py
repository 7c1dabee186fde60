"""
The peer's repository: which local files are published under which names.

The rules live here (what may be published, what is served, when a paused
download is stale); the rows live behind an
:class:`~fileshare.peer.repository_store.IRepositoryStore`, by default
``DIR/.fileshare/peer.db``, so a restarted peer still has its repository.
Piece digests are cached by (path, size, mtime, inode): restarting or
re-publishing does not re-hash.  Fetched files land in ``DIR/FNAME``; partial
downloads in ``DIR/.fileshare/partial/``.

Blocking work goes to two thread pools the caller owns: *hashing* for
hashing files being published, *metadata* for the quick stat, open-check and
unlink calls.  They are separate so that a quick call (``drop_partial``
before a fetch answers OK) never waits behind a publish hashing a big file.
"""

import os
import stat
from collections.abc import Callable
from typing import Any

from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ..errors import BadRequest, Conflict, NotFound
from ..names import check_fname
from ..pieces import Digest, hash_file
from ..storage.sqlite import DatabaseError
from .interfaces import IRepository
from .partfile import open_dir_nofollow, remove_part
from .repository_store import Entry, IRepositoryStore, PartialRecord, SQLiteRepositoryStore, Stamp

__all__ = ["STATE_DIR", "Entry", "Repository", "Stamp"]

log = Logger()

STATE_DIR = ".fileshare"


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


def _make_state_dirs(directory: str, partial_dir: str) -> None:
    """Create the repository's directories, or say clearly why it cannot be used (blocking, at start).

    ``.fileshare`` and ``.fileshare/partial`` must be real directories: a
    symlink would send the database and part files outside the repository.
    """
    for path in (os.path.dirname(partial_dir), partial_dir):
        if os.path.islink(path):
            raise DatabaseError(
                f"cannot use {directory} as the repository: {path} is a symbolic link; refusing to write through it"
            )
    try:
        os.makedirs(partial_dir, exist_ok=True)
    except OSError as e:
        raise DatabaseError(f"cannot use {directory} as the repository: {e.strerror} ({e.filename})") from None
    for path in (directory, partial_dir):
        if not os.access(path, os.W_OK | os.X_OK):
            raise DatabaseError(f"cannot use {directory} as the repository: {path} is not writable")


@implementer(IRepository)
class Repository:
    """Published files by name and by root, mirrored in memory for fast lookups.

    The constructor is blocking and meant for start-up: it raises
    :class:`~fileshare.storage.sqlite.DatabaseError`, naming the path, when the
    directory or its database cannot be used.  *store* defaults to the SQLite
    store in ``DIR/.fileshare/peer.db``; *hasher* (default
    :func:`fileshare.pieces.hash_file`) runs on the *hashing* pool.
    """

    def __init__(
        self,
        directory: str,
        reactor: Any,
        hashing: ThreadPool,
        metadata: ThreadPool,
        *,
        store: IRepositoryStore | None = None,
        hasher: Callable[[str], Digest] = hash_file,
    ) -> None:
        self.directory = os.path.abspath(directory)
        self.state_dir = os.path.join(self.directory, STATE_DIR)
        self.partial_dir = os.path.join(self.state_dir, "partial")
        _make_state_dirs(self.directory, self.partial_dir)
        self._reactor = reactor
        self._hashing = hashing
        self._metadata = metadata
        self._hasher = hasher
        if store is None:
            store = SQLiteRepositoryStore(os.path.join(self.state_dir, "peer.db"), reactor)
        self._store = store
        self.by_name: dict[str, Entry] = {}
        self.by_root: dict[str, Entry] = {}

    def _on_metadata(self, f: Callable[..., Any], *args: Any) -> Any:
        return deferToThreadPool(self._reactor, self._metadata, f, *args)

    async def load(self) -> None:
        """Read the published entries; run once at start (the service announces to the tracker after it)."""
        entries = await self._store.load_published()
        self.by_name.clear()
        self.by_root.clear()
        for entry in entries:
            self._remember(entry)
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

    def _replace(self, entry: Entry) -> None:
        old = self.by_name.get(entry.fname)
        if old is not None:
            self._forget(old)
        self._remember(entry)

    def entries(self) -> list[Entry]:
        return sorted(self.by_name.values(), key=lambda e: e.fname)

    def path_for(self, fname: str) -> str:
        """Where a fetched file named *fname* lands."""
        return os.path.join(self.directory, check_fname(fname))

    async def digest_of(self, path: str) -> tuple[Stamp, Digest]:
        """Piece digests of *path*, from the cache when the file is unchanged."""
        stamp = Stamp.of(await self._on_metadata(_stat_regular, path))
        cached = await self._store.get_cached(path)
        if cached is not None and cached[0] == stamp:
            return cached
        log.info("hashing {path} ({size} bytes)", path=path, size=stamp.size)
        digest = await deferToThreadPool(self._reactor, self._hashing, self._hasher, path)
        after = Stamp.of(await self._on_metadata(_stat_regular, path))
        if after != stamp or digest.size != stamp.size:
            raise Conflict(f"{path} changed while it was being hashed; try again")
        await self._store.put_cached(path, stamp, digest)
        return stamp, digest

    async def publish(self, local_path: str, fname: str) -> Entry:
        check_fname(fname)
        path = os.path.abspath(os.path.expanduser(local_path))
        stamp, digest = await self.digest_of(path)
        # Checked after hashing, against what is published by then.
        existing = self.by_name.get(fname)
        if existing is not None and existing.path != path:
            raise Conflict(f"{fname!r} is already published from {existing.path}; unpublish it first")
        entry = Entry(fname, path, stamp, digest)
        await self._store.put_published(entry)
        self._replace(entry)
        return entry

    async def add_fetched(self, fname: str, digest: Digest, st: os.stat_result, resumable: bool = False) -> Entry:
        """Record a verified download that now sits at ``DIR/FNAME`` (whose stat is *st*).

        *resumable*: a partial record of the download exists (every piece
        verified); it is forgotten once the file is recorded.  Should the
        record fail (a full disk: DiskError), the file is not left in the
        repository unlisted: with a partial record it goes back to being
        the part file (the next fetch names it at once, ``cancel`` removes
        it), without one it is removed.
        """
        entry = Entry(fname, self.path_for(fname), Stamp.of(st), digest)
        try:
            await self._store.put_fetched(entry)
        except Exception:
            part = self.partial_path(digest.root) if resumable else None
            try:
                kept = await self._on_metadata(_unname, entry.path, part)
            except Exception as e:
                log.warn("could not take the unrecorded {path} out of the repository: {why}", path=entry.path, why=e)
            else:
                log.warn(
                    "could not record the fetched {fname}; {what}",
                    fname=fname,
                    what=f"kept as the partial download {part}" if kept else f"removed {entry.path}",
                )
            raise
        self._replace(entry)
        if resumable:
            try:
                await self._store.drop_partial(digest.root)
            except Exception as e:  # its part file is gone, so it is dropped when next looked at
                log.warn("could not forget the partial record of {fname}: {why}", fname=fname, why=e)
        return entry

    async def unpublish(self, fname: str) -> Entry:
        check_fname(fname)
        entry = self.by_name.get(fname)
        if entry is None:
            raise NotFound(f"{fname!r} is not published here")
        await self._store.delete_published(fname)
        self._forget(entry)
        return entry

    async def changed_entries(self) -> list[Entry]:
        """The published entries whose file is no longer the one published (changed or gone)."""
        return await self._on_metadata(_changed, self.entries())

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
        """The piece list and verified-piece map of a paused download of *root*.

        A record whose part file is gone or longer than the file is stale: it
        is dropped, and the download starts afresh.
        """
        record = await self._store.get_partial(root)
        if record is None:
            return None
        st = await self._on_metadata(_stat_or_none, self.partial_path(root))
        if st is None or st.st_size > record.digest.size:
            await self.drop_partial(root)
            return None
        return record.digest, record.verified

    async def partials(self) -> list[tuple[str, str, int, bytes]]:
        """``(root, fname, size, verified)`` of every paused download, by fname."""
        return [(r.root, r.fname, r.digest.size, r.verified) for r in await self._store.list_partials()]

    def save_partial(self, fname: str, digest: Digest, verified: bytes) -> Any:
        return self._store.save_partial(PartialRecord(fname, digest, verified))

    async def drop_partial(self, root: str) -> bool:
        """Remove the part file, then its record; whether there was a part file.

        The file goes first: should the database fail (a full disk), no
        part file is left without a record, and a record without its part
        file is dropped when next looked at (:meth:`partial_digest`).
        """
        removed = await self._on_metadata(remove_part, self.partial_path(root))
        await self._store.drop_partial(root)
        return removed

    def close(self) -> None:
        self._store.close()


def _unname(final: str, part: str | None) -> bool:
    """Take a fetched file that could not be recorded out of the repository: back to *part*, or removed.

    Whether it was kept as the part file.  Blocking.
    """
    if part is not None:
        directory = open_dir_nofollow(os.path.dirname(part))
        try:
            os.rename(final, os.path.basename(part), dst_dir_fd=directory)
            return True
        except OSError as e:
            log.warn("could not move {final} back to {part}: {why}", final=final, part=part, why=e.strerror)
        finally:
            os.close(directory)
    try:
        os.remove(final)
    except FileNotFoundError:
        pass
    return False


def _changed(entries: list[Entry]) -> list[Entry]:
    """Those of *entries* whose path no longer has the stamp they were published with (blocking)."""
    found = []
    for entry in entries:
        st = _stat_or_none(entry.path)
        if st is None or Stamp.of(st) != entry.stamp:
            found.append(entry)
    return found


def _stat_or_none(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None
